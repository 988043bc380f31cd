"""Upstream faults under gunicorn: refused, hung, cut, and 429/5xx storms across keys.

Each test ends the same way: every answer was clean (a JSON error envelope, or an SSE
stream ending in [DONE] or one error event), nothing stays reserved, the books balance,
and every cent charged is the independently recomputed price of what was delivered.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.chat.helpers import set_quota_left, sse_events
from tests.reliability.helpers import (
    assert_audit_cli_green,
    assert_money_exact,
    body,
    call,
    errors_logged,
    module_gateway,
    open_reservations,
)

pytestmark = pytest.mark.slow

READ_TIMEOUT = 1.5


@pytest.fixture(scope="session")
def database_url(pg_url):
    """One gateway serves the whole module, so its database outlives each test's reset."""
    return pg_url


@pytest.fixture(scope="module")
def faulty(database_url, fake_upstream, tmp_path_factory):
    """A gateway with a short read timeout (3 s at most for a JSON answer) and short key
    rests, for the whole module."""
    with module_gateway(database_url, fake_upstream, tmp_path_factory, "faults",
                        SILK_UPSTREAM_READ_TIMEOUT=str(READ_TIMEOUT),
                        SILK_UPSTREAM_MAX_ANSWER_WAIT="3",
                        SILK_KEY_COOLDOWN="0.5") as running:
        yield running


@pytest.fixture
def acct(app, accounts):
    """A funded account with its free quota used up, so every token is charged."""
    made = accounts.make(credit="1")
    set_quota_left(app, made.id)
    return made


def _clean(status: int, text: str, stream: bool) -> str:
    """Classify an answer, failing on anything that is not a clean success or error."""
    assert status != -1, text
    assert status < 500 or status in (502, 503, 504), (status, text)
    if status != 200:
        error = json.loads(text)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return error["code"]
    if not stream:
        return "ok" if json.loads(text)["object"] == "chat.completion" else "bad"
    events = sse_events(text.encode())
    if events[-1] == "[DONE]":
        assert not any(isinstance(e, dict) and "error" in e for e in events)
        return "ok"
    return events[-1]["error"]["code"]  # one error event ends a broken stream


def _finish(app, accounts, acct, gateway):
    assert errors_logged(gateway) == []  # every fault was handled, none merely survived
    assert open_reservations(app) == []
    records = assert_money_exact(accounts, acct.id, "1")
    assert_audit_cli_green(gateway.env)
    return records


def _run(gateway, acct, payloads, workers=16):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        answers = list(pool.map(lambda p: call(gateway.url, acct.key, p), payloads))
    return [_clean(status, text, p["stream"]) for p, (status, text) in zip(payloads, answers,
                                                                            strict=True)]


def test_refused_connections_fail_cleanly_and_recover(app, accounts, faulty, upstream, acct):
    warm = _run(faulty, acct, [body(f"warm {i}", stream=i % 2 == 0) for i in range(6)])
    assert warm == ["ok"] * 6  # the workers now hold pooled keep-alive connections
    upstream.refuse()  # also drops those pooled connections, as a provider restart would
    try:
        down = _run(faulty, acct, [body(f"down {i}", stream=i % 2 == 0) for i in range(12)])
    finally:
        upstream.accept()
    assert set(down) == {"upstream_unreachable"}
    back = _run(faulty, acct, [body(f"back {i}", stream=i % 2 == 0) for i in range(12)])
    assert back == ["ok"] * 12  # dead pooled connections were replaced, not reused
    records = _finish(app, accounts, acct, faulty)
    statuses = Counter(r.status for r in records)
    assert statuses == {"ok": 18, "upstream_error": 12}
    assert all(r.cost_units == 0 for r in records if r.status == "upstream_error")


def test_hung_upstream_times_out_and_bills_only_delivery(app, accounts, faulty, upstream,
                                                         acct):
    payloads = [
        body("hang", "hang=1", stream=True),  # took the request, never answers
        body("hang", "hang=1", stream=False),
        body("late headers", "delay=4", stream=False),  # past the 3 s a JSON answer may take
        body("silent start", "first_token_delay=4", model="mimo-v2.5", stream=True),
        body("stall", "pieces=12 chunk_delay=4", stream=True),  # stalls after one chunk
        body("stall", "pieces=12 chunk_delay=4", model="ark-code-latest", stream=True),
        body("fine", "pieces=5", stream=True),
        body("fine", "pieces=5", stream=False),
        body("late answer", "delay=2", stream=False),  # within the 3 s: answered, billed
    ]
    outcomes = _run(faulty, acct, payloads)
    assert outcomes == ["upstream_timeout"] * 6 + ["ok"] * 3, outcomes
    # A provider that took the request may be generating it: no other key is sent it again.
    sent = Counter(r.body["messages"][-1]["content"].split(" [[")[0] for r in upstream.requests)
    assert (sent["hang"], sent["late headers"]) == (2, 1), sent
    records = _finish(app, accounts, acct, faulty)
    assert Counter(r.status for r in records) == {"timeout": 6, "ok": 3}
    assert all(r.cost_units > 0 for r in records if r.status == "ok")
    timed_out = [r for r in records if r.status == "timeout"]
    # Those silent before their head (504) and the silent stream (its 200 sent) delivered
    # nothing and are free; a stalled one pays for its prompt and the (empty) first chunk it
    # delivered, estimated.
    assert sorted(r.http_status for r in timed_out if not r.cost_units) == [502, 504, 504, 504]
    assert sum(1 for r in timed_out if r.cost_units) == 2
    assert all(r.estimated for r in timed_out if r.cost_units)


