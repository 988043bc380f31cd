"""The relay's events as Anthropic Messages: server-sent events or the JSON Message; pure.

Translated answers (chat completions) are rebuilt as Anthropic's stream: message_start,
ping, content blocks (thinking, text, tool_use with input_json_delta), message_delta with
the stop reason and the usage billed with its cost, message_stop. A native provider's
events pass as it sent them, except that its message_delta waits for the settlement to
carry the cost, and message_stop is sent once the request is settled. silk.messages.blocks
keeps the translated stream's content blocks: the open one, and those that wait behind a
tool call whose arguments may still grow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Generator, Iterable, Iterator

import orjson

from silk.messages.blocks import Blocks, event
from silk.messages.errors import stream_error
from silk.metering.meter import Bill
from silk.pricing import Usage
from silk.relay.anthropic import merge_usage
from silk.relay.events import Chunk, Comment, Completion, Done, Failed, Flush
from silk.relay.finish import INTERRUPTED
from silk.relay.tokens import thought
from silk.sse import data_field

# Chat completions' finish reasons as Anthropic's stop reasons; any other reads as end_turn.
# An answer the provider interrupted (silk.relay.finish) ends a stream with an
# overloaded_error event instead; a JSON Message, which no error can carry, says max_tokens,
# Anthropic's reason for an answer cut short.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal",
                **dict.fromkeys(INTERRUPTED, "max_tokens")}
# Choice fields in which some OpenAI-compatible servers name the stop sequence an answer
# ended on (SGLang's matched_stop, vLLM's stop_reason; a token id there is no sequence).
# DeepSeek, Ark and MiMo name none: their finish_reason "stop" is a natural end or a stop
# sequence alike, the sequence left out of the text, so it reads as end_turn.
_MATCHED = ("matched_stop", "stop_reason")
_EVENT_NAME = re.compile(r"[a-z_]{1,64}")  # Anthropic's event names
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def usage_object(bill: Bill, reported: dict | None = None) -> dict:
    """The usage billed, in Anthropic's fields, with its cost; the provider's own if unchanged."""
    cost = bill.cost_usd
    if reported is not None and bill.as_reported:
        return {**reported, "cost": cost}
    usage = bill.usage or Usage(0, 0)
    # Anthropic's input_tokens leaves out cache reads and writes (both billed as prompt).
    out = {"input_tokens": (usage.prompt_tokens - usage.cache_hit_tokens
                            - usage.cache_write_tokens),
           "output_tokens": usage.completion_tokens,
           "cache_read_input_tokens": usage.cache_hit_tokens,
           "cache_creation_input_tokens": usage.cache_write_tokens, "cost": cost}
    if bill.estimated:
        out["estimated"] = True
    return out


def stop_reason(choice: dict, stops: Collection[str]) -> tuple[str, str | None]:
    """A finished chat choice's stop reason in Anthropic's terms, and the stop sequence it
    ended on: one of the request's `stops` that the choice names (see _MATCHED)."""
    finish = str(choice.get("finish_reason"))
    if finish == "stop":
        for name in _MATCHED:
            value = choice.get(name)
            if isinstance(value, str) and value in stops:
                return "stop_sequence", value
    return STOP_REASONS.get(finish, "end_turn"), None


