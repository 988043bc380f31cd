"""Responses service: authorise, validate, continue a stored conversation, run the relay,
and keep the answer when the request asks to store it."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import current_app, g

from silk.account.auth import Principal
from silk.catalog import catalogue
from silk.errors import InvalidRequest, NotFound, PermissionDenied
from silk.extensions import db
from silk.relay import service as relay
from silk.relay.stream import RelayStream
from silk.responses import store
from silk.responses.answer import Builder
from silk.responses.encode import encode_completion, encode_stream
from silk.responses.request import input_items
from silk.responses.schemas import responses_request_schema
from silk.responses.translate import to_call
from silk.validation import json_object, load

log = logging.getLogger("silk.responses")


class ResponsesStream:
    """A stream's response body: typed events as SSE bytes; closing it settles."""

    __slots__ = ("_relay", "_bytes")

    def __init__(self, relay_stream: RelayStream, builder: Builder,
                 on_done: Callable[[dict], None] | None):
        self._relay = relay_stream
        self._bytes = encode_stream(relay_stream, builder, on_done=on_done,
                                    on_error=relay_stream.abort)

    def __iter__(self) -> Iterator[bytes]:
        return self._bytes

    def close(self) -> None:
        """Stop encoding, then end the relay (which settles if the stream had not ended)."""
        self._bytes.close()
        self._relay.close()


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-streaming answer, settled: the Response object and what it cost."""

    body: dict
    cost: object  # USD, Decimal (0 when nothing was charged)


def _keeper(engine, account_id: int, items: list[dict], days: float
            ) -> Callable[[dict], None]:
    """Keep a finished response; a failure to store is logged, never the content."""

    def keep(response: dict) -> None:
        try:
            store.save(engine, account_id, response, items, days)
        except Exception as exc:  # noqa: BLE001 - the answer was delivered and paid
            # No traceback: a database error's text would carry the stored content.
            log.error("storing a response failed", extra={"fields": {
                "response_id": response["id"], "error": type(exc).__name__}})

    return keep


def start(principal: Principal, raw: bytes) -> ResponsesStream | Answer:
    """Run everything up to the first byte for the client; the relay settles any failure."""
    body = load(responses_request_schema, json_object(raw))
    cat = catalogue()
    model = cat.model(body["model"])
    if model is None:
        raise NotFound(f"The model '{body['model']}' does not exist. GET /v1/models lists "
                       "the models you can use.", param="model", code="model_not_found")
    if not principal.may_use(model.id):
        raise PermissionDenied(f"This API key may not use the model '{model.id}'.",
                               param="model", code="model_not_allowed")
    if body.get("background"):
        raise InvalidRequest("Invalid 'background': background responses are not supported "
                             "by this gateway.", param="background")
    g.model = model.id
    config = current_app.config
    engine = db.engine
    previous = body.get("previous_response_id")
    carried = store.conversation(engine, principal.account_id, previous) if previous else []
    stream = bool(body.get("stream"))
    translated = to_call(model, cat.provider_of(model), body, carried, stream=stream,
                         image_allowance=config["SILK_IMAGE_TOKEN_ALLOWANCE"])
    response_id = "resp_" + uuid.uuid4().hex
    builder = Builder(response_id, int(time.time()), model.id, body, translated.names)
    keep = None
    if body.get("store") is not False:
        keep = _keeper(engine, principal.account_id,
                       store.with_ids(response_id, input_items(body["input"])),
                       config["SILK_RESPONSES_RETENTION_DAYS"])
    started = relay.start(translated.call, principal, g.request_id)
    if isinstance(started, RelayStream):
        return ResponsesStream(started, builder, keep)
    answer = encode_completion(started, builder)
    if keep is not None:
        keep(answer)
    return Answer(answer, started.bill.cost_usd)


def retrieve(principal: Principal, response_id: str) -> dict:
    """A stored Response of this account."""
    return store.get(db.engine, principal.account_id, response_id)


def list_input_items(principal: Principal, response_id: str, *, after: str | None,
                     limit: int, order: str) -> dict:
    """A page of a stored response's input items, OpenAI's list object."""
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': must be asc or desc.", param="order")
    return store.input_items(db.engine, principal.account_id, response_id, after=after,
                             limit=limit, order=order)


def delete(principal: Principal, response_id: str) -> dict:
    """Delete a stored response of this account; what OpenAI answers."""
    store.remove(db.engine, principal.account_id, response_id)
    return {"id": response_id, "object": "response", "deleted": True}
