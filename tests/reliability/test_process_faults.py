"""Faults below the HTTP layer: the database restarting mid-load, a worker killed mid-stream.

A request that cannot be served must get a clean 503, nothing may be half-written, pooled
connections must recover on their own, and a hold left by a dead worker must be found and
settled by the sweep, automatically or by the operator's command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from silk.database import system_utcnow
from tests.chat.helpers import set_quota_left
from tests.reliability.helpers import (
    assert_audit_cli_green,
    assert_money_exact,
    block_database,
    body,
    call,
    cli,
    errors_logged,
    open_reservations,
    raw_request,
    stream_ok,
    wait_until,
)
from tests.support import databases
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def database_url(pg_url):
    """Restarts and cross-process sweeps are PostgreSQL questions."""
    return pg_url


def _pg_ctl(action: str, *options: str, check: bool = True) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *options, version, "main",
                    action], check=check, capture_output=True, timeout=120)


def _postgres_answers(url: str) -> bool:
    engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1
    except Exception:  # noqa: BLE001 - not up yet
        return False
    finally:
        engine.dispose()


def _bring_back(database_url: str, cluster: bool, deadline: float = 180.0) -> None:
    """Keep starting PostgreSQL until it answers: a slow shutdown must not leave it down."""
    give_up = time.monotonic() + deadline
    while not _postgres_answers(database_url):
        if time.monotonic() > give_up:
            raise AssertionError("PostgreSQL did not come back; start it by hand")
        if cluster:
            _pg_ctl("start", check=False)
        time.sleep(1)


@pytest.fixture
def restartable_postgres(database_url):
    """A context manager that takes the database away while it is open.

    By default the outage is this test's database alone, so a shared server (a developer
    machine, CI running suites side by side) is not disturbed: the server terminates
    every session, exactly as a shutdown does, and refuses new ones until the "restart"
    ends. SILK_TEST_RESTART_POSTGRES=1 restarts the whole local cluster instead (an
    immediate shutdown: a crash and recovery, the harshest restart). Either way the
    database answers again when the test ends, pass or fail.
    """
    admin_url = databases.PG_ADMIN_URL
    name = make_url(database_url).database
    cluster = bool(os.environ.get("SILK_TEST_RESTART_POSTGRES"))
    if cluster and not (shutil.which("pg_ctlcluster") and os.path.isdir("/etc/postgresql")):
        pytest.skip("SILK_TEST_RESTART_POSTGRES needs a local cluster run by pg_ctlcluster")

    @contextlib.contextmanager
    def outage():
        if cluster:
            try:
                _pg_ctl("stop", "--mode", "immediate")
                yield "cluster restarted"
            finally:
                _bring_back(database_url, cluster=True)
            return
        try:
            block_database(admin_url, name, allow=False)
            yield "database sessions terminated and refused"
        finally:
            block_database(admin_url, name, allow=True)

    try:
        yield outage
    finally:
        if not cluster:
            block_database(admin_url, name, allow=True)
        _bring_back(database_url, cluster)


def test_database_restart_mid_load(app, accounts, upstream, gateway_env, database_url,
                                   restartable_postgres, tmp_path):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    with Gateway(database_url, gateway_env, workers=2,
                 log_path=tmp_path / "gunicorn.log") as gateway:

        def load(worker: int):
            i = 0
            while not stop.is_set():
                i += 1
                stream = (worker + i) % 2 == 0
                began = time.monotonic()
                status, answer = call(gateway.url, acct.key,
                                      body(f"load {worker} {i}", "pieces=6 chunk_delay=0.02",
                                           stream=stream), timeout=30)
                answers.append((began, status, answer))

        threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        with restartable_postgres() as how:
            time.sleep(0.3)
            # Requests that need the database while it is away get a clean, retryable 503;
            # those already streaming finish, and settle once the database is back.
            during = [call(gateway.url, acct.key, body("during", stream=i % 2 == 0))
                      for i in range(4)]
            during.append((requests.get(gateway.url + "/v1/balance", timeout=10,
                                        headers=acct.headers).status_code, ""))
            not_ready = requests.get(gateway.url + "/readyz", timeout=10).status_code
            time.sleep(1.0)
        restarted = time.monotonic()
        # Requests begun 2 s after it find the pools recovered: wait for a few of them to
        # end, however long each takes on a loaded machine, rather than a fixed time.
        wait_until(lambda: sum(began > restarted + 2.0 for began, _, _ in list(answers)) >= 6,
                   timeout=60)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        ready = requests.get(gateway.url + "/readyz", timeout=5)

    assert [status for status, _ in during] == [503] * 5, during
    for _, answer in during[:4]:
        error = json.loads(answer)["error"]
        assert error["code"] == "database_unavailable" and error["type"] == "api_error"
    assert not_ready == 503
    statuses = Counter(status for _, status, _ in answers)
    print(f"load through a database outage ({how}): {dict(statuses)}")
    assert set(statuses) <= {200, 503}, statuses  # no 500, no dropped connection
    for _, status, answer in answers:
        if status == 503:
            error = json.loads(answer)["error"]
            assert error["code"] == "database_unavailable" and error["type"] == "api_error"
        elif answer.startswith("data:"):
            assert stream_ok(answer), answer[-300:]
    late = [status for began, status, _ in answers if began > restarted + 2.0]
    assert late and set(late) == {200}  # pooled connections recovered by themselves
    assert ready.status_code == 200
    # Settlements that met the outage were retried: nothing is left open or half-written.
    wait_until(lambda: not open_reservations(app), timeout=20)
    records = assert_money_exact(accounts, acct.id, "1")
    assert len(records) == statuses[200]  # the 503s left nothing behind
    assert {r.status for r in records} == {"ok"}
    assert_audit_cli_green(gateway.env)
    assert errors_logged(gateway) == []  # outages are warnings, answered with 503s


def _kill_the_streaming_worker(app, gateway, acct) -> int:
    """Start a long stream, SIGKILL the workers (the one serving it among them); return
    the reservation. A hold names its worker by a random id, not a PID."""
    payload = json.dumps(body("long", "pieces=400 chunk_delay=0.02")).encode()
    sock = raw_request(gateway.url, acct.key, payload)
    received = b""
    while received.count(b"data: ") < 5:
        data = sock.recv(65536)
        assert data
        received += data
    [hold] = open_reservations(app)
    for pid in gateway.worker_pids():
        os.kill(pid, signal.SIGKILL)
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass  # the stream ends without [DONE] when its worker dies
    except OSError:
        pass
    sock.close()
    return hold.id


def _check_swept(app, accounts, acct, gateway):
    assert open_reservations(app) == []
    [record] = accounts.usage_records(acct.id)
    # Nobody can show what the dead worker delivered: the prompt alone is billed, estimated.
    assert record.status == "swept" and record.estimated and record.completion_tokens == 0
    assert record.cost_units > 0
    assert_money_exact(accounts, acct.id, "1")
    status, answer = call(gateway.url, acct.key, body("after the kill"))
    assert status == 200 and stream_ok(answer)  # gunicorn replaced the worker
    assert_audit_cli_green(gateway.env)
    assert errors_logged(gateway, "was sent SIGKILL") == []


def test_killed_worker_hold_is_swept_automatically(app, accounts, upstream, gateway_env,
                                                   database_url, tmp_path):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    env = {**gateway_env, "SILK_SWEEP_INTERVAL": "1", "SILK_RESERVATION_TTL": "3"}
    with Gateway(database_url, env, workers=2, log_path=tmp_path / "gunicorn.log") as gateway:
        killed = time.monotonic()
        reservation = _kill_the_streaming_worker(app, gateway, acct)
        wait_until(lambda: not open_reservations(app), timeout=15)
        assert time.monotonic() - killed > 2  # not before its lease ran out
        assert _state(app, reservation) == "swept"
        _check_swept(app, accounts, acct, gateway)


def _state(app, reservation_id: int) -> str:
    from silk.extensions import db
    from silk.metering.models import Reservation

    with app.app_context():
        state = db.session.get(Reservation, reservation_id).state
        db.session.remove()
        return state


def test_killed_worker_hold_is_swept_by_the_cli(app, accounts, upstream, gateway_env,
                                                database_url, tmp_path):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    # A lease long enough for the first `silk sweep` to start and look while it runs: a CLI
    # takes seconds to start on a loaded machine (one swept a lease of 4 s by then).
    env = {**gateway_env, "SILK_RESERVATION_TTL": "10"}
    with Gateway(database_url, env, workers=2, log_path=tmp_path / "gunicorn.log") as gateway:
        _kill_the_streaming_worker(app, gateway, acct)
        assert "settled 0 reservation" in cli(gateway.env, "sweep").stdout  # its lease runs
        [hold] = open_reservations(app)  # renewed no more: its lease ends at expires_at
        wait_until(lambda: system_utcnow() > hold.expires_at + timedelta(seconds=0.5),
                   timeout=30)
        assert len(open_reservations(app)) == 1  # no automatic sweep in this gateway
        assert accounts.audit() == []  # an open hold is accounted for, not a discrepancy
        result = cli(gateway.env, "sweep")
        assert result.returncode == 0 and "settled 1 reservation" in result.stdout, result
        again = cli(gateway.env, "sweep")
        assert "settled 0 reservation" in again.stdout  # exactly once
        _check_swept(app, accounts, acct, gateway)
