"""What a provider claims in its chat answer, as the client is told it and billed for it."""

from __future__ import annotations

import json

import pytest

from silk.pricing import units_to_usd
from tests.chat.helpers import expected_cost, messages, prompt_tokens, set_quota_left, units

MAX_TOKENS = 200


@pytest.mark.parametrize("usage", [{"completion_tokens": 3_000_000_000},
                                   {"prompt_tokens": 3_000_000_000}], ids=["output", "prompt"])
def test_a_json_answer_tells_the_counts_billed_when_the_providers_were_capped(
        app, client, accounts, upstream, usage):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("absurd", f"pieces=5 usage_json='{json.dumps(usage)}'")
    response = client.post("/v1/chat/completions", headers=acct.headers, json={
        "model": "deepseek-chat", "stream": False, "max_tokens": MAX_TOKENS, "messages": msgs})
    raw = response.get_data()
    told = json.loads(raw)["usage"]
    response.close()
    assert response.status_code == 200
    [record] = accounts.usage_records(acct.id)
    assert record.written_off_units > 0 and not record.estimated
    if "completion_tokens" in usage:
        assert (record.prompt_tokens, record.completion_tokens) == (prompt_tokens(msgs),
                                                                    MAX_TOKENS)
    assert (told["prompt_tokens"], told["completion_tokens"], told["total_tokens"]) == (
        record.prompt_tokens, record.completion_tokens,
        record.prompt_tokens + record.completion_tokens)
    assert told["cost"] == float(units_to_usd(record.cost_units))
    assert record.cost_units == units(expected_cost(
        "deepseek-chat", record.prompt_tokens, record.completion_tokens))
    assert accounts.balance_units(acct.id) == 10**9 - record.cost_units
    assert accounts.audit() == []
