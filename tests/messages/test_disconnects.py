"""A Messages client that hangs up mid-stream, against the gateway under gunicorn: the hold
is settled once, for what was delivered, on both ways upstream."""

import json
import socket
import time

import pytest

from tests.chat.helpers import set_quota_left
from tests.reliability.helpers import assert_money_exact, hang_up, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(params=["translated", "native"])
def way(request, gateway_env, upstream):
    if request.param == "native":
        for provider, prefix in (("deepseek", "DEEPSEEK"), ("ark", "ARK"), ("mimo", "MIMO")):
            gateway_env[f"{prefix}_ANTHROPIC_BASE_URL"] = upstream.anthropic_base_url(provider)
    return request.param


def _open(url: str, key: str, body: dict) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall((f"POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\n"
                  f"anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload)
    return sock


@pytest.mark.parametrize("abrupt", [True, False])
def test_hang_up_mid_stream_bills_the_delivery_once(way, app, gateway, accounts, upstream,
                                                    abrupt):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    sock = _open(gateway.url, acct.key, {
        "model": "deepseek-chat", "max_tokens": 1000, "stream": True,
        "messages": [{"role": "user", "content": "bye [[fake: pieces=300 chunk_delay=0.02]]"}]})
    received = b""
    while received.count(b"text_delta") < 6:
        data = sock.recv(65536)
        assert data, received
        received += data
    assert received.startswith(b"HTTP/1.1 200")
    if abrupt:
        hang_up(sock)
    else:
        sock.close()
    [gone] = upstream.wait_for(lambda: upstream.disconnects, timeout=10)
    assert gone.phase == "stream" and gone.chunks_sent < 300
    wait_until(lambda: accounts.usage_records(acct.id)
               and accounts.row(acct.id).reserved_units == 0)
    time.sleep(0.2)
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and record.estimated
    assert record.surface == "messages"
    assert 6 <= record.completion_tokens <= gone.chunks_sent
    assert record.cost_units > 0
    assert_money_exact(accounts, acct.id, "1")
