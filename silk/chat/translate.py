"""Chat Completions over the relay, both ways; pure.

A request becomes the relay's Call (to_call); the relay's events become OpenAI chunks and
server-sent events (encode_stream), or the JSON answer (encode_completion). Chunks the client
may see as the provider sent them go out as the provider's own bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

import orjson

from silk.catalog.catalogue import Model, Provider
from silk.chat import reasoning, unpriced
from silk.chat.errors import stream_error
from silk.errors import InvalidRequest
from silk.metering.meter import Bill
from silk.pricing import Usage
from silk.relay.call import LIMIT_FIELDS, Call, bound_body
from silk.relay.events import Chunk, Comment, Completion, Done, Failed, Flush
from silk.relay.tokens import prompt_bound, prompt_estimate
from silk.sse import DONE_EVENT, encode_comment, encode_data

# What stands in for a chunk whose reasoning the client asked to hide and that carried
# nothing else: a comment, which keeps the connection alive while the model thinks.
_KEEPALIVE = encode_comment(b"keep-alive")


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A chat request translated: the relay's Call, and what the client asked of the answer."""

    call: Call
    client_wants_usage: bool  # stream_options.include_usage: one usage chunk at the end
    # What the client asked of the reasoning the provider is now asked to show
    # (silk.chat.reasoning: HIDDEN, HELD), or None.
    reasoning: str | None = None


def to_call(model: Model, provider: Provider, request: dict, *, stream: bool,
            image_allowance: int) -> ChatCall:
    """Rewrite a validated chat request for the upstream and bound what it can cost.

    Reasoning the client asks to hide is asked for in full (silk.chat.reasoning), so the
    relay counts what the provider bills; the encoders keep it from the client. A field
    that would bill what the catalogue does not price is refused (silk.chat.unpriced).
    """
    body = dict(request)
    unpriced.strip(body)
    asked = reasoning.shown(body)
    limit = _client_limit(body, model)
    client_wants_usage = False
    if stream:
        options = body.get("stream_options")
        client_wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    max_output = bound_body(body, model, provider, limit=limit, stream=stream)
    bound = prompt_bound(body, image_allowance)
    estimate = prompt_estimate(body, bound, image_allowance=image_allowance)
    call = Call(model=model, body=orjson.dumps(body), stream=stream, prompt_bound=bound,
                prompt_estimate=estimate, max_output=max_output,
                surface="chat")
    return ChatCall(call, client_wants_usage, asked)


def _client_limit(body: dict, model: Model) -> int:
    """The client's output limit (either field, or both if equal), within the model's maximum."""
    given = {name: body[name] for name in LIMIT_FIELDS if body.get(name) is not None}
    if len(set(given.values())) > 1:
        raise InvalidRequest(
            f"max_tokens is {given['max_tokens']} but max_completion_tokens is "
            f"{given['max_completion_tokens']}: send one limit, or the same value in both.",
            param="max_tokens")
    for name, limit in given.items():
        if limit > model.max_output_tokens:
            raise InvalidRequest(f"{name} is {limit}, above this model's maximum of "
                                 f"{model.max_output_tokens}.", param=name)
        return limit
    return model.max_output_tokens


def usage_object(bill: Bill, reported: dict | None) -> dict:
    """The usage object billed, for a client: the provider's own when it was billed as it
    came, else the counts billed in the fields a provider's has, marked.

    Those are OpenAI's cache and reasoning details, and DeepSeek's cache split when the
    provider's object had it or none came (clients read whichever their provider sends).
    """
    cost = bill.cost_usd
    if reported is not None and bill.as_reported:
        return {**reported, "cost": cost}
    usage = bill.usage or Usage(0, 0)
    hits = usage.cache_hit_tokens
    out = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
           "total_tokens": usage.total_tokens,
           "prompt_tokens_details": {"cached_tokens": hits},
           "completion_tokens_details": {"reasoning_tokens": bill.reasoning_tokens}}
    if reported is None or "prompt_cache_hit_tokens" in reported:
        out["prompt_cache_hit_tokens"] = hits
        out["prompt_cache_miss_tokens"] = usage.prompt_tokens - hits
    out["estimated"] = bill.estimated
    out["cost"] = cost
    return out


def encode_completion(completion: Completion, hidden: bool = False) -> dict:
    """The JSON answer: the provider's, with the usage billed (its own object when billed as
    reported, else the counts billed) and its cost; its reasoning left out if `hidden`."""
    data = completion.data
    if hidden:
        reasoning.hide_in_answer(data)
    data["usage"] = usage_object(completion.bill,
                                 data["usage"] if completion.counted else None)
    return data


