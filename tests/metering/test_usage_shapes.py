"""A chat usage object whose counts are not whole numbers counts as absent, on every surface.

A provider's `"completion_tokens": null` (or a bool, or a fraction) is no count of the answer
it streamed: the request is billed from the estimate of what was delivered, marked
estimated, as for a usage that never came, and as the Anthropic dialect already reads its
counts. Read as 0 (or 1, or cut down to a whole number), it let a whole answer go unbilled.
"""

from __future__ import annotations

import json

import pytest

from tests.chat.helpers import set_quota_left

PIECES = 5  # "w0 w1 w2 w3 w4": five tokens delivered, as the gateway estimates them


def _ask(client, acct, surface: str, directive: str, stream: bool):
    text = f"hello [[fake: pieces={PIECES} {directive}]]"
    if surface == "chat":
        return client.post("/v1/chat/completions", headers=acct.headers, buffered=True, json={
            "model": "deepseek-chat", "stream": stream, "max_tokens": 200,
            "messages": [{"role": "user", "content": text}]})
    if surface == "messages":
        return client.post("/v1/messages", headers={**acct.headers,
                                                    "anthropic-version": "2023-06-01"},
                           buffered=True, json={
                               "model": "deepseek-chat", "stream": stream, "max_tokens": 200,
                               "messages": [{"role": "user", "content": text}]})
    return client.post("/v1/responses", headers=acct.headers, buffered=True, json={
        "model": "deepseek-chat", "stream": stream, "max_output_tokens": 200,
        "input": text, "store": False})


@pytest.mark.parametrize("count", [None, True, 2.5], ids=["null", "bool", "fraction"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("surface", ["chat", "messages", "responses"])
def test_a_count_that_is_not_a_whole_number_bills_the_delivery(app, client, accounts, upstream,
                                                                surface, stream, count):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    usage = json.dumps({"completion_tokens": count})
    response = _ask(client, acct, surface, f"usage_json='{usage}'", stream)
    assert response.status_code == 200, response.data
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok"
    assert record.estimated, "a count that is no whole number was billed as the provider's"
    assert record.completion_tokens == PIECES
    assert record.cost_units > 0
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0
