"""Waiting for a provider. A JSON answer's first byte may take as long as generating the
output its hold allows, at the slowest plausible rate; a stream's events may be silent for
the read timeout only. A provider that does not answer in time: the client gets a 504
upstream_timeout and the usage record and log line say timeout, whether the silence came
before or after the head."""

import time
from decimal import Decimal

import pytest

from tests.chat.helpers import messages, set_quota_left, sse_events, units

JSON = {"Accept": "application/json"}


@pytest.fixture
def app_config():
    """A provider silent for half a second counts as hung; a JSON answer may take 0.1 s
    more per output token its hold allows (10 tokens a second)."""
    return {"SILK_UPSTREAM_READ_TIMEOUT": 0.5, "SILK_UPSTREAM_MIN_TOKENS_PER_SECOND": 10.0,
            "SILK_UPSTREAM_MAX_ANSWER_WAIT": 60.0}


def _ask(client, acct, directive, *, stream=False, max_tokens=5):
    """Ask MiMo, which sends no keep-alive bytes while it works."""
    return client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                       json={"model": "mimo-v2.5", "stream": stream,
                             "max_tokens": max_tokens, "messages": messages("x", directive)})


def _settled_as_timeout(accounts, acct) -> None:
    """One usage record, a timeout of nothing delivered: free, the hold released."""
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.http_status, record.cost_units) == ("timeout", 504, 0)
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


@pytest.mark.parametrize("silence", ["delay=1.5", "first_token_delay=1.5"])
def test_a_json_answer_may_take_the_generation_its_hold_allows(app, client, accounts,
                                                              upstream, silence):
    """Silent past the read timeout (0.5 s), before its head or after it, but within the
    time its 20 tokens may take (0.5 + 2 s): the provider answered and bills it, so the
    client gets it and pays for it."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _ask(client, acct, silence, max_tokens=20)
    assert response.status_code == 200, response.data
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and record.cost_units > 0
    assert record.cost_units == units(Decimal(str(response.json["usage"]["cost"])))
    assert len(upstream.requests) == 1
    assert accounts.audit() == []


@pytest.mark.parametrize("silence", ["hang=1", "first_token_delay=10"])
def test_a_json_answer_past_the_generation_its_hold_allows_is_a_timeout(
        client, accounts, upstream, silence):
    """Silent before its head, or after it (a timeout, not a bad response), past the 1 s
    its 5 tokens may take. The upper bound leaves a loaded machine seconds for the request
    itself, and is still far below the answer (10 s) a longer wait would get."""
    acct = accounts.make(credit="1")
    started = time.monotonic()
    response = _ask(client, acct, silence)
    assert 0.9 <= time.monotonic() - started < 5
    assert response.status_code == 504, response.data
    assert response.json["error"]["code"] == "upstream_timeout"
    assert len(upstream.requests) == 1
    _settled_as_timeout(accounts, acct)


@pytest.mark.parametrize("app_config", [{
    "SILK_UPSTREAM_READ_TIMEOUT": 0.5, "SILK_UPSTREAM_MIN_TOKENS_PER_SECOND": 10.0,
    "SILK_UPSTREAM_MAX_ANSWER_WAIT": 1.0}])
def test_the_wait_for_a_json_answer_is_capped(client, accounts, upstream):
    """1000 tokens at 10 a second would be 100 s: SILK_UPSTREAM_MAX_ANSWER_WAIT caps it
    (uncapped, the answer would come after 10 s)."""
    acct = accounts.make(credit="1")
    started = time.monotonic()
    response = _ask(client, acct, "delay=10", max_tokens=1000)
    assert 0.9 <= time.monotonic() - started < 5
    assert response.status_code == 504, response.data
    _settled_as_timeout(accounts, acct)


def test_a_stream_silent_before_its_head_waits_the_read_timeout_only(client, accounts,
                                                                    upstream):
    """Its events keep coming while it is generated: whatever its hold allows (20.5 s for
    200 tokens), its head may be silent for the read timeout (0.5 s) only, not until the
    provider's head (10 s)."""
    acct = accounts.make(credit="1")
    started = time.monotonic()
    response = _ask(client, acct, "delay=10", stream=True, max_tokens=200)
    assert time.monotonic() - started < 5  # seconds for the request itself when loaded
    assert response.status_code == 504, response.data
    assert response.json["error"]["code"] == "upstream_timeout"
    assert len(upstream.requests) == 1
    _settled_as_timeout(accounts, acct)


def test_a_stream_silent_after_its_head_waits_the_read_timeout_only(client, accounts,
                                                                   upstream):
    acct = accounts.make(credit="1")
    started = time.monotonic()
    response = _ask(client, acct, "first_token_delay=10", stream=True, max_tokens=200)
    assert response.status_code == 200
    assert sse_events(response.data)[-1]["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5  # not the 10 s to the first token
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.cost_units) == ("timeout", 0)
    assert accounts.audit() == []