def _message_start(message_id: str, model: str) -> bytes:
    return event("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0}}}) + PING


def _translated_chunk(data: dict, blocks: Blocks, request_id: str) -> tuple[bytes, dict | None]:
    """One chat chunk's deltas as Anthropic events, and its choice if that finished."""
    out = b""
    finish = None
    choices = data.get("choices")
    for choice in choices[:1] if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        reasoning = thought(delta)
        if reasoning:
            out += blocks.text("thinking", {"type": "thinking", "thinking": "",
                                            "signature": ""}, reasoning)
        text = _said(delta)
        if text:
            out += blocks.text("text", {"type": "text", "text": ""}, text)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            out += _tool_delta(call, blocks, request_id)
        if choice.get("finish_reason"):
            finish = choice
    return out, finish


def _said(delta: dict) -> str:
    """The answer's text in a chat delta (or a whole answer's message): its content, then
    OpenAI's refusal, which is billed as output and has no other place in Anthropic's
    blocks (its stop reason says refusal only when the provider's content filter ended it)."""
    text, refusal = delta.get("content"), delta.get("refusal")
    text = text if isinstance(text, str) else ""
    return text + refusal if isinstance(refusal, str) else text


def _tool_delta(call, blocks: Blocks, request_id: str) -> bytes:
    """A tool call's piece: a new call's block (open, or waiting), then its arguments.

    A call is new at a chat index not seen before, or with an id other than its call's.
    """
    if not isinstance(call, dict):
        return b""
    index = call.get("index")
    position = index if isinstance(index, int) else 0
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    call_id = call.get("id") if isinstance(call.get("id"), str) else ""
    kind = blocks.calls.get(position)
    out = b""
    if kind is None or (call_id and kind != f"tool{position}:{call_id}"):
        call_id = call_id or f"toolu_{request_id}_{position}"
        kind = f"tool{position}:{call_id}"
        out += blocks.call(position, kind, {"type": "tool_use", "id": call_id,
                                            "name": str(function.get("name") or ""),
                                            "input": {}})
    arguments = function.get("arguments")
    if isinstance(arguments, str) and arguments:
        out += blocks.piece(kind, arguments)
    return out


def encode_stream(events: Iterable, *, model: str, request_id: str, native: bool,
                  stops: Collection[str] = (), on_error: Callable[[], None] | None = None
                  ) -> Generator[bytes, None, None]:
    """The relay's events as Anthropic server-sent events (see the module docstring).

    `stops` are the request's stop sequences; `on_error` is called if encoding fails (the
    relay then settles as the gateway's error).
    """
    try:
        if native:
            yield from _native_stream(events)
        else:
            yield from _translated_stream(events, model, request_id, stops)
    except Exception:
        if on_error is not None:
            on_error()
        raise


def _translated_stream(events: Iterable, model: str, request_id: str,
                       stops: Collection[str]) -> Iterator[bytes]:
    blocks = Blocks()
    started = False
    finish = None
    stop: tuple[str, str | None] = ("end_turn", None)
    for item in events:
        if type(item) is Chunk:
            if not started:
                started = True
                yield _message_start(f"msg_{request_id}", model)
            if item.data is None:
                continue
            out, choice = _translated_chunk(item.data, blocks, request_id)
            if choice is not None:
                finish = str(choice["finish_reason"])
                stop = stop_reason(choice, stops)
            if out:
                yield out
        elif type(item) is Flush:
            yield b""
        elif type(item) is Comment:
            if started:
                yield PING
            else:  # a keep-alive before the answer: the stream begins with message_start
                started = True
                yield _message_start(f"msg_{request_id}", model)
        elif type(item) is Done:
            if not started:
                yield _message_start(f"msg_{request_id}", model)
            if finish in INTERRUPTED:  # delivered and billed, but no whole answer
                yield blocks.broken() + event("error", _error_event(
                    INTERRUPTED[finish], item.bill, "overloaded_error"))
                continue
            yield blocks.end() + event("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": stop[0], "stop_sequence": stop[1]},
                "usage": usage_object(item.bill)}) + STOP
        elif type(item) is Failed:
            yield blocks.broken() + event("error", _failed_event(item))


def _native_stream(events: Iterable) -> Iterator[bytes]:
    last_delta: dict | None = None  # the provider's message_delta, sent once settled
    counts: dict = {}  # the counts as the relay merged them (message_start's, then the delta's)
    for item in events:
        if type(item) is Chunk:
            data = item.data
            if data is None:
                continue
            kind = data.get("type")
            if kind == "message_delta":
                last_delta = data
                merge_usage(counts, data.get("usage"))
                continue
            if kind == "message_start" and isinstance(data.get("message"), dict):
                merge_usage(counts, data["message"].get("usage"), output=False)
            if not isinstance(kind, str) or not _EVENT_NAME.fullmatch(kind):
                continue  # no name an SSE line could carry: a newline would forge events
            yield b"event: " + kind.encode() + b"\n" + data_field(item.payload) + b"\n\n"
        elif type(item) is Flush:
            yield b""
        elif type(item) is Comment:
            yield PING
        elif type(item) is Done:
            delta = last_delta or {"type": "message_delta", "delta": {
                "stop_reason": "end_turn", "stop_sequence": None}}
            reported = _with_counts(delta.get("usage"), counts)
            yield event("message_delta", {**delta, "usage": usage_object(
                item.bill, reported)}) + STOP
        elif type(item) is Failed:
            yield event("error", _failed_event(item))


def _with_counts(usage, counts: dict) -> dict | None:
    """The provider's usage object with the counts as billed in the fields it has: a
    delta's input count of 0 after message_start's (as some servers write it) shows
    message_start's."""
    if not isinstance(usage, dict):
        return None
    return {name: counts.get(name, value) for name, value in usage.items()}


def _failed_event(failed: Failed) -> dict:
    """The error event of a stream that ended early: Anthropic's authentication_error once
    the key was revoked (or its account disabled), else api_error."""
    return _error_event(failed.message, failed.bill,
                        "authentication_error" if failed.refused else "api_error")


def _error_event(message: str, bill: Bill, kind: str = "api_error") -> dict:
    data = stream_error(message + bill.charge_note(), kind)
    data["usage"] = usage_object(bill)
    return data


def encode_message(completion: Completion, *, model: str, request_id: str,
                   native: bool, stops: Collection[str] = ()) -> dict:
    """The JSON Message: the native provider's with the cost, or one built from chat's
    (`stops`: the request's stop sequences)."""
    data = completion.data
    if native:
        reported = data.get("usage") if completion.counted else None
        data["usage"] = usage_object(completion.bill, reported)
        return data
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content: list[dict] = []
    reasoning = thought(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _said(message)
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for position, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        content.append({"type": "tool_use",
                        "id": str(call.get("id") or f"toolu_{request_id}_{position}"),
                        "name": str(function.get("name") or ""),
                        "input": _arguments(function.get("arguments"))})
    stop = stop_reason(choice if isinstance(choice, dict) else {}, stops)
    return {"id": f"msg_{request_id}", "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": stop[0], "stop_sequence": stop[1],
            "usage": usage_object(completion.bill)}


def _arguments(arguments) -> dict:
    """A tool call's arguments as the input object Anthropic clients expect."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}
