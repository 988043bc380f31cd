"""The money store on PostgreSQL: one statement per reserve or settle, group-committed.

On PostgreSQL every round trip and every held row lock costs. A hold is computed from a
snapshot of the account and applied by one conditional UPDATE, chained with the
reservation INSERT, that re-checks everything the hold was computed from: the tier, the
spendable balance and the free quota the request may use. A stale snapshot can therefore
only make the statement match nothing (it then returns the account as it is, to try
again), never overdraw nor mis-price. Settlement claims the reservation, charges the
account and writes the ledger entry and the usage record in one statement too.

Both also keep the request's key's budget counters (silk.metering.rules.key_covers), always
after the account's row, so that a batch, sorted by account, takes its row locks in one
order. A key with spend caps is held by a statement of its own, which locks the account's
row and then the key's and checks the caps on what the locks read (the newest versions,
never the statement's snapshot, which predates any lock wait).

Each process sends these statements over one connection of its own, through a group
commit (silk.metering.groupcommit): the statements that arrive while a batch is in flight
go together in the next transaction, sent as one query string, ordered by account so
that two processes' batches lock accounts in the same order and cannot deadlock. The
channel also keeps the last state each statement returned of an account, so a request
needs no separate read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import psycopg
from psycopg import pq
from psycopg.pq import ConnStatus, ExecStatus, TransactionStatus
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError

from silk.config import postgres_connect_args
from silk.defaults import Defaults
from silk.errors import InsufficientBalance, NotFound
from silk.metering import correction, rules
from silk.metering.groupcommit import BatchInterrupted, GroupCommit
from silk.metering.literals import Quote, literal
from silk.metering.outbox import POSTGRES_ALERTS_CTE, POSTGRES_KEY_ALERTS
from silk.metering.perprocess import PerProcess
from silk.metering.rules import POSTGRES
from silk.metering.state import COLUMNS, KEY_COLUMNS, KEY_SELECT, SELECT, AccountState, KeyState
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
    reserve_locked,
)
from silk.metering.worker import identity
from silk.pricing import Tier
from silk.sockets import readable_now, waiters

_STATE = SELECT  # an AccountState (silk.metering.state)

# The rules of silk.metering.rules over this statement's columns and parameters.
_USED = rules.used_in(POSTGRES, "quota_month", "quota_used", "%(month)s")
_COVERED = rules.covers(POSTGRES, "balance_units", "reserved_units", "%(hold)s")
_FREE = rules.free_split(POSTGRES, "CAST(%(tier_quota)s AS BIGINT)", "quota_month",
                         "quota_used", "quota_held", "%(month)s", "CAST(%(want)s AS BIGINT)")
_USED_AFTER = rules.used_after(POSTGRES, "quota_month", "quota_used", "%(month)s", "%(free)s")
_MONTH_AFTER = rules.quota_month_after(POSTGRES, "quota_month", "%(month)s")
_KEY_COVERS, _KEY_SETTLED = key_sql(POSTGRES)
_HOLD = f"""
    UPDATE accounts SET
        reserved_units = reserved_units + %(hold)s,
        quota_held = quota_held + %(quota)s,
        quota_used = {_USED},
        quota_month = {_MONTH_AFTER}
    WHERE id = %(account)s AND NOT disabled AND tier = %(tier)s
      AND {_COVERED}
      AND {_FREE} = %(quota)s"""
_MADE = """
    INSERT INTO reservations (account_id, key_id, request_id, model, hold_units, quota_tokens,
                              prompt_estimate, state, worker, created_at, expires_at)
    SELECT id, CAST(%(key)s AS INTEGER), %(request)s, %(model)s, %(hold)s, %(quota)s,
           %(estimate)s, 'open', %(worker)s, %(now)s, %(expires)s
    FROM held
    RETURNING id"""
_TEXT_KEY_COLUMNS = ("spent_day", "spent_month")
_NO_KEY = ", ".join(f"CAST(NULL AS {'VARCHAR' if name in _TEXT_KEY_COLUMNS else 'BIGINT'})"
                    for name in KEY_COLUMNS)

SNAPSHOT_SQL = f"SELECT CAST(NULL AS INTEGER), {_STATE} FROM accounts WHERE id = %(account)s"

# A key without caps: its open holds are counted (the key's row after the account's), and
# the statement holds only while the key has no cap; the last column says whether it has.
RESERVE_SQL = f"""
WITH held AS ({_HOLD}
      AND NOT EXISTS (SELECT 1 FROM api_keys WHERE id = %(key)s AND {CAPPED})
    RETURNING id, {_STATE}
), keyed AS (
    UPDATE api_keys SET held_units = held_units + %(hold)s
    WHERE id = %(key)s AND EXISTS (SELECT 1 FROM held)
), made AS ({_MADE}
)
SELECT made.id, {_STATE}, FALSE FROM held, made
UNION ALL
SELECT NULL, {_STATE}, EXISTS (SELECT 1 FROM api_keys WHERE id = %(key)s AND {CAPPED})
FROM accounts
WHERE id = %(account)s AND NOT EXISTS (SELECT 1 FROM held)
"""

# A key with caps: the account's row, then the key's, are locked and read as they are now
# (a lock wait's newest version, not the statement's snapshot), and the hold must fit both
# the balance and the key's caps. When it does not, the account and the key as read under
# the locks come back: a refusal is decided on them.
RESERVE_CAPPED_SQL = f"""
WITH acct AS (
    SELECT id, {_STATE} FROM accounts WHERE id = %(account)s FOR UPDATE
), k AS (
    SELECT id, {KEY_SELECT} FROM api_keys
    WHERE id = %(key)s AND account_id = %(account)s AND EXISTS (SELECT 1 FROM acct)
    FOR UPDATE
), held AS ({_HOLD}
      AND EXISTS (SELECT 1 FROM k WHERE {_KEY_COVERS})
    RETURNING id, {_STATE}
), keyed AS (
    UPDATE api_keys SET held_units = held_units + %(hold)s
    WHERE id IN (SELECT id FROM k) AND EXISTS (SELECT 1 FROM held)
), made AS ({_MADE}
)
SELECT made.id, {_STATE}, {_NO_KEY} FROM held, made
UNION ALL
SELECT NULL, {", ".join("acct." + name for name in COLUMNS)},
       {", ".join("k." + name for name in KEY_COLUMNS)}
