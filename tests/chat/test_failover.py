"""Several upstream keys: failover before the first byte, never after; failing keys rest."""

import math
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from tests.chat.helpers import messages, sse_events

JSON = {"Accept": "application/json"}


def _client(app):
    return app.extensions["silk.upstreams"]["deepseek"]


@pytest.mark.parametrize("fault", [{"status": 401}, {"status": 403}, {"status": 429},
                                   {"status": 500}, {"status": 503}, {"status": 402}])
def test_a_failing_key_moves_to_the_next(app, client, accounts, upstream, fault):
    _client(app).timeout = (1.0, 0.5)
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", **fault)  # the first attempt fails, whichever key it uses
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "messages": messages()})
    assert response.status_code == 200, response.json
    keys_tried = [r.key for r in upstream.requests]
    assert len(keys_tried) == 2 and set(keys_tried) == {"sk-ds-good", "sk-ds-second"}
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok"
    assert accounts.audit() == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_key_silent_after_taking_the_request_is_not_tried_again(app, client, accounts,
                                                                  upstream, stream):
    """The provider read the whole request and went silent (a long generation it bills the
    operator for): sending it with the next key would have it generated twice, unpaid."""
    _client(app).timeout = (1.0, 0.5)
    acct = accounts.make(credit="1")
    # headers past the read timeout, and past the 0.5 s 5 tokens add for a JSON answer
    upstream.enqueue("deepseek", delay=1.5)
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "stream": stream, "max_tokens": 5,
                                 "messages": messages()})
    assert response.status_code == 504, response.data
    assert response.json["error"]["code"] == "upstream_timeout"
    assert len(upstream.requests) == 1
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == 0
    assert accounts.audit() == []


def test_client_errors_are_not_retried(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", status=400)
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "messages": messages()})
    assert response.status_code == 400
    assert len(upstream.requests) == 1


def test_failover_succeeds_on_the_second_key_and_the_first_rests(app, client, accounts,
                                                                 upstream):
    acct = accounts.make(credit="1")
    upstream.enqueue(key="sk-ds-good", status=401)
    upstream.enqueue(key="sk-ds-second", status=401)
    first = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                        json={"model": "deepseek-chat", "messages": messages()})
    assert first.status_code == 502  # both keys refused: the operator's problem, not the user's
    upstream.clear()
    upstream.enqueue(key="sk-ds-good", status=429, retry_after="30")
    ok = None
    for _ in range(2):
        ok = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                         json={"model": "deepseek-chat", "messages": messages()})
        assert ok.status_code == 200, ok.json
    tried = [r.key for r in upstream.requests]
    # One of the two requests may have started on the good key and failed over; the rest
    # went to the second key, and the 429'd key was rested for its retry-after.
    assert tried.count("sk-ds-good") <= 1
    assert _client(app)._resting.get("sk-ds-good", 0) > 0


@pytest.mark.parametrize("retry_after", ["\u00b2", "1\u00b2", "1.5", "soon", "9" * 5000])
def test_a_retry_after_int_cannot_read_still_fails_over(app, client, accounts, upstream,
                                                        retry_after):
    """A provider's Retry-After of '²' passed str.isdigit() and crashed int() and float()
    (as do 5,000 digits): a 500 instead of the next key."""
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", status=429, retry_after=retry_after)
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "messages": messages()})
    assert response.status_code == 200, response.json
    assert len(upstream.requests) == 2
    assert accounts.audit() == []


@pytest.mark.parametrize("app_config", [{"SILK_MAX_RETRY_AFTER": 2.0,
                                         "SILK_KEY_COOLDOWN": 1.5}])
@pytest.mark.parametrize(("status", "retry_after"), [
    (429, "999999"), (503, "999999"), (429, "999999999"), (429, "-5"), (429, "Infinity"),
    (429, "Fri, 01 Jan 2100 00:00:00 GMT"), (503, "Fri, 01 Jan 2100 00:00:00 GMT")])
