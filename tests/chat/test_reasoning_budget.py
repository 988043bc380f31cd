"""A reasoning budget on a provider whose limit leaves the thinking out: the hold covers the
answer's limit plus the budget, so the client cannot size the thinking past it.

The provider is the fake's `compat` entered by an operator who says its `max_tokens` bounds
the answer alone (the `reasoning_unbounded` option) and that it reads its thinking budget in
`thinking.budget_tokens` (its budget_field), with a route that enables thinking and sets its
budget there, and one that enables it and sizes it nowhere. Like OpenRouter, `compat` sizes
the thinking by the `reasoning` object or an effort over any other budget key, and thinks
without bound when nothing sizes it.
"""

from __future__ import annotations

import copy

import pytest

from silk.defaults import MODELS, PROVIDERS
from silk.pricing import Usage, quote
from tests.chat.helpers import messages, set_quota_left, sse_events
from tests.responses.helpers import post as post_response

UNCOVERED = {"name": "Compat uncovered", "base_url": "http://127.0.0.1:9", "env": "COMPATB",
             "limit_field": "max_tokens", "limit_covers_reasoning": False,
             "budget_field": "thinking.budget_tokens"}
BUDGET = 8
MODEL = "compat-budgeted"
UNSIZED = "compat-unsized"  # its route enables thinking and sets no budget
JSON = {"Accept": "application/json"}
DIRECTIVE = "pieces=5 reasoning_pieces=40 reasoning_unbounded"


@pytest.fixture
def app_config(monkeypatch, upstream):
    monkeypatch.setenv("COMPATB_BASE_URL", upstream.base_url("compat"))
    monkeypatch.setenv("COMPATB_API_KEY", "compat-good")
    return {"SILK_PROVIDERS": {**PROVIDERS, "uncovered": UNCOVERED},
            "SILK_MODELS": {**MODELS, MODEL: {
                "provider": "uncovered", "upstream": MODEL, "reasoning_budget": BUDGET,
                "extra_body": {"thinking": {"type": "enabled", "budget_tokens": BUDGET}},
                "input": "0.55", "output": "2.19", "max_output_tokens": 4096}, UNSIZED: {
                "provider": "uncovered", "upstream": UNSIZED, "reasoning_budget": BUDGET,
                "extra_body": {"thinking": {"type": "enabled"}},
                "input": "0.55", "output": "2.19", "max_output_tokens": 4096}}}


def _post(client, acct, stream=False, model=MODEL, **extra):
    body = {"model": model, "messages": messages("answer me", DIRECTIVE), "stream": stream,
            "max_tokens": 5, **extra}
    headers = acct.headers if stream else {**acct.headers, **JSON}
    return client.post("/v1/chat/completions", headers=headers, json=body, buffered=stream)


def _price(app, usage: Usage, model: str = MODEL) -> int:
    cat = app.extensions["silk.catalogue"]
    return quote(cat.model(model).price, usage, cat.tiers["free"], 0).total


