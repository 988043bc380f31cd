"""The outbox's rows: record an event once, claim due ones under a lease, finish them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from silk.sqlite_writes import write_begin

KEY_EXPIRING = "key_expiring"
ROUTE_FAILING = "route_failing"
# Written by the settlement itself (silk.metering.outbox): balance_low, quota_used_up and
# key_spend (a key's spend reaching 80, 90 or 100 % of a cap).

_COLUMNS = ("event_id, kind, account_id, payload, state, attempts, next_attempt_at, "
            "last_error, created_at")
_VALUES = ":event_id, :kind, :account_id, :payload, 'pending', 0, :now, '', :now"


def record(conn: Connection, event_id: str, kind: str, account_id: int | None,
           payload: Mapping[str, Any], now: datetime) -> bool:
    """Write an event in the caller's transaction, unless its id exists; True if new."""
    if conn.dialect.name == "postgresql":
        sql = f"INSERT INTO alert_outbox ({_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT DO NOTHING"
    else:
        sql = f"INSERT OR IGNORE INTO alert_outbox ({_COLUMNS}) VALUES ({_VALUES})"
    result = conn.execute(text(sql), {"event_id": event_id[:128], "kind": kind,
                                      "account_id": account_id,
                                      "payload": json.dumps(dict(payload)), "now": now})
    return result.rowcount == 1


_DUE = ("state = 'pending' AND next_attempt_at <= :now "
        "AND (claim_until IS NULL OR claim_until < :now)")


@dataclass(frozen=True)
class Claimed:
    """An event this worker may deliver until its lease ends."""

    id: int
    event_id: str
    kind: str
    account_id: int | None
    payload: dict[str, Any]
    recipients: list[str] | None
    pending: list[str] | None
    attempts: int
    created_at: datetime


def claim(engine: Engine, worker: str, now: datetime, lease: float,
          limit: int = 20) -> list[Claimed]:
    """Take up to `limit` due events for `worker` until now + `lease`.

    An event is due when it is pending, its next attempt is not in the future and no
    live lease holds it. On PostgreSQL, workers skip rows another is claiming (FOR UPDATE
    SKIP LOCKED); SQLite runs one writer at a time. Either way one worker holds an event
    while its lease lasts.
    """
    with engine.connect() as conn:  # a read first: most rounds find nothing to write
        if conn.execute(text(f"SELECT 1 FROM alert_outbox WHERE {_DUE} LIMIT 1"),
                        {"now": now}).first() is None:
            return []
    skip = " FOR UPDATE SKIP LOCKED" if engine.dialect.name == "postgresql" else ""
    sql = text(
        "UPDATE alert_outbox SET claimed_by = :worker, claim_until = :until "
        f"WHERE id IN (SELECT id FROM alert_outbox WHERE {_DUE} "
        f"ORDER BY id LIMIT :limit{skip}) "
        "RETURNING id, event_id, kind, account_id, payload, recipients, pending, attempts, "
        "created_at")
    with write_begin(engine) as conn:
        rows = conn.execute(sql, {"worker": worker, "now": now, "limit": limit,
                                  "until": now + timedelta(seconds=lease)}).all()
    return sorted((Claimed(row.id, row.event_id, row.kind, row.account_id,
                           json.loads(row.payload or "{}"), _list(row.recipients),
                           _list(row.pending), row.attempts, _moment(row.created_at))
                   for row in rows), key=lambda event: event.id)


def _list(raw: str | None) -> list[str] | None:
    return None if raw is None else list(json.loads(raw))


def _moment(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def finish(engine: Engine, event: Claimed, worker: str, *, recipients: list[str],
           pending: list[str], now: datetime, retry_after: float | None,
           error: str = "") -> bool:
    """Record a delivery round: delivered when nobody is pending, else retry after
    `retry_after` seconds (None: give up). False if the lease was lost meanwhile."""
    attempts = event.attempts + 1
    if not pending:
        state, due = "delivered", now
    elif retry_after is None:
        state, due = "failed", now
    else:
        state, due = "pending", now + timedelta(seconds=retry_after)
    sql = text(
        "UPDATE alert_outbox SET state = :state, attempts = :attempts, recipients = :recipients,"
        " pending = :pending, next_attempt_at = :due, claimed_by = NULL, claim_until = NULL, "
        "last_error = :error, delivered_at = :delivered WHERE id = :id AND claimed_by = :worker")
    with write_begin(engine) as conn:
        result = conn.execute(sql, {
            "state": state, "attempts": attempts, "recipients": json.dumps(recipients),
            "pending": json.dumps(pending), "due": due, "error": error[:500],
            "delivered": now if state == "delivered" else None, "id": event.id,
            "worker": worker})
    return result.rowcount == 1


# Finished events by the time they finished (finish() sets next_attempt_at then); the
# outbox's (state, next_attempt_at) index finds them.
_FINISHED = "state IN ('delivered', 'failed') AND next_attempt_at < :before"


def prune(engine: Engine, before: datetime, limit: int) -> int:
    """Delete up to `limit` delivered or given-up events finished before `before`, in one
    short transaction; how many. A pending event is never deleted."""
    with engine.connect() as conn:  # a read first: most rounds find nothing to delete
        if conn.execute(text(f"SELECT 1 FROM alert_outbox WHERE {_FINISHED} LIMIT 1"),
                        {"before": before}).first() is None:
            return 0
    skip = " FOR UPDATE SKIP LOCKED" if engine.dialect.name == "postgresql" else ""
    sql = text(f"DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox "
               f"WHERE {_FINISHED} ORDER BY id LIMIT :limit{skip})")
    with write_begin(engine) as conn:
        return conn.execute(sql, {"before": before, "limit": limit}).rowcount
