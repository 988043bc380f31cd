"""Chat-completions answers as Responses output, both streamed and whole; pure.

One builder reads chat deltas (a stream's chunks, or a whole answer's message read as one
delta) and keeps the output items, so a stream's typed events and the JSON Response agree
item for item. The usage told back is what was billed, with its cost.

Items follow one another, each done before the next is added, but a chat stream may send a
tool call's arguments after the next call has started. So a function_call item stays open
until its arguments are a whole JSON object (then only whitespace, which changes no call,
could follow; a done item gets none), and an item that would start meanwhile (the next
call, text, reasoning) waits, gathering its pieces. Waiting items are sent whole, in the
order they came, once the open call is whole or can grow no more: a new call took its chat
index, or the answer ended. Calls sent one after another, each whole before the next
starts, stream piece by piece. A broken stream sends its waiting items before
response.failed, so the client holds every piece delivered and charged for: the items this
closes (among them the call they waited for, cut short) are done as incomplete, and the last
stays in progress, as a failure leaves the open item.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from silk.jsonio import whole_object
from silk.metering.meter import Bill
from silk.pricing import Usage
from silk.relay.finish import INTERRUPTED
from silk.relay.tokens import thought

# Request fields a Response echoes back, with OpenAI's default when the request left one out.
ECHOED: dict[str, Any] = {"instructions": None, "metadata": {}, "parallel_tool_calls": True,
          "temperature": 1.0, "tool_choice": "auto", "tools": [], "top_p": 1.0,
          "max_output_tokens": None, "previous_response_id": None, "reasoning": None,
          "text": {"format": {"type": "text"}}, "store": True, "prompt_cache_key": None}


# Chat finish reasons that cut an answer short, each with OpenAI's reason for the incomplete
# response: the output limit, or the provider's content filter. An answer the provider
# interrupted (silk.relay.finish) has no such reason: it is a failed response, as one whose
# stream broke is, its output kept.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def usage_object(bill: Bill) -> dict:
    """The usage billed, in the Responses shape, with its cost (marked when estimated)."""
    usage = bill.usage or Usage(0, 0)
    out = {"input_tokens": usage.prompt_tokens,
           # No provider here bills writing its cache: nothing was written at a price.
           "input_tokens_details": {"cached_tokens": usage.cache_hit_tokens,
                                    "cache_write_tokens": 0},
           "output_tokens": usage.completion_tokens,
           "output_tokens_details": {"reasoning_tokens": bill.reasoning_tokens},
           "total_tokens": usage.total_tokens, "cost": bill.cost_usd}
    if bill.estimated:
        out["estimated"] = True
    return out


def _json(value) -> bytes:
    return orjson.dumps(value, default=float)


class Builder:
    """A Response being built from chat deltas; each method returns the events it causes.

    Events are the SSE bytes of OpenAI's typed stream events, numbered by sequence_number;
    a caller that wants only the final object ignores them.
    """

    def __init__(self, response_id: str, created_at: int, model: str, request: dict,
                 names: dict[str, tuple[str, str]], *, events: bool = True):
        self.id = response_id
        # False for a whole answer: the items are kept, the stream events never made.
        self.events = events
        self.created_at = created_at
        self.model = model
        self.echo = {name: request.get(name, default) if request.get(name) is not None
                     else default for name, default in ECHOED.items()}
        self.names = names
        self.output: list[dict] = []
        self.finish: str | None = None
        self._sequence = 0
        self._open: Any = None  # the item receiving deltas (a dict), or None
        # Its kind: reasoning, message, refusal (a message whose part is a refusal) or
        # function_call.
        self._kind: str | None = None
        self._call: dict | None = None  # the open item, a function_call that may still grow
        self._waiting: list[dict] = []  # items to come, only while there is such a call
        self._calls: dict[int, dict] = {}  # the provider's tool call index -> its latest
        self._status = "completed"  # what an item becomes when it is closed
        self._frame: tuple | None = None  # (item, bytes around a delta's number and text)
        # The open item's text (or arguments) since it was last written into the item, in
        # the order it came: runs of _LOOSE deltas joined into one string each, then the
        # deltas since. Joined into the item when it is read, not copied in one by one.
        self._runs: list[str] = []
        self._pieces: list[str] = []

    # -- events

    def _event(self, kind: str, **fields) -> bytes:
        if not self.events:
            return b""
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _json(data) + b"\n\n"

    def response(self, status: str, usage: dict | None = None, error: dict | None = None
                 ) -> dict:
        """The Response object as it stands."""
        self._gather()
        incomplete = None
        if status == "incomplete":
            incomplete = {"reason": INCOMPLETE[self.finish or "length"]}
        return {"id": self.id, "object": "response", "created_at": self.created_at,
                "status": status, "error": error, "incomplete_details": incomplete,
                "model": self.model, "output": self.output, "usage": usage,
                "truncation": "disabled", **self.echo}

    def start(self) -> bytes:
        """The two events a stream opens with."""
        snapshot = self.response("in_progress")
        return (self._event("response.created", response=snapshot)
                + self._event("response.in_progress", response=snapshot))

    # -- deltas

    def delta(self, delta: dict) -> bytes:
        """One chat delta: reasoning, text, refusal and tool-call pieces, each into its item
        (a refusal is billed as output, so it is delivered as OpenAI's refusal part)."""
        out = b""
        reasoning = thought(delta)
        if reasoning:
            out += self._text("reasoning", reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            out += self._text("message", content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            out += self._text("refusal", refusal)
        calls = delta.get("tool_calls")
        for position, call in enumerate(calls if isinstance(calls, list) else ()):
            if isinstance(call, dict):
                index = call.get("index")
                out += self._tool_delta(call, index if isinstance(index, int) else position)
        return out

    def _text(self, kind: str, text: str) -> bytes:
        """Reasoning, answer or refusal text: the open or last waiting item of its kind, else
        a new one."""
        if self._kind == kind:
            return self._write(text)
        if self._waiting and self._waiting[-1]["type"] == kind:
            self._waiting[-1]["text"] += text
            return b""
        return self._start({"type": kind, "text": text})

    def _tool_delta(self, call: dict, index: int) -> bytes:
        """A tool call's piece: a new call's item (open, or waiting), then its arguments.

        A call is new at a chat index not seen before, or with an id other than its call's.
        """
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        out = b""
        entry = self._calls.get(index)
        new_id = call.get("id")
        if entry is None or (new_id and new_id != entry["call_id"]):
            if entry is not None and self._call is not None and entry.get("item") is self._call:
                self._call = None  # its index is taken: the open call grows no more
                out += self._release()
            entry = {"type": "function_call", "call_id": new_id,
                     "name": str(function.get("name") or ""), "text": ""}
            self._calls[index] = entry
            out += self._start(entry)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            if "item" not in entry:
                entry["text"] += arguments
            elif entry["item"] is self._open:
                out += self._write(arguments)
                if self._waiting and arguments.rstrip().endswith("}"):
                    out += self._release()
        return out

    def _growing(self) -> bool:
        """Whether the open item is a function call whose arguments may still grow."""
        if self._call is None:
            return False
        self._gather()
        return not whole_object(self._call["arguments"])

    def _start(self, entry: dict) -> bytes:
        """Open an item for `entry`, or keep it waiting behind the open call while that may
        grow."""
        if self._waiting or self._growing():
            self._waiting.append(entry)
            return b""
        return self._open_item(entry)

    def _open_item(self, entry: dict) -> bytes:
        """Close the open item and add `entry`'s, with the text it has so far."""
        if entry["type"] == "function_call":
            out = self._new_call(entry)
        else:
            out = self._into(entry["type"])
        return out + (self._write(entry["text"]) if entry["text"] else b"")

    def _release(self, ending: bool = False) -> bytes:
        """Open the waiting items in turn while the open item cannot grow (or at the end)."""
        out = b""
        while self._waiting and (ending or not self._growing()):
            out += self._open_item(self._waiting.pop(0))
        return out

    def _new_call(self, entry: dict) -> bytes:
        """Close the open item and add a function_call item for a chat tool call."""
        out = self._close()
        name = entry["name"]
        item = {"id": f"fc_{self.id[5:]}_{len(self.output)}", "type": "function_call",
                "status": "in_progress", "arguments": "",
                "call_id": str(entry["call_id"] or f"call_{self.id[5:]}_{len(self.output)}"),
                "name": name}
        if name in self.names:
            item["namespace"], item["name"] = self.names[name]
        entry["item"] = item
        out += self._add(item, "function_call")
        self._call = item
        return out

    def _write(self, text: str) -> bytes:
        """Text into the open item, and its delta event.

        A delta event is most of a stream's events: its bytes are the ones `_event` makes,
        put together from a frame kept while the item is open, around the sequence number and
        the text (one dict and one JSON encoding fewer per event).
        """
        item = self._open
        pieces = self._pieces
        pieces.append(text)
        if len(pieces) >= _LOOSE:  # a few long strings, not one small one per delta
            self._runs.append("".join(pieces))
            pieces.clear()
        if not self.events:
            return b""
        frame = self._frame
        if frame is None or frame[0] is not item:
            frame = self._frame = (item, *_delta_frame(item, str(self._kind),
                                                       len(self.output) - 1))
        sequence = self._sequence
        self._sequence = sequence + 1
        return b"".join((frame[1], str(sequence).encode(), frame[2], _json(text), frame[3]))

    def _gather(self) -> None:
        """Write the open item's pieces into it."""
        if not self._runs and not self._pieces:
            return
        item, text = self._open, "".join(self._runs) + "".join(self._pieces)
        self._runs.clear()
        self._pieces.clear()
        if self._kind == "reasoning":
            item["summary"][0]["text"] += text
        elif self._kind == "message":
            item["content"][0]["text"] += text
        elif self._kind == "refusal":
            item["content"][0]["refusal"] += text
        else:
            item["arguments"] += text

    def _into(self, kind: str) -> bytes:
        """Make sure the open item is of `kind`, closing another and opening one if not."""
        if self._kind == kind:
            return b""
        out = self._close()
        suffix = f"{self.id[5:]}_{len(self.output)}"
        if kind == "reasoning":
            item: dict = {"id": f"rs_{suffix}", "type": "reasoning", "summary": []}
            out += self._add(item, kind)
            part: dict = {"type": "summary_text", "text": ""}
            item["summary"].append(part)
            out += self._event("response.reasoning_summary_part.added", item_id=item["id"],
                               output_index=len(self.output) - 1, summary_index=0,
                               part=dict(part))
        else:
            item = {"id": f"msg_{suffix}", "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []}
            out += self._add(item, kind)
            part = ({"type": "refusal", "refusal": ""} if kind == "refusal" else
                    {"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            item["content"].append(part)
            out += self._event("response.content_part.added", item_id=item["id"],
                               output_index=len(self.output) - 1, content_index=0,
                               part=dict(part))
        return out

    def _add(self, item: dict, kind: str) -> bytes:
        self.output.append(item)
        self._open, self._kind = item, kind
        if not self.events:
            return b""
        return self._event("response.output_item.added", output_index=len(self.output) - 1,
                           item=_copy(item))

    def _close(self) -> bytes:
        """Finish the open item: its done events, then output_item.done."""
        self._gather()
        item, kind, self._open, self._kind = self._open, self._kind, None, None
        self._call = None
        if item is None:
            return b""
        if not self.events:
            if "status" in item:
                item["status"] = self._status
            return b""
        index = len(self.output) - 1
        out = b""
        if kind == "reasoning":
            part = item["summary"][0]
            out += self._event("response.reasoning_summary_text.done", item_id=item["id"],
                               output_index=index, summary_index=0, text=part["text"])
            out += self._event("response.reasoning_summary_part.done", item_id=item["id"],
                               output_index=index, summary_index=0, part=dict(part))
        elif kind in ("message", "refusal"):
            part = item["content"][0]
            if kind == "message":
                out += self._event("response.output_text.done", item_id=item["id"],
                                   output_index=index, content_index=0, text=part["text"],
                                   logprobs=[])
            else:
                out += self._event("response.refusal.done", item_id=item["id"],
                                   output_index=index, content_index=0,
                                   refusal=part["refusal"])
            out += self._event("response.content_part.done", item_id=item["id"],
                               output_index=index, content_index=0, part=_copy(part))
        else:
            out += self._event("response.function_call_arguments.done", item_id=item["id"],
                               output_index=index, arguments=item["arguments"])
        if "status" in item:
            item["status"] = self._status
        return out + self._event("response.output_item.done", output_index=index,
                                 item=_copy(item))

    # -- endings

    def status(self) -> str:
        """completed; incomplete when the output limit or a content filter cut the answer;
        failed when the provider interrupted it."""
        if self.finish in INTERRUPTED:
            return "failed"
        return "incomplete" if self.finish in INCOMPLETE else "completed"

    def done(self, bill: Bill) -> tuple[dict, Callable[[], bytes]]:
        """The finished Response, and the events that end the stream (made when called,
        so that the caller may store the response first)."""
        status = self.status()
        if status == "failed":  # the items it closes are cut short, as failed() closes them
            self._status = "incomplete"
        closing = self._release(ending=True) + self._close()
        if self.finish in INCOMPLETE:
            for item in self.output:
                if item.get("status") == "completed" and item["type"] == "message":
                    item["status"] = "incomplete"
        error = None
        if status == "failed":
            error = {"code": "server_error",
                     "message": INTERRUPTED[str(self.finish)] + bill.charge_note()}
        final = self.response(status, usage_object(bill), error)
        kind = {"completed": "response.completed", "incomplete": "response.incomplete",
                "failed": "response.failed"}[status]
        return final, lambda: closing + self._event(kind, response=final)

    def failed(self, message: str, bill: Bill,
               code: str = "server_error") -> tuple[dict, Callable[[], bytes]]:
        """The failed Response of a broken stream, and the events that end it: the waiting
        items (see the module docstring), then the error (`code`: server_error, or why the
        key no longer serves), stating what was charged (made when called, as done's are)."""
        self._status = "incomplete"
        closing = self._release(ending=True)
        error = {"code": code, "message": message + bill.charge_note()}
        final = self.response("failed", usage_object(bill), error)
        return final, lambda: closing + self._event("response.failed", response=final)


_LOOSE = 32  # an open item's deltas joined into one string when they are this many

# Each kind of item's delta event: its type, and the fields between the item's id and the text.
_DELTAS = {"reasoning": ("response.reasoning_summary_text.delta", b',"summary_index":0', b"}"),
           "message": ("response.output_text.delta", b',"content_index":0', b',"logprobs":[]}'),
           "refusal": ("response.refusal.delta", b',"content_index":0', b"}"),
           "function_call": ("response.function_call_arguments.delta", b"", b"}")}


def _delta_frame(item: dict, kind: str, index: int) -> tuple[bytes, bytes, bytes]:
    """The bytes of an item's delta event before its sequence number, between that and the
    text, and after the text: `Builder._event`'s, field for field."""
    event, position, tail = _DELTAS[kind]
    return (b"event: " + event.encode() + b'\ndata: {"type":' + _json(event)
            + b',"sequence_number":',
            b',"item_id":' + _json(item["id"]) + b',"output_index":' + str(index).encode()
            + position + b',"delta":',
            tail + b"\n\n")


def _copy(item: dict) -> dict:
    """A snapshot of an item as it is now (its parts too)."""
    copied = dict(item)
    for name in ("content", "summary"):
        if name in copied:
            copied[name] = [dict(part) for part in copied[name]]
    return copied
