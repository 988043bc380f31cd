"""Abuse limits without Redis: failed key checks and sign-ups per client address, counted in
the database, so that every worker and host shares them as they do through Redis
(silk.redislimits). Only these events are written, never an admitted request.
"""

from __future__ import annotations

import hashlib
import logging
import time

from sqlalchemy import BigInteger, Integer, String, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from silk.extensions import Model, db
from silk.sqlite_writes import write_begin

log = logging.getLogger("silk.limits")


class AbuseCount(Model):
    """How many events one limit counted in one window. `name` is a digest of what is
    counted (an address, which is a header's text behind a proxy, may be long), the
    window's length and its number."""

    __tablename__ = "abuse_counts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    ends_at: Mapped[int] = mapped_column(BigInteger)  # the Unix second the window ends


COUNTS = AbuseCount.__table__


class DatabaseHits:
    """The limiter's `hit` on the app's database; None when the database cannot count, and
    the worker counts in its memory then (silk.limits.MemoryLimiter.hit)."""

    def hit(self, name: str, limit: int, window_seconds: int) -> int | None:
        """Count one event in a window of any length; return the count so far."""
        bucket = int(time.time() // window_seconds)
        key = hashlib.sha256(f"{name}:{window_seconds}:{bucket}".encode()).hexdigest()
        engine = db.engine
        insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
                  )(COUNTS)
        counted = (insert.values(name=key, count=1, ends_at=(bucket + 1) * window_seconds)
                   .on_conflict_do_update(index_elements=[COUNTS.c.name],
                                          set_={"count": COUNTS.c.count + 1})
                   .returning(COUNTS.c.count))
        try:
            with write_begin(engine, durable=False) as conn:
                return int(conn.execute(counted).scalar_one())
        except SQLAlchemyError:
            log.warning("database unavailable; abuse limit counted in this worker only",
                        exc_info=True)
            return None


def expire(engine: Engine) -> int:
    """The sweep's chore: delete the counts of windows that ended; returns how many."""
    with write_begin(engine, durable=False) as conn:
        return conn.execute(delete(COUNTS).where(COUNTS.c.ends_at <= int(time.time()))
                            ).rowcount
