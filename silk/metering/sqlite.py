"""SQLite's way to write the books without stopping a gevent worker.

SQLite has one write lock per database. A connection that finds it taken waits inside the
C library (busy_timeout), and under gevent that wait freezes every greenlet of the worker:
every stream it serves stalls while the other worker commits. Metering transactions
therefore ask for the lock with no wait (BEGIN IMMEDIATE, busy_timeout 0) and, when it is
taken, yield to the event loop and ask again: waiting costs other greenlets nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

_GIVE_UP_AFTER = 30.0  # seconds, as long as any other writer would wait for the lock
_BUSY_TIMEOUT_MS = 30000  # what the rest of the app waits (see silk.database_events)


def _locked(error: OperationalError) -> bool:
    return "locked" in str(error.orig).lower() or "busy" in str(error.orig).lower()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds SQLite's write lock from its first statement to its end."""
    deadline = time.monotonic() + _GIVE_UP_AFTER
    pause = 0.0005
    with engine.connect() as conn:
        while True:
            conn.exec_driver_sql("PRAGMA busy_timeout = 0")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                break
            except OperationalError as error:
                conn.rollback()
                if not _locked(error) or time.monotonic() > deadline:
                    raise
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            # time.sleep is gevent's under gunicorn: other greenlets run meanwhile.
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.02)
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
