"""SQLite's group-committed metering: a batch shares one transaction, each request its own fate."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from silk.errors import InsufficientBalance
from silk.pricing import Usage
from tests.chat.helpers import set_quota_left
from tests.metering.test_service import _reserve, _services

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _sqlite_only(backend):
    if backend != "sqlite":
        pytest.skip("SQLite's batches; PostgreSQL has its channel (test_postgres_channel)")


def _batches(app):
    from silk.metering import sqlite

    engine, _, _ = _services(app)
    return engine, sqlite._connections.get(engine)


def test_a_failing_operation_is_undone_alone_in_its_batch(app, accounts):
    acct = accounts.make(credit="1")
    engine, connections = _batches(app)

    def add(amount):
        def op(driver):
            driver.execute("UPDATE accounts SET reserved_units = reserved_units + ? "
                           "WHERE id = ?", (amount, acct.id))
            return amount
        return op

    def fails(driver):
        driver.execute("UPDATE accounts SET reserved_units = reserved_units + 1000 "
                       "WHERE id = ?", (acct.id,))
        raise ValueError("refused")

    answers = connections._run_batch([add(5), fails, add(7)])
    assert answers[0] == 5 and answers[2] == 7
    assert isinstance(answers[1], ValueError)
    assert accounts.row(acct.id).reserved_units == 12  # the failed one's update was undone
    with engine.begin() as conn:  # leave the books as they were
        conn.exec_driver_sql("UPDATE accounts SET reserved_units = 0 WHERE id = ?", (acct.id,))
    assert accounts.audit() == []


def test_a_refusal_in_a_busy_batch_leaves_the_others_charged(app, accounts):
    acct = accounts.make(credit="0.0006")  # 600,000 units: two holds of 294,000 fit, not three
    set_quota_left(app, acct.id)
    engine, _, service = _services(app)

    def request(i):
        try:
            hold = _reserve(app, acct.id, f"r{i}")
        except InsufficientBalance:
            return None
        return service.settle(engine, hold, service.Outcome(status="ok", usage=Usage(100, 10)))

    with ThreadPoolExecutor(max_workers=8) as pool:
        settled = list(pool.map(request, range(8)))
    charged = [s for s in settled if s is not None]
    each = 100 * 140 + 10 * 280
    assert len(charged) >= 2 and all(s.charged_units == each for s in charged)
    row = accounts.row(acct.id)
    assert row.reserved_units == 0
    assert row.balance_units == 600_000 - len(charged) * each
    assert len(accounts.usage_records(acct.id)) == len(charged)
    assert accounts.audit() == []


NORMAL, FULL = 1, 2  # what PRAGMA synchronous reads


def _synchronous(driver):
    return driver.execute("PRAGMA synchronous").fetchone()[0]


def test_a_batch_that_charges_waits_for_the_disk_and_one_that_only_holds_does_not(app):
    from silk.metering.sqlite import HoldOnly as Hold

    _, connections = _batches(app)
    assert connections._run_batch([Hold(_synchronous)]) == [NORMAL]
    assert connections._run_batch([Hold(_synchronous), _synchronous]) == [FULL, FULL]
    assert connections._run_batch([_synchronous]) == [FULL]
    assert connections._run_batch([Hold(_synchronous), Hold(_synchronous)]) == [NORMAL, NORMAL]


def test_a_connection_is_set_for_the_disk_only_when_it_last_ran_the_other_kind(app):
    from silk.metering.sqlite import HoldOnly as Hold

    _, connections = _batches(app)
    traces = _trace_every_connection(connections)
    kinds = [True, True, False, False, True, False, True, True]
    for durable in kinds:
        assert connections._run_batch([_synchronous if durable else Hold(_synchronous)]) \
            == [FULL if durable else NORMAL]
    settings = [sql for trace in traces for sql in trace
                if sql.startswith("PRAGMA synchronous =")]
    # Four durable connections were idle: the first batch that only holds set one of them
    # to NORMAL, and every later batch found an idle connection of its own kind.
    assert settings == ["PRAGMA synchronous = NORMAL"]


def test_one_request_at_a_time_sets_no_connection_for_the_disk(app):
    """A lone request's hold and charge alternate kinds: from an empty pool, after its first
    hold and charge, each finds an idle connection of its own kind (two PRAGMAs a request
    when both shared the one connection)."""
    from silk.metering.sqlite import HoldOnly as Hold

    _, connections = _batches(app)
    for idle in connections.idle.values():
        while idle:
            idle.pop().close()
    connections._run_batch([Hold(_synchronous)])
    connections._run_batch([_synchronous])
    traces: list[list[str]] = []
    for idle in connections.idle.values():
        for driver in idle:
            traces.append([])
            driver.set_trace_callback(traces[-1].append)
    for _ in range(3):
        assert connections._run_batch([Hold(_synchronous)]) == [NORMAL]
        assert connections._run_batch([_synchronous]) == [FULL]
    assert [sql for trace in traces for sql in trace
            if sql.startswith("PRAGMA synchronous =")] == []
    assert sum(len(trace) for trace in traces) > 0


def _trace_every_connection(connections) -> list[list[str]]:
    """Trace the statements of every metering connection, each into its own list: the
    keeper's lease renewals may run beside a request's writes, on a connection of their own.
    Every traced connection starts idle as a durable one (synchronous FULL)."""
    for idle in connections.idle.values():
        while idle:
            idle.pop().close()
    traces: list[list[str]] = []
    for driver in [connections.take(True) for _ in range(4)]:
        traces.append([])
        driver.set_trace_callback(traces[-1].append)
        connections.give_back(driver, True)
    return traces


def _transactions(traces: list[list[str]]) -> list[tuple[str, str]]:
    """(how its commit waits, its statements) of each traced transaction: a connection's
    setting stays until a PRAGMA changes it, and each transaction starts with BEGIN."""
    transactions: list[tuple[str, str]] = []
    for statements in traces:
        mode, start = "FULL", len(transactions)
        for sql in statements:
            if sql.startswith("PRAGMA synchronous"):
                mode = sql.rsplit(" ", 1)[-1]
            elif sql.startswith("BEGIN"):
                transactions.append((mode, sql))
            elif len(transactions) > start:
                transactions[-1] = (transactions[-1][0], transactions[-1][1] + "\n" + sql)
    return transactions


def test_a_request_commits_its_hold_lazily_and_its_charge_on_disk(app, client, accounts,
                                                                   upstream):
    engine, connections = _batches(app)
    with engine.connect() as conn:  # the app's own writes (top-ups, keys) wait for the disk
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    traces = _trace_every_connection(connections)

    response = client.post("/v1/chat/completions", headers=acct.headers,
                           json={"model": "deepseek-chat", "stream": False,
                                 "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.json

    transactions = _transactions(traces)
    [hold] = [t for t in transactions if "INSERT INTO reservations" in t[1]]
    [charge] = [t for t in transactions if "INSERT INTO usage_records" in t[1]]
    assert hold[0] == "NORMAL" and "COMMIT" in hold[1]
    assert charge[0] == "FULL" and "COMMIT" in charge[1]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and record.cost_units > 0
    assert accounts.audit() == []


def _after_the_keepers_first_round(engine) -> None:
    """Wait for the keeper's first round: its thread starts with the first hold and renews
    it at once, on a connection that would otherwise come back untraced while the test sets
    its traces up."""
    import time

    from silk.metering import keeper

    deadline = time.monotonic() + 5
    while keeper.of(engine)._next_round == 0.0 and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_lease_renewal_does_not_wait_for_the_disk(app, accounts):
    from datetime import datetime

    from silk.metering import store

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    engine, connections = _batches(app)
    hold = _reserve(app, acct.id, "renewed")
    _after_the_keepers_first_round(engine)
    traces = _trace_every_connection(connections)

    expires = datetime(2030, 1, 2, 3, 4, 5)
    assert store.of(engine).renew([hold.reservation_id], expires) == 1

    [renewal] = [t for t in _transactions(traces) if "2030-01-02" in t[1]]
    assert renewal[0] == "NORMAL"
    assert "UPDATE reservations SET expires_at" in renewal[1] and "COMMIT" in renewal[1]
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT expires_at FROM reservations WHERE id = ?",
                                      (hold.reservation_id,)).scalar()
    assert str(stored).startswith("2030-01-02 03:04:05")


def test_an_in_memory_database_writes_on_the_engines_own_connection():
    from sqlalchemy import create_engine

    from silk.database_events import install_engine_events
    from silk.metering.sqlite import write_transaction

    engine = create_engine("sqlite://")  # only the engine's connection sees this database
    install_engine_events(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v INTEGER NOT NULL)")
    with write_transaction(engine) as driver:
        driver.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(Exception, match="NOT NULL"), write_transaction(engine) as driver:
        driver.execute("INSERT INTO t VALUES (2)")
        driver.execute("INSERT INTO t VALUES (NULL)")
    with engine.connect() as conn:
        assert [v for (v,) in conn.exec_driver_sql("SELECT v FROM t")] == [1]
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


# In a gevent-patched interpreter, as a gunicorn worker runs: durable write transactions
# with other requests in flight and alone, each traced on the native thread that ran its
# statements, while a ticker greenlet counts how often the loop ran during the commits.
ASIDE_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, sys
import gevent
from gevent.monkey import get_original
from sqlalchemy import create_engine
from silk import inflight
from silk.database_events import install_engine_events
from silk.metering import sqlite as metering

native = get_original("_thread", "get_ident")
engine = create_engine(f"sqlite:///{sys.argv[1]}")
install_engine_events(engine)
with engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE t (v INTEGER)")
seen = []
def run(others):
    for _ in range(others):
        inflight.started()
    try:
        with metering.write_transaction(engine, durable=True,
                                        commit_aside=inflight.others()) as driver:
            driver.set_trace_callback(lambda sql: seen.append((others, sql, native())))
            driver.execute("INSERT INTO t VALUES (?)", (others,))
        driver.set_trace_callback(None)
    finally:
        for _ in range(others):
            inflight.ended()
for others in (1, 2, 1, 3):
    run(others)
with engine.connect() as conn:
    rows = [v for (v,) in conn.exec_driver_sql("SELECT v FROM t ORDER BY rowid")]
main = native()
print(json.dumps({"rows": rows, "commits": [[others, thread != main] for others, sql, thread
                                             in seen if sql == "COMMIT"],
                  "inserts_aside": [thread != main for _, sql, thread in seen
                                    if sql.startswith("INSERT")]}))
"""


