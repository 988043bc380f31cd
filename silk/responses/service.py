"""Responses service: authorise, validate, continue a stored conversation, run the relay,
and keep the answer when the request asks to store it."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from silk.account.auth import Principal
from silk.appctx import this_app, this_g
from silk.catalog import catalogue
from silk.errors import InvalidRequest
from silk.extensions import db
from silk.relay import service as relay
from silk.relay.stream import RelayStream
from silk.relay.surface import Answer, SurfaceStream, allowed_model
from silk.responses import store
from silk.responses.answer import ECHOED, Builder
from silk.responses.encode import encode_completion, encode_stream
from silk.responses.request import input_items
from silk.responses.schemas import schema_for
from silk.responses.translate import to_call
from silk.validation import json_object, load

log = logging.getLogger("silk.responses")


# Request fields whose meaning the gateway cannot give: refused, never answered without it
# (a conversation's items or a prompt template's instructions would be left out unseen).
_UNSUPPORTED = {"background": "background responses", "conversation": "conversations",
                "prompt": "prompt templates"}


def _keeper(engine, principal: Principal, items: list[dict], days: float
            ) -> Callable[[dict], None]:
    """Keep a finished response; a failure to store is logged, never the content."""

    def keep(response: dict) -> None:
        try:
            store.save(engine, principal.account_id, principal.key_id, response, items, days)
        except Exception as exc:  # noqa: BLE001 - the answer was delivered and paid
            # No traceback: a database error's text would carry the stored content.
            log.error("storing a response failed", extra={"fields": {
                "response_id": response["id"], "error": type(exc).__name__}})

    return keep


def start(principal: Principal, raw: bytes) -> SurfaceStream | Answer:
    """Run everything up to the first byte for the client; the relay settles any failure."""
    body = json_object(raw)
    body = load(schema_for(body), body)
    model = allowed_model(principal, body["model"])
    for name, what in _UNSUPPORTED.items():
        if body.get(name):
            raise InvalidRequest(f"Invalid '{name}': {what} are not supported by this gateway.",
                                 param=name)
    config = this_app().config
    engine = db.engine
    previous = body.get("previous_response_id")
    carried = store.conversation(engine, *_scope(principal), previous) if previous else []
    stream = bool(body.get("stream"))
    translated = to_call(model, catalogue().provider_of(model), body, carried, stream=stream,
                         image_allowance=config["SILK_IMAGE_TOKEN_ALLOWANCE"])
    response_id = "resp_" + uuid.uuid4().hex
    builder = Builder(response_id, int(time.time()), model.id, body, translated.names,
                      events=stream)
    keep = None
    if body.get("store") is not False:
        items = store.with_ids(response_id, input_items(body["input"]))
        store.room(items, {name: body[name] for name in ECHOED if body.get(name) is not None},
                   translated.own())
        keep = _keeper(engine, principal, items, config["SILK_RESPONSES_RETENTION_DAYS"])
    started = relay.start(translated.call, principal, this_g().request_id)
    if isinstance(started, RelayStream):
        return SurfaceStream(started, encode_stream, builder, on_done=keep)
    answer = encode_completion(started, builder)
    if keep is not None:
        keep(answer)
    return Answer(answer, started.bill.cost_usd)


def _scope(principal: Principal) -> tuple[int, int | None]:
    """Whose stored responses the caller sees: its account's, only its own key's for a
    member key."""
    return principal.account_id, None if principal.is_owner else principal.key_id


def retrieve(principal: Principal, response_id: str) -> dict:
    """A stored Response the caller may see."""
    return store.get(db.engine, *_scope(principal), response_id)


def list_input_items(principal: Principal, response_id: str, *, after: str | None,
                     limit: int, order: str) -> dict:
    """A page of a stored response's input items, OpenAI's list object."""
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': must be asc or desc.", param="order")
    return store.input_items(db.engine, *_scope(principal), response_id, after=after,
                             limit=limit, order=order)


def delete(principal: Principal, response_id: str) -> dict:
    """Delete a stored response the caller may see; what OpenAI answers."""
    store.remove(db.engine, *_scope(principal), response_id)
    return {"id": response_id, "object": "response", "deleted": True}
