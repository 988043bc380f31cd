"""Shared checks for reliability tests: calling a running gateway and proving the money exact."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from decimal import Decimal

import requests
from sqlalchemy import create_engine, text

from tests.chat.helpers import expected_cost, units
from tests.support.gateway import ROOT, Gateway

CHAT = "/v1/chat/completions"


def body(text: str = "hello", directive: str = "", *, model: str = "deepseek-chat",
         stream: bool = True, max_tokens: int = 200, **extra) -> dict:
    """A chat request whose last message may steer the fake upstream."""
    content = f"{text} [[fake: {directive}]]" if directive else text
    return {"model": model, "stream": stream, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}], **extra}


def call(url: str, key: str, payload: dict, *, timeout: float = 30.0) -> tuple[int, str]:
    """POST a chat request and read the whole answer; (-1, reason) when the socket failed."""
    try:
        response = requests.post(url + CHAT, json=payload, timeout=timeout,
                                 stream=payload.get("stream", False),
                                 headers={"Authorization": f"Bearer {key}"})
        return response.status_code, response.text
    except requests.RequestException as exc:
        return -1, type(exc).__name__


def stream_ok(text: str) -> bool:
    """True when an SSE body ended with [DONE] and carried no error event."""
    return text.rstrip().endswith("data: [DONE]") and '"error"' not in text


def cli(env: dict, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run `flask --app app silk ...` against the environment's database."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", "silk", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def assert_audit_cli_green(env: dict) -> None:
    """The operator's books check, as the operator runs it, exits 0."""
    result = cli(env, "audit")
    assert result.returncode == 0, result.stdout + result.stderr


def errors_logged(gateway: Gateway, *expected: str) -> list[str]:
    """Lines a gateway logged at error level (unhandled exceptions, failed settlements...),
    less those containing one of the `expected` phrases."""
    lines = gateway.log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if ('"level":"error"' in line or "[ERROR]" in line)
            and not any(phrase in line for phrase in expected)]


def open_reservations(app) -> list:
    """Reservations not yet settled."""
    from sqlalchemy import select

    from silk.extensions import db
    from silk.metering.models import Reservation

    with app.app_context():
        rows = list(db.session.scalars(select(Reservation).where(Reservation.state == "open")))
        db.session.remove()
        return rows


def assert_money_exact(accounts, account_id: int, credit_usd: str, *, tier: str = "free"):
    """Every cent is accounted for: balance = credit - charges, each charge = its usage's cost.

    Assumes the account's free quota was used up first, so every token is charged at list
    price less the tier discount; the cost of each usage record is recomputed independently
    from its token counts.
    """
    assert accounts.audit() == []
    row = accounts.row(account_id)
    assert row.reserved_units == 0 and row.quota_held == 0
    records = accounts.usage_records(account_id)
    ledger = accounts.ledger(account_id)
    charges = {e.request_id: e for e in ledger if e.kind == "charge"}
    assert len(charges) == len([e for e in ledger if e.kind == "charge"])  # one per request
    for record in records:
        cost = units(expected_cost(record.model, record.prompt_tokens, record.completion_tokens,
                                   tier))
        assert record.cost_units == cost, (record.status, record.cost_units, cost)
        assert record.written_off_units == 0
        if record.cost_units:
            assert charges[record.request_id].amount_units == -record.cost_units
    assert set(charges) <= {r.request_id for r in records}
    assert all(e.balance_after_units >= 0 for e in ledger)  # never below zero, even briefly
    charged = sum(r.cost_units for r in records)
    assert row.balance_units == units(Decimal(credit_usd)) - charged >= 0
    return records


def block_database(admin_url: str, name: str, allow: bool) -> None:
    """Refuse new sessions to one database and end its open ones (or allow them again):
    to the gateway, a restart of that database, without disturbing the rest of the server.

    Allowing again is retried for a while (a busy server may be out of connections), since
    a database left closed would break everything after the test.
    """
    deadline = time.monotonic() + (60 if allow else 0)
    while True:
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS '
                                  f'{str(allow).lower()}'))
                if not allow:
                    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE datname = :name"), {"name": name})
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            engine.dispose()


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Poll until `predicate()` is truthy and return it; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def fresh_window(margin: float, window: int = 60) -> None:
    """Wait for the next fixed limiter window if this one ends within `margin` seconds."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.2)


def raw_request(url: str, key: str, payload: bytes, *, extra_headers: str = "") -> socket.socket:
    """Send a chat POST on a bare socket (so a test can hang up at any moment) and return it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"{extra_headers}\r\n")
    sock.sendall(head.encode() + payload)
    return sock


def hang_up(sock: socket.socket) -> None:
    """Close a socket abruptly (RST), as a client that died would."""
    import struct

    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def gateways(database_url: str, env: dict, count: int, tmp_path, *, workers: int = 2):
    """`count` separate gunicorn gateways on one database, each with `workers` workers."""
    running: list[Gateway] = []
    try:
        for index in range(count):
            running.append(Gateway(database_url, env, workers=workers,
                                   log_path=tmp_path / f"gunicorn-{index}.log").start())
        yield running
    finally:
        for gateway in running:
            gateway.stop()


@contextlib.contextmanager
def module_gateway(database_url: str, fake, tmp_path_factory, name: str, **settings: str):
    """A gunicorn-run gateway (two workers) for a whole test module, at the fake upstream."""
    from tests.conftest import upstream_env_dict

    env = {**upstream_env_dict(fake), "SILK_SWEEP_INTERVAL": "0", **settings}
    log = tmp_path_factory.mktemp(name) / "gunicorn.log"
    with Gateway(database_url, env, workers=2, log_path=log) as running:
        yield running
