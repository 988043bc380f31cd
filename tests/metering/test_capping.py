"""Whatever counts or names a provider reports, the request is settled, capped at its hold."""

from __future__ import annotations

import json

import pytest

from silk.pricing import units_to_usd
from tests.chat.helpers import expected_cost, messages, prompt_tokens, set_quota_left, units
from tests.ops.helpers import sample

MAX_TOKENS = 200  # the hold's output bound: deepseek-chat has no reasoning budget
HUGE = {"3e9": 3_000_000_000, "2**40": 2**40, "1e25 float": 1e25}


def _ask(client, acct, directive: str, *, stream: bool):
    msgs = messages("absurd", directive)
    body = {"model": "deepseek-chat", "stream": stream, "max_tokens": MAX_TOKENS,
            "messages": msgs}
    response = client.post("/v1/chat/completions", headers=acct.headers, json=body)
    raw = response.get_data()
    response.close()
    return response.status_code, raw, prompt_tokens(msgs)


def _settled_exactly(accounts, acct) -> object:
    [record] = accounts.usage_records(acct.id)
    assert 0 <= record.prompt_tokens < 10**6 and 0 <= record.completion_tokens <= MAX_TOKENS
    assert record.reasoning_tokens <= record.completion_tokens
    assert record.cost_units == units(expected_cost(
        "deepseek-chat", record.prompt_tokens, record.completion_tokens))
    charges = [e.amount_units for e in accounts.ledger(acct.id) if e.kind == "charge"]
    assert charges == ([-record.cost_units] if record.cost_units else [])
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.balance_units(acct.id) == 10**9 - record.cost_units
    assert accounts.audit() == []
    return record


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", list(HUGE))
def test_huge_completion_counts_are_capped_at_the_hold_and_the_rest_written_off(
        app, client, accounts, upstream, stream, name):
    from silk.ops import metrics

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    usage = json.dumps({"completion_tokens": HUGE[name]})
    before = metrics.render()[0].decode()
    status, _, prompt = _ask(client, acct, f"pieces=5 usage_json='{usage}'", stream=stream)
    after = metrics.render()[0].decode()
    assert status == 200
    record = _settled_exactly(accounts, acct)
    assert (record.prompt_tokens, record.completion_tokens) == (prompt, MAX_TOKENS)
    assert not record.estimated
    beyond = int(HUGE[name]) - MAX_TOKENS  # at 0.28 USD per million
    assert record.written_off_units == min(beyond * 280, 2**63 - 1)
    counted = (sample(after, "silk_written_off_usd_total", model="deepseek-chat")
               - sample(before, "silk_written_off_usd_total", model="deepseek-chat"))
    assert counted == pytest.approx(float(units_to_usd(record.written_off_units)))
    billed = (sample(after, "silk_tokens_total", model="deepseek-chat", kind="completion")
              - sample(before, "silk_tokens_total", model="deepseek-chat", kind="completion"))
    assert billed == MAX_TOKENS  # the tokens counted are those billed


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 3_000_000_000},
    {"prompt_cache_hit_tokens": 2**40},
    {"completion_tokens_details": {"reasoning_tokens": 1e25}},
    {"completion_tokens": "1e25"},
    {"completion_tokens": -5},
    {"completion_tokens": float("nan")},
    {"completion_tokens": 10**25},
], ids=["prompt-3e9", "cache-hit-2**40", "reasoning-1e25", "string-1e25", "negative", "NaN",
        "int-1e25"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_no_count_a_provider_sends_fails_the_settlement(app, client, accounts, upstream,
                                                        usage, stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    status, raw, _ = _ask(client, acct, f"pieces=5 usage_json='{json.dumps(usage)}'",
                          stream=stream)
    assert status in (200, 502), raw  # a body that is not JSON is the provider's failure
    record = _settled_exactly(accounts, acct)
    assert record.status in ("ok", "upstream_error")


def test_a_model_name_longer_than_its_column_is_cut_to_fit(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    status, _, prompt = _ask(client, acct, f"pieces=5 reply_model={'m' * 1000}", stream=True)
    assert status == 200
    record = _settled_exactly(accounts, acct)
    assert record.upstream_model == "m" * 128
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("ok", prompt, 5)


def _nested(depth: int) -> dict:
    """A usage object carrying a field nested `depth` levels deep, past what orjson writes."""
    deep: object = 0
    for _ in range(depth):
        deep = {"d": deep}  # objects, not arrays: `]]` would end the fake's directive
    return {"completion_tokens_details": {"reasoning_tokens": 0, "trace": deep}}


def test_a_stream_whose_usage_nests_past_what_can_be_written_back_ends_well(
        app, client, accounts, upstream):
    """The usage chunk the client asked for is ours when the provider's cannot be written."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("deep", f"pieces=5 usage_json='{json.dumps(_nested(300))}'")
    response = client.post("/v1/chat/completions", headers=acct.headers, json={
        "model": "deepseek-chat", "stream": True, "max_tokens": MAX_TOKENS, "messages": msgs,
        "stream_options": {"include_usage": True}})
    events = [line[6:] for line in response.get_data().split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    usage = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
    record = _settled_exactly(accounts, acct)
    assert usage == [{"prompt_tokens": prompt_tokens(msgs), "completion_tokens": 5,
                      "total_tokens": prompt_tokens(msgs) + 5,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0},
                      "prompt_cache_hit_tokens": 0,
                      "prompt_cache_miss_tokens": prompt_tokens(msgs), "estimated": False,
                      "cost": float(units_to_usd(record.cost_units))}]
    assert (record.status, record.completion_tokens) == ("ok", 5)


def test_an_answer_nested_past_what_can_be_written_back_is_a_502_and_free(
        app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    status, raw, _ = _ask(client, acct, f"pieces=5 usage_json='{json.dumps(_nested(300))}'",
                          stream=False)
    assert status == 502, raw
    assert json.loads(raw)["error"]["code"] == "upstream_bad_response"
    record = _settled_exactly(accounts, acct)
    assert (record.status, record.cost_units) == ("upstream_error", 0)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_model_name_with_control_characters_settles(app, client, accounts, upstream, stream):
    """PostgreSQL refuses NUL in text: a provider's model name is stored without them."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    status, _, prompt = _ask(client, acct, "pieces=5 reply_model=a\u0000b\u0007c",
                             stream=stream)
    assert status == 200
    record = _settled_exactly(accounts, acct)
    assert record.upstream_model == "abc"
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("ok", prompt, 5)



# doubao-seed-2.0-pro priced by prompt length, its edge above any prompt bound here.
_TIERED = {"doubao-seed-2.0-pro": {"tiers": [
    {"max_prompt_tokens": 100_000, "input": "0.11", "output": "0.43"},
    {"input": "0.50", "output": "2.00"}]}}


def _tiered_models() -> dict:
    from silk.defaults import MODELS

    return {**MODELS, "doubao-seed-2.0-pro": {**MODELS["doubao-seed-2.0-pro"],
                                              **_TIERED["doubao-seed-2.0-pro"]}}


@pytest.mark.parametrize("app_config", [{"SILK_MODELS": _tiered_models()}], ids=["tiered"])
def test_a_prompt_count_past_a_tier_edge_writes_off_at_that_tiers_price(
        app, client, accounts, upstream, app_config):
    """Capped at the bound, the prompt pays its short tier; what was capped away is priced
    as the provider counted it, in the dear tier its count reaches."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("absurd", "pieces=5 usage_json='{\"prompt_tokens\": 1000000}'")
    body = {"model": "doubao-seed-2.0-pro", "max_tokens": MAX_TOKENS, "messages": msgs,
            "stream": False}
    assert client.post("/v1/chat/completions", headers=acct.headers,
                       json=body).status_code == 200
    [record] = accounts.usage_records(acct.id)
    assert record.completion_tokens == 5 and record.prompt_tokens < 100_000
    charged = record.prompt_tokens * 110 + 5 * 430  # units at the short tier
    assert record.cost_units == charged
    # 1,000,000 prompt tokens and 5 output tokens at the dear tier, less what was charged
    assert record.written_off_units == 1_000_000 * 500 + 5 * 2000 - charged
    assert accounts.audit() == []