@pytest.mark.parametrize("stream", [False, True])
def test_the_gateway_sends_the_budget_the_route_leaves_out(app, client, accounts, upstream,
                                                           stream):
    """Held for 5 answer tokens plus the budget of 8, but the route enables thinking without
    sizing it: the provider thought 40, 45 were reported and 32 written off. The gateway now
    writes the budget into the provider's budget_field itself."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _post(client, acct, stream=stream, model=UNSIZED)
    assert response.status_code == 200
    [record] = accounts.usage_records(acct.id)
    assert record.written_off_units == 0 and record.completion_tokens == 5 + BUDGET
    assert record.cost_units == _price(app, Usage(record.prompt_tokens, 5 + BUDGET), UNSIZED)
    assert accounts.audit() == []
    assert upstream.requests[-1].body["thinking"] == {"type": "enabled",
                                                      "budget_tokens": BUDGET}


# (what the client sent, its `reasoning` as sent, thinking tokens spent)
ASKED = [
    ({"reasoning": {"effort": "high"}}, {"max_tokens": BUDGET}, BUDGET),
    ({"reasoning": {"max_tokens": 4000}}, {"max_tokens": BUDGET}, BUDGET),
    ({"reasoning": {"enabled": True}}, {"enabled": True, "max_tokens": BUDGET}, BUDGET),
    ({"reasoning": {"max_tokens": 3}}, {"max_tokens": 3}, 3),
    ({"reasoning": {"max_tokens": -1}}, {"max_tokens": BUDGET}, BUDGET),
    ({"reasoning": {"effort": "high", "max_tokens": 5, "exclude": False}},
     {"max_tokens": 5, "exclude": False}, 5),
    ({"reasoning": {"enabled": False}}, {"enabled": False}, 0),
    ({"reasoning": {"effort": "none"}}, {"effort": "none"}, 0),
    ({"reasoning_effort": "high"}, None, BUDGET),
    ({"reasoning_effort": "none"}, None, BUDGET),
]


@pytest.mark.parametrize(("asked", "sent", "thought"), ASKED,
                         ids=[str(asked) for asked, _, _ in ASKED])
def test_a_client_cannot_size_the_thinking_past_the_budget(app, client, accounts, upstream,
                                                           asked, sent, thought):
    """Held for 5 answer tokens plus the budget of 8; OpenRouter's `reasoning` object or an
    effort, read over the route's `thinking.budget_tokens`, made the provider think 40: 45
    reported and 32 written off. A client's budget is now capped at the model's, in the
    same key, and an effort (other than none) is not sent."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    answer = _post(client, acct, **asked).json
    assert answer["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
    [record] = accounts.usage_records(acct.id)
    assert record.written_off_units == 0 and record.completion_tokens == 5 + thought
    assert record.cost_units == _price(app, Usage(record.prompt_tokens, 5 + thought))
    assert accounts.audit() == []
    body = upstream.requests[-1].body
    assert body.get("reasoning") == sent
    assert body.get("reasoning_effort") == (
        "none" if asked.get("reasoning_effort") == "none" else None)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": BUDGET}


def test_a_streamed_answer_stays_in_the_hold(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    events = sse_events(_post(client, acct, stream=True, reasoning={"effort": "high"}).data)
    assert events[-1] == "[DONE]"
    assert upstream.requests[-1].body["reasoning"] == {"max_tokens": BUDGET}
    [record] = accounts.usage_records(acct.id)
    assert record.written_off_units == 0 and record.completion_tokens == 5 + BUDGET
    assert accounts.audit() == []


def test_every_other_budget_key_is_capped_and_every_effort_left_out(app, client, accounts,
                                                                    upstream):
    """Qwen's, vLLM's and SGLang's budget keys are capped at the model's budget; a client's
    own `thinking` is the route's here, and OpenRouter's `include_reasoning` (thinking at
    its default effort) is not sent."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    _post(client, acct, thinking_budget=4000, thinking_token_budget=2, include_reasoning=True,
          enable_thinking=True,
          chat_template_kwargs={"thinking_budget": "lots", "reasoning_effort": "high",
                                "enable_thinking": True, "lang": "en"},
          thinking={"type": "enabled", "budget_tokens": 4000})
    sent = upstream.requests[-1].body
    assert sent["thinking_budget"] == BUDGET and sent["thinking_token_budget"] == 2
    assert "include_reasoning" not in sent and sent["enable_thinking"] is True
    assert sent["chat_template_kwargs"] == {"thinking_budget": BUDGET,
                                            "enable_thinking": True, "lang": "en"}
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": BUDGET}
    [record] = accounts.usage_records(acct.id)
    assert record.written_off_units == 0 and record.completion_tokens == 5 + BUDGET
    assert accounts.audit() == []


def test_a_responses_effort_stays_in_the_hold(app, client, accounts, upstream):
    """/v1/responses sends `reasoning.effort` as `reasoning_effort`: an effort, not sent."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    answer = post_response(client, acct, {
        "model": MODEL, "input": f"answer me [[fake: {DIRECTIVE}]]", "max_output_tokens": 5,
        "reasoning": {"effort": "high"}})
    assert answer.status_code == 200, answer.json
    [record] = accounts.usage_records(acct.id)
    assert record.written_off_units == 0 and record.completion_tokens == 5 + BUDGET
    assert "reasoning_effort" not in upstream.requests[-1].body
    assert accounts.audit() == []


