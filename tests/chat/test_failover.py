"""Several upstream keys: failover before the first byte, never after; failing keys rest."""

import pytest

from tests.chat.helpers import messages, sse_events

JSON = {"Accept": "application/json"}


def _client(app):
    return app.extensions["silk.upstreams"]["deepseek"]


@pytest.mark.parametrize("fault", [{"status": 401}, {"status": 403}, {"status": 429},
                                   {"status": 500}, {"status": 503}, {"status": 402},
                                   {"delay": 1.5}])
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
