"""Clients that hang up at every stage of a request, against the gateway under gunicorn.

Whenever the client leaves, the hold must be settled once, the upstream call abandoned as
soon as the gateway can tell, and the bill limited to what was delivered.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.chat.helpers import set_quota_left
from tests.reliability.helpers import (
    assert_audit_cli_green,
    assert_money_exact,
    body,
    call,
    errors_logged,
    hang_up,
    module_gateway,
    open_reservations,
    raw_request,
    stream_ok,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def database_url(pg_url):
    """One gateway serves the whole module, so its database outlives each test's reset."""
    return pg_url


@pytest.fixture(scope="module")
def served(database_url, fake_upstream, tmp_path_factory):
    """The gateway under gunicorn, shared by this module's tests."""
    with module_gateway(database_url, fake_upstream, tmp_path_factory, "disconnects",
                        SILK_UPSTREAM_READ_TIMEOUT="10") as running:
        yield running


@pytest.fixture
def acct(app, accounts):
    """A funded account with its free quota used up, so every token is charged."""
    made = accounts.make(credit="1")
    set_quota_left(app, made.id)
    return made


def _payload(directive: str, *, stream: bool = True, model: str = "deepseek-chat") -> bytes:
    return json.dumps(body("bye", directive, stream=stream, model=model)).encode()


def _read_events(sock, count: int) -> bytes:
    """Read from a raw response until `count` SSE data events have arrived."""
    received = b""
    while received.count(b"data: ") < count:
        data = sock.recv(65536)
        assert data, received
        received += data
    return received


def _settled(app, accounts, acct, how_many: int = 1):
    wait_until(lambda: len(accounts.usage_records(acct.id)) >= how_many
               and not open_reservations(app))
    return accounts.usage_records(acct.id)


def _still_serving(served, acct):
    status, text = call(served.url, acct.key, body("still there?"))
    assert status == 200 and stream_ok(text)
    assert errors_logged(served) == []


def test_hang_up_while_sending_the_body(app, accounts, served, upstream, acct):
    sock = raw_request(served.url, acct.key, b'{"model": "deepseek-chat", "mess',
                       extra_headers="")
    # The request promised more body than it sent; the client now dies.
    sock.close()
    truncated = raw_request(served.url, acct.key, b"", extra_headers="")
    truncated.close()
    sock = raw_request(served.url, acct.key, _payload("")[:20])
    hang_up(sock)
    time.sleep(0.5)
    assert upstream.requests == [] and open_reservations(app) == []
    assert accounts.usage_records(acct.id) == []
    _still_serving(served, acct)
    assert_money_exact(accounts, acct.id, "1")


@pytest.mark.parametrize("stream,answer,status,billed,estimated", [
    (False, "", "ok", 6, False),
    # A stream is cut off at its first write: the provider's events come one by one, and
    # only the empty first chunk had been read (an estimate: no usage came).
    (True, "chunk_delay=0.2", "client_closed", 0, True),
    # The provider's whole answer, its usage too, came in one read before the first write:
    # it was delivered (and is billed by the provider), so it is billed as reported.
    (True, "together=20", "client_closed", 6, False),
])
def test_hang_up_before_response_headers(app, accounts, served, upstream, acct, stream, answer,
                                         status, billed, estimated):
    sock = raw_request(served.url, acct.key, _payload(f"delay=1.5 pieces=6 {answer}",
                                                      stream=stream))
    upstream.wait_for(lambda: upstream.requests, timeout=10)  # asked, however loaded
    hang_up(sock)  # the gateway is still waiting for the provider's headers
    [record] = _settled(app, accounts, acct)
    # A finished non-streamed answer was produced and paid for upstream, so it is billed.
    assert (record.status, record.completion_tokens, record.estimated) == (status, billed,
                                                                          estimated)
    _still_serving(served, acct)
    assert_money_exact(accounts, acct.id, "1")


@pytest.mark.parametrize("model,keepalive", [("deepseek-chat", True), ("mimo-v2.5", False)])
def test_hang_up_during_a_slow_first_token(app, accounts, served, upstream, acct, model,
                                           keepalive):
    sock = raw_request(served.url, acct.key, _payload(
        "first_token_delay=2.5 pieces=6 chunk_delay=0.3", model=model))
    upstream.wait_for(lambda: upstream.requests, timeout=10)  # asked, however loaded
    hang_up(sock)  # the first token is 2.5 s away
    started = time.monotonic()
    [gone] = upstream.wait_for(lambda: upstream.disconnects, timeout=10)
    abandoned_after = time.monotonic() - started
    assert gone.phase in ("first_token", "stream")
    if keepalive:
        # DeepSeek's keep-alive comments are relayed, so the first one after the hang-up
        # finds the client gone and the provider is dropped long before its first token.
        assert gone.phase == "first_token" and abandoned_after < 1.8
    [record] = _settled(app, accounts, acct)
    assert record.status == "client_closed" and record.completion_tokens == 0
    # The provider had taken the prompt: it is billed at its estimate, output or not (a
    # hang-up in a long prompt's keep-alives must not make the prompt free).
    assert record.estimated and record.prompt_tokens > 0 and record.cost_units > 0
    _still_serving(served, acct)
    assert_money_exact(accounts, acct.id, "1")


@pytest.mark.parametrize("abrupt", [True, False])
def test_hang_up_mid_stream(app, accounts, served, upstream, acct, abrupt):
    sock = raw_request(served.url, acct.key, _payload("pieces=300 chunk_delay=0.02"))
    received = _read_events(sock, 6)
    assert received.startswith(b"HTTP/1.1 200")
    if abrupt:
        hang_up(sock)
    else:
        sock.close()  # an orderly FIN: the gateway learns on its next writes
    [gone] = upstream.wait_for(lambda: upstream.disconnects, timeout=10)
    assert gone.phase == "stream" and gone.chunks_sent < 300
    [record] = _settled(app, accounts, acct)
    assert record.status == "client_closed" and record.estimated
    # Billed for what the gateway sent before it noticed: at least what the client saw.
    assert 4 <= record.completion_tokens <= gone.chunks_sent
    assert record.cost_units > 0
    _still_serving(served, acct)
    assert_money_exact(accounts, acct.id, "1")
    assert_audit_cli_green(served.env)
