"""Non-streaming chat completions: routing, pass-through, exact metering."""

from decimal import Decimal

import pytest

from tests.chat.helpers import expected_cost, messages, prompt_tokens, set_quota_left, units

JSON = {"Accept": "application/json"}


def test_deepseek_chat_routes_to_flash_with_thinking_disabled(client, accounts, upstream):
    acct = accounts.make(tier="free", credit="1")
    msgs = messages("What is the Silk Road?")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "messages": msgs, "stream": False,
                                 "temperature": 0.7, "top_p": 0.9, "seed": 7,
                                 "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert response.status_code == 200, response.json
    sent = upstream.requests[-1]
    assert sent.provider == "deepseek"
    assert sent.key in ("sk-ds-good", "sk-ds-second")
    assert sent.body["model"] == "deepseek-v4-flash"
    assert sent.body["thinking"] == {"type": "disabled"}
    assert sent.body["temperature"] == 0.7 and sent.body["top_p"] == 0.9
    assert sent.body["seed"] == 7 and sent.body["tools"][0]["function"]["name"] == "f"
    assert sent.body["max_tokens"] == 8192  # the bound the reservation relied on
    body = response.json
    assert body["object"] == "chat.completion"
    assert body["model"] == "deepseek-v4-flash"
    assert body["choices"][0]["message"]["content"] == "Hello from the fake upstream ."
    assert body["usage"]["prompt_tokens"] == prompt_tokens(msgs)
    assert body["usage"]["completion_tokens"] == 6


def test_reasoner_enables_thinking_and_passes_reasoning_content(client, accounts, upstream):
    acct = accounts.make(credit="5")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json={
        "model": "deepseek-reasoner", "messages": messages("Think"), "max_tokens": 100})
    assert response.status_code == 200, response.json
    assert upstream.requests[-1].body["thinking"] == {"type": "enabled"}
    message = response.json["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me think ."
    usage = response.json["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 4
    assert usage["prompt_cache_hit_tokens"] == 0  # provider fields reach the client


@pytest.mark.parametrize("model,provider,upstream_name", [
    ("ark-code-latest", "ark", "ark-code-latest"),
    ("doubao-seed-2.0-pro", "ark", "doubao-seed-2.0-pro"),
    ("mimo-v2.5", "mimo", "mimo-v2.5"),
    ("mimo-v2.5-pro", "mimo", "mimo-v2.5-pro"),
])
def test_every_provider_relays(client, accounts, upstream, model, provider, upstream_name):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": model, "messages": messages()})
    assert response.status_code == 200, response.json
    assert upstream.requests[-1].provider == provider
    assert upstream.requests[-1].body["model"] == upstream_name
    assert "thinking" not in upstream.requests[-1].body


def test_cost_is_exact_and_charged_once_beyond_free_quota(app, client, accounts, upstream):
    acct = accounts.make(tier="pro", credit="2")
    # Use up the free quota so the whole request is charged.
    set_quota_left(app, acct.id)
    msgs = messages("one two three", "pieces=40")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "messages": msgs})
    assert response.status_code == 200
    cost = expected_cost("deepseek-chat", prompt_tokens(msgs), 40, tier="pro")
    assert Decimal(str(response.json["usage"]["cost"])) == cost
    assert Decimal(response.headers["x-silk-cost"]) == cost
    assert accounts.balance_units(acct.id) == units(Decimal("2") - cost)
    ledger = accounts.ledger(acct.id)
    assert [e.kind for e in ledger] == ["topup", "charge"]
    assert ledger[-1].amount_units == -units(cost)
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and not record.estimated
    assert record.cost_units == units(cost) and record.free_tokens == 0
    assert record.upstream_model == "deepseek-v4-flash" and record.surface == "chat"
    assert accounts.audit() == []
    assert accounts.row(acct.id).reserved_units == 0


def test_first_call_with_no_balance_uses_free_quota(client, accounts, upstream):
    acct = accounts.make(tier="free", credit="0")
    msgs = messages("hi")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "messages": msgs})
    assert response.status_code == 200, response.json
    assert response.json["usage"]["cost"] == 0
    row = accounts.row(acct.id)
    assert row.balance_units == 0 and row.reserved_units == 0
    assert row.quota_used == prompt_tokens(msgs) + 6
    [record] = accounts.usage_records(acct.id)
    assert record.free_tokens == record.total_tokens
    assert accounts.audit() == []


def test_request_crossing_the_quota_pays_for_the_tokens_beyond_it(app, client, accounts,
                                                                 upstream):
    acct = accounts.make(tier="free", credit="1")
    msgs = messages("a b c d e f", "pieces=50")
    prompt = prompt_tokens(msgs)
    left = prompt + 20  # quota covers the prompt and 20 completion tokens
    set_quota_left(app, acct.id, left)
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "messages": msgs})
    assert response.status_code == 200
    cost = expected_cost("deepseek-chat", 0, 30)  # 30 completion tokens beyond the quota
    assert Decimal(str(response.json["usage"]["cost"])) == cost
    row = accounts.row(acct.id)
    assert row.quota_used == 100_000
    assert row.balance_units == units(Decimal(1) - cost)


def test_insufficient_balance_is_402_and_costs_nothing(app, client, accounts, upstream):
    acct = accounts.make(tier="free", credit="0")
    set_quota_left(app, acct.id)
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-chat", "messages": messages()})
    assert response.status_code == 402
    assert response.json["error"]["type"] == "insufficient_quota"
    assert response.headers["x-should-retry"] == "false"
    assert upstream.requests == []
    assert accounts.usage_records(acct.id) == []
    assert accounts.audit() == []


def test_small_max_tokens_makes_a_small_hold(app, client, accounts, upstream):
    """A balance too small for the model's default bound still serves a bounded request."""
    acct = accounts.make(tier="free", credit="0.0001")
    set_quota_left(app, acct.id)
    body = {"model": "deepseek-reasoner", "messages": messages("x")}
    assert client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                       json=body).status_code == 402
    body = {"model": "deepseek-chat", "messages": messages("x"), "max_tokens": 10}
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json=body)
    assert response.status_code == 200, response.json
    assert accounts.audit() == []


def test_deepseek_blank_line_keepalives_before_json_are_tolerated(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json={
        "model": "deepseek-chat", "messages": messages("x", "first_token_delay=0.2")})
    assert response.status_code == 200, response.json
    assert response.json["choices"][0]["message"]["content"] == "Hello from the fake upstream ."
