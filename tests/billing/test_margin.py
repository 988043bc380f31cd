"""Upstream cost on every usage record, and the margin report that sums it."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from sqlalchemy import select

from silk.defaults import MODELS
from tests.chat.helpers import messages, prompt_tokens, set_quota_left, sse_events

JSON = {"Accept": "application/json"}
# deepseek-chat sells at 0.14/0.28 (cache hit at the input price); the provider charges less,
# with reasoning apart. mimo-v2.5 sells at 0.10/0.30 but costs more: a loss-maker.
COSTED = {
    **MODELS,
    "deepseek-chat": {**MODELS["deepseek-chat"],
                      "cost": {"input": "0.07", "output": "0.11", "cache_hit": "0.007"}},
    "deepseek-reasoner": {**MODELS["deepseek-reasoner"],
                          "cost": {"input": "0.27", "output": "1.10", "reasoning": "1.50"}},
    "mimo-v2.5": {**MODELS["mimo-v2.5"], "cost": {"input": "0.20", "output": "0.30"}},
}


@pytest.fixture
def app_config():
    return {"SILK_MODELS": COSTED}


def _records(app):
    from silk.extensions import db
    from silk.metering.service import USAGE

    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(select(USAGE).order_by(USAGE.c.id)).all()


def _units(tokens: int, usd_per_million: str) -> Decimal:
    return tokens * Decimal(usd_per_million) * 1000


def test_usage_records_store_the_upstream_cost_exactly(app, client, accounts, upstream):
    acct = accounts.make(tier="free", credit="1")
    set_quota_left(app, acct.id, 0)
    msgs = messages("What is the Silk Road?")
    prompt = prompt_tokens(msgs)
    answer = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                         json={"model": "deepseek-chat", "messages": msgs, "stream": False})
    assert answer.status_code == 200
    reasoned = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "deepseek-reasoner", "messages": msgs,
                                 "stream": False, "max_tokens": 100})
    assert reasoned.status_code == 200
    streamed = client.post("/v1/chat/completions", headers=acct.headers,
                           json={"model": "deepseek-chat", "stream": True,
                                 "messages": messages("Hi", "cut_after=3")})
    sse_events(streamed.data)
    uncosted = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "ark-code-latest", "messages": msgs})
    assert uncosted.status_code == 200

    plain, thought, cut, ark = _records(app)
    assert (plain.prompt_tokens, plain.completion_tokens) == (prompt, 6)
    assert plain.upstream_cost_units == _units(prompt, "0.07") + _units(6, "0.11")
    assert plain.cost_units > plain.upstream_cost_units > 0
    reasoning = thought.reasoning_tokens
    assert reasoning == 4
    assert thought.upstream_cost_units == (
        _units(prompt, "0.27") + _units(thought.completion_tokens - reasoning, "1.10")
        + _units(reasoning, "1.50"))
    # A cut stream costs the operator the same counts the customer is billed for.
    assert cut.status == "cut" and cut.estimated
    assert cut.upstream_cost_units == (_units(cut.prompt_tokens, "0.07")
                                       + _units(cut.completion_tokens, "0.11"))
    assert ark.upstream_cost_units == 0  # no upstream price configured
    assert accounts.audit() == []


def test_upstream_error_costs_the_operator_nothing(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json={
        "model": "deepseek-chat", "messages": messages("Hi", "status=400")})
    assert response.status_code == 400
    (record,) = _records(app)
    assert record.upstream_cost_units == 0 and record.cost_units == 0


def test_margin_report_sums_equal_the_usage_records(app, client, runner, accounts, upstream):
    admin = accounts.make(admin=True)
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, 0)
    for model in ("deepseek-chat", "deepseek-chat", "mimo-v2.5", "ark-code-latest"):
        assert client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json={
            "model": model, "messages": messages("Tell me a story")}).status_code == 200
    records = _records(app)
    revenue = sum(r.cost_units for r in records)
    cost = sum(r.upstream_cost_units for r in records)

    for by, keys in (("model", {"ark-code-latest", "deepseek-chat", "mimo-v2.5"}),
                     ("provider", {"ark", "deepseek", "mimo"}),
                     ("day", {str(records[0].day)})):
        report = client.get(f"/v1/admin/margin?by={by}", headers=admin.headers).json
        assert {row["key"] for row in report["data"]} == keys
        units = Decimal(10**9)
        assert Decimal(str(report["total"]["revenue"])) * units == revenue
        assert Decimal(str(report["total"]["upstream_cost"])) * units == cost
        assert Decimal(str(report["total"]["margin"])) * units == revenue - cost
        assert sum(Decimal(str(r["revenue"])) for r in report["data"]) * units == revenue
        assert sum(Decimal(str(r["upstream_cost"])) for r in report["data"]) * units == cost
    by_model = {row["key"]: row for row in client.get(
        "/v1/admin/margin", headers=admin.headers).json["data"]}
    assert by_model["deepseek-chat"]["requests"] == 2
    mimo = [r for r in records if r.model == "mimo-v2.5"][0]
    assert Decimal(str(by_model["mimo-v2.5"]["margin"])) * 10**9 == (
        mimo.cost_units - mimo.upstream_cost_units) < 0
    report = client.get("/v1/admin/margin", headers=admin.headers).json
    assert report["below_cost"] == [{"model": "mimo-v2.5", "rates": ["input", "cache_hit"]}]

    out = runner.invoke(args=["silk", "margin", "--by", "provider"])
    assert out.exit_code == 0, out.output
    assert "BELOW COST: mimo-v2.5" in out.output
    total_line = [line for line in out.output.splitlines() if line.strip().startswith("total")]
    assert f"requests={len(records)}" in total_line[0]
    bad = client.get("/v1/admin/margin?by=colour", headers=admin.headers)
    assert bad.status_code == 400 and bad.json["error"]["param"] == "by"
    assert client.get("/v1/admin/margin", headers=acct.headers).status_code in (401, 403)
    assert accounts.audit() == []


def test_a_model_sold_below_cost_is_flagged_at_start_up(database_url, caplog):
    from silk import create_app
    from silk.ops import metrics

    with caplog.at_level(logging.WARNING):
        create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SILK_MODELS": COSTED,
                    "SILK_SWEEP_INTERVAL": 0})
    assert any("mimo-v2.5 is priced below its upstream cost" in r.getMessage()
               for r in caplog.records)
    text, _ = metrics.render()
    assert b'silk_models_below_cost{model="mimo-v2.5"} 1.0' in text
    assert b'silk_models_below_cost{model="deepseek-chat"}' not in text


def test_a_route_sold_below_cost_is_flagged(database_url, caplog):
    """A backup route dearer than the price loses money on every request it serves, even
    when the first route's cost is below the price (or unset)."""
    from silk import create_app
    from silk.billing.margin import models_below_cost
    from silk.ops import metrics

    first = {"provider": "deepseek", "upstream": "deepseek-v4-flash",
             "cost": {"input": "0.07", "output": "0.11"}}
    dearer = {"provider": "mimo", "upstream": "mimo-v2.5", "name": "mimo-backup",
              "cost": {"input": "0.20", "output": "0.30"}}
    models = {**MODELS,
              "backed-up": {"input": "0.14", "output": "0.28", "max_output_tokens": 100,
                            "routes": [first, dearer]},
              "uncosted-first": {"input": "0.14", "output": "0.28", "max_output_tokens": 100,
                                 "routes": [{"provider": "ark", "upstream": "x"}, dearer]}}
    with caplog.at_level(logging.WARNING):
        app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SILK_MODELS": models,
                          "SILK_SWEEP_INTERVAL": 0})
    assert models_below_cost(app.extensions["silk.catalogue"].models) == {
        "backed-up": ["input", "output", "cache_hit", "reasoning"],
        "uncosted-first": ["input", "output", "cache_hit", "reasoning"]}
    assert any("backed-up is priced below its upstream cost" in r.getMessage()
               for r in caplog.records)
    text, _ = metrics.render()
    assert b'silk_models_below_cost{model="backed-up"} 1.0' in text


