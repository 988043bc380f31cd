"""SQLite's way to write the books without stopping a gevent worker.

SQLite has one write lock per database. A connection that finds it taken waits inside the
C library (busy_timeout), and under gevent that wait freezes every greenlet of the worker:
every stream it serves stalls while the other worker commits. Metering transactions
therefore ask for the lock with no wait (BEGIN IMMEDIATE, busy_timeout 0) and, when it is
taken, yield to the event loop and ask again: waiting costs other greenlets nothing.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

_GIVE_UP_AFTER = 30.0  # seconds, as long as any other writer would wait for the lock
_BUSY_TIMEOUT_MS = 30000  # what the rest of the app waits (see silk.database_events)


def _locked(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds SQLite's write lock from its first statement to its end."""
    deadline = time.monotonic() + _GIVE_UP_AFTER
    pause = 0.0005
    with engine.connect() as conn:
        # The lock dance talks to the driver directly: three C calls, no statement compiling.
        driver = conn.connection.driver_connection
        while True:
            driver.execute("PRAGMA busy_timeout = 0")
            try:
                driver.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:
                if not _locked(error) or time.monotonic() > deadline:
                    raise
            finally:
                driver.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            # time.sleep is gevent's under gunicorn: other greenlets run meanwhile.
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.02)
        try:
            yield conn
        except BaseException:
            conn.rollback()
            driver.rollback()  # in case the body failed before its first statement
            raise
        conn.commit()
        driver.commit()  # no-op when SQLAlchemy committed; ends a transaction it never saw
