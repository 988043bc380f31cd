"""The fake upstream's Anthropic Messages dialect (``{base}/v1/messages``), with faults.

DeepSeek, MiMo and Ark serve Anthropic Messages at their Anthropic base URL; the fake serves
it at ``/<provider>/anthropic/v1/messages``. Counting follows the fake's chat rules:

* ``input_tokens`` + ``cache_read_input_tokens`` = the prompt: per message its words + 4,
  plus the system prompt's words + 4 when there is one; ``cache_hit=n`` moves n of them
  to ``cache_read_input_tokens``.
* ``output_tokens`` = thinking pieces (when ``thinking.type`` is enabled or adaptive) +
  reply pieces, or, for a tool call, 10. ``max_tokens`` bounds the whole output (thinking
  included, as Anthropic defines it); what does not fit is not produced
  (``stop_reason`` ``max_tokens``).
* ``tool_call=NAME`` answers with a ``tool_use`` block calling NAME with ``tool_args``
  (JSON, ``{}`` by default; 10 output tokens) while no message carries a ``tool_result``
  and the request offers NAME (or no tools); otherwise with the reply text, so an agent's
  loop ends after one call.

Thinking carries a signature, the whole thinking sealed (:func:`sealed`: base64 of its text,
as Anthropic returns the full thinking encrypted there). Asked ``thinking.display``
``omitted`` (or with ``thinking_display=omitted``) the block has no thinking text, only the
signature; ``thinking_display=redacted`` sends a ``redacted_thinking`` block whose ``data``
is the sealed thinking. The output count is the same either way.

Stream: message_start (input counts, ``output_tokens`` 1), ping, one block per kind
(thinking with a signature_delta, text, or tool_use with two ``input_json_delta``),
message_delta (``stop_reason`` and the cumulative ``output_tokens`` only), message_stop.
``text_in_start=block`` sends the reply whole in its block's ``content_block_start`` (no
text deltas), ``text_in_start=message`` in ``message_start``'s ``content`` (no text block):
shapes Anthropic never sends, which a provider could.
``multiline_data`` writes each event's JSON over several ``data:`` lines, as SSE allows.
``cut_after=n`` counts events; ``stall_after=n`` falls silent after n events until the
client leaves; ``stream_error`` sends an ``error`` event after
message_start; ``usage_json`` is merged into the usage reported (message_delta's in a
stream); ``delta_usage_json`` is merged into message_delta's usage alone (a count that
contradicts message_start's, as some Anthropic-compatible servers write ``input_tokens`` 0
there); ``no_usage`` leaves usage out; a non-200 ``status`` answers Anthropic's error body.
"""

from __future__ import annotations

import base64
import json
from typing import Any

# Path of each provider's Anthropic base URL, relative to the server root.
ANTHROPIC_BASE_PATHS = {"deepseek": "/deepseek/anthropic", "ark": "/ark/anthropic",
                        "mimo": "/mimo/anthropic"}
ANTHROPIC_PATHS = {path + "/v1/messages": provider
                   for provider, path in ANTHROPIC_BASE_PATHS.items()}
TOOL_OUTPUT_TOKENS = 10
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def text_of(content: Any) -> str:
    """The text of Anthropic content: a string, or the text blocks' text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b["text"] for b in content
                        if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def prompt_tokens(body: dict) -> int:
    """The prompt the fake counts for an Anthropic body (see the module docstring)."""
    total = sum(len(text_of(m.get("content")).split()) + 4 for m in body["messages"])
    if body.get("system"):
        total += len(text_of(body["system"]).split()) + 4
    return total


def sealed(thinking: str) -> str:
    """The fake's signature of a thinking: its text in base64, as long as a cipher of it."""
    return base64.b64encode(thinking.encode()).decode()


