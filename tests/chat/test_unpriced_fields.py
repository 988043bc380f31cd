"""Passed-through fields that would make a provider bill what the gateway does not price or
cannot count: refused with a 400 naming them, or not sent where the answer is the same.

The provider is one an operator adds (`SILK_PROVIDERS`), an OpenAI-compatible server: the
fake's `compat`, which bills a prediction it rejects, answers in audio when asked and
thinks when OpenRouter's `reasoning` object asks, as such servers do.
"""

from __future__ import annotations

import pytest

from silk.defaults import MODELS, PROVIDERS
from silk.pricing import Usage, quote
from tests.chat.helpers import messages, set_quota_left, sse_events

COMPAT = {"name": "Compat", "base_url": "http://127.0.0.1:9", "env": "COMPATX",
          "limit_field": "max_tokens", "limit_covers_reasoning": True}
# The same server, entered by an operator who says its limit leaves the thinking out and
# switches thinking off with the default body ({"thinking": {"type": "disabled"}}).
UNCOVERED = {"name": "Compat uncovered", "base_url": "http://127.0.0.1:9", "env": "COMPATY",
             "limit_field": "max_tokens", "limit_covers_reasoning": False}
MODEL = "compat-chat"
THINKER = "compat-thinker"
JSON = {"Accept": "application/json"}

# (field, value, param named): what a client may not make the provider bill.
REFUSED = [
    ("modalities", ["text", "audio"], "modalities"),
    ("audio", {"voice": "alloy", "format": "wav"}, "audio"),
    ("models", ["openai/gpt-5", "anthropic/claude-opus-4.1"], "models"),
    ("route", "fallback", "route"),
    ("provider", {"order": ["OpenAI"], "allow_fallbacks": True}, "provider"),
    ("preset", "my-preset", "preset"),
    ("plugins", [{"id": "web", "max_results": 5}], "plugins"),
    ("web_search_options", {"search_context_size": "high"}, "web_search_options"),
    ("service_tier", "priority", "service_tier"),
    ("service_tier", "flex", "service_tier"),
]
# What passes through as it came: it changes nothing the provider bills.
PASSED = {"modalities": ["text"], "service_tier": "auto", "store": True,
          "metadata": {"run": "7"}, "transforms": ["middle-out"], "user": "u1",
          "parallel_tool_calls": False, "logit_bias": {"42": -1}}


@pytest.fixture
def app_config(monkeypatch, upstream):
    for env in ("COMPATX", "COMPATY"):
        monkeypatch.setenv(f"{env}_BASE_URL", upstream.base_url("compat"))
        monkeypatch.setenv(f"{env}_API_KEY", "compat-good")
    price = {"input": "0.55", "output": "2.19", "max_output_tokens": 4096}
    return {"SILK_PROVIDERS": {**PROVIDERS, "compat": COMPAT, "uncovered": UNCOVERED},
            "SILK_MODELS": {**MODELS,
                            MODEL: {"provider": "compat", "upstream": MODEL, **price},
                            THINKER: {"provider": "uncovered", "upstream": THINKER, **price}}}


def _post(client, acct, directive, stream=True, model=MODEL, **extra):
    body = {"model": model, "messages": messages("answer me", directive), "stream": stream,
            **extra}
    headers = acct.headers if stream else {**acct.headers, **JSON}
    return client.post("/v1/chat/completions", headers=headers, json=body, buffered=stream)


def _price(app, usage: Usage, model: str = MODEL) -> int:
    cat = app.extensions["silk.catalogue"]
    return quote(cat.model(model).price, usage, cat.tiers["free"], 0).total


