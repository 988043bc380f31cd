"""SQLite's way to reserve and settle, without stopping a gevent worker and without overhead.

SQLite has one write lock per database. A connection that finds it taken waits inside the
C library (busy_timeout), and under gevent that wait freezes every greenlet of the worker:
every stream it serves stalls while the other worker commits. Metering transactions
therefore ask for the lock with no wait (BEGIN IMMEDIATE, busy_timeout 0) and, when it is
taken, yield to the event loop and ask again: waiting costs other greenlets nothing.

The statements are plain SQL run on the driver connection: SQLite answers in microseconds,
so SQLAlchemy's per-statement machinery was most of the cost of metering a request.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import NamedTuple

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

_GIVE_UP_AFTER = 30.0  # seconds, as long as any other writer would wait for the lock
_BUSY_TIMEOUT_MS = 30000  # what the rest of the app waits (see silk.database_events)


def _locked(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


@contextmanager
def write_transaction(engine: Engine) -> Iterator[sqlite3.Connection]:
    """The driver connection inside a transaction that holds SQLite's write lock."""
    deadline = time.monotonic() + _GIVE_UP_AFTER
    pause = 0.0005
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        while True:
            driver.execute("PRAGMA busy_timeout = 0")
            try:
                driver.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:
                if not _locked(error) or time.monotonic() > deadline:
                    raise _unavailable(error) from error
            finally:
                driver.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            # time.sleep is gevent's under gunicorn: other greenlets run meanwhile.
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.02)
        try:
            yield driver
            driver.commit()
        except sqlite3.OperationalError as error:
            driver.rollback()
            raise _unavailable(error) from error
        except BaseException:
            driver.rollback()
            raise


def _unavailable(error: sqlite3.OperationalError) -> OperationalError:
    """SQLAlchemy's form of a driver failure, which the app answers with a retryable 503."""
    return OperationalError("metering transaction", None, error)


class AccountState(NamedTuple):
    """The account columns a reservation decides on."""

    balance_units: int
    reserved_units: int
    tier: str
    quota_month: str
    quota_used: int
    quota_held: int
    disabled: bool


LOCK = ("UPDATE accounts SET reserved_units = reserved_units WHERE id = :account "
        "RETURNING balance_units, reserved_units, tier, quota_month, quota_used, quota_held, "
        "disabled")
HOLD = ("UPDATE accounts SET reserved_units = reserved_units + :hold, "
        "quota_held = quota_held + :quota, quota_month = :month, quota_used = :used "
        "WHERE id = :account")
NEW_RESERVATION = (
    "INSERT INTO reservations (account_id, key_id, request_id, model, hold_units, "
    "quota_tokens, prompt_estimate, state, worker, created_at, expires_at) VALUES (:account, "
    ":key, :request, :model, :hold, :quota, :estimate, 'open', :worker, :now, :expires) "
    "RETURNING id")
CLAIM = ("UPDATE reservations SET state = 'settled', settled_at = :now "
         "WHERE id = :reservation AND state = 'open'")
SETTLE = ("UPDATE accounts SET reserved_units = reserved_units - :hold, "
          "quota_held = quota_held - :quota, balance_units = balance_units - :charge, "
          "quota_used = CASE WHEN quota_month = :month THEN quota_used + :free ELSE :free END, "
          "quota_month = :month WHERE id = :account RETURNING balance_units")
NEW_LEDGER_ENTRY = (
    "INSERT INTO ledger_entries (account_id, kind, amount_units, balance_after_units, "
    "request_id, note, actor, created_at) VALUES (:account, 'charge', -:charge, :balance, "
    ":request, :model, 'gateway', :now)")
NEW_USAGE_RECORD = (
    "INSERT INTO usage_records (request_id, account_id, key_id, model, upstream_model, "
    "provider, stream, status, http_status, prompt_tokens, completion_tokens, "
    "reasoning_tokens, cache_hit_tokens, total_tokens, free_tokens, subtotal_units, "
    "discount_units, cost_units, written_off_units, estimated, latency_ms, ttft_ms, "
    "created_at, day) VALUES (:request, :account, :key, :model, :upstream_model, :provider, "
    ":stream, :status, :http_status, :prompt_tokens, :completion_tokens, :reasoning_tokens, "
    ":cache_hit_tokens, :total_tokens, :free_tokens, :subtotal_units, :discount_units, "
    ":charge, :written_off_units, :estimated, :latency_ms, :ttft_ms, :now, :day)")


def lock_account(driver: sqlite3.Connection, account_id: int) -> AccountState | None:
    """Read the account inside the write transaction."""
    row = driver.execute(LOCK, {"account": account_id}).fetchone()
    return AccountState(*row) if row else None


def run(driver: sqlite3.Connection, sql: str, values: dict):
    """Run one statement with its values stored as SQLAlchemy stores them; the first row."""
    return driver.execute(sql, {name: _stored(value) for name, value in values.items()}
                          ).fetchone()


def _stored(value):
    # SQLAlchemy's SQLite types keep datetimes and dates as ISO text and booleans as 0/1.
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value
