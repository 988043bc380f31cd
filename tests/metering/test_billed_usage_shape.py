"""The usage a client is told when the counts billed are not the provider's last report.

A capped answer, or a stream cut and billed from an estimate, tells its client the counts
billed; it does so in the usage object a normal answer carries on that surface (chat's
details and DeepSeek's cache split, Responses' details, Anthropic's cache fields), so a
client that reads cache hits or reasoning reads the counts it paid for, not nothing.
"""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from silk.pricing import units_to_usd
from tests.chat.helpers import set_quota_left, sse_events
from tests.messages.helpers import HEADERS, sse
from tests.responses.helpers import typed_events

MAX_TOKENS = 200
CACHE_HIT = 3
REASONING = 7
# A provider's answer whose output count is past any hold: billed at MAX_TOKENS.
CAPPED = (f"pieces=5 cache_hit={CACHE_HIT} usage_json='" + json.dumps({
    "completion_tokens": 3_000_000_000,
    "completion_tokens_details": {"reasoning_tokens": REASONING}}) + "'")
# A stream that counts its prompt first, sends three words and breaks off: the output is
# billed from the estimate of what was delivered.
CUT = f"pieces=5 cache_hit={CACHE_HIT} early_usage cut_after=5"
DELIVERED = 3  # "w0 w1 w2"


def _post(client, acct, surface: str, directive: str, stream: bool):
    text = f"what it costs [[fake: {directive}]]"
    if surface == "chat":
        return client.post("/v1/chat/completions", headers=acct.headers, buffered=True, json={
            "model": "deepseek-chat", "stream": stream, "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": text}],
            **({"stream_options": {"include_usage": True}} if stream else {})})
    if surface == "messages":
        return client.post("/v1/messages", headers={**acct.headers, **HEADERS}, buffered=True,
                           json={"model": "deepseek-chat", "stream": stream,
                                 "max_tokens": MAX_TOKENS,
                                 "messages": [{"role": "user", "content": text}]})
    return client.post("/v1/responses", headers=acct.headers, buffered=True, json={
        "model": "deepseek-chat", "stream": stream, "max_output_tokens": MAX_TOKENS,
        "input": text, "store": False})


def _billed(accounts, acct, *, estimated: bool) -> tuple[int, int, int, int, Decimal]:
    """The one record's counts (prompt, completion, cache hits, reasoning) and its cost."""
    [record] = accounts.usage_records(acct.id)
    assert record.estimated is estimated
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0
    return (record.prompt_tokens, record.completion_tokens, record.cache_hit_tokens,
            record.reasoning_tokens, units_to_usd(record.cost_units))


def _chat_usage(billed, *, estimated: bool) -> dict:
    """The chat usage object of the counts billed, as DeepSeek shapes its own."""
    prompt, completion, hits, reasoning, cost = billed
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": hits},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
            "prompt_cache_hit_tokens": hits, "prompt_cache_miss_tokens": prompt - hits,
            "estimated": estimated, "cost": float(cost)}


def _responses_usage(billed, *, estimated: bool) -> dict:
    prompt, completion, hits, reasoning, cost = billed
    out = {"input_tokens": prompt,
           "input_tokens_details": {"cached_tokens": hits, "cache_write_tokens": 0},
           "output_tokens": completion,
           "output_tokens_details": {"reasoning_tokens": reasoning},
           "total_tokens": prompt + completion, "cost": float(cost)}
    return {**out, "estimated": True} if estimated else out


def _messages_usage(billed, *, estimated: bool) -> dict:
    prompt, completion, hits, _, cost = billed
    out = {"input_tokens": prompt - hits, "output_tokens": completion,
           "cache_read_input_tokens": hits, "cache_creation_input_tokens": 0,
           "cost": float(cost)}
    return {**out, "estimated": True} if estimated else out


def test_a_capped_chat_answer_tells_the_counts_billed_in_the_providers_shape(
        app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _post(client, acct, "chat", CAPPED, stream=False)
    assert response.status_code == 200, response.data
    billed = _billed(accounts, acct, estimated=False)
    assert billed[1:4] == (MAX_TOKENS, CACHE_HIT, REASONING)
    answer = response.json
    assert answer["usage"] == _chat_usage(billed, estimated=False)
    usage = ChatCompletion.model_validate(answer).usage
    assert usage.prompt_tokens_details.cached_tokens == CACHE_HIT
    assert usage.completion_tokens_details.reasoning_tokens == REASONING


def test_a_cut_chat_stream_tells_its_estimate_in_the_providers_shape(
        app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _post(client, acct, "chat", CUT, stream=True)
    assert response.status_code == 200
    billed = _billed(accounts, acct, estimated=True)
    assert billed[1:4] == (DELIVERED, CACHE_HIT, 0)
    [usage] = [e["usage"] for e in sse_events(response.data) if e.get("usage")]
    assert usage == _chat_usage(billed, estimated=True)
    assert CompletionUsage.model_validate(usage).prompt_tokens_details.cached_tokens == CACHE_HIT


def test_a_capped_response_tells_the_reasoning_billed(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _post(client, acct, "responses", CAPPED, stream=False)
    assert response.status_code == 200, response.data
    billed = _billed(accounts, acct, estimated=False)
    assert billed[1:4] == (MAX_TOKENS, CACHE_HIT, REASONING)
    assert response.json["usage"] == _responses_usage(billed, estimated=False)
    usage = Response.model_validate(response.json).usage
    assert usage.output_tokens_details.reasoning_tokens == REASONING


def test_a_cut_responses_stream_tells_its_estimate_in_full(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _post(client, acct, "responses", CUT, stream=True)
    assert response.status_code == 200
    billed = _billed(accounts, acct, estimated=True)
    assert billed[1:4] == (DELIVERED, CACHE_HIT, 0)
    [failed] = [e for e in typed_events(response.data) if e["type"] == "response.failed"]
    assert failed["response"]["usage"] == _responses_usage(billed, estimated=True)
    usage = Response.model_validate(failed["response"]).usage
    assert usage.input_tokens_details.cached_tokens == CACHE_HIT


@pytest.mark.parametrize("stream", [False, True], ids=["capped", "cut"])
def test_a_translated_message_tells_the_counts_billed_in_anthropics_fields(
        app, client, accounts, upstream, stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _post(client, acct, "messages", CUT if stream else CAPPED, stream=stream)
    assert response.status_code == 200, response.data
    billed = _billed(accounts, acct, estimated=stream)
    if stream:
        assert billed[1:3] == (DELIVERED, CACHE_HIT)
        [usage] = [data["usage"] for name, data in sse(response.data) if name == "error"]
    else:
        assert billed[1:3] == (MAX_TOKENS, CACHE_HIT)
        usage = response.json["usage"]
    assert usage == _messages_usage(billed, estimated=stream)
    assert anthropic.types.Usage.model_validate(usage).cache_read_input_tokens == CACHE_HIT