FROM acct LEFT JOIN k ON TRUE
WHERE NOT EXISTS (SELECT 1 FROM held)
"""


def settle_sql(claimed: str) -> str:
    """The settlement in one statement, its hold claimed as `claimed` (store.claim_sql)."""
    return f"""
WITH claimed AS ({claim_sql(POSTGRES, claimed)}
    RETURNING account_id, key_id
), charged AS (
    UPDATE accounts SET
        reserved_units = reserved_units - %(hold)s,
        quota_held = quota_held - %(quota)s,
        balance_units = balance_units - %(charge)s,
        quota_used = {_USED_AFTER},
        quota_month = {_MONTH_AFTER}
    WHERE id IN (SELECT account_id FROM claimed)
    RETURNING id, {_STATE}, alert_balance_units
), keyed AS (
    UPDATE api_keys SET held_units = held_units - %(hold)s, {_KEY_SETTLED}
    WHERE id IN (SELECT key_id FROM claimed) AND EXISTS (SELECT 1 FROM charged)
    RETURNING id, account_id, {KEY_SELECT}
), entry AS (
    INSERT INTO ledger_entries (account_id, kind, amount_units, balance_after_units,
                                request_id, note, actor, created_at)
    SELECT id, 'charge', -CAST(%(charge)s AS BIGINT), balance_units, %(request)s,
           %(model)s, 'gateway', %(now)s
    FROM charged WHERE CAST(%(charge)s AS BIGINT) > 0
), recorded AS (
    INSERT INTO usage_records (
        request_id, account_id, key_id, model, upstream_model, provider, stream, route,
        surface,
        status, http_status, prompt_tokens, completion_tokens, reasoning_tokens, cache_hit_tokens,
        total_tokens, free_tokens, subtotal_units, discount_units, cost_units,
        written_off_units, upstream_cost_units, estimated, latency_ms, ttft_ms, created_at,
        day)
    SELECT %(request)s, id, CAST(%(key)s AS INTEGER), %(model)s, %(upstream_model)s,
           %(provider)s, %(stream)s, %(route)s, %(surface)s, %(status)s, %(http_status)s,
           %(prompt_tokens)s, %(completion_tokens)s, %(reasoning_tokens)s, %(cache_hit_tokens)s,
           %(total_tokens)s, %(free_tokens)s, %(subtotal_units)s, %(discount_units)s,
           %(charge)s, %(written_off_units)s, %(upstream_cost_units)s, %(estimated)s,
           CAST(%(latency_ms)s AS INTEGER), CAST(%(ttft_ms)s AS INTEGER), %(now)s, %(day)s
    FROM charged
), -- alerts: balance under its threshold, free quota used up, a key's spend at a share
  -- of a cap (silk.metering.outbox)
{POSTGRES_ALERTS_CTE}
SELECT balance_units, {_STATE} FROM charged
"""


SETTLE_SQL = settle_sql("settled")

# Every parameter's type, declared once in PREPARE: values arrive as quoted literals.
_TYPES = {
    "account": "integer", "reservation": "integer", "key": "integer", "estimate": "integer",
    "http_status": "integer", "latency_ms": "integer", "ttft_ms": "integer",
    "hold": "bigint", "quota": "bigint", "tier_quota": "bigint", "want": "bigint",
    "charge": "bigint", "free": "bigint", "alert_floor": "bigint", "prompt_tokens": "bigint",
    "completion_tokens": "bigint", "reasoning_tokens": "bigint", "cache_hit_tokens": "bigint",
    "total_tokens": "bigint", "free_tokens": "bigint", "subtotal_units": "bigint",
    "discount_units": "bigint", "written_off_units": "bigint", "upstream_cost_units": "bigint",
    "month": "varchar", "tier": "varchar", "request": "varchar", "model": "varchar",
    "worker": "varchar", "upstream_model": "varchar", "provider": "varchar",
    "status": "varchar", "surface": "varchar", "route": "varchar", "claimed": "varchar",
    "budget_day": "varchar", "budget_month": "varchar",
    "stream": "boolean", "estimated": "boolean",
    "now": "timestamp", "expires": "timestamp", "day": "date",
}
_PARAM = re.compile(r"%\((\w+)\)s")


class Statement:
    """A metering statement, prepared once per connection and run as EXECUTE name(values).

    EXECUTE keeps the server's plan (a CTE planned afresh per call cost the database more
    than it saved) while the values travel as literals in one query string with the rest
    of the batch.
    """

    def __init__(self, name: str, sql: str, *, durable: bool = True) -> None:
        """`durable=False`: a batch of only such statements commits asynchronously."""
        self.name = name
        self.durable = durable
        self.order = list(dict.fromkeys(_PARAM.findall(sql)))
        numbered = _PARAM.sub(lambda m: f"${self.order.index(m.group(1)) + 1}", sql)
        types = ", ".join(_TYPES[param] for param in self.order)
        self.prepare = f"PREPARE {name} ({types}) AS {numbered}"
        self.execute_head = f"EXECUTE {name} ("

    def bind(self, params: dict[str, Any], quote: Quote) -> str:
        """EXECUTE with the parameters as literals, in the order PREPARE declared them; an
        untyped literal takes the type PREPARE declared for its place."""
        return self.execute_head + ", ".join([literal(params[param], quote)
                                              for param in self.order]) + ")"


SNAPSHOT = Statement("silk_snapshot", SNAPSHOT_SQL, durable=False)  # a read
# A hold commits without waiting for its WAL flush: only a crash of the database server
# itself can lose one, together with every reservation of the last instants, and a lost
# hold loses its reserved amount with it, so the books still balance. What it costs is
# that a request in flight at that crash goes unbilled. Charges always wait for the flush
# (which also makes every hold before them durable): a client is answered only after
# its charge is on disk.
RESERVE = Statement("silk_reserve", RESERVE_SQL, durable=False)
RESERVE_CAPPED = Statement("silk_reserve_capped", RESERVE_CAPPED_SQL, durable=False)
SETTLE = Statement("silk_settle", SETTLE_SQL)
SETTLE_SWEPT = Statement("silk_settle_swept", settle_sql("swept"))  # the sweep's estimate


# A batch commits without waiting for the disk, so the rows it locked are free at once. A
# batch with a charge then runs one more transaction in the same exchange: it writes one
# WAL record (a logical message, which locks nothing and which only logical decoding
# reads), so its commit waits for the WAL flush up to its own commit record, after the
# batch's. The answer, the message's position in the WAL, comes back once the charges are
# on disk. (A transaction that writes no WAL, such as txid_current() alone, commits without
# waiting.) Waiting inside the batch's own commit kept the accounts' rows locked through the
# flush, and the workers' batches took turns at it. A session that may not call the
# function (an operator can revoke it) commits a charging batch itself with the wait.
_ASYNC_BEGIN = "BEGIN;SET LOCAL synchronous_commit TO OFF;"
_COMMIT_THEN_FLUSH = ";COMMIT;SELECT pg_logical_emit_message(true, 'silk', 'flush')"
_FLUSH_FUNCTION = "pg_catalog.pg_logical_emit_message(boolean, text, text)"
_END_OF_STATE = 1 + len(COLUMNS)
LOCK_TIMEOUT = 5.0  # seconds a batch waits for a row lock held outside the gateway's metering


def _session_settings() -> str:
    """The channel's session settings, set once per connection.

    A batch carries every account's requests: a lock some other session keeps on one
    account's row must not stall them all for longer than LOCK_TIMEOUT. And the flush after
    a charge only waits for the disk if the session's commits do: a server (or role, or
    database) configured with synchronous_commit = off would answer clients before their
    charges are on disk, so the channel turns it back on; any other setting (local, or
    remote_apply for a synchronous standby) already waits at least for the local disk and
    stays as the operator chose it. Its answer: whether the session may call the function
    that flushes after a batch's commit (_COMMIT_THEN_FLUSH).
    """
    return (f"SET lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms';"
            "SELECT set_config('synchronous_commit', 'on', false) "
            "WHERE current_setting('synchronous_commit') = 'off';"
            f"SELECT coalesce(has_function_privilege(to_regprocedure('{_FLUSH_FUNCTION}'), "
            "'EXECUTE'), false)")


# Within an account: release holds before taking new ones, so a batch never refuses a
# request for money that the same commit frees.
SETTLING, READING, RESERVING = 0, 1, 2


class Queued(NamedTuple):
    """One statement for the group commit, and the account whose row it locks."""

    account: int
    rank: int
    statement: Statement
    params: dict[str, Any]


class StatementResult(NamedTuple):
    """A statement's first column (reservation id, balance after, or None), the account, and
    any columns after the account's (what a reservation says of its key)."""

    value: Any
    state: AccountState
    extra: tuple[Any, ...] = ()


