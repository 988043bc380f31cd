"""/v1/billing's model breakdown, and served requests counted apart from failed ones."""

from __future__ import annotations

from decimal import Decimal

import pytest

from silk.defaults import TIERS
from tests.chat.helpers import messages, sse_events
from tests.support.usage import spend

JSON = {"Accept": "application/json"}
DOCUMENTED = {"month", "tier", "usage", "costs", "quota", "balance"}


def usd(value) -> Decimal:
    """A JSON number as the exact decimal it spells."""
    return Decimal(str(value))


@pytest.fixture
def app_config(app_config):
    """A small tier, so a few requests cross its free quota."""
    app_config["SILK_TIERS"] = {**TIERS, "tiny": {"discount_percent": "12.5",
                                                  "monthly_free_tokens": 1000}}
    return app_config


def _fail_one(client, acct, model: str) -> None:
    """A request the upstream refuses before answering: charged nothing."""
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": model, "messages": messages("x", "status=400")})
    assert response.status_code == 400


def _cut_one(client, acct) -> None:
    """A stream cut after some pieces: served, and billed an estimate of what was delivered."""
    response = client.post("/v1/chat/completions", headers=acct.headers, json={
        "model": "mimo-v2.5", "stream": True, "messages": messages("x", "pieces=9 cut_after=5")})
    assert "error" in sse_events(response.data)[-1]


def test_models_sum_to_the_top_level_figures(app, client, accounts, upstream):
    user = accounts.make(tier="tiny", credit="2")
    other = accounts.make(tier="tiny", credit="2")  # another account's usage stays apart
    spend(app, other.id, model="mimo-v2.5", prompt=5000, completion=5000)
    # Free at first, then across the quota, then all charged, on several models and prices.
    spend(app, user.id, model="deepseek-chat", prompt=600, completion=100)
    spend(app, user.id, model="deepseek-reasoner", prompt=250, completion=333)
    spend(app, user.id, model="deepseek-chat", prompt=1234, completion=567)
    spend(app, user.id, model="mimo-v2.5", prompt=7, completion=11)
    spend(app, user.id, model="ark-code-latest", prompt=99_999, completion=12_345)
    _fail_one(client, user, "deepseek-chat")
    _fail_one(client, user, "doubao-seed-2.0-pro")
    _cut_one(client, user)

    body = client.get("/v1/billing", headers=user.headers).json
    assert set(body) == DOCUMENTED | {"models"}  # every documented key kept
    models = {row["model"]: row for row in body["models"]}
    assert [row["model"] for row in body["models"]] == sorted(models)
    for row in body["models"]:
        assert set(row) == {"model", "requests", "failedRequests", "tokens", "subtotal",
                            "discount", "total"}
        assert usd(row["subtotal"]) - usd(row["discount"]) == usd(row["total"])
    assert (models["deepseek-chat"]["requests"], models["deepseek-chat"]["failedRequests"]) \
        == (2, 1)
    assert (models["doubao-seed-2.0-pro"]["requests"],
            models["doubao-seed-2.0-pro"]["failedRequests"]) == (0, 1)
    assert models["doubao-seed-2.0-pro"]["tokens"] == 0
    assert models["mimo-v2.5"]["requests"] == 2  # the cut stream was served
    assert usd(models["mimo-v2.5"]["total"]) > 0
    assert models["deepseek-chat"]["tokens"] == 700 + 1801

    usage, costs = body["usage"], body["costs"]
    assert usage == {"requests": 6, "failedRequests": 2,
                     "totalTokens": sum(row["tokens"] for row in body["models"])}
    assert sum(row["requests"] for row in body["models"]) == usage["requests"]
    assert sum(row["failedRequests"] for row in body["models"]) == usage["failedRequests"]
    for name in ("subtotal", "discount", "total"):
        assert sum(usd(row[name]) for row in body["models"]) == usd(costs[name])
    assert usd(costs["discount"]) > 0 and body["quota"]["used"] == 1000
    # What the balance paid is the bill's total, to the unit.
    assert usd(body["balance"]) == Decimal(2) - usd(costs["total"])

    # The usage report counts requests the same way.
    report = client.get("/v1/usage", headers=user.headers).json
    assert (report["requests"], report["failed_requests"]) == (6, 2)
    by_model = {row["model"]: row for row in report["by_model"]}
    assert {name: (row["requests"], row["failed_requests"]) for name, row in by_model.items()} \
        == {name: (row["requests"], row["failedRequests"]) for name, row in models.items()}
    assert (report["by_day"][0]["requests"], report["by_day"][0]["failed_requests"]) == (6, 2)
    assert usd(report["cost"]) == usd(costs["total"])
    assert accounts.audit() == []


def test_a_month_of_failures_is_not_a_month_of_requests(client, accounts, upstream):
    user = accounts.make(credit="1")
    _fail_one(client, user, "mimo-v2.5")
    body = client.get("/v1/billing", headers=user.headers).json
    assert body["usage"] == {"requests": 0, "totalTokens": 0, "failedRequests": 1}
    assert body["models"] == [{"model": "mimo-v2.5", "requests": 0, "failedRequests": 1,
                               "tokens": 0, "subtotal": 0, "discount": 0, "total": 0}]


def test_the_dashboard_counts_requests_as_the_api_does(app, client, accounts, upstream):
    import re

    from tests.ops.helpers import sign_in

    user = accounts.make(credit="1")
    spend(app, user.id, prompt=10, completion=10)
    spend(app, user.id, model="mimo-v2.5", prompt=10, completion=10)
    _fail_one(client, user, "deepseek-chat")
    usage = client.get("/v1/billing", headers=user.headers).json["usage"]
    assert (usage["requests"], usage["failedRequests"]) == (2, 1)
    sign_in(client, user.key)
    page = client.get("/dashboard/").text
    shown = re.search(r'data-testid="month-requests">(.*?)</p>', page, re.S).group(1)
    assert " ".join(shown.split()) == "2 requests · 40 tokens · 1 failed (not charged)"
