"""Integers past 64 bits in a request body: refused by name, never sent on as floats.

orjson reads a whole number in [-2**63, 2**64 - 1] as an int and silently reads one beyond
as a double, so a `seed` of 123456789012345678901234567890 reached the provider as
1.2345678901234568e+29: not what the client wrote, and no provider reads either.
"""

from __future__ import annotations

import orjson
import pytest

from silk.errors import InvalidRequest
from silk.validation import json_object

HUGE = "123456789012345678901234567890"


def test_orjson_reads_an_integer_past_64_bits_as_a_float():
    """The fact the gateway guards against (a newer orjson may change it)."""
    assert orjson.loads(HUGE.encode()) == 1.2345678901234568e+29
    assert orjson.loads(b"18446744073709551615") == 2**64 - 1
    assert orjson.loads(b"-9223372036854775808") == -2**63


@pytest.mark.parametrize(("raw", "path"), [
    (b'{"seed": %s}' % HUGE.encode(), "seed"),
    (b'{"seed": -9223372036854775809}', "seed"),
    (b'{"seed": 18446744073709551616}', "seed"),
    (b'{"logit_bias": {"50256": 100000000000000000000000}}', "logit_bias.50256"),
    (b'{"extra": [1, {"deep": [0, %s]}]}' % HUGE.encode(), "extra[1].deep[1]"),
])
def test_an_integer_past_64_bits_is_a_400_naming_where(raw, path):
    with pytest.raises(InvalidRequest) as caught:
        json_object(raw)
    assert caught.value.param == path
    assert f"'{path}'" in caught.value.message and "64 bits" in caught.value.message


@pytest.mark.parametrize("raw", [
    b'{"seed": 18446744073709551615, "low": -9223372036854775808}',
    b'{"content": "order 123456789012345678901234567890 shipped", "n": 1e30}',
    b'{"t": 1.5e300, "id": "%s"}' % HUGE.encode(),
])
def test_numbers_orjson_keeps_and_digits_in_text_pass(raw):
    """64-bit integers, floats as written (1e30 is a float to both) and long digit runs in
    strings are the client's own and pass as they are."""
    assert json_object(raw) == orjson.loads(raw)


def _chat(client, acct):
    return client.post("/v1/chat/completions",
                       data='{"model": "deepseek-chat", "stream": false, "seed": BIG, '
                            '"messages": [{"role": "user", "content": "hi"}]}'.replace("BIG", HUGE),
                       content_type="application/json",
                       headers={**acct.headers, "Accept": "application/json"})


def _messages(client, acct):
    return client.post("/v1/messages",
                       data='{"model": "deepseek-chat", "max_tokens": 10, '
                            '"metadata": {"n": BIG}, '
                            '"messages": [{"role": "user", "content": "hi"}]}'.replace("BIG", HUGE),
                       content_type="application/json",
                       headers={**acct.headers, "anthropic-version": "2023-06-01"})


def _responses(client, acct):
    return client.post("/v1/responses",
                       data='{"model": "deepseek-chat", "input": "hi", "seed": BIG}'.replace(
                           "BIG", HUGE),
                       content_type="application/json", headers=acct.headers)


def test_each_surface_refuses_it_in_its_own_envelope(client, accounts, upstream):
    acct = accounts.make(credit="1")
    for post, param in ((_chat, "seed"), (_responses, "seed")):
        response = post(client, acct)
        assert response.status_code == 400, response.get_data()[:300]
        error = response.json["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param
        assert "64 bits" in error["message"]
    response = _messages(client, acct)
    assert response.status_code == 400, response.get_data()[:300]
    assert response.json["type"] == "error"
    assert response.json["error"]["type"] == "invalid_request_error"
    assert "'metadata.n'" in response.json["error"]["message"]
    assert upstream.requests == []
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0
