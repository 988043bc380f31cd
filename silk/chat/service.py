"""Chat completion service: authorise, validate, translate, and run the call on the relay."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from silk.account.auth import Principal
from silk.appctx import this_app, this_g
from silk.catalog import catalogue
from silk.chat.reasoning import HIDDEN
from silk.chat.schemas import check_tools, drop_nulls, schema_for
from silk.chat.translate import encode_completion, encode_stream, to_call
from silk.relay import service as relay
from silk.relay.stream import RelayStream
from silk.relay.surface import Answer, SurfaceStream, allowed_model
from silk.validation import json_object, load


def parse_body(raw: bytes) -> dict:
    """Decode and validate a chat request body; 400 names the offending field."""
    body = drop_nulls(json_object(raw))
    body = load(schema_for(body), body)
    if "tools" in body:
        check_tools(body["tools"])
    return body


# The media types that say which answer a client wants, most specific first.
_JSON_TYPES = ("application/json", "application/*")
_STREAM_TYPES = ("text/event-stream", "text/*")


def wants_stream(body: dict, accept: Callable[[], Iterable[tuple[str, float]]],
                 default: bool) -> bool:
    """`stream` as sent; when omitted, what `Accept` prefers, else the operator's default.

    `accept()` gives the parsed header (werkzeug's `request.accept_mimetypes`), parsed only
    when `stream` was omitted: a client that
    ranks JSON above an event stream gets JSON, and the other way round; `*/*`, no header
    or a tie leaves it to SILK_STREAM_DEFAULT.
    """
    if "stream" in body:
        return body["stream"]
    ranked = [(value.split(";", 1)[0].strip().lower(), quality) for value, quality in accept()]
    as_json = _quality(ranked, _JSON_TYPES)
    as_stream = _quality(ranked, _STREAM_TYPES)
    if as_json == as_stream:
        return default
    return as_stream > as_json


def _quality(ranked: list[tuple[str, float]], types: tuple[str, ...]) -> float:
    """The quality the client gave the most specific of `types` it names; 0 if none."""
    for media_type in types:
        found = [quality for value, quality in ranked if value == media_type]
        if found:
            return max(found)
    return 0.0


def start(principal: Principal, raw: bytes,
          accept: Callable[[], Iterable[tuple[str, float]]]) -> SurfaceStream | Answer:
    """Run everything up to the first byte for the client; the relay settles any failure."""
    body = parse_body(raw)
    model = allowed_model(principal, body["model"])
    config = this_app().config
    stream = wants_stream(body, accept, config["SILK_STREAM_DEFAULT"])
    chat = to_call(model, catalogue().provider_of(model), body, stream=stream,
                   image_allowance=config["SILK_IMAGE_TOKEN_ALLOWANCE"])
    request_id = this_g().request_id
    started = relay.start(chat.call, principal, request_id)
    if isinstance(started, RelayStream):
        return SurfaceStream(started, encode_stream,
                             client_wants_usage=chat.client_wants_usage,
                             model=model.upstream, request_id=request_id,
                             withheld=chat.reasoning)
    return Answer(encode_completion(started, chat.reasoning == HIDDEN), started.bill.cost_usd)