# (the provider's budget_field, the route's extra_body, what the client sent, what is sent)
SENT = [
    ("thinking.budget_tokens", {"thinking": {"type": "enabled"}}, {},
     {"thinking": {"type": "enabled", "budget_tokens": BUDGET}}),
    ("reasoning.max_tokens", {"reasoning": {"enabled": True}}, {},
     {"reasoning": {"enabled": True, "max_tokens": BUDGET}}),
    ("reasoning.max_tokens", {}, {"reasoning": {"max_tokens": 3}},
     {"reasoning": {"max_tokens": 3}}),
    ("thinking_budget", {"enable_thinking": True}, {"thinking_budget": 4000},
     {"enable_thinking": True, "thinking_budget": BUDGET}),
    ("chat_template_kwargs.thinking_budget",
     {"chat_template_kwargs": {"enable_thinking": True}}, {},
     {"chat_template_kwargs": {"enable_thinking": True, "thinking_budget": BUDGET}}),
    ("nvext.max_thinking_tokens", {}, {"nvext": {"top_k": 5}},
     {"nvext": {"top_k": 5, "max_thinking_tokens": BUDGET}}),
    ("extra_body.google.thinking_config.thinking_budget", {}, {"extra_body": {"google": {
        "thinking_config": {"include_thoughts": True, "thinking_budget": -1}}}},
     {"extra_body": {"google": {"thinking_config": {"include_thoughts": True,
                                                     "thinking_budget": BUDGET}}}}),
    # A route's smaller budget is kept; a key on the way that is not an object is replaced.
    ("thinking.budget_tokens", {"thinking": {"type": "enabled", "budget_tokens": 2}}, {},
     {"thinking": {"type": "enabled", "budget_tokens": 2}}),
    ("thinking.budget_tokens", {}, {"thinking": True}, {"thinking": {"budget_tokens": BUDGET}}),
]


@pytest.mark.parametrize(("field", "route", "asked", "sent"), SENT,
                         ids=[f"{field}-{asked}" for field, _, asked, _ in SENT])
def test_the_budget_goes_where_the_provider_reads_it(field, route, asked, sent):
    """Whatever the route and the client send, the provider's budget_field carries a budget
    within the model's; the route's extra_body, merged by reference, is left as it was."""
    from silk.catalog.catalogue import Model, Provider
    from silk.pricing import Price
    from silk.relay.call import bound_body

    provider = Provider(id="p", name="P", base_url="http://x", keys=(), budget_field=field)
    kept = copy.deepcopy(route)
    model = Model(id="m", provider="p", upstream="u", price=Price(1, 1), max_output_tokens=99,
                  reasoning_budget=BUDGET, extra_body=route)
    body = {"model": "m", "messages": [], **asked}
    assert bound_body(body, model, provider, limit=5, stream=False) == 5 + BUDGET
    assert {name: body[name] for name in sent} == sent
    assert route == kept


def test_gemini_and_nvidia_budgets_are_capped(app, client, accounts, upstream):
    """Gemini's thinking_config (in the body's extra_body, as Gemini's OpenAI endpoint reads
    it, or a level up) and NVIDIA NIM's nvext are sized within the budget; Gemini's
    thinking_level names no number of tokens and is not sent."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    config = {"thinking_budget": 4000, "thinking_level": "high", "include_thoughts": True}
    response = _post(client, acct, extra_body={"google": {"thinking_config": config}},
                     google={"thinking_config": {"thinking_budget": 3}},
                     thinking_config={"thinking_level": "low"},
                     nvext={"max_thinking_tokens": 4000, "top_k": 5})
    assert response.status_code == 200
    sent = upstream.requests[-1].body
    assert sent["extra_body"] == {"google": {"thinking_config": {
        "thinking_budget": BUDGET, "include_thoughts": True}}}
    assert sent["google"] == {"thinking_config": {"thinking_budget": 3}}
    assert sent["thinking_config"] == {}
    assert sent["nvext"] == {"max_thinking_tokens": BUDGET, "top_k": 5}
    [record] = accounts.usage_records(acct.id)
    assert record.written_off_units == 0 and record.completion_tokens == 5 + BUDGET
    assert accounts.audit() == []
