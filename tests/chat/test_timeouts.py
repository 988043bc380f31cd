"""A provider that does not answer in time: the client gets a 504 upstream_timeout and the
usage record and log line say timeout, whether the silence came before or after the head."""

import pytest

from tests.chat.helpers import messages, sse_events

JSON = {"Accept": "application/json"}


@pytest.fixture
def app_config():
    """A provider silent for half a second counts as hung."""
    return {"SILK_UPSTREAM_READ_TIMEOUT": 0.5}


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


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_silent_after_taking_the_request_is_settled_as_a_timeout(
        client, accounts, upstream, stream):
    acct = accounts.make(credit="1")
    response = _ask(client, acct, "hang=1", stream=stream)
    assert response.status_code == 504, response.data
    assert response.json["error"]["code"] == "upstream_timeout"
    assert len(upstream.requests) == 1
    _settled_as_timeout(accounts, acct)


def test_silence_after_the_head_of_a_json_answer_is_a_timeout(client, accounts, upstream):
    """The head came at once, the body never: a timeout, not a bad response."""
    acct = accounts.make(credit="1")
    response = _ask(client, acct, "first_token_delay=3")
    assert response.status_code == 504, response.data
    assert response.json["error"]["code"] == "upstream_timeout"
    _settled_as_timeout(accounts, acct)


def test_silence_after_the_head_of_a_stream_still_ends_it_as_a_timeout(client, accounts,
                                                                      upstream):
    acct = accounts.make(credit="1")
    response = _ask(client, acct, "first_token_delay=3", stream=True)
    assert response.status_code == 200
    assert sse_events(response.data)[-1]["error"]["code"] == "upstream_timeout"
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.cost_units) == ("timeout", 0)
    assert accounts.audit() == []
