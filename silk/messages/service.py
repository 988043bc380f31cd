"""Messages service: authorise, validate, translate, and run the call on the relay."""

from __future__ import annotations

from silk.account.auth import Principal
from silk.appctx import this_app, this_g
from silk.catalog import catalogue
from silk.messages.encode import encode_message, encode_stream
from silk.messages.schemas import schema_for
from silk.messages.translate import bounded_request, native_prompt_bound, to_call, to_chat_body
from silk.relay import admission
from silk.relay import service as relay
from silk.relay.stream import RelayStream
from silk.relay.surface import Answer, SurfaceStream, allowed_model
from silk.relay.tokens import prompt_bound, prompt_estimate
from silk.validation import json_object, load


def parse_body(raw: bytes, *, counting: bool = False) -> dict:
    """Decode and validate a Messages body (count_tokens needs no max_tokens); 400 names
    the offending field."""
    body = json_object(raw)
    if counting:  # a Messages request without max_tokens
        body = {**body, "max_tokens": 1}
    return load(schema_for(body), body)


def start(principal: Principal, raw: bytes) -> SurfaceStream | Answer:
    """Run everything up to the first byte for the client; the relay settles any failure."""
    body = parse_body(raw)
    model = allowed_model(principal, body["model"])
    stream = body.get("stream") is True
    call = to_call(model, catalogue().provider_of(model), body, stream=stream,
                   image_allowance=this_app().config["SILK_IMAGE_TOKEN_ALLOWANCE"])
    native = call.dialect == "anthropic"
    stops = body.get("stop_sequences") or ()
    request_id = this_g().request_id
    started = relay.start(call, principal, request_id)
    if isinstance(started, RelayStream):
        return SurfaceStream(started, encode_stream, model=body["model"],
                             request_id=request_id, native=native, stops=stops)
    return Answer(encode_message(started, model=body["model"], request_id=request_id,
                                 native=native, stops=stops), started.bill.cost_usd)


def count_tokens(principal: Principal, raw: bytes) -> dict:
    """{"input_tokens": N}: the gateway's estimate of the prompt; costs nothing."""
    body = parse_body(raw, counting=True)
    model = allowed_model(principal, body["model"])
    # A request like any other for the requests-per-minute limits; it holds no slot and
    # uses no tokens.
    admission.admit(principal, model.id, 0, slot=False)
    chat = to_chat_body(body)
    allowance = this_app().config["SILK_IMAGE_TOKEN_ALLOWANCE"]
    native = bool(catalogue().provider_of(model).anthropic_base_url)
    if native:
        bound = native_prompt_bound(bounded_request(body), allowance)
    else:
        bound = prompt_bound(chat, allowance)
    return {"input_tokens": prompt_estimate(chat, bound, image_allowance=allowance)}
