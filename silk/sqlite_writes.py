"""SQLite's write lock taken without stopping a gevent worker.

A connection that finds the lock taken waits inside the C library (busy_timeout), and under
gevent that wait freezes every greenlet of the worker: every stream it serves stalls while
another worker commits. A write on a request's path therefore asks for the lock with no
wait (BEGIN IMMEDIATE, busy_timeout 0) and, when it is taken, yields to the event loop and
asks again. Metering does this on connections of its own (silk.metering.sqlite); other
writes on a request's path use `write_begin` on the app's pool, which also lets a write
that is not money commit without waiting for the disk.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from silk.database_events import SQLITE_BUSY_TIMEOUT_MS

log = logging.getLogger("silk.sqlite")
GIVE_UP_AFTER = 30.0  # seconds, as long as any other writer would wait for the lock


def locked(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the lock."""
    message = str(error).lower()
    return "locked" in message or "busy" in message


# A metering transaction holds the lock for 0.1 to 0.4 ms. A writer that finds it taken asks
# again soon: the other worker has operations queued and takes the lock back as soon as it
# can, so a writer pausing for milliseconds would lose its turn again and again while its
# own requests wait and its worker idles. Pauses grow past half a millisecond only once the
# wait has outlasted many such transactions: a migration or a backup holds the lock longer.
_FIRST_PAUSE = 0.0001  # seconds
_SHORT_PAUSE = 0.0005  # the longest pause while the wait is short
_SHORT_WAIT = 0.01  # seconds of pauses that count as a short wait
_LONG_PAUSE = 0.02  # the longest pause after that


def pauses() -> Iterator[float]:
    """The pauses between attempts at the lock, before jitter: short at first, then longer."""
    pause, waited = _FIRST_PAUSE, 0.0
    while True:
        yield pause
        waited += pause
        pause = (min(pause * 1.25, _SHORT_PAUSE) if waited < _SHORT_WAIT
                 else min(pause * 2, _LONG_PAUSE))


def begin_immediate(driver: sqlite3.Connection, give_up_after: float = GIVE_UP_AFTER) -> None:
    """BEGIN IMMEDIATE, yielding to other greenlets while another writer holds the lock;
    the driver's error once `give_up_after` seconds have passed (or for any other error)."""
    deadline = time.monotonic() + give_up_after
    for pause in pauses():
        try:
            driver.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if not locked(error) or time.monotonic() > deadline:
                raise
        # time.sleep is gevent's under gunicorn: other greenlets run meanwhile. The jitter
        # keeps two waiting writers from asking in step.
        time.sleep(pause * random.uniform(0.5, 1.5))


def begin_pooled(conn: Connection, give_up_after: float = GIVE_UP_AFTER) -> sqlite3.Connection:
    """BEGIN IMMEDIATE on a connection of the engine's pool, whose busy wait is switched
    off meanwhile; its driver connection (the caller commits)."""
    driver = cast(sqlite3.Connection, conn.connection.driver_connection)
    driver.execute("PRAGMA busy_timeout = 0")
    try:
        begin_immediate(driver, give_up_after)
    finally:
        driver.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    return driver


@contextmanager
def write_begin(engine: Engine, *, durable: bool = True) -> Iterator[Connection]:
    """`engine.begin()` whose wait for SQLite's write lock yields to other greenlets; on
    any other database, `engine.begin()` itself. The body runs in that one transaction
    and does not commit it.

    With `durable` false the commit does not wait for the disk (SQLite's synchronous NORMAL,
    PostgreSQL's synchronous_commit off): it survives a crash of the process at once, and
    a power loss from the next durable commit on, since logs are flushed in order. That is
    for what is not money: a stored response, a key's last use.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            if not durable:
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            yield conn
        return
    with engine.connect() as conn:
        driver = cast(sqlite3.Connection, conn.connection.driver_connection)
        try:
            try:
                if not durable:
                    driver.execute("PRAGMA synchronous = NORMAL")
                begin_pooled(conn)
            except sqlite3.OperationalError as error:
                raise OperationalError("write transaction", None, error) from error
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        finally:
            if not durable:
                _back_to_full(conn, driver)


def _back_to_full(conn: Connection, driver: sqlite3.Connection) -> None:
    """Give the pool its connection back as every other writer expects it, committing
    durably (database_events). One that cannot be set so is closed, never reused; the
    transaction's own outcome (committed, or its error) stands."""
    try:
        driver.execute("PRAGMA synchronous = FULL")
    except BaseException as error:
        conn.invalidate()
        if not isinstance(error, Exception):
            raise
        log.warning("a connection could not be made durable again and was closed",
                    extra={"fields": {"error": type(error).__name__}})