def test_margin_counts_requests_as_the_usage_report_does(app, client, accounts, upstream):
    """A request the provider refused is billed nothing: the usage report counts it apart
    (`failed_requests`), and so must the margin beside it on the console's page."""
    admin = accounts.make(admin=True, email="ops@example.com")
    acct = accounts.make(tier="free", credit="1")
    served = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json={
        "model": "deepseek-chat", "messages": messages("Hello"), "stream": False})
    assert served.status_code == 200
    refused = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json={
        "model": "deepseek-chat", "messages": messages("x", "status=400"), "stream": False})
    assert refused.status_code == 400
    records = _records(app)
    assert [r.total_tokens > 0 for r in records] == [True, False]

    usage = client.get("/v1/admin/usage", headers=admin.headers).json
    assert (usage["by_model"][0]["requests"], usage["by_model"][0]["failed_requests"]) == (1, 1)
    for by in ("model", "provider", "day"):
        report = client.get(f"/v1/admin/margin?by={by}", headers=admin.headers).json
        assert [row["requests"] for row in report["data"]] == [1], by
        assert report["total"]["requests"] == 1
        assert Decimal(str(report["total"]["revenue"])) * 10**9 == records[0].cost_units
    out = app.test_cli_runner().invoke(args=["silk", "margin"]).output
    assert [line.split("\t")[1] for line in out.splitlines()
            if line.strip().startswith("total")] == ["requests=1"]
    assert accounts.audit() == []
