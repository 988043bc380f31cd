"""A client that hangs up mid-stream on a provider that hides its reasoning, against the
gateway under gunicorn: the worker reads the upstream on to its final usage and bills it,
also while gunicorn stops the worker gracefully.
"""

from __future__ import annotations

import json

import pytest

from silk.defaults import PROVIDERS
from tests.chat.helpers import set_quota_left
from tests.reliability.helpers import (
    assert_money_exact,
    body,
    call,
    errors_logged,
    hang_up,
    open_reservations,
    raw_request,
    stream_ok,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def gateway_env(gateway_env):
    """DeepSeek configured as a provider that never streams its reasoning."""
    hidden = {**PROVIDERS, "deepseek": {**PROVIDERS["deepseek"], "reasoning_streamed": False}}
    return {**gateway_env, "SILK_PROVIDERS": json.dumps(hidden)}


@pytest.mark.parametrize("stop", [False, True], ids=["serving", "stopping"])
def test_a_client_gone_mid_stream_pays_the_providers_final_usage(app, accounts, upstream,
                                                                 gateway, stop):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    payload = body("think", "hide_reasoning reasoning_pieces=40 pieces=60 chunk_delay=0.03",
                   model="deepseek-reasoner", max_tokens=400)
    sock = raw_request(gateway.url, acct.key, json.dumps(payload).encode())
    received = b""
    while received.count(b"data: ") < 6:
        data = sock.recv(65536)
        assert data, received
        received += data
    assert received.startswith(b"HTTP/1.1 200") and b"reasoning" not in received
    hang_up(sock)
    if stop:  # SIGTERM: the worker finishes its open requests, this one's reading too
        gateway.stop(graceful=True)
    wait_until(lambda: accounts.usage_records(acct.id) and not open_reservations(app))
    [record] = accounts.usage_records(acct.id)
    assert upstream.disconnects == []  # read to its end, never abandoned
    assert record.status == "client_closed" and not record.estimated
    assert (record.completion_tokens, record.reasoning_tokens) == (100, 40)
    assert_money_exact(accounts, acct.id, "1")
    if not stop:
        status, text = call(gateway.url, acct.key, body("still there?"))
        assert status == 200 and stream_ok(text)
        assert errors_logged(gateway) == []
