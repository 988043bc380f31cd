"""SQLite's write lock taken without stopping a gevent worker.

A connection that finds the lock taken waits inside the C library (busy_timeout), and under
gevent that wait freezes every greenlet of the worker: every stream it serves stalls while
another worker commits. A write on a request's path therefore asks for the lock with no
wait (BEGIN IMMEDIATE, busy_timeout 0) and, when it is taken, yields to the event loop and
asks again. Metering does this on connections of its own (silk.metering.sqlite); other
writes on a request's path use `write_begin` on the app's pool.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from silk.database_events import SQLITE_BUSY_TIMEOUT_MS

GIVE_UP_AFTER = 30.0  # seconds, as long as any other writer would wait for the lock


def locked(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the lock."""
    message = str(error).lower()
    return "locked" in message or "busy" in message


def begin_immediate(driver: sqlite3.Connection, give_up_after: float = GIVE_UP_AFTER) -> None:
    """BEGIN IMMEDIATE, yielding to other greenlets while another writer holds the lock;
    the driver's error once `give_up_after` seconds have passed (or for any other error)."""
    deadline = time.monotonic() + give_up_after
    pause = 0.0005
    while True:
        try:
            driver.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if not locked(error) or time.monotonic() > deadline:
                raise
        # time.sleep is gevent's under gunicorn: other greenlets run meanwhile.
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 0.02)


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
def write_begin(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()` whose wait for SQLite's write lock yields to other greenlets; on
    any other database, `engine.begin()` itself."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        try:
            begin_pooled(conn)
        except sqlite3.OperationalError as error:
            raise OperationalError("write transaction", None, error) from error
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
