"""The bound reserved is the bound sent: one output limit, in the field each provider obeys.

The fake upstream produces as much as the field it obeys allows (and ignores the others), so a
request whose limit was sent in the wrong field, or whose thinking nothing bounds, comes back
larger than its hold and is under-billed.
"""

from __future__ import annotations

import copy
import itertools

import orjson
import pytest
import requests

from silk.catalog.catalogue import build_catalogue
from silk.chat.translate import to_call
from silk.config import ConfigError, validate
from silk.defaults import MODELS, PROVIDERS, TIERS
from silk.pricing import Usage, quote
from tests.chat.helpers import messages, prompt_tokens, set_quota_left
from tests.conftest import UPSTREAM_KEYS

JSON = {"Accept": "application/json"}
LIMITS = ("max_tokens", "max_completion_tokens")
# An operator's provider whose limit leaves thinking unbounded: the fake's compat with
# `reasoning_unbounded` (its `max_tokens` bounds the answer alone), which thinks as long as
# it likes unless `thinking.budget_tokens` (its budget_field) or another key sizes it.
ANSWER_ONLY = {"name": "Answer-only", "base_url": "http://127.0.0.1:1", "env": "ANSWERX",
               "limit_field": "max_tokens", "limit_covers_reasoning": False,
               "budget_field": "thinking.budget_tokens",
               "thinking_off": {"thinking": {"type": "disabled"}}}
# think-budget's route enables thinking and sizes it nowhere: the gateway sends the budget.
OPERATOR_MODELS = {
    "think-budget": {"provider": "answer_only", "upstream": "doubao-seed-2.0-pro",
                     "extra_body": {"thinking": {"type": "enabled"}}, "reasoning_budget": 64,
                     "input": "0.11", "output": "0.43", "max_output_tokens": 1000},
    "think-none": {"provider": "answer_only", "upstream": "doubao-seed-2.0-pro",
                   "input": "0.11", "output": "0.43", "max_output_tokens": 1000},
}


def _catalogue(fake):
    providers = {**PROVIDERS, "answer_only": ANSWER_ONLY}
    upstreams = {pid: {"base_url": fake.base_url(_fake_of(pid)), "keys": []}
                 for pid in providers}
    return build_catalogue({"SILK_PROVIDERS": providers, "SILK_UPSTREAMS": upstreams,
                            "SILK_MODELS": {**MODELS, **OPERATOR_MODELS}, "SILK_TIERS": TIERS})


def _fake_of(provider: str) -> str:
    return "compat" if provider == "answer_only" else provider


