"""The money store on SQLite: reserve and settle without stopping a gevent worker.

SQLite has one write lock per database. A connection that finds it taken waits inside the
C library (busy_timeout), and under gevent that wait freezes every greenlet of the worker:
every stream it serves stalls while the other worker commits. Metering transactions
therefore ask for the lock with no wait (BEGIN IMMEDIATE, busy_timeout 0) and, when it is
taken, yield to the event loop and ask again: waiting costs other greenlets nothing.

They run on driver connections of their own, kept idle per process and set to busy_timeout
0 once, rather than on the engine's pool: the pool's checkout and switching the timeout
twice per transaction cost more than the transaction. The statements are plain SQL for the
same reason: SQLite answers in microseconds, so SQLAlchemy's per-statement machinery was
most of the cost of metering a request.

Holds and settlements are group-committed (silk.metering.groupcommit), as on PostgreSQL:
those that arrive while a worker waits for the lock, or writes, go in its next transaction,
each in a savepoint of its own, so a burst takes the lock and commits once per batch
instead of once per request, and one request's refusal undoes only its own statements.

A transaction that charges commits durably (synchronous=FULL: the write-ahead log is
flushed before the client is answered). One of holds only does not wait for the flush, as
on PostgreSQL: a power loss can take the last holds with their reserved amounts, and the
next durable commit flushes them anyway.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any

from gevent import get_hub
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from silk import inflight
from silk.database_events import SQLITE_BUSY_TIMEOUT_MS, sqlite_in_memory, sqlite_pragmas
from silk.metering import correction, outbox, rules
from silk.metering.groupcommit import BatchInterrupted, GroupCommit
from silk.metering.perprocess import PerProcess
from silk.metering.state import KEY_SELECT, SELECT, AccountState, KeyState
from silk.metering.store import (
    CAPPED,
    Ask,
    Common,
    Reserved,
    Written,
    check_key,
    claim_sql,
    key_sql,
    plan,
    renewal,
)
from silk.metering.worker import identity
from silk.pricing import Tier
from silk.sockets import cooperative
from silk.sqlite_writes import GIVE_UP_AFTER, begin_immediate, begin_pooled

_GIVE_UP_AFTER = GIVE_UP_AFTER  # seconds, as long as any other writer would wait for the lock
_BUSY_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS  # what the rest of the app waits
_MAX_IDLE = 16  # idle connections a process keeps per database; more are closed after use
_SYNCHRONOUS = {True: "PRAGMA synchronous = FULL", False: "PRAGMA synchronous = NORMAL"}


class HoldOnly:
    """An operation that only holds money: its transaction need not wait for the disk."""

    __slots__ = ("run",)

    def __init__(self, run: Callable[[sqlite3.Connection], Any]) -> None:
        self.run = run

    def __call__(self, driver: sqlite3.Connection) -> Any:
        return self.run(driver)


class _Connections:
    """One process's idle metering connections to one database file."""

    def __init__(self, engine: Engine):
        self.pid = os.getpid()
        args, params = engine.dialect.create_connect_args(engine.url)
        self.in_memory = sqlite_in_memory(engine.url)  # only the engine's connection sees it
        self.args: Any = args  # what the dialect passes to sqlite3.connect
        self.params: Any = {**params, "isolation_level": None, "check_same_thread": False,
                       "timeout": _BUSY_TIMEOUT_MS / 1000}
        # Idle connections by their `synchronous` setting (True: FULL), so that a transaction
        # sets it only on a connection that last ran the other kind.
        self.idle: dict[bool, list[sqlite3.Connection]] = {True: [], False: []}
        self._engine = weakref.ref(engine)  # the engine owns this object, not the reverse
        self.batches: GroupCommit[Operation] = GroupCommit(self._run_batch)

    def _run_batch(self, ops: Sequence[Operation]) -> list[Any]:
        """Run operations in one write transaction, each in a savepoint: an operation that
        raises is undone alone and its caller gets the exception; a lone one needs none."""
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine was disposed")
        results: list[Any] = []
        durable = not all(isinstance(op, HoldOnly) for op in ops)
        # Other requests can run while the commit writes and flushes the log.
        aside = durable and inflight.others()
        with write_transaction(engine, durable=durable, commit_aside=aside) as driver:
            if len(ops) == 1:
                results.append(ops[0](driver))
            else:
                for op in ops:
                    driver.execute("SAVEPOINT silk_op")
                    try:
                        results.append(op(driver))
                    except Exception as exc:  # noqa: BLE001 - that caller gets it
                        driver.execute("ROLLBACK TO silk_op")
                        results.append(_unavailable(exc)
                                       if isinstance(exc, sqlite3.OperationalError) else exc)
                    driver.execute("RELEASE silk_op")
        return results

    def take(self, durable: bool) -> sqlite3.Connection:
        """An idle connection, or a new one with the app's settings and no busy wait; its
        commits wait for the disk if `durable` (synchronous FULL), else not (NORMAL)."""
        try:  # pop, not test-then-pop: the keeper's renewals may run in a real thread
            return self.idle[durable].pop()
        except IndexError:
            pass
        # The other kind's last idle connection stays: taking it would set a lone request's
        # hold and charge on one connection, a PRAGMA before each.
        others = self.idle[not durable]
        try:
            driver = others.pop() if len(others) > 1 else self._open()
        except IndexError:
            driver = self._open()
        return _set_up(driver, lambda d: d.execute(_SYNCHRONOUS[durable]))

    def _open(self) -> sqlite3.Connection:
        """A new connection with the app's settings (synchronous FULL among them)."""
        try:
            driver: sqlite3.Connection = sqlite3.connect(*self.args, **self.params)
        except sqlite3.OperationalError as error:
            raise _unavailable(error) from error
        return _set_up(driver, _without_busy_wait)

    def give_back(self, driver: sqlite3.Connection, durable: bool) -> None:
        """Keep a connection for the next transaction, unless enough are idle already;
        `durable` must be what it was taken for, which is its setting."""
        if (len(self.idle[True]) + len(self.idle[False]) < _MAX_IDLE
                and self.pid == os.getpid()):
            self.idle[durable].append(driver)
        else:
            driver.close()

    def close(self) -> None:
        """Close the idle connections (the engine was disposed)."""
        for idle in self.idle.values():
            while idle:
                idle.pop().close()