def encode_stream(events: Iterable, *, client_wants_usage: bool, model: str,
                  request_id: str, on_error: Callable[[], None] | None = None,
                  withheld: str | None = None) -> Generator[bytes, None, None]:
    """The relay's events as OpenAI server-sent events.

    Chunks pass as the provider's bytes, except that usage is taken out of them: the client
    gets it once, in a usage chunk at the end (if it asked) carrying the cost. `model` is the
    upstream model named in that chunk if the provider named none. `withheld` is what the
    client asked of the reasoning (silk.chat.reasoning), which is then taken out of the
    chunks (a chunk left with nothing goes as a keep-alive comment). `on_error` is called if
    encoding fails (the relay then settles the request as the gateway's error).
    """
    keep = reasoning.Withheld(withheld) if withheld else None
    stream_id: str | None = None
    upstream_model = ""
    first = True
    usage_chunk: dict | None = None  # the provider's last usage-only chunk
    reported: dict | None = None  # the provider's usage object, last seen
    try:
        for event in events:
            if type(event) is Chunk:
                data = event.data
                if data is None:
                    yield encode_data(event.payload)
                    continue
                if first:
                    first = False
                    upstream_model = str(data.get("model") or model)
                    stream_id = data["id"] if isinstance(data.get("id"), str) else None
                payload = event.payload
                if keep is not None and keep.chunk(data):
                    rewritten = None if reasoning.quiet(data) else _written(data)
                    if rewritten is None:
                        yield _KEEPALIVE
                        continue
                    payload = rewritten
                usage = data.get("usage")
                if usage is None:
                    yield encode_data(payload)
                    continue
                if event.counted:
                    reported = dict(usage)
                if data.get("choices"):
                    data["usage"] = None
                    try:
                        yield encode_data(orjson.dumps(data))
                    except orjson.JSONEncodeError:  # nested past what orjson writes: as it came
                        yield encode_data(payload)
                elif event.counted:
                    usage_chunk = data
            elif type(event) is Flush:
                yield b""
            elif type(event) is Comment:
                yield encode_comment(event.text)
            elif type(event) is Done:
                if keep is not None:
                    yield from _released(keep, stream_id, request_id, upstream_model)
                if client_wants_usage:
                    ours = {"id": stream_id or f"chatcmpl-{request_id}",
                            "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": upstream_model, "choices": []}
                    yield encode_data(_usage_chunk(event.bill, ours, usage_chunk,
                                                   reported)) + DONE_EVENT
                else:
                    yield DONE_EVENT
            elif type(event) is Failed:
                if keep is not None:
                    yield from _released(keep, stream_id, request_id, upstream_model)
                yield encode_data(_error_event(event, reported))
    except Exception:
        if on_error is not None:
            on_error()
        raise


def _released(keep: reasoning.Withheld, stream_id: str | None, request_id: str,
              model: str) -> Generator[bytes, None, None]:
    """The reasoning still held at the stream's end, as chunks of the stream."""
    for data in keep.release(stream_id or f"chatcmpl-{request_id}", model):
        written = _written(data)
        if written is not None:
            yield encode_data(written)


def _written(data: dict) -> bytes | None:
    """A chunk written again; None if it nests past what orjson writes (it came with the
    reasoning the client asked to hide, so it is not sent as it came)."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return None


def _usage_chunk(bill: Bill, ours: dict, theirs: dict | None, reported: dict | None) -> bytes:
    """The one usage chunk a client asked for: sent at the end, after settling, with the cost.

    It is the provider's own last usage chunk with the cost added, unless that cannot be
    written back (nested past orjson's limit): then the gateway's plain one with the counts.
    """
    if theirs is not None and not bill.estimated:
        try:
            return orjson.dumps({**theirs, "usage": usage_object(bill, reported)},
                                default=float)
        except orjson.JSONEncodeError:
            reported = None  # usage_object then gives the counts billed
    return orjson.dumps({**ours, "usage": usage_object(bill, reported)}, default=float)


def _error_event(failed: Failed, reported: dict | None) -> bytes:
    """The last event of a broken stream: the error, and what was charged for the delivery."""
    bill = failed.bill
    usage = usage_object(bill, reported)
    event = stream_error(failed.message + bill.charge_note("prompt", "completion"),
                         failed.code,
                         "authentication_error" if failed.refused else "api_error")
    event["usage"] = usage
    try:
        return orjson.dumps(event, default=float)
    except orjson.JSONEncodeError:  # the provider's usage object nests past orjson's limit
        event["usage"] = usage_object(bill, None)
        return orjson.dumps(event, default=float)