class DatabaseStalled(psycopg.OperationalError):
    """The server sent no answer in time: the session's state is unknown, so it is closed."""


def _exchange(pgconn: pq.abc.PGconn, query: bytes,
              timeout: float | None = None) -> list[tuple[Any, ...] | None]:
    """Run a query string through libpq; the first row of each statement that returns rows.

    psycopg's cursor, its generators and its waiting cost three times the CPU of the
    exchange itself, and twice the wall time under gevent: a batch needs one send, one
    wait for the socket and the rows of a few known columns. The whole exchange must end
    within `timeout` seconds, or DatabaseStalled: a server that accepts bytes but never
    answers must not hold every request of the process.
    """
    wait_read, wait_write = waiters(urgent=True)  # every request waits on this channel
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float | None:
        return None if deadline is None else max(deadline - time.monotonic(), 0.0)

    pgconn.send_query(query)
    try:
        while pgconn.flush():
            wait_write(pgconn.socket, left())
        rows = _results(pgconn, wait_read, left)
    except TimeoutError:
        raise DatabaseStalled(f"the database sent no answer within {timeout:g} s") from None
    if pgconn.status != ConnStatus.OK:
        raise psycopg.OperationalError("the connection to the database was lost")
    return rows


def _results(pgconn: pq.abc.PGconn, wait_read: Callable[..., None],
             left: Callable[[], float | None]) -> list[tuple[Any, ...] | None]:
    """Read every result of the query sent; raise the first statement error."""
    rows: list[tuple[Any, ...] | None] = []
    error: psycopg.Error | None = None
    while True:
        while pgconn.is_busy():
            wait_read(pgconn.socket, left())
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        status = result.status
        if status == ExecStatus.TUPLES_OK:
            rows.append(_first_row(result) if result.ntuples else None)
        elif status != ExecStatus.COMMAND_OK and error is None:
            error = psycopg.errors.error_from_result(result)
    if error is not None:
        raise error
    return rows