def _ask(fake, provider: str, body: bytes) -> dict:
    upstream = _fake_of(provider)
    response = requests.post(fake.chat_url(upstream), data=body, timeout=10, headers={
        "Authorization": f"Bearer {(UPSTREAM_KEYS.get(upstream) or ['compat-good'])[0]}",
        "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def test_every_combination_bills_at_most_what_was_held(upstream):
    """Each model, thinking switch, effort, limit field(s) and n: the provider stays in the hold.

    The answer-only provider would think 100 tokens: think-budget is held for its limit plus
    64, and its route sets no budget, so the gateway must send one (in the provider's
    budget_field) or the provider bills past the hold (3 + 64 held, 103 reported)."""
    cat = _catalogue(upstream)
    thinking = (None, {"type": "enabled"}, {"type": "auto"}, {"type": "disabled"})
    efforts = (None, "high")
    limits = ({}, {"max_tokens": 3}, {"max_completion_tokens": 3},
              {"max_tokens": 3, "max_completion_tokens": 3})
    walked = 0
    for model, think, effort, limit, n in itertools.product(
            cat.models.values(), thinking, efforts, limits, (None, 2)):
        provider = cat.provider_of(model)
        request = {"model": model.id, "messages": messages(
            "walk", "pieces=50 reasoning_pieces=100 reasoning_unbounded"), **limit}
        for name, value in (("thinking", think), ("reasoning_effort", effort), ("n", n)):
            if value is not None:
                request[name] = value
        plan = to_call(model, provider, request, stream=False, image_allowance=0)
        sent = orjson.loads(plan.call.body)
        case = (model.id, think, effort, limit, n)
        bound = limit.get("max_tokens") or limit.get("max_completion_tokens") or (
            model.max_output_tokens)
        # Exactly one limit: the provider's field, at the bound the hold used.
        assert {f: sent[f] for f in LIMITS if f in sent} == {provider.limit_field: bound}, case
        if not provider.limit_covers_reasoning and not model.reasoning_budget:
            assert sent["thinking"] == {"type": "disabled"}, case
            assert "reasoning_effort" not in sent, case
        elif not provider.limit_covers_reasoning:
            assert sent["thinking"] == {"type": "enabled", "budget_tokens": 64}, case
        usage = _ask(upstream, provider.id, plan.call.body)["usage"]
        assert usage["completion_tokens"] <= plan.call.max_output, case
        assert plan.call.max_output == (bound + (
            0 if provider.limit_covers_reasoning else model.reasoning_budget)) * (n or 1), case
        walked += 1
    assert walked == 8 * 4 * 2 * 4 * 2


def test_stream_options_sent_upstream_are_only_include_usage(upstream):
    cat = _catalogue(upstream)
    model = cat.model("doubao-seed-2.0-pro")
    for options in ({"include_usage": True, "chunk_include_usage": True},
                    {"chunk_include_usage": True}, None, {"include_usage": False}):
        plan = to_call(model, cat.provider_of(model), {
            "model": model.id, "messages": messages(), "stream_options": options},
            stream=True, image_allowance=0)
        assert orjson.loads(plan.call.body)["stream_options"] == {"include_usage": True}
        assert plan.client_wants_usage is bool(options and options.get("include_usage"))


def test_config_refuses_thinking_nothing_bounds():
    """A route that enables thinking its provider's limit does not bound needs a budget."""
    cfg = {"SQLALCHEMY_DATABASE_URI": "sqlite://", "SILK_UPSTREAMS": {},
           "SILK_PROVIDERS": {**PROVIDERS, "answer_only": ANSWER_ONLY},
           "SILK_MODELS": {**MODELS, **OPERATOR_MODELS}, "SILK_TIERS": TIERS,
           "SILK_DEFAULT_TIER": "free", "SILK_REGISTRATION": "invite", "SILK_TOPUP_MAX": "1"}
    validate(cfg)
    bad = copy.deepcopy(cfg)
    del bad["SILK_MODELS"]["think-budget"]["reasoning_budget"]
    with pytest.raises(ConfigError, match="think-budget.*reasoning_budget"):
        validate(bad)
    bad = copy.deepcopy(cfg)
    bad["SILK_PROVIDERS"]["answer_only"]["thinking_off"] = None
    with pytest.raises(ConfigError, match="think-none.*thinking_off"):
        validate(bad)
    # The budget reaches the provider only where it reads it: a provider that names no
    # budget_field (Ark read by `max_tokens` has no such key) cannot hold thinking to it.
    bad = copy.deepcopy(cfg)
    del bad["SILK_PROVIDERS"]["answer_only"]["budget_field"]
    with pytest.raises(ConfigError, match="think-budget.*budget_field"):
        validate(bad)
    for field in (5, "", "thinking..budget_tokens", "max_tokens", "messages.0"):
        bad = copy.deepcopy(cfg)
        bad["SILK_PROVIDERS"]["answer_only"]["budget_field"] = field
        with pytest.raises(ConfigError, match="'answer_only': budget_field"):
            validate(bad)
    # The route may set the budget's key lower, never higher nor as a non-object.
    for extra in ({"thinking": {"type": "enabled", "budget_tokens": 65}},
                  {"thinking": {"type": "enabled", "budget_tokens": "lots"}},
                  {"thinking": {"type": "enabled", "budget_tokens": -1}},
                  {"thinking": True}):
        bad = copy.deepcopy(cfg)
        bad["SILK_MODELS"]["think-budget"]["extra_body"] = extra
        with pytest.raises(ConfigError, match="think-budget.*thinking"):
            validate(bad)
    good = copy.deepcopy(cfg)
    good["SILK_MODELS"]["think-budget"]["extra_body"] = {
        "thinking": {"type": "enabled", "budget_tokens": 64}}
    validate(good)
    bad = copy.deepcopy(cfg)
    bad["SILK_MODELS"]["deepseek-chat"]["extra_body"] = {"max_tokens": 10}
    with pytest.raises(ConfigError, match="deepseek-chat.*output limit"):
        validate(bad)
    bad = copy.deepcopy(cfg)
    bad["SILK_PROVIDERS"]["ark"]["limit_field"] = "max_output_tokens"
    with pytest.raises(ConfigError, match="'ark': limit_field"):
        validate(bad)


# ------------------------------------------------------------- through the gateway, charged


def _post(client, acct, body):
    return client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json=body,
                       buffered=True)


def _charged_exactly(app, accounts, acct, model: str, usage: Usage) -> None:
    """The request was charged the list price of what the provider reported, none written off."""
    cat = app.extensions["silk.catalogue"]
    cost = quote(cat.model(model).price, usage, cat.tiers["free"], 0).total
    [record] = accounts.usage_records(acct.id)
    assert (record.prompt_tokens, record.completion_tokens) == (usage.prompt_tokens,
                                                                usage.completion_tokens)
    assert record.cost_units == cost and record.written_off_units == 0
    ledger = accounts.ledger(acct.id)
    assert [(e.kind, e.amount_units) for e in ledger] == [("topup", 10**9), ("charge", -cost)]
    assert accounts.balance_units(acct.id) == 10**9 - cost
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


def test_conflicting_limits_are_a_400(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = _post(client, acct, {"model": "deepseek-chat", "messages": messages(),
                                    "max_completion_tokens": 1, "max_tokens": 393216})
    assert response.status_code == 400
    assert response.json["error"]["param"] == "max_tokens"
    response = _post(client, acct, {"model": "deepseek-chat", "messages": messages(),
                                    "max_completion_tokens": 8193})
    assert response.status_code == 400
    assert response.json["error"]["param"] == "max_completion_tokens"
    assert upstream.requests == [] and accounts.usage_records(acct.id) == []
    equal = _post(client, acct, {"model": "deepseek-chat", "messages": messages(),
                                 "max_completion_tokens": 7, "max_tokens": 7})
    assert equal.status_code == 200, equal.json
    sent = upstream.requests[-1].body
    assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent


@pytest.mark.parametrize("stream", [False, True])
def test_max_completion_tokens_is_sent_as_deepseeks_max_tokens(app, client, accounts, upstream,
                                                               stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("count", "pieces=20")
    response = _post(client, acct, {"model": "deepseek-chat", "messages": msgs,
                                    "max_completion_tokens": 5, "stream": stream})
    assert response.status_code == 200
    # The fake made what DeepSeek's max_tokens allowed, and that is what the hold covered.
    _charged_exactly(app, accounts, acct, "deepseek-chat", Usage(prompt_tokens(msgs), 5))
    sent = upstream.requests[-1].body
    assert sent["max_tokens"] == 5 and "max_completion_tokens" not in sent
    if not stream:
        assert response.json["usage"]["completion_tokens"] == 5
        assert response.json["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("model, provider", [("doubao-seed-2.0-pro", "ark"),
                                             ("mimo-v2.5-pro", "mimo")])
@pytest.mark.parametrize("thinking", [{"thinking": {"type": "enabled"}},
                                      {"reasoning_effort": "high"}])
def test_thinking_on_max_tokens_1_stays_in_the_hold(app, client, accounts, upstream, model,
                                                    provider, thinking):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("think hard", "pieces=10 reasoning_pieces=30")
    response = _post(client, acct, {"model": model, "messages": msgs, "max_tokens": 1,
                                    **thinking})
    assert response.status_code == 200, response.json
    reported = response.json["usage"]
    # Charged the list price of every token the provider reported, reasoning included.
    _charged_exactly(app, accounts, acct, model,
                     Usage(reported["prompt_tokens"], reported["completion_tokens"]))
    assert reported["completion_tokens"] == 1  # the provider's bound held the thinking too
    sent = upstream.requests[-1].body
    assert sent["max_completion_tokens"] == 1 and "max_tokens" not in sent


@pytest.fixture
def answer_only_ark(app_config):
    """Ark configured by an operator as obeying `max_tokens`, which leaves thinking unbounded."""
    providers = copy.deepcopy(PROVIDERS)
    providers["ark"].update(limit_field="max_tokens", limit_covers_reasoning=False)
    app_config["SILK_PROVIDERS"] = providers


@pytest.mark.parametrize("thinking", [{"thinking": {"type": "enabled"}},
                                      {"reasoning_effort": "high"},
                                      {"thinking": {"type": "auto"}, "reasoning_effort": "high"}])
def test_thinking_is_switched_off_where_nothing_bounds_it(answer_only_ark, app, client, accounts,
                                                          upstream, thinking):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("think hard", "pieces=10 reasoning_pieces=30")
    response = _post(client, acct, {"model": "doubao-seed-2.0-pro", "messages": msgs,
                                    "max_tokens": 1, **thinking})
    assert response.status_code == 200, response.json
    reported = response.json["usage"]
    _charged_exactly(app, accounts, acct, "doubao-seed-2.0-pro",
                     Usage(reported["prompt_tokens"], reported["completion_tokens"]))
    assert reported["completion_tokens"] == 1
    assert "reasoning_content" not in response.json["choices"][0]["message"]
    sent = upstream.requests[-1].body
    assert sent["thinking"] == {"type": "disabled"} and "reasoning_effort" not in sent
    assert sent["max_tokens"] == 1 and "max_completion_tokens" not in sent


@pytest.mark.parametrize("stream", [False, True])
def test_a_passed_through_field_a_provider_reads_as_prompt_is_in_the_hold(
        app, client, accounts, upstream, stream):
    """A provider extra passes through, and a provider may render it into its prompt
    (vLLM's `documents` for RAG chat templates): the hold's prompt bound counts it, so the
    provider's count of it is charged, not capped and written off."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    document = " ".join(f"w{i}" for i in range(2000))
    msgs = messages("summarise the document")
    prompt = prompt_tokens(msgs) + 2000  # the provider's count, the document's words too
    usage = orjson.dumps({"prompt_tokens": prompt}).decode()
    msgs = messages("summarise the document", f"pieces=5 usage_json='{usage}'")
    response = _post(client, acct, {
        "model": "deepseek-chat", "messages": msgs, "max_tokens": 50, "stream": stream,
        "documents": [{"title": "notes", "text": document}]})
    assert response.status_code == 200
    assert upstream.requests[-1].body["documents"][0]["text"] == document
    _charged_exactly(app, accounts, acct, "deepseek-chat", Usage(prompt, 5))