def _delivered(text: str) -> tuple[int, bool]:
    """(content pieces, any chunk at all) that reached the client in an SSE body."""
    chunks = [e for e in sse_events(text.encode()) if isinstance(e, dict) and e.get("choices")]
    pieces = sum(1 for e in chunks if e["choices"][0]["delta"].get("content"))
    return pieces, bool(chunks)


@pytest.mark.parametrize("rst", [False, True])
def test_cut_streams_bill_what_was_delivered(app, accounts, faulty, upstream, acct, rst):
    flag = " rst=1" if rst else ""
    payloads = [body(f"cut {n}", f"pieces=20 cut_after={n}{flag}", stream=True)
                for n in (0, 1, 2, 7, 21)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda p: call(faulty.url, acct.key, p), payloads))
    outcomes = [_clean(status, text, True) for status, text in answers]
    json_cut = call(faulty.url, acct.key, body("cut json", f"cut_after=1{flag}", stream=False))
    if rst:
        # A reset can also destroy the headers in flight: then it is a refused connection.
        assert set(outcomes) <= {"upstream_stream_cut", "upstream_unreachable"}, outcomes
        assert _clean(*json_cut, False) in ("upstream_bad_response", "upstream_unreachable")
    else:
        assert outcomes == ["upstream_stream_cut"] * 5
        assert _clean(*json_cut, False) == "upstream_bad_response"
    records = _finish(app, accounts, acct, faulty)
    cut = [r for r in records if r.status == "cut"]
    # Billed exactly what reached the client: a token per piece it saw, and nothing at all
    # when not even the first chunk arrived. A reset may destroy pieces in flight.
    assert sorted((r.completion_tokens, r.cost_units > 0) for r in cut) == sorted(
        _delivered(text) for status, text in answers if status == 200)
    assert all(r.estimated for r in cut if r.cost_units)
    if not rst:
        assert sorted(r.completion_tokens for r in cut) == [0, 0, 1, 6, 20]
    assert all(r.cost_units == 0 for r in records if r.status == "upstream_error")


def test_429_and_5xx_storms_fail_over_across_keys(app, accounts, faulty, upstream, acct):
    # One key is rate limited, then the other one fails: everything is served by the other.
    upstream.enqueue(key="sk-ds-good", status=429, retry_after="1", times=40)
    storm = _run(faulty, acct, [body(f"429 storm {i}", stream=i % 2 == 0) for i in range(15)])
    upstream.reset()
    upstream.enqueue(key="sk-ds-second", status=502, times=40)
    storm += _run(faulty, acct, [body(f"5xx storm {i}", stream=i % 2 == 0) for i in range(15)])
    assert storm == ["ok"] * 30
    refused = Counter((r.key, r.status) for r in upstream.requests if r.status != 200)
    assert refused[("sk-ds-good", 429)] and refused[("sk-ds-second", 502)], refused
    served = Counter(r.key for r in upstream.requests if r.status == 200)
    assert served == {"sk-ds-second": 15, "sk-ds-good": 15}  # each storm served by the other
    # Both keys refuse: clients get a clean, retryable answer and pay nothing.
    upstream.reset()
    upstream.behave(status=429, retry_after="2")
    limited = _run(faulty, acct, [body(f"429 {i}", stream=i % 2 == 0) for i in range(8)])
    upstream.reset()
    upstream.behave(status=503)
    unavailable = _run(faulty, acct, [body(f"503 {i}", stream=i % 2 == 0) for i in range(8)])
    upstream.reset()
    upstream.behave(status=500)
    broken = _run(faulty, acct, [body(f"500 {i}", stream=i % 2 == 0) for i in range(8)])
    upstream.reset()
    after = _run(faulty, acct, [body(f"after {i}", stream=i % 2 == 0) for i in range(8)])
    assert set(limited) == {"upstream_rate_limited"}
    assert set(unavailable) == {"upstream_unavailable"}
    assert set(broken) == {"upstream_error"}
    assert after == ["ok"] * 8  # resting keys come back as soon as they are needed
    records = _finish(app, accounts, acct, faulty)
    assert Counter(r.status for r in records) == {"ok": 38, "upstream_error": 24}