def _first_row(result: pq.abc.PGresult) -> tuple[Any, ...]:
    """A result's first row, from libpq's text: integers, text and booleans are all it has."""
    return tuple(_parse(result.ftype(column), result.get_value(0, column))
                 for column in range(result.nfields))


_INTEGERS = frozenset({20, 21, 23})  # int8, int2, int4
_BOOL = 16


def _parse(oid: int, value: bytes | None) -> Any:
    if value is None:
        return None
    if oid in _INTEGERS:
        return int(value)
    if oid == _BOOL:
        return value == b"t"
    return value.decode()


def _readable(conn: psycopg.Connection) -> bool:
    """True if an idle connection has something to read: the server ended the session."""
    return readable_now(conn.fileno())


def _wrap(op: Queued | None, error: Exception) -> StatementError:
    """SQLAlchemy's form of a driver error, which the app's error handlers understand."""
    if isinstance(error, psycopg.Error):
        return DBAPIError.instance(op.statement.name if op else "metering",
                                   op.params if op else None, error, psycopg.Error,
                                   hide_parameters=True)
    return OperationalError("metering", None, error)


class Channel:
    """One process's metering connection, its group commit and the accounts it last saw."""

    MAX_SNAPSHOTS = 10_000

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The engine's own URL, not the app's setting: its libpq options (a search_path,
        # say) are the engine's, and a channel may be made outside the app's context.
        self._settings = {**_settings(), "SQLALCHEMY_DATABASE_URI": engine.url}
        self._conn: psycopg.Connection | None = None
        self._quote: Quote | None = None  # psycopg's quoting for _conn, where literal() defers
        self._prepared: set[Statement] = set()  # prepared on _conn
        self._commit: GroupCommit[Queued] = GroupCommit(self._run)
        self.snapshots: dict[int, AccountState] = {}
        self.flushed_to: str | None = None  # the WAL on disk up to here after the last charge
        self.flush_after_commit = True  # whether the session may flush with a logical message

    def run(self, op: Queued) -> StatementResult | None:
        """Run one statement in the next batch; None when it matched no row."""
        try:
            answer: StatementResult | None = self._commit.submit(op)
        except BatchInterrupted as exc:
            raise OperationalError("metering batch", None, exc) from exc
        return answer

    def close(self) -> None:
        """Close the connection (the engine was disposed)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> psycopg.Connection:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken or _readable(conn)):
            self.close()
            conn = None
        if conn is None:
            # Opened directly, not from the engine's pool: a pooled connection's liveness
            # check could wait on a stalled server without end; connect_timeout bounds this.
            cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
            conn = psycopg.connect(*cargs, **{**cparams, **postgres_connect_args(
                self._settings)}, autocommit=True)
            try:
                answers = _exchange(conn.pgconn, _session_settings().encode(),
                                    self._answer_timeout())
            except BaseException:
                conn.close()
                raise
            self.flush_after_commit = bool(answers[-1] and answers[-1][0])
            binder = psycopg.ClientCursor(conn)
            self._quote = lambda value: binder.mogrify("%s", (value,))
            self._prepared = set()
            self._conn = conn
        return conn

    def _run(self, ops: Sequence[Queued]) -> list[StatementResult | None | Exception]:
        """The group commit's batch: one transaction, accounts in ascending order."""
        order = sorted(range(len(ops)), key=lambda i: (ops[i].account, ops[i].rank))
        sorted_ops = [ops[i] for i in order]
        try:
            conn = self._connection()
        except Exception as exc:  # noqa: BLE001 - no connection: every op hears why
            return [_wrap(None, exc)] * len(ops)
        try:
            rows = self._rows(conn, sorted_ops)
        except BaseException:  # killed mid-batch: the session's state is unknown
            self.close()
            raise
        answers: list[StatementResult | None | Exception] = [None] * len(ops)
        for position, index in enumerate(order):
            row = rows[position]
            if isinstance(row, Exception) or row is None:
                answers[index] = row
                continue
            state = AccountState(*row[1:_END_OF_STATE])
            self.remember(ops[index].account, state)
            answers[index] = StatementResult(row[0], state, row[_END_OF_STATE:])
        return answers

    def _rows(self, conn: psycopg.Connection, ops: list[Queued]) -> list[Any]:
        """Each op's row (or error): the batch at once, or each alone if one statement failed."""
        try:
            return self._execute(conn, ops)
        except psycopg.Error as exc:
            if conn.broken or conn.closed:  # the connection failed: nothing more to try
                self.close()
                return [_wrap(op, exc) for op in ops]
        # One statement failed and the transaction rolled back: run each alone, so only the
        # culprit fails.
        return [self._alone(conn, op) for op in ops]

    def remember(self, account: int, state: AccountState) -> None:
        """Keep an account's last known state (bounded: forget all when full)."""
        if len(self.snapshots) >= self.MAX_SNAPSHOTS:
            self.snapshots.clear()
        self.snapshots[account] = state

    def _execute(self, conn: psycopg.Connection, ops: list[Queued]) -> list[Any]:
        """Send the batch as one query string: one write, one wait, and a charging batch's
        flush after its commit (see _COMMIT_THEN_FLUSH).

        Values are bound on the client as literals (silk.metering.literals; psycopg
        quotes what has no plain form) into EXECUTEs of prepared statements: a pipeline of
        protocol-level prepared statements waited on the socket once per statement, at
        four times the CPU of the whole batch.
        """
        timeout = self._answer_timeout()
        for statement in {op.statement for op in ops} - self._prepared:
            self._send(conn, statement.prepare, timeout)
            self._prepared.add(statement)
        quote = self._quote
        assert quote is not None  # made with the connection
        statements = [op.statement.bind(op.params, quote) for op in ops]
        durable = any(op.statement.durable for op in ops)
        flushed = durable and self.flush_after_commit
        if durable and not flushed:  # the commit waits, with the batch's rows locked
            query = "BEGIN;" + ";".join(statements) + ";COMMIT"
        else:
            query = _ASYNC_BEGIN + ";".join(statements) + (_COMMIT_THEN_FLUSH if flushed
                                                           else ";COMMIT")
        try:
            rows = self._send(conn, query, timeout)
        except psycopg.Error:
            if conn.pgconn.status == ConnStatus.OK and (
                    conn.pgconn.transaction_status != TransactionStatus.IDLE):
                self._send(conn, "ROLLBACK", timeout)  # a statement failed: nothing committed
            elif durable:
                # The commit or the flush after it failed: whether the batch is on disk is
                # unknown, as when a connection drops at commit; nothing may run it again.
                self.close()
            raise
        if flushed:
            (self.flushed_to,) = rows.pop()
        return rows

    def _send(self, conn: psycopg.Connection, query: str,
              timeout: float | None) -> list[Any]:
        """One exchange on the channel's connection; a stalled one is closed at once."""
        try:
            return _exchange(conn.pgconn, query.encode(conn.info.encoding), timeout)
        except DatabaseStalled:
            self.close()
            raise

    def _answer_timeout(self) -> float | None:
        """Seconds the server may take to answer one exchange (None: no limit)."""
        seconds = float(self._settings["SILK_DB_STATEMENT_TIMEOUT"])
        return seconds if seconds > 0 else None

    def _alone(self, conn: psycopg.Connection, op: Queued) -> Any:
        try:
            return self._execute(conn, [op])[0]
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                self.close()
            return _wrap(op, exc)


def _settings() -> dict[str, Any]:
    """The database timeouts of the running app (its defaults outside one)."""
    from flask import current_app, has_app_context

    config = current_app.config if has_app_context() else {}
    names = ("SILK_DB_CONNECT_TIMEOUT", "SILK_DB_STATEMENT_TIMEOUT")
    return {name: config.get(name, getattr(Defaults, name)) for name in names}


_channels: PerProcess[Channel] = PerProcess(Channel, Channel.close)


def channel(engine: Engine) -> Channel:
    """This process's channel for `engine` (a forked worker makes its own)."""
    return _channels.get(engine)


_RESERVE_ATTEMPTS = 3  # optimistic statements before taking the row lock


class PostgresStore(Common):
    """Metering on PostgreSQL: this process's channel, the row lock when optimism loses."""

    sql = POSTGRES

    def reserve(self, tiers: Mapping[str, Tier], now: datetime, ask: Ask) -> Reserved:
        """One conditional statement; under the row lock if the account kept changing."""
        return (self._reserve_optimistic(tiers, now, ask)
                or reserve_locked(self.engine, tiers, now, ask))

    def _reserve_optimistic(self, tiers: Mapping[str, Tier], now: datetime,
                            ask: Ask) -> Reserved | None:
        """Reserve with one conditional statement, group-committed.

        The hold is computed from the account's last known state; the statement checks that
        state still holds, or returns the current one to compute again. A refusal (402,
        404) is only ever decided on a state just read. None when the account changed under
        every try (many requests racing for the last of its money or free quota).
        """
        month = rules.month_of(now)
        line = channel(self.engine)
        state, fresh = line.snapshots.get(ask.account_id), False
        capped = ask.key_capped and ask.key_id is not None
        tries = 0
        while tries < _RESERVE_ATTEMPTS:
            if state is None:
                answer = line.run(Queued(ask.account_id, READING, SNAPSHOT,
                                     {"account": ask.account_id}))
                state, fresh = (answer.state if answer else None), True
            try:
                tier, _, bound = plan(state, ask, tiers, month)
            except (NotFound, InsufficientBalance):
                if fresh:
                    raise
                state = None  # what was remembered may be out of date: read before refusing
                continue
            assert state is not None  # plan refused a missing account
            tries += 1
            answer = line.run(Queued(ask.account_id, RESERVING,
                                     RESERVE_CAPPED if capped else RESERVE, {
                "account": ask.account_id, "hold": bound.total, "quota": bound.free_tokens,
                "tier": state.tier, "tier_quota": tier.monthly_free_tokens, "month": month,
                "budget_day": rules.day_of(now),
                "want": ask.want, "key": ask.key_id, "request": ask.request_id,
                "model": ask.model, "estimate": ask.prompt_estimate, "worker": identity(),
                "now": now, "expires": now + timedelta(seconds=ask.ttl_seconds)}))
            if answer is None:
                raise NotFound("Account not found.")
            if answer.value is not None:
                return Reserved(answer.value, tier, bound)
            state, fresh = answer.state, True  # it changed since: compute again from this
            if not capped:
                capped = bool(answer.extra[0])  # the key has caps: hold under its row lock
            elif answer.extra[0] is not None:
                # Read under both locks: refuse on these if the key's caps are what failed.
                self._refuse_on(tiers, month, now, ask, state, KeyState(*answer.extra))
        return None

    @staticmethod
    def _refuse_on(tiers: Mapping[str, Tier], month: str, now: datetime, ask: Ask,
                   state: AccountState, key: KeyState) -> None:
        """Raise the 402 the account or the key, as just read under their locks, calls for."""
        _, _, bound = plan(state, ask, tiers, month)
        check_key(key, now, bound.total)

    def write(self, values: dict[str, Any]) -> Written | None:
        """The settlement statement, group-committed; a swept hold is corrected apart."""
        settle = SETTLE if values["claimed"] == "settled" else SETTLE_SWEPT
        answer = channel(self.engine).run(Queued(values["account"], SETTLING, settle, values))
        if answer is not None:
            return Written(answer.value, values["charge"], values["written_off_units"])
        if values["claimed"] != "settled":
            return None
        # Rare: in a transaction of its own, where the rows stay locked until it commits.
        with self.engine.begin() as conn:
            return correction.correct(lambda sql, bound: _first(conn, sql, bound),
                                      lambda sql, bound: _rowcount(conn, sql, bound), values,
                                      POSTGRES_KEY_ALERTS)


def _first(conn: Connection, sql: str, values: dict[str, Any]) -> Any:
    result = conn.execute(text(sql), values)
    return result.first() if result.returns_rows else None


def _rowcount(conn: Connection, sql: str, values: dict[str, Any]) -> int:
    return conn.execute(text(sql), values).rowcount
