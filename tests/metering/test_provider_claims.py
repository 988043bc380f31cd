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


ARGUMENTS = {"q": "one two three four five six seven eight"}
# The call's name (2) and its arguments' JSON text, `{"q":"one two ... eight"}`: 8 words
# and 7 marks, as the gateway estimates it.
CALL_ESTIMATE = 2 + 15


def _tool_answer(client, acct, surface: str, arguments) -> tuple[int, bytes]:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": arguments}}
    directive = f"tool_call=lookup no_usage message_json='{json.dumps({'tool_calls': [call]})}'"
    text = f"look it up [[fake: {directive}]]"
    if surface == "chat":
        response = client.post("/v1/chat/completions", headers=acct.headers, json={
            "model": "deepseek-chat", "stream": False, "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": text}],
            "tools": [{"type": "function", "function": {
                "name": "lookup", "parameters": {"type": "object"}}}]})
    else:
        response = client.post("/v1/messages", headers={
            **acct.headers, "anthropic-version": "2023-06-01"}, json={
            "model": "deepseek-chat", "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": text}],
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}}]})
    raw = response.get_data()
    response.close()
    return response.status_code, raw


@pytest.mark.parametrize("surface", ["chat", "messages"])
@pytest.mark.parametrize("shape", ["text", "object"])
def test_tool_arguments_sent_as_an_object_are_billed_as_delivered(
        app, client, accounts, upstream, surface, shape):
    """A JSON answer without usage is billed from its estimate, whatever the arguments'
    shape: an object reaches the client (as chat sent it, or as a tool_use input)."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    arguments = ARGUMENTS if shape == "object" else json.dumps(ARGUMENTS, separators=(",", ":"))
    status, raw = _tool_answer(client, acct, surface, arguments)
    assert status == 200, raw
    answer = json.loads(raw)
    if surface == "messages":
        [use] = [block for block in answer["content"] if block["type"] == "tool_use"]
        assert use["input"] == ARGUMENTS
    [record] = accounts.usage_records(acct.id)
    assert record.estimated and record.status == "ok"
    assert record.completion_tokens == CALL_ESTIMATE
    assert record.cost_units == units(expected_cost(
        "deepseek-chat", record.prompt_tokens, record.completion_tokens))
    assert accounts.balance_units(acct.id) == 10**9 - record.cost_units
    assert accounts.audit() == []


@pytest.mark.parametrize("surface", ["chat", "messages", "responses"])
@pytest.mark.parametrize("odd", ["infinite_logprobs", "lone_surrogates"])
def test_a_json_answer_only_a_lenient_parser_reads_is_answered_and_billed(
        app, client, accounts, upstream, surface, odd):
    """A provider that writes a logprob as -Infinity (or half an emoji) in its JSON answer
    delivered that answer, as it does in a stream: the client gets it and pays for it, as
    for the same answer without the odd field, not a 502 for free."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    text = f"odd numbers [[fake: pieces=5 {odd}]]"
    if surface == "chat":
        response = client.post("/v1/chat/completions", headers=acct.headers, json={
            "model": "deepseek-chat", "stream": False, "max_tokens": MAX_TOKENS,
            "logprobs": True, "messages": [{"role": "user", "content": text}]})
    elif surface == "messages":
        response = client.post("/v1/messages", headers={
            **acct.headers, "anthropic-version": "2023-06-01"}, json={
            "model": "deepseek-chat", "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": text}]})
    else:
        response = client.post("/v1/responses", headers=acct.headers, json={
            "model": "deepseek-chat", "stream": False, "max_output_tokens": MAX_TOKENS,
            "input": text, "store": False})
    raw = response.get_data()
    response.close()
    assert response.status_code == 200, raw
    answer = json.loads(raw)
    if surface == "chat":
        assert answer["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
    elif surface == "messages":
        assert answer["content"] == [{"type": "text", "text": "w0 w1 w2 w3 w4"}]
    else:
        assert answer["output"][0]["content"][0]["text"] == "w0 w1 w2 w3 w4"
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.estimated) == ("ok", False)
    assert (record.prompt_tokens, record.completion_tokens) == (
        prompt_tokens([{"role": "user", "content": text}]), 5)
    assert record.cost_units == units(expected_cost(
        "deepseek-chat", record.prompt_tokens, record.completion_tokens))
    assert accounts.balance_units(acct.id) == 10**9 - record.cost_units
    assert accounts.audit() == []
