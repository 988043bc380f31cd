"""Idempotency-Key: store the first answer in the same transaction as its effect, replay it.

The record's insert is the transaction's first write, and (account, key) is unique: a
concurrent duplicate waits on that insert and then fails it, so the effect applies once and
the loser replays the winner's answer. A failed request stores nothing, so its retry runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from flask import Response, jsonify
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from silk.billing.models import IdempotencyRecord
from silk.database import utcnow
from silk.errors import Conflict, InvalidRequest, Unprocessable
from silk.jsonio import dumps_bytes

RECORDS = IdempotencyRecord.__table__
HEADER = "Idempotency-Key"


@dataclass(frozen=True, slots=True)
class ReplayableAnswer:
    """A response to send: status, JSON body, and whether it is a stored replay."""

    status: int
    body: dict
    replayed: bool = False


def answer_response(answer: ReplayableAnswer) -> Response:
    """Send a stored or fresh answer, marking replays as the IETF draft suggests."""
    response = jsonify(answer.body)
    response.status_code = answer.status
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


class _Duplicate(Exception):
    """The key is taken: leave the transaction and replay the stored answer."""


def check_key(raw: str | None) -> str | None:
    """Validate the header's value (1-128 printable characters); None when not sent."""
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > 128 or not key.isprintable():
        raise InvalidRequest(f"The {HEADER} header must be 1 to 128 printable characters.",
                             param=HEADER, code="invalid_idempotency_key")
    return key


def fingerprint(scope: str, body: dict) -> str:
    """Hash what was asked, so a key reused for a different request is caught."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(scope.encode() + b"\n" + canonical).hexdigest()


def run_once(engine: Engine, *, account_id: int, key: str | None, fingerprint: str,
             action: Callable[[Connection], tuple[int, dict]]) -> ReplayableAnswer:
    """Run `action` in one transaction, at most once per (account, key)."""
    if key is None:
        with engine.begin() as conn:
            status, body = action(conn)
        return ReplayableAnswer(status, body)
    try:
        with engine.begin() as conn:
            try:
                record_id = conn.execute(insert(RECORDS).values(
                    account_id=account_id, key=key, fingerprint=fingerprint, status_code=0,
                    response_body="", created_at=utcnow()).returning(RECORDS.c.id)).scalar_one()
            except IntegrityError:
                raise _Duplicate from None
            status, body = action(conn)
            conn.execute(update(RECORDS).where(RECORDS.c.id == record_id).values(
                status_code=status, response_body=dumps_bytes(body).decode()))
        return ReplayableAnswer(status, body)
    except _Duplicate:
        return _replay(engine, account_id, key, fingerprint)


def _replay(engine: Engine, account_id: int, key: str, fingerprint: str) -> ReplayableAnswer:
    with engine.connect() as conn:
        record = conn.execute(select(RECORDS).where(
            RECORDS.c.account_id == account_id, RECORDS.c.key == key)).first()
    if record is None or record.status_code == 0:
        raise Conflict("A request with this Idempotency-Key is still being processed; "
                       "retry shortly.", param=HEADER, code="idempotency_key_in_use")
    if record.fingerprint != fingerprint:
        raise Unprocessable("This Idempotency-Key was already used for a different request; "
                            "use a new key for a new request.", param=HEADER,
                            code="idempotency_key_reused")
    return ReplayableAnswer(record.status_code, orjson.loads(record.response_body), replayed=True)
