"""What a provider claims in its chat answer, as the client is told it and billed for it."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from silk.pricing import Usage, quote, units_to_usd, usd_to_units
from tests.chat.helpers import (
    expected_cost,
    messages,
    prompt_tokens,
    set_quota_left,
    sse_events,
    units,
)
from tests.messages.helpers import HEADERS, sse
from tests.responses.helpers import typed_events

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


HIGH = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
        "prompt_cache_hit_tokens": 40, "prompt_cache_miss_tokens": 60,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 20}}
LOW = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
       "prompt_cache_hit_tokens": 4, "prompt_cache_miss_tokens": 6,
       "prompt_tokens_details": {"cached_tokens": 4},
       "completion_tokens_details": {"reasoning_tokens": 2}}


def _told(surface: str, raw: bytes) -> tuple[int, int, int, int | None, float]:
    """The usage a stream's client was told at its end: input, output, cache hits,
    reasoning (None where the surface has no such field), cost."""
    if surface == "chat":
        [usage] = [e["usage"] for e in sse_events(raw)[:-1] if e.get("usage")]
        hits = usage["prompt_cache_hit_tokens"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == hits
        assert usage["prompt_cache_miss_tokens"] == usage["prompt_tokens"] - hits
        return (usage["prompt_tokens"], usage["completion_tokens"], hits,
                usage["completion_tokens_details"]["reasoning_tokens"], usage["cost"])
    if surface == "messages":
        [usage] = [data["usage"] for name, data in sse(raw) if name == "message_delta"]
        hits = usage["cache_read_input_tokens"]
        return usage["input_tokens"] + hits, usage["output_tokens"], hits, None, usage["cost"]
    [done] = [e for e in typed_events(raw) if e["type"] == "response.completed"]
    usage = done["response"]["usage"]
    return (usage["input_tokens"], usage["output_tokens"],
            usage["input_tokens_details"]["cached_tokens"],
            usage["output_tokens_details"]["reasoning_tokens"], usage["cost"])


@pytest.mark.parametrize("surface", ["chat", "messages", "responses"])
@pytest.mark.parametrize("order", ["down", "up"])
def test_a_stream_is_billed_the_largest_counts_it_reported(app, client, accounts, upstream,
                                                           surface, order):
    """A provider that reports usage on several chunks and then less than before (a bug, or
    a lie) is billed, and tells its client, the largest counts it reported: what it counted
    once was delivered; a later count going up is billed as it came."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    first, last = (HIGH, LOW) if order == "down" else (LOW, HIGH)
    text = (f"count twice [[fake: pieces=5 repeat_usage=1 usage_json='{json.dumps(first)}' "
            f"last_usage_json='{json.dumps(last)}']]")
    message = [{"role": "user", "content": text}]
    if surface == "chat":
        response = client.post("/v1/chat/completions", headers=acct.headers, buffered=True,
                               json={"model": "deepseek-chat", "stream": True,
                                     "max_tokens": MAX_TOKENS, "messages": message,
                                     "stream_options": {"include_usage": True}})
    elif surface == "messages":
        response = client.post("/v1/messages", headers={**acct.headers, **HEADERS},
                               buffered=True, json={"model": "deepseek-chat", "stream": True,
                                                    "max_tokens": MAX_TOKENS,
                                                    "messages": message})
    else:
        response = client.post("/v1/responses", headers=acct.headers, buffered=True, json={
            "model": "deepseek-chat", "stream": True, "max_output_tokens": MAX_TOKENS,
            "input": text, "store": False})
    assert response.status_code == 200, response.data
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.estimated) == ("ok", False)
    assert (record.prompt_tokens, record.completion_tokens, record.cache_hit_tokens,
            record.reasoning_tokens) == (100, 50, 40, 20)
    cat = app.extensions["silk.catalogue"]
    cost = quote(cat.model("deepseek-chat").price, Usage(100, 50, 40), cat.tiers["free"],
                 0).total
    assert record.cost_units == cost and record.written_off_units == 0
    assert accounts.balance_units(acct.id) == 10**9 - cost
    prompt, output, hits, reasoning, told_cost = _told(surface, response.data)
    assert (prompt, output, hits) == (100, 50, 40) and reasoning in (20, None)
    assert usd_to_units(Decimal(str(told_cost))) == cost
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0