def test_a_prediction_is_not_sent(app, client, accounts, upstream):
    """Predicted Outputs bill the prediction's rejected tokens as completion tokens, stream
    none of them and count none against the limit: a whole answer held for 5 tokens reported
    35 and wrote 30 off, a cut stream billed only what it showed. A prediction only speeds
    the same answer up, so it is not sent: the answer is the same and is billed whole."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    prediction = {"type": "content", "content": " ".join(f"p{i}" for i in range(30))}
    answer = _post(client, acct, "pieces=5", stream=False, max_tokens=5,
                   prediction=prediction).json
    assert answer["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
    assert answer["usage"]["completion_tokens"] == 5
    assert "prediction" not in upstream.requests[-1].body
    events = sse_events(_post(client, acct, "pieces=40 cut_after=4",
                              prediction=prediction).data)
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    assert "prediction" not in upstream.requests[-1].body
    whole, cut = accounts.usage_records(acct.id)
    assert whole.completion_tokens == 5 and whole.written_off_units == 0
    assert whole.cost_units == _price(app, Usage(whole.prompt_tokens, 5))
    assert cut.status == "cut" and cut.written_off_units == 0
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_audio_output_is_refused_before_the_provider(app, client, accounts, upstream):
    """Audio streams in `delta.audio`, which the gateway does not count, at a price the
    catalogue does not have: a stream cut after three spoken pieces billed no output."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    before = len(upstream.requests)
    response = _post(client, acct, "pieces=40 cut_after=4", modalities=["text", "audio"],
                     audio={"voice": "alloy", "format": "pcm16"})
    assert response.status_code == 400
    error = response.json["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "modalities"
    assert "audio" in error["message"]
    assert len(upstream.requests) == before
    assert accounts.usage_records(acct.id) == [] and accounts.audit() == []


@pytest.mark.parametrize(("name", "value", "param"), REFUSED,
                         ids=[f"{name}={value}" for name, value, _ in REFUSED])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_a_field_the_catalogue_does_not_price_is_refused(app, client, accounts, upstream,
                                                         name, value, param, stream):
    """A router's fallback to other models or providers, a plugin or web search billed per
    use, a service tier priced apart, audio output: a 400 in OpenAI's envelope naming the
    field, and the provider is never asked."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    before = len(upstream.requests)
    response = _post(client, acct, "pieces=3", stream=stream, **{name: value})
    assert response.status_code == 400, response.data
    error = response.json["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["code"] == "invalid_request" and name in error["message"]
    assert len(upstream.requests) == before
    assert accounts.usage_records(acct.id) == []
    assert accounts.row(acct.id).reserved_units == 0


def test_harmless_fields_pass_through(app, client, accounts, upstream):
    """What changes nothing the provider bills reaches it as the client sent it."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _post(client, acct, "pieces=3", stream=False, **PASSED)
    assert response.status_code == 200, response.json
    sent = upstream.requests[-1].body
    assert {name: sent.get(name) for name in PASSED} == PASSED


def test_a_client_reasoning_object_does_not_switch_thinking_back_on(app, client, accounts,
                                                                    upstream):
    """On a provider whose limit leaves the thinking out, with no budget the gateway
    switches thinking off in the operator's body; OpenRouter's `reasoning` object, which
    that body did not set, switched it back on: held for 5 tokens, the provider thought 40
    more and the gateway wrote them off."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    directive = "pieces=5 reasoning_pieces=40 reasoning_unbounded"
    for switch in ({"effort": "high"}, {"max_tokens": 4000}, {"enabled": True}):
        answer = _post(client, acct, directive, stream=False, model=THINKER, max_tokens=5,
                       reasoning=switch).json
        assert answer["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
        sent = upstream.requests[-1].body
        assert "reasoning" not in sent and sent["thinking"] == {"type": "disabled"}
    # Qwen's and vLLM's switches are not sent either; the template's other arguments are.
    _post(client, acct, "pieces=5", stream=False, model=THINKER, max_tokens=5,
          enable_thinking=True, thinking_budget=4000, reasoning_effort="high",
          chat_template_kwargs={"enable_thinking": True, "thinking": True, "lang": "en"})
    sent = upstream.requests[-1].body
    assert not {"enable_thinking", "thinking_budget", "reasoning_effort"} & sent.keys()
    assert sent["chat_template_kwargs"] == {"lang": "en"}
    for record in accounts.usage_records(acct.id):
        assert record.completion_tokens == 5 and record.written_off_units == 0
        assert record.cost_units == _price(app, Usage(record.prompt_tokens, 5), THINKER)
    assert accounts.audit() == []