def thinking_blocks(reasoning: list[str], display: str | None) -> list[dict]:
    """A whole answer's thinking: a thinking block (its text left out when omitted), or a
    redacted_thinking block; none without reasoning."""
    if not reasoning:
        return []
    text = "".join(reasoning)
    if display == "redacted":
        return [{"type": "redacted_thinking", "data": sealed(text)}]
    return [{"type": "thinking", "thinking": "" if display == "omitted" else text,
             "signature": sealed(text)}]


def error_body(status: int, message: str | None) -> dict:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message or
                                       f"fake anthropic error {status} (request req_0123)"}}


def validate(body: Any) -> str | None:
    """Why ``body`` is not a Messages request, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "model: field required"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: field required"
    return None


def answer(handler, provider: str, opts: dict, body: dict, rid: str) -> None:
    """Answer a valid Messages request on ``handler`` (the fake's request handler)."""
    from tests.fakes.upstream import reply_pieces

    thinking = body.get("thinking")
    thinks = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    display = opts.get("thinking_display") or (
        "omitted" if thinks and thinking.get("display") == "omitted" else None)
    answered = any(isinstance(m, dict) and isinstance(m.get("content"), list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in m["content"])
        for m in body["messages"])
    offered = {t.get("name") for t in body.get("tools") or () if isinstance(t, dict)}
    tool = opts.get("tool_call")
    if answered or (offered and tool not in offered):
        tool = None
    reasoning = reply_pieces(opts.get("reasoning", "")) if thinks else []
    content = [] if tool else reply_pieces(opts.get("reply", ""))
    limit = body["max_tokens"]
    kept_reasoning = reasoning[:limit]
    kept_content = content[:max(0, limit - len(kept_reasoning))]
    stop = "tool_use" if tool else "end_turn"
    if len(kept_reasoning) < len(reasoning) or len(kept_content) < len(content):
        stop = "max_tokens"
    output = len(kept_reasoning) + len(kept_content) + (TOOL_OUTPUT_TOKENS if tool else 0)
    prompt = prompt_tokens(body)
    hit = min(opts.get("cache_hit", 0), prompt)
    usage: dict | None = {"input_tokens": prompt - hit, "output_tokens": output,
                          "cache_read_input_tokens": hit, "cache_creation_input_tokens": 0}
    if opts.get("usage_json"):
        usage.update(json.loads(opts["usage_json"]))
    if opts.get("no_usage"):
        usage = None
    model = opts.get("reply_model") or body["model"]
    tool_block = {"type": "tool_use", "id": "toolu_" + rid.removeprefix("fakereq-"),
                  "name": tool, "input": json.loads(opts.get("tool_args") or "{}")}
    if not body.get("stream"):
        blocks = thinking_blocks(kept_reasoning, display)
        if kept_content:
            blocks.append({"type": "text", "text": "".join(kept_content)})
        if tool:
            blocks.append(tool_block)
        doc = {"id": "msg_" + rid.removeprefix("fakereq-"), "type": "message",
               "role": "assistant", "model": model, "content": blocks, "stop_reason": stop,
               "stop_sequence": None}
        if usage is not None:
            doc["usage"] = usage
        data = json.dumps(doc).encode()
        if opts.get("cut_after") is not None:
            handler._start(200, "application/json", length=len(data))
            handler.record.outcome = "cut"
            handler._write(data[: len(data) // 2])
            handler._cut(opts.get("rst", False))
            return
        handler.record.outcome = "ok"
        handler._send_bytes(200, data, "application/json")
        return
    _stream(handler, opts, rid, model, usage, kept_reasoning, kept_content,
            tool_block if tool else None, stop, opts.get("text_in_start"), display)


def _stream(handler, opts: dict, rid: str, model: str, usage: dict | None,
            reasoning: list[str], content: list[str], tool: dict | None, stop: str,
            text_in_start: str | None = None, display: str | None = None) -> None:
    start_usage = None
    if usage is not None:
        start_usage = {k: v for k, v in usage.items() if k != "output_tokens"}
        start_usage["output_tokens"] = 1

    def events():
        yield "message_start", {"type": "message_start", "message": {
            "id": "msg_" + rid.removeprefix("fakereq-"), "type": "message", "role": "assistant",
            "model": model, "stop_reason": None, "stop_sequence": None,
            "content": ([{"type": "text", "text": "".join(content)}]
                        if content and text_in_start == "message" else []),
            **({"usage": start_usage} if start_usage else {})}}
        yield "ping", {"type": "ping"}
        index = 0
        if reasoning and display == "redacted":
            yield _block_start(index, *thinking_blocks(reasoning, display))
            yield _block_stop(index)
            index += 1
        elif reasoning:
            yield _block_start(index, {"type": "thinking", "thinking": "", "signature": ""})
            for piece in reasoning if display is None else ():
                yield _delta(index, {"type": "thinking_delta", "thinking": piece})
            yield _delta(index, {"type": "signature_delta",
                                 "signature": sealed("".join(reasoning))})
            yield _block_stop(index)
            index += 1
        if content and text_in_start == "block":
            yield _block_start(index, {"type": "text", "text": "".join(content)})
            yield _block_stop(index)
            index += 1
        elif content and text_in_start is None:
            yield _block_start(index, {"type": "text", "text": ""})
            for piece in content:
                yield _delta(index, {"type": "text_delta", "text": piece})
            yield _block_stop(index)
            index += 1
        if tool:
            yield _block_start(index, {**tool, "input": {}})
            arguments = json.dumps(tool["input"])
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                yield _delta(index, {"type": "input_json_delta", "partial_json": part})
            yield _block_stop(index)
        delta: dict = {"type": "message_delta",
                       "delta": {"stop_reason": stop, "stop_sequence": None}}
        if usage is not None:
            delta["usage"] = {k: v for k, v in usage.items()
                              if k == "output_tokens" or k not in start_usage
                              or v != start_usage[k]}
            if opts.get("delta_usage_json"):
                delta["usage"].update(json.loads(opts["delta_usage_json"]))
        yield "message_delta", delta
        yield "message_stop", {"type": "message_stop"}

    handler._start(200, "text/event-stream", length=None)
    handler.phase = "first_token"
    if opts.get("first_token_delay"):
        handler._wait(opts["first_token_delay"])
    handler.phase = "stream"
    cut_after = opts.get("cut_after")
    chunk_delay = opts.get("chunk_delay", 0)
    for index, (name, data) in enumerate(events()):
        if cut_after is not None and handler.chunks_sent >= cut_after:
            break
        if index and chunk_delay and index % handler.together == 0:
            handler._wait(chunk_delay)
        if opts.get("stall_after") is not None and handler.chunks_sent >= opts["stall_after"]:
            handler._wait(3600)
        if index == 1 and "stream_error" in opts:
            handler.record.outcome = "error"
            error = {"type": "error", "error": {"type": "overloaded_error",
                                                "message": opts["stream_error"]}}
            handler._event(_sse("error", error), last=True)
            return
        last = name == "message_stop"
        if last:
            handler.record.outcome = "ok"
        handler._event(_sse(name, data, opts.get("multiline_data", False)), last=last)
    if cut_after is not None:
        handler.record.outcome = "cut"
        handler._cut(opts.get("rst", False))


def _sse(name: str, data: dict, multiline: bool = False) -> bytes:
    text = json.dumps(data, indent=1) if multiline else json.dumps(data)
    return f"event: {name}\ndata: {text.replace(chr(10), chr(10) + 'data: ')}\n\n".encode()


def _block_start(index: int, block: dict) -> tuple[str, dict]:
    return "content_block_start", {"type": "content_block_start", "index": index,
                                   "content_block": block}


def _delta(index: int, delta: dict) -> tuple[str, dict]:
    return "content_block_delta", {"type": "content_block_delta", "index": index,
                                   "delta": delta}


def _block_stop(index: int) -> tuple[str, dict]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}
