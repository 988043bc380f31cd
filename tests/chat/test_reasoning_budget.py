"""A reasoning budget on a provider whose limit leaves the thinking out: the hold covers the
answer's limit plus the budget, so the client cannot size the thinking past it.

The provider is the fake's `compat` entered by an operator who says its `max_tokens` bounds
the answer alone (the `reasoning_unbounded` option), with a route that enables thinking and
sets its budget in `thinking.budget_tokens`. Like OpenRouter, `compat` sizes the thinking by
the `reasoning` object or an effort over any other budget key.
"""

from __future__ import annotations

import pytest

from silk.defaults import MODELS, PROVIDERS
from silk.pricing import Usage, quote
from tests.chat.helpers import messages, set_quota_left, sse_events
from tests.responses.helpers import post as post_response

UNCOVERED = {"name": "Compat uncovered", "base_url": "http://127.0.0.1:9", "env": "COMPATB",
             "limit_field": "max_tokens", "limit_covers_reasoning": False}
BUDGET = 8
MODEL = "compat-budgeted"
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
                "input": "0.55", "output": "2.19", "max_output_tokens": 4096}}}


def _post(client, acct, stream=False, **extra):
    body = {"model": MODEL, "messages": messages("answer me", DIRECTIVE), "stream": stream,
            "max_tokens": 5, **extra}
    headers = acct.headers if stream else {**acct.headers, **JSON}
    return client.post("/v1/chat/completions", headers=headers, json=body, buffered=stream)


def _price(app, usage: Usage) -> int:
    cat = app.extensions["silk.catalogue"]
    return quote(cat.model(MODEL).price, usage, cat.tiers["free"], 0).total


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