def _without_busy_wait(driver: sqlite3.Connection) -> None:
    """The app's settings, with the same wait while a first open may switch to WAL; after
    that the connection never waits inside SQLite."""
    sqlite_pragmas(driver)
    driver.execute("PRAGMA busy_timeout = 0")


def _set_up(driver: sqlite3.Connection,
            configure: Callable[[sqlite3.Connection], Any]) -> sqlite3.Connection:
    """`driver` once `configure` has run on it; closed if that failed, and an unavailable
    database if SQLite said so."""
    try:
        configure(driver)
    except sqlite3.Error as error:
        driver.close()
        if isinstance(error, sqlite3.OperationalError):
            raise _unavailable(error) from error
        raise
    return driver


Operation = Callable[[sqlite3.Connection], Any]  # statements on the write transaction
_connections: PerProcess[_Connections] = PerProcess(_Connections, _Connections.close)


def batched(engine: Engine, op: Operation) -> Any:
    """Run `op` in this process's next write transaction on `engine`; its result or error."""
    try:
        return _connections.get(engine).batches.submit(op)
    except BatchInterrupted as exc:  # whether the batch committed is unknown: retryable
        raise OperationalError("metering batch", None, exc) from exc


def _begin(driver: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, yielding to other greenlets while another writer holds the lock."""
    try:
        begin_immediate(driver, _GIVE_UP_AFTER)
    except sqlite3.OperationalError as error:
        raise _unavailable(error) from error



@contextmanager
def write_transaction(engine: Engine, *, durable: bool = True,
                      commit_aside: bool = False) -> Iterator[sqlite3.Connection]:
    """The driver connection inside a transaction that holds SQLite's write lock; its
    commit waits for the disk unless `durable` is false. With `commit_aside`, in a gevent
    worker, the commit runs in a thread of gevent's pool while the worker's other greenlets
    run: SQLite releases the interpreter while it writes and flushes the log, which
    otherwise stops the whole worker. (Not for every commit: handing one to a thread and
    back costs a lone request about 0.1 ms.)"""
    connections = _connections.get(engine)
    if connections.in_memory:
        with _engine_write_transaction(engine) as driver:
            yield driver
        return
    driver = connections.take(durable)
    committing = None  # the pool's commit of the driver, while it runs aside
    try:
        _begin(driver)
        try:
            yield driver
            if commit_aside and cooperative():
                committing = get_hub().threadpool.spawn(driver.commit)
                committing.get()
            else:
                driver.commit()
        except BaseException:
            if committing is not None and not committing.ready():
                raise  # interrupted while the thread commits: handled below
            driver.rollback()
            raise
    except BaseException as error:
        if committing is not None and not committing.ready():
            # The thread still has the connection: it closes once the commit has ended,
            # whichever way (the batch's callers learn that its outcome is unknown).
            committing.rawlink(lambda _result: driver.close())
            raise
        if isinstance(error, sqlite3.OperationalError):
            driver.close()  # a connection the driver failed on is not worth keeping
            raise _unavailable(error) from error
        if isinstance(error, (sqlite3.Error, OperationalError)):
            driver.close()
        else:
            connections.give_back(driver, durable)
        raise
    connections.give_back(driver, durable)


@contextmanager
def _engine_write_transaction(engine: Engine) -> Iterator[sqlite3.Connection]:
    """The same on the engine's own connection, switching its busy wait off meanwhile."""
    with engine.connect() as conn:
        try:
            driver = begin_pooled(conn, _GIVE_UP_AFTER)
        except sqlite3.OperationalError as error:
            raise _unavailable(error) from error
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


# BEGIN IMMEDIATE already holds the database's one write lock: a plain read is current.
ACCOUNT = f"SELECT {SELECT} FROM accounts WHERE id = :account"
_MONTH_AFTER = rules.quota_month_after(rules.SQLITE, "quota_month", ":month")
HOLD = ("UPDATE accounts SET reserved_units = reserved_units + :hold, "
        f"quota_held = quota_held + :quota, quota_month = {_MONTH_AFTER}, quota_used = :used "
        "WHERE id = :account")
NEW_RESERVATION = (
    "INSERT INTO reservations (account_id, key_id, request_id, model, hold_units, "
    "quota_tokens, prompt_estimate, state, worker, created_at, expires_at) VALUES (:account, "
    ":key, :request, :model, :hold, :quota, :estimate, 'open', :worker, :now, :expires) "
    "RETURNING id")
CLAIM = {claimed: claim_sql(rules.SQLITE, claimed) for claimed in ("settled", "swept")}
_USED_AFTER = rules.used_after(rules.SQLITE, "quota_month", "quota_used", ":month", ":free")
SETTLE = ("UPDATE accounts SET reserved_units = reserved_units - :hold, "
          "quota_held = quota_held - :quota, balance_units = balance_units - :charge, "
          f"quota_used = {_USED_AFTER}, quota_month = {_MONTH_AFTER} WHERE id = :account "
          "RETURNING balance_units")
NEW_LEDGER_ENTRY = (
    "INSERT INTO ledger_entries (account_id, kind, amount_units, balance_after_units, "
    "request_id, note, actor, created_at) VALUES (:account, 'charge', -:charge, :balance, "
    ":request, :model, 'gateway', :now)")
NEW_USAGE_RECORD = (
    "INSERT INTO usage_records (request_id, account_id, key_id, model, upstream_model, "
    "provider, stream, route, surface, status, http_status, prompt_tokens, completion_tokens, "
    "reasoning_tokens, cache_hit_tokens, total_tokens, free_tokens, subtotal_units, "
    "discount_units, cost_units, written_off_units, upstream_cost_units, estimated, "
    "latency_ms, ttft_ms, created_at, day) VALUES (:request, :account, :key, :model, "
    ":upstream_model, :provider, "
    ":stream, :route, :surface, :status, :http_status, :prompt_tokens, :completion_tokens, "
    ":reasoning_tokens, :cache_hit_tokens, :total_tokens, :free_tokens, :subtotal_units, "
    ":discount_units, :charge, :written_off_units, :upstream_cost_units, :estimated, "
    ":latency_ms, :ttft_ms, :now, :day)")


# The key's hold and its state in one statement: the state is read after the hold (its
# held_units include it), and a refusal undoes the hold with the rest of the transaction.
KEY_HOLD = ("UPDATE api_keys SET held_units = held_units + :hold "
            f"WHERE id = :key RETURNING account_id, {KEY_SELECT}")
_KEY_SETTLED = key_sql(rules.SQLITE)[1]
KEY_SETTLE = (f"UPDATE api_keys SET held_units = held_units - :hold, {_KEY_SETTLED} "
              f"WHERE id = :key RETURNING {CAPPED}")


def read_account(driver: sqlite3.Connection, account_id: int) -> AccountState | None:
    """Read the account inside the write transaction."""
    row = driver.execute(ACCOUNT, {"account": account_id}).fetchone()
    return AccountState(*row) if row else None


def _before(key: KeyState, hold: int) -> KeyState:
    """The key's state as it was before `hold` was added to it."""
    return key._replace(held_units=key.held_units - hold)


def run(driver: sqlite3.Connection, sql: str, values: dict[str, Any]) -> Any:
    """Run one statement with its values stored as SQLAlchemy stores them; the first row."""
    return driver.execute(sql, _bound(sql, values)).fetchone()


def count(driver: sqlite3.Connection, sql: str, values: dict[str, Any]) -> int:
    """Run one statement as `run` does; the number of rows it changed."""
    return driver.execute(sql, _bound(sql, values)).rowcount


def _bound(sql: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values a statement names, each as SQLAlchemy stores it.

    Only those: settling passes one dict of ~30 fields to statements that use as few as six.
    """
    bound: dict[str, Any] = {}
    try:
        for name in _names(sql):
            value = values[name]
            bound[name] = value if type(value) in _PLAIN else _stored(value)
    except KeyError:  # let the driver name the missing value, as it always has
        bound = {name: _stored(value) for name, value in values.items()}
    return bound


_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=64)
def _names(sql: str) -> tuple[str, ...]:
    """The named parameters of a statement, each once."""
    return tuple(dict.fromkeys(_PARAMETER.findall(sql)))


_PLAIN = frozenset({int, str, float, bool, type(None), bytes})  # the driver binds these as they are


def _stored(value: Any) -> Any:
    """A value as SQLAlchemy's SQLite types store it: datetimes and dates as ISO text."""
    if isinstance(value, datetime):
        # "YYYY-MM-DD HH:MM:SS.ffffff" as SQLAlchemy writes it; isoformat is 3x cheaper than
        # strftime and gives the same characters.
        return value.isoformat(" ", "microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


class SqliteStore(Common):
    """Metering on SQLite: plain SQL in short transactions under its write lock."""

    sql = rules.SQLITE

    def reserve(self, tiers: Mapping[str, Tier], now: datetime, ask: Ask) -> Reserved:
        """Read the account and hold the ask's worst case in one write transaction."""
        month = rules.month_of(now)

        def hold(driver: sqlite3.Connection) -> Reserved:
            tier, used, bound = plan(read_account(driver, ask.account_id), ask, tiers, month)
            if ask.key_id is not None:
                key = run(driver, KEY_HOLD, {"key": ask.key_id, "hold": bound.total})
                mine = key is not None and key[0] == ask.account_id
                check_key(_before(KeyState(*key[1:]), bound.total) if mine else None, now,
                          bound.total)
            run(driver, HOLD, {"account": ask.account_id, "hold": bound.total,
                               "quota": bound.free_tokens, "month": month, "used": used})
            (reservation_id,) = run(driver, NEW_RESERVATION, {
                "account": ask.account_id, "key": ask.key_id, "request": ask.request_id,
                "model": ask.model, "hold": bound.total, "quota": bound.free_tokens,
                "estimate": ask.prompt_estimate, "worker": identity(), "now": now,
                "expires": now + timedelta(seconds=ask.ttl_seconds)})
            return Reserved(reservation_id, tier, bound)

        result: Reserved = batched(self.engine, HoldOnly(hold))
        return result

    def write(self, values: dict[str, Any]) -> Written | None:
        """Claim, charge, ledger entry and usage record in one write transaction."""
        result: Written | None = batched(self.engine, lambda driver: _settle(driver, values))
        return result

    def renew(self, reservation_ids: Sequence[int], expires: datetime) -> int:
        """Move the leases of open holds in one write transaction, which need not wait for
        the disk: a power loss that takes a renewal back stops its owner too."""
        with write_transaction(self.engine, durable=False) as driver:
            return count(driver, renewal(reservation_ids), {"expires": expires})


def _settle(driver: sqlite3.Connection, values: dict[str, Any]) -> Written | None:
    """Claim, charge, ledger entry and usage record on the write transaction."""
    if count(driver, CLAIM[values["claimed"]], values) == 1:
        (balance_after,) = run(driver, SETTLE, values)
        if values["key"] is not None:
            capped = run(driver, KEY_SETTLE, values)
            if capped and capped[0]:  # spend alerts: a key without caps has none
                count(driver, outbox.SQLITE_KEY_ALERTS, values)
        if values["charge"]:  # a ledger entry is a change of balance
            run(driver, NEW_LEDGER_ENTRY, {**values, "balance": balance_after})
        run(driver, NEW_USAGE_RECORD, values)
        # alerts: balance under its threshold, free quota used up
        count(driver, outbox.SQLITE_ALERTS, values)
        return Written(balance_after, values["charge"], values["written_off_units"])
    if values["claimed"] != "settled":
        return None
    return correction.correct(lambda sql, bound: run(driver, sql, bound),
                              lambda sql, bound: count(driver, sql, bound), values,
                              outbox.SQLITE_KEY_ALERTS)
