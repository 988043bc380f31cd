"""Messages service: authorise, validate, translate, and run the call on the relay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from flask import current_app, g

from silk.account.auth import Principal
from silk.catalog import catalogue
from silk.catalog.catalogue import Model
from silk.errors import NotFound, PermissionDenied
from silk.messages.encode import encode_message, encode_stream
from silk.messages.schemas import schema_for
from silk.messages.translate import bounded_request, native_prompt_bound, to_call, to_chat_body
from silk.relay import admission
from silk.relay import service as relay
from silk.relay.stream import RelayStream
from silk.relay.tokens import prompt_bound, prompt_estimate
from silk.validation import json_object, load


def parse_body(raw: bytes, *, counting: bool = False) -> dict:
    """Decode and validate a Messages body (count_tokens needs no max_tokens); 400 names
    the offending field."""
    body = json_object(raw)
    if counting:  # a Messages request without max_tokens
        body = {**body, "max_tokens": 1}
    return load(schema_for(body), body)



class MessagesStream:
    """A stream's response body: the relay's events as Anthropic SSE; closing it settles."""

    __slots__ = ("_relay", "_bytes")

    def __init__(self, relay_stream: RelayStream, **encoding):
        self._relay = relay_stream
        self._bytes = encode_stream(relay_stream, on_error=relay_stream.abort, **encoding)

    def __iter__(self) -> Iterator[bytes]:
        return self._bytes

    def close(self) -> None:
        """Stop encoding, then end the relay (which settles if the stream had not ended)."""
        self._bytes.close()
        self._relay.close()


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-streaming Message, settled: the JSON body and what it cost."""

    body: dict
    cost: object  # USD, Decimal (0 when nothing was charged)


def _model(principal: Principal, name: str) -> Model:
    """The catalogue model a name (or an alias) means, if this key may use it."""
    model = catalogue().model(name)
    if model is None:
        raise NotFound(f"The model '{name}' does not exist. GET /v1/models lists the models "
                       "you can use.", param="model", code="model_not_found")
    if not principal.may_use(model.id):
        raise PermissionDenied(f"This API key may not use the model '{model.id}'.",
                               param="model", code="model_not_allowed")
    g.model = model.id
    return model


def start(principal: Principal, raw: bytes) -> MessagesStream | Answer:
    """Run everything up to the first byte for the client; the relay settles any failure."""
    body = parse_body(raw)
    model = _model(principal, body["model"])
    cat = catalogue()
    stream = body.get("stream") is True
    call = to_call(model, cat.provider_of(model), body, stream=stream,
                   image_allowance=current_app.config["SILK_IMAGE_TOKEN_ALLOWANCE"])
    native = call.dialect == "anthropic"
    started = relay.start(call, principal, g.request_id)
    if isinstance(started, RelayStream):
        return MessagesStream(started, model=body["model"], request_id=g.request_id,
                              native=native)
    return Answer(encode_message(started, model=body["model"], request_id=g.request_id,
                                 native=native), started.bill.cost_usd)


def count_tokens(principal: Principal, raw: bytes) -> dict:
    """{"input_tokens": N}: the gateway's estimate of the prompt; costs nothing."""
    body = parse_body(raw, counting=True)
    model = _model(principal, body["model"])
    # A request like any other for the requests-per-minute limits; it holds no slot and
    # uses no tokens.
    admission.admit(principal, model.id, 0, slot=False)
    chat = to_chat_body(body)
    allowance = current_app.config["SILK_IMAGE_TOKEN_ALLOWANCE"]
    native = bool(catalogue().provider_of(model).anthropic_base_url)
    if native:
        bound = native_prompt_bound(bounded_request(body), allowance)
    else:
        bound = prompt_bound(chat, allowance)
    return {"input_tokens": prompt_estimate(chat, bound)}
