"""GET /v1/usage and GET /v1/billing: the document's shapes and SPEC section 7's arithmetic."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import update

from silk.defaults import TIERS
from tests.support.usage import backdate, spend

D = Decimal


def usd(value) -> Decimal:
    """A JSON number as the exact decimal it spells."""
    return D(str(value))


@pytest.fixture
def app_config(app_config):
    """A small tier, so a few requests cross its free quota."""
    app_config["SILK_TIERS"] = {**TIERS, "tiny": {"discount_percent": "10",
                                                  "monthly_free_tokens": 1000}}
    return app_config


def this_month() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m")


def test_billing_has_the_documents_shape(client, accounts):
    user = accounts.make(tier="pro", credit="10.50")
    response = client.get("/v1/billing", headers=user.headers)
    assert response.status_code == 200
    assert response.json == {
        "month": this_month(), "tier": "pro",
        "usage": {"requests": 0, "totalTokens": 0, "failedRequests": 0},
        "costs": {"subtotal": 0, "discount": 0, "total": 0},
        "quota": {"free": 1_000_000, "used": 0, "remaining": 1_000_000},
        "balance": 10.5, "models": [],
    }


def test_billing_arithmetic_matches_hand_computed_values(app, client, accounts):
    # deepseek-chat: $0.14 input, $0.28 output per million tokens; tier tiny: 10 %, 1000 free.
    user = accounts.make(tier="tiny", credit="1")
    # 1: 800 prompt + 200 completion tokens are free; 200 completion tokens are charged:
    #    200 x 0.28 / 1e6 = $0.000056, discount $0.0000056, total $0.0000504.
    first = spend(app, user.id, prompt=800, completion=400)
    assert first.charged_units == 50_400
    # 2: nothing free: 1000 x 0.14/1e6 + 500 x 0.28/1e6 = $0.00028, discount $0.000028.
    second = spend(app, user.id, prompt=1000, completion=500)
    assert second.charged_units == 252_000

    body = client.get("/v1/billing", headers=user.headers).json
    assert body["month"] == this_month()
    assert body["tier"] == "tiny"
    assert body["usage"] == {"requests": 2, "totalTokens": 2700, "failedRequests": 0}
    assert usd(body["costs"]["subtotal"]) == D("0.000336")
    assert usd(body["costs"]["discount"]) == D("0.0000336")
    assert usd(body["costs"]["total"]) == D("0.0003024")
    assert body["quota"] == {"free": 1000, "used": 1000, "remaining": 0}
    assert usd(body["balance"]) == D("1") - D("0.0003024")
    assert accounts.audit() == []


def test_discount_applies_to_charged_tokens_only_for_team(app, client, accounts):
    user = accounts.make(tier="team", credit="5")
    # Within team's 5,000,000 free tokens nothing is charged.
    spend(app, user.id, prompt=30_000, completion=15_000)
    body = client.get("/v1/billing", headers=user.headers).json
    assert body["costs"] == {"subtotal": 0, "discount": 0, "total": 0}
    assert body["quota"] == {"free": 5_000_000, "used": 45_000, "remaining": 4_955_000}
    assert body["usage"] == {"requests": 1, "totalTokens": 45_000, "failedRequests": 0}
    assert body["balance"] == 5


def test_usage_reports_tokens_and_cost_by_model_and_day(app, client, accounts):
    user = accounts.make(tier="tiny", credit="1")
    spend(app, user.id, model="deepseek-chat", prompt=1000, completion=0)  # all free
    spend(app, user.id, model="deepseek-chat", prompt=100, completion=200)  # 100x.14+200x.28
    spend(app, user.id, model="mimo-v2.5", prompt=1000, completion=1000)  # 1000x.1+1000x.3
    body = client.get("/v1/usage", headers=user.headers).json
    chat_cost = (D(100) * D("0.14") + D(200) * D("0.28")) * D("0.9") / 10**6
    mimo_cost = (D(1000) * D("0.10") + D(1000) * D("0.30")) * D("0.9") / 10**6
    assert body["object"] == "usage"
    assert body["month"] == this_month()
    assert (body["requests"], body["prompt_tokens"], body["completion_tokens"],
            body["total_tokens"]) == (3, 2100, 1200, 3300)
    assert usd(body["cost"]) == chat_cost + mimo_cost
    models = {row["model"]: row for row in body["by_model"]}
    assert models["deepseek-chat"]["requests"] == 2
    assert models["deepseek-chat"]["total_tokens"] == 1300
    assert usd(models["deepseek-chat"]["cost"]) == chat_cost
    assert usd(models["mimo-v2.5"]["cost"]) == mimo_cost
    assert len(body["by_day"]) == 1
    assert body["by_day"][0]["requests"] == 3
    assert usd(body["by_day"][0]["cost"]) == chat_cost + mimo_cost


def test_reports_select_the_month_asked_for(app, client, accounts):
    user = accounts.make(tier="tiny", credit="1")
    spend(app, user.id, prompt=1500, completion=500)
    backdate(app, user.id, date(2025, 3, 31))
    spend(app, user.id, prompt=10, completion=10)

    march = client.get("/v1/usage?month=2025-03", headers=user.headers).json
    assert march["month"] == "2025-03"
    assert march["total_tokens"] == 2000
    assert [row["date"] for row in march["by_day"]] == ["2025-03-31"]
    assert client.get("/v1/usage?month=2025-04", headers=user.headers).json["requests"] == 0
    now = client.get("/v1/usage", headers=user.headers).json
    assert now["total_tokens"] == 20

    bill = client.get("/v1/billing?month=2025-03", headers=user.headers).json
    assert bill["month"] == "2025-03"
    assert bill["usage"] == {"requests": 1, "totalTokens": 2000, "failedRequests": 0}
    assert bill["quota"]["used"] == 1000


def test_quota_resets_with_the_calendar_month(app, client, accounts):
    from silk.account.models import Account
    from silk.extensions import db

    user = accounts.make(tier="tiny", credit="1")
    assert spend(app, user.id, prompt=1000, completion=0).charged_units == 0
    assert spend(app, user.id, prompt=1000, completion=0).charged_units == 126_000  # 140000 - 10 %
    # Make the used quota last month's, as it is on the first request of a new month.
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(update(Account.__table__).where(Account.__table__.c.id == user.id)
                     .values(quota_month="2000-01"))
    assert spend(app, user.id, prompt=1000, completion=0).charged_units == 0


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-7", "26-07", "july", "2026-07-01",
                                   "1969-12", "２０２６-07", "2026-07\n", " 2026-07"])
@pytest.mark.parametrize("path", ["/v1/usage", "/v1/billing"])
def test_a_bad_month_is_a_400_naming_month(client, accounts, path, month):
    user = accounts.make()
    response = client.get(path, query_string={"month": month}, headers=user.headers)
    assert response.status_code == 400
    assert response.json["error"]["param"] == "month"
    assert response.json["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/billing", "/v1/balance"])
def test_reports_need_a_key(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.json["error"]["type"] == "authentication_error"


def test_billing_follows_a_real_chat_request(client, accounts, upstream):
    from tests.fakes.upstream import count_prompt_tokens

    user = accounts.make(tier="free")
    messages = [{"role": "user", "content": "What is the Silk Road?"}]
    response = client.post("/v1/chat/completions", headers=user.headers,
                           json={"model": "deepseek-chat", "messages": messages, "stream": False})
    assert response.status_code == 200
    tokens = response.json["usage"]["total_tokens"]
    assert response.json["usage"]["prompt_tokens"] == count_prompt_tokens(messages)
    body = client.get("/v1/billing", headers=user.headers).json
    assert body["usage"] == {"requests": 1, "totalTokens": tokens, "failedRequests": 0}
    assert body["quota"] == {"free": 100_000, "used": tokens, "remaining": 100_000 - tokens}
    assert body["costs"]["total"] == 0
    assert body["balance"] == 0


def test_an_operator_tier_change_shows_in_billing(client, accounts):
    admin = accounts.make(admin=True)
    user = accounts.make()
    client.put("/v1/admin/tiers/pro", headers=admin.headers,
               json={"discount_percent": 15, "monthly_free_tokens": 2_000_000})
    response = client.patch(f"/v1/admin/accounts/{user.id}", headers=admin.headers,
                            json={"tier": "pro"})
    assert response.status_code == 200
    body = client.get("/v1/billing", headers=user.headers).json
    assert body["tier"] == "pro"
    assert body["quota"]["free"] == 2_000_000