def test_a_durable_commit_runs_aside_only_while_the_worker_serves_others(tmp_path):
    """With other requests in flight, the commit (SQLite writing and flushing its log, the
    interpreter released) runs on a thread of gevent's pool, so the worker's other
    greenlets run meanwhile; a lone request commits inline, saving the trip to the thread.
    The statements before the commit always run on the worker's own thread."""
    import json
    import os
    import subprocess

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", ASIDE_SCRIPT, str(tmp_path / "a.db")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["rows"] == [1, 2, 1, 3]  # every transaction committed
    assert seen["commits"] == [[1, False], [2, True], [1, False], [3, True]]
    assert seen["inserts_aside"] == [False] * 4


def test_a_request_counts_in_flight_until_the_app_is_done_with_it(app, client, accounts,
                                                                   upstream):
    """A JSON answer is counted while the app serves it; a stream until it is closed."""
    from silk import inflight

    acct = accounts.make(credit="1")
    body = {"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}]}
    before = inflight._serving
    answer = client.post("/v1/chat/completions", headers=acct.headers,
                         json={**body, "stream": False})
    assert answer.status_code == 200 and inflight._serving == before
    stream = client.post("/v1/chat/completions", headers=acct.headers,
                         json={**body, "stream": True})
    assert stream.status_code == 200 and inflight._serving == before + 1
    stream.get_data()
    stream.close()
    assert inflight._serving == before
