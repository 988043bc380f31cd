"""A write on a request's path waits for SQLite's lock without stopping the gevent worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from silk.database_events import install_engine_events
from silk.sqlite_writes import write_begin

ROOT = Path(__file__).resolve().parents[2]

# In a gevent-patched interpreter, as a gunicorn worker runs: another connection holds the
# write lock for 0.3 s (a greenlet releases it) while a ticker greenlet counts 5 ms ticks.
# A wait inside SQLite's C library would stop both: no tick, and no release until the
# busy timeout gave up.
SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, sqlite3, sys, time
import gevent
from sqlalchemy import create_engine, text
from silk.database_events import install_engine_events
from silk.sqlite_writes import write_begin

path = sys.argv[1]
engine = create_engine(f"sqlite:///{path}")
install_engine_events(engine)
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE t (v INTEGER)"))
holder = sqlite3.connect(path, isolation_level=None)
holder.execute("BEGIN IMMEDIATE")
ticks = []
def tick():
    while True:
        gevent.sleep(0.005)
        ticks.append(time.monotonic())
def release():
    gevent.sleep(0.3)
    holder.execute("ROLLBACK")
ticker = gevent.spawn(tick)
gevent.spawn(release)
started = time.monotonic()
with write_begin(engine) as conn:
    conn.execute(text("INSERT INTO t VALUES (1)"))
waited = time.monotonic() - started
during = sum(1 for t in ticks if t < started + waited)
ticker.kill()
with engine.connect() as conn:
    rows = conn.execute(text("SELECT count(*) FROM t")).scalar()
    timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
print(json.dumps({"waited": waited, "ticks": during, "rows": rows, "busy_timeout": timeout}))
"""


def test_the_wait_for_the_lock_lets_other_greenlets_run(tmp_path):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "w.db")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0.25 <= seen["waited"] < 5  # it waited for the release, then wrote
    assert seen["ticks"] >= 10  # about 60 if the loop ran all along
    assert seen["rows"] == 1
    assert seen["busy_timeout"] == 30000  # the pool's connection got its wait back


def test_a_failed_write_rolls_back_and_leaves_the_lock_free(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'f.db'}")
    install_engine_events(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER NOT NULL)"))
    with pytest.raises(Exception, match="NOT NULL"), write_begin(engine) as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        conn.execute(text("INSERT INTO t VALUES (NULL)"))
    with write_begin(engine) as conn:  # the lock is free again
        conn.execute(text("INSERT INTO t VALUES (2)"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t")).scalars().all() == [2]


def test_a_writer_asks_for_the_lock_often_while_the_wait_is_short_and_less_after():
    """Metering transactions hold the lock for a fraction of a millisecond: the first 10 ms
    of a wait are polled every half millisecond at most; a long holder (a migration) is
    polled less and less, so a 30 s wait costs about 1,500 attempts, not 60,000."""
    from itertools import islice

    from silk.sqlite_writes import pauses

    waited, short, attempts = 0.0, [], 0
    for pause in pauses():
        if waited < 0.01:
            short.append(pause)
        waited += pause
        attempts += 1
        if waited >= 30:
            break
    assert short[0] <= 0.0001 and max(short) <= 0.0005 and len(short) >= 20
    assert attempts < 1600
    assert max(islice(pauses(), 2000)) == 0.02


def test_a_write_that_need_not_be_durable_gives_its_connection_back_durable(tmp_path):
    """`durable=False` switches the flush off for its own transaction only: the pool's
    connection commits with synchronous FULL again afterwards, a failed write included."""
    engine = create_engine(f"sqlite:///{tmp_path / 'd.db'}", pool_size=1, max_overflow=0)
    install_engine_events(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER NOT NULL)"))
    with write_begin(engine, durable=False) as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(Exception, match="NOT NULL"), write_begin(engine, durable=False) as conn:
        conn.execute(text("INSERT INTO t VALUES (NULL)"))
    with write_begin(engine) as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    with engine.connect() as conn:  # the pool's one connection
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert conn.execute(text("SELECT v FROM t")).scalars().all() == [1]


def test_a_connection_that_cannot_be_made_durable_again_is_never_reused(tmp_path, caplog):
    """The write stands; its connection, which refused to be set back to synchronous FULL,
    is closed, and the pool opens a durable one in its place."""
    import sqlite3

    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}", pool_size=1, max_overflow=0)
    install_engine_events(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))

    def no_full(action, name, value, *_):
        refused = action == sqlite3.SQLITE_PRAGMA and name == "synchronous" and value == "FULL"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    with write_begin(engine, durable=False) as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        conn.connection.driver_connection.set_authorizer(no_full)
    assert "could not be made durable again" in caplog.text
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