def test_a_huge_or_odd_retry_after_rests_a_key_at_most_the_cap(app, client, accounts, upstream,
                                                               status, retry_after):
    """A Retry-After of 999999 seconds rested the key for eleven days: one answer took a
    provider's key out of service. A rest is at most SILK_MAX_RETRY_AFTER, a far date's
    too; what is neither seconds nor a date (negative, Infinity) rests SILK_KEY_COOLDOWN."""
    acct, admin = accounts.make(credit="1"), accounts.make(admin=True)
    upstream.enqueue(key="sk-ds-good", status=status, retry_after=retry_after)
    upstream.enqueue(key="sk-ds-second", status=status, retry_after=retry_after)
    sent = time.monotonic()
    failed = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                         json={"model": "deepseek-chat", "messages": messages()})
    answered = time.monotonic()  # each rest starts when its key's error came, in between
    assert failed.status_code == status, failed.json
    assert int(failed.headers.get("retry-after", "1")) <= 60
    # The rests themselves, read where the client keeps them (a loaded machine's pause
    # cannot move them): the cap for a huge or far answer, the cooldown for an odd one.
    rest = 1.5 if retry_after in ("-5", "Infinity") else 2.0
    untils = [_client(app)._resting[key] for key in ("sk-ds-good", "sk-ds-second")]
    assert all(sent + rest <= until <= answered + rest for until in untils), (sent, untils)
    keys = [k for k in client.get("/v1/admin/providers", headers=admin.headers).json["keys"]
            if k["provider"] == "deepseek"]
    assert len(keys) == 2
    if time.monotonic() < sent + rest:  # the report was read while both surely rested
        assert all(k["state"] == "resting" for k in keys)
    wall = time.time() - (time.monotonic() - answered)  # `answered` on the wall clock
    for key in keys:
        if key["resting_until"] is not None:
            until = datetime.fromisoformat(key["resting_until"]).timestamp()
            assert until <= wall + 2.0 + 1  # the cap (the report shows whole seconds)
    time.sleep(max(answered + 2.1 - time.monotonic(), 0))
    keys = [k for k in client.get("/v1/admin/providers", headers=admin.headers).json["keys"]
            if k["provider"] == "deepseek"]
    assert [k["state"] for k in keys] == ["serving", "serving"]
    before = len(upstream.requests)
    ok = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                     json={"model": "deepseek-chat", "messages": messages()})
    assert ok.status_code == 200, ok.json
    assert len(upstream.requests) == before + 1  # the first key tried served
    assert accounts.audit() == []


def _resting_until(client, admin) -> list[float | None]:
    """When each deepseek key serves again (wall clock), None for a serving key."""
    keys = [k for k in client.get("/v1/admin/providers", headers=admin.headers).json["keys"]
            if k["provider"] == "deepseek"]
    return [datetime.fromisoformat(k["resting_until"]).timestamp() if k["resting_until"]
            else None for k in keys]


@pytest.mark.parametrize("app_config", [{"SILK_KEY_COOLDOWN": 30.0}])
@pytest.mark.parametrize(("ahead", "rest", "told"), [
    (5, (3, 6), (4, 5)),       # a date a few seconds ahead: rest and tell that long
    (-3600, None, (1, 1)),     # a past date: the key may serve at once
    (None, (29, 31), (1, 1))])  # garbage: the cooldown, and the client retries in 1 s
def test_an_http_date_retry_after_rests_the_key_until_then(app, client, accounts, upstream,
                                                           ahead, rest, told):
    """RFC 9110 lets Retry-After be an HTTP date; it rested the default cooldown and the
    client was told to retry in 1 s. Now the key rests until the date (none for a past
    one) and the client is told the seconds left."""
    acct, admin = accounts.make(credit="1"), accounts.make(admin=True)
    asked = time.time()
    value = ("Soon, garbage" if ahead is None else
             format_datetime(datetime.fromtimestamp(asked + ahead, UTC), usegmt=True))
    for key in ("sk-ds-good", "sk-ds-second"):
        upstream.enqueue(key=key, status=429, retry_after=value)
    failed = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                         json={"model": "deepseek-chat", "messages": messages()})
    answered = time.time()  # a loaded machine's slow answer shortens what is left
    late = math.ceil(answered - asked)
    assert failed.status_code == 429, failed.json
    assert max(1, told[0] - late) <= int(failed.headers["retry-after"]) <= told[1]
    for until in _resting_until(client, admin):
        if rest is None:
            assert until is None
        else:
            assert until is not None and asked + rest[0] <= until <= answered + rest[1]
    assert accounts.audit() == []


def test_refused_connection_fails_over_then_503s_cleanly(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    upstream.refuse()
    try:
        response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                               json={"model": "deepseek-chat", "messages": messages()})
    finally:
        upstream.accept()
    assert response.status_code == 502
    assert response.json["error"]["code"] == "upstream_unreachable"
    assert accounts.balance_units(acct.id) == 10**9
    [record] = accounts.usage_records(acct.id)
    assert record.status == "upstream_error"
    assert accounts.audit() == []


def test_no_retry_after_the_first_byte(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers=acct.headers, buffered=True, json={
        "model": "deepseek-chat", "stream": True,
        "messages": messages("x", "pieces=10 cut_after=3")})
    events = sse_events(response.data)
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    assert len(upstream.requests) == 1  # the cut stream was not retried on another key
