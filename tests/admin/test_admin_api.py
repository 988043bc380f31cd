"""The admin API under /v1/admin: admin keys only; accounts, keys, tiers, money, reports."""

from __future__ import annotations

import re

import pytest

from silk.pricing import usd_to_units
from tests.support.usage import spend


@pytest.fixture
def admin(accounts):
    return accounts.make(admin=True, email="ops@example.com")


def admin_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/v1/admin"):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                yield method, re.sub(r"<[^>]*>", "1", rule.rule)


def test_every_admin_route_refuses_plain_keys_and_strangers(app, client, accounts):
    user = accounts.make(credit="1")
    routes = list(admin_routes(app))
    assert len(routes) >= 15
    for method, path in routes:
        response = client.open(path, method=method, json={}, headers=user.headers)
        assert response.status_code == 403, (method, path)
        assert response.json["error"]["type"] == "permission_error"
        assert client.open(path, method=method, json={}).status_code == 401, (method, path)
    assert accounts.ledger(user.id)[-1].amount_units == usd_to_units(1)


def test_create_list_show_and_change_accounts(client, admin, accounts):
    response = client.post("/v1/admin/accounts", headers=admin.headers,
                           json={"email": "Big@Corp.example", "tier": "team", "credit": "100"})
    assert response.status_code == 201
    created = response.json
    assert (created["email"], created["tier"], created["balance"]) == ("big@corp.example",
                                                                       "team", 100)
    key = {"Authorization": f"Bearer {created['api_key']}"}
    assert client.get("/v1/balance", headers=key).json["balance"] == 100
    assert accounts.ledger(created["id"])[0].kind == "topup"

    listed = client.get("/v1/admin/accounts?email=corp", headers=admin.headers).json["data"]
    assert [a["email"] for a in listed] == ["big@corp.example"]
    assert len(client.get("/v1/admin/accounts?limit=1", headers=admin.headers).json["data"]) == 1

    shown = client.get(f"/v1/admin/accounts/{created['id']}", headers=admin.headers).json
    assert shown["tier"] == "team" and len(shown["keys"]) == 1

    changed = client.patch(f"/v1/admin/accounts/{created['id']}", headers=admin.headers,
                           json={"tier": "pro"}).json
    assert changed["tier"] == "pro"
    assert client.get("/v1/billing", headers=key).json["tier"] == "pro"

    disabled = client.patch(f"/v1/admin/accounts/{created['id']}", headers=admin.headers,
                            json={"disabled": True})
    assert disabled.json["disabled"] is True
    assert client.get("/v1/balance", headers=key).status_code == 401
    client.patch(f"/v1/admin/accounts/{created['id']}", headers=admin.headers,
                 json={"disabled": False})
    assert client.get("/v1/balance", headers=key).status_code == 200


@pytest.mark.parametrize("method, path, body, status, param", [
    ("POST", "/v1/admin/accounts", {"email": "x"}, 400, "email"),
    ("POST", "/v1/admin/accounts", {"email": "a@b.example", "tier": "gold"}, 400, "tier"),
    ("POST", "/v1/admin/accounts", {"email": "a@b.example", "credit": -1}, 400, "credit"),
    ("POST", "/v1/admin/accounts", {"email": "a@b.example", "credit": 0.001}, 400, "credit"),
    ("POST", "/v1/admin/accounts", {"email": "ops@example.com"}, 409, "email"),
    ("PATCH", "/v1/admin/accounts/{id}", {"tier": "gold"}, 400, "tier"),
    ("PATCH", "/v1/admin/accounts/{id}", {"disabled": "yes"}, 400, "disabled"),
    ("PATCH", "/v1/admin/accounts/999", {"tier": "pro"}, 404, "account"),
    ("GET", "/v1/admin/accounts/999", None, 404, "account"),
    ("GET", "/v1/admin/accounts?limit=0", None, 400, "limit"),
    ("POST", "/v1/admin/accounts/{id}/credits", {"amount": 0}, 400, "amount"),
    ("POST", "/v1/admin/accounts/{id}/credits", {"amount": -1}, 400, "amount"),
    ("POST", "/v1/admin/accounts/{id}/credits", {"amount": 1, "kind": "gift"}, 400, "kind"),
    ("POST", "/v1/admin/accounts/{id}/credits", {"amount": -5, "kind": "adjustment"}, 400,
     "amount"),
    ("POST", "/v1/admin/accounts/999/credits", {"amount": 1}, 404, "account"),
    ("POST", "/v1/admin/redemption-codes", {"amount": 0}, 400, "amount"),
    ("POST", "/v1/admin/redemption-codes", {"amount": 1, "count": 0}, 400, "count"),
    ("POST", "/v1/admin/redemption-codes", {"amount": 1, "expires_at": "2000-01-01"}, 400,
     "expires_at"),
    # An offset that moves the moment past year 9999 (or before year 1) in UTC.
    ("POST", "/v1/admin/redemption-codes", {"amount": 1, "expires_at": "9999-12-31T23:00-01:00"},
     400, "expires_at"),
    ("POST", "/v1/admin/invite-codes", {"expires_at": "0001-01-01T00:00+01:00"}, 400,
     "expires_at"),
    ("POST", "/v1/admin/accounts/{id}/keys", {"expires_at": "9999-12-31T23:00-01:00"}, 400,
     "expires_at"),
    ("GET", "/v1/admin/redemption-codes?state=lost", None, 400, "state"),
    ("POST", "/v1/admin/invite-codes", {"uses": 0}, 400, "uses"),
    ("POST", "/v1/admin/invite-codes", {"tier": "gold"}, 400, "tier"),
    ("PUT", "/v1/admin/tiers/pro", {"discount_percent": 101, "monthly_free_tokens": 1}, 400,
     "discount_percent"),
    ("PUT", "/v1/admin/tiers/pro", {"discount_percent": 10}, 400, "monthly_free_tokens"),
    ("PUT", "/v1/admin/tiers/pro", {"discount_percent": 1.234, "monthly_free_tokens": 1}, 400,
     "discount_percent"),
    ("PUT", "/v1/admin/tiers/bad%20name", {"discount_percent": 1, "monthly_free_tokens": 1}, 400,
     "name"),
    ("GET", "/v1/admin/usage?month=2026-13", None, 400, "month"),
    ("POST", "/v1/admin/accounts/{id}/keys", {"models": ["nope"]}, 400, "models"),
    ("DELETE", "/v1/admin/keys/999", None, 404, "id"),
    # A NUL character, which PostgreSQL's text cannot hold: the same 400 on both databases.
    ("POST", "/v1/admin/accounts/{id}/credits", {"amount": 1, "note": "x\x00"}, 400, "note"),
    ("POST", "/v1/admin/redemption-codes", {"amount": 1, "note": "\x00"}, 400, "note"),
    ("POST", "/v1/admin/invite-codes", {"note": "a\x00"}, 400, "note"),
    ("PATCH", "/v1/admin/accounts/{id}/limits", {"model": "m\x00", "rpm_limit": 1}, 400,
     "model"),
])
def test_bad_admin_requests(client, admin, method, path, body, status, param):
    response = client.open(path.format(id=admin.id), method=method, json=body,
                           headers=admin.headers)
    assert response.status_code == status, response.json
    assert response.json["error"]["param"] == param


def test_credits_refunds_and_adjustments_are_ledger_entries(client, admin, accounts):
    user = accounts.make(credit="10")
    url = f"/v1/admin/accounts/{user.id}/credits"
    assert client.post(url, headers=admin.headers, json={"amount": 5}).json["balance"] == 15
    refund = client.post(url, headers=admin.headers,
                         json={"amount": "0.000123", "kind": "refund", "note": "req abc"}).json
    assert refund["kind"] == "refund"
    adjust = client.post(url, headers=admin.headers,
                         json={"amount": -15, "kind": "adjustment", "note": "chargeback"}).json
    assert str(adjust["balance"]) == "0.000123"
    kinds = [(e.kind, e.amount_units) for e in accounts.ledger(user.id)]
    assert kinds == [("topup", usd_to_units(10)), ("topup", usd_to_units(5)),
                     ("refund", 123_000), ("adjustment", -usd_to_units(15))]
    too_much = client.post(url, headers=admin.headers, json={"amount": -1, "kind": "adjustment"})
    assert too_much.status_code == 400
    assert too_much.json["error"]["code"] == "balance_would_go_negative"

    ledger = client.get(f"/v1/admin/accounts/{user.id}/ledger?limit=2",
                        headers=admin.headers).json["data"]
    assert [e["kind"] for e in ledger] == ["adjustment", "refund"]
    older = client.get(f"/v1/admin/accounts/{user.id}/ledger?before={ledger[-1]['id']}",
                       headers=admin.headers).json["data"]
    assert [e["kind"] for e in older] == ["topup", "topup"]
    assert client.get("/v1/admin/audit", headers=admin.headers).json == {"ok": True,
                                                                         "problems": []}


def test_operator_credits_honour_idempotency_keys(client, admin, accounts):
    user = accounts.make()
    url = f"/v1/admin/accounts/{user.id}/credits"
    headers = {**admin.headers, "Idempotency-Key": "ticket-9"}
    first = client.post(url, headers=headers, json={"amount": 3})
    second = client.post(url, headers=headers, json={"amount": 3})
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert accounts.balance_units(user.id) == usd_to_units(3)
    assert client.post(url, headers=headers, json={"amount": 4}).status_code == 422


def test_manage_any_accounts_keys(client, admin, accounts):
    user = accounts.make()
    url = f"/v1/admin/accounts/{user.id}/keys"
    made = client.post(url, headers=admin.headers, json={"name": "batch", "rpm_limit": 5}).json
    assert made["key"].startswith("sk-") and made["rpm_limit"] == 5
    assert len(client.get(url, headers=admin.headers).json["data"]) == 2
    revoked = client.delete(f"/v1/admin/keys/{user.key_id}", headers=admin.headers).json
    assert revoked["status"] == "revoked"
    assert client.get("/v1/balance", headers=user.headers).status_code == 401
    assert client.get("/v1/balance", headers={"Authorization": f"Bearer {made['key']}"}
                      ).status_code == 200


def test_tiers_are_listed_and_edited(client, admin, accounts):
    tiers = {t["name"]: t for t in client.get("/v1/admin/tiers",
                                               headers=admin.headers).json["data"]}
    assert tiers["free"] == {"name": "free", "discount_percent": 0,
                             "monthly_free_tokens": 100_000}
    assert tiers["pro"]["discount_percent"] == 10 and tiers["team"]["discount_percent"] == 20
    saved = client.put("/v1/admin/tiers/startup", headers=admin.headers,
                       json={"discount_percent": "12.5", "monthly_free_tokens": 250_000})
    assert saved.json == {"name": "startup", "discount_percent": 12.5,
                          "monthly_free_tokens": 250_000}
    public = client.get("/v1/pricing").json["tiers"]
    assert {"startup"} <= {t["name"] for t in public}
    user = accounts.make()
    client.patch(f"/v1/admin/accounts/{user.id}", headers=admin.headers,
                 json={"tier": "startup"})
    assert client.get("/v1/billing", headers=user.headers).json["quota"]["free"] == 250_000


def test_codes_and_invites_are_shown_once_and_listed_by_prefix(client, admin):
    issued = client.post("/v1/admin/redemption-codes", headers=admin.headers,
                         json={"amount": "2.50", "count": 3, "note": "conference"}).json["data"]
    assert len({c["code"] for c in issued}) == 3
    assert all(c["amount"] == 2.5 and c["state"] == "unused" for c in issued)
    listed = client.get("/v1/admin/redemption-codes?state=unused",
                        headers=admin.headers).json["data"]
    assert len(listed) == 3 and all("code" not in c for c in listed)
    assert all(any(i["code"].startswith(c["prefix"]) for i in issued) for c in listed)

    invites = client.post("/v1/admin/invite-codes", headers=admin.headers,
                          json={"count": 2, "uses": 5, "tier": "pro"}).json["data"]
    assert [i["uses_left"] for i in invites] == [5, 5]
    listed = client.get("/v1/admin/invite-codes", headers=admin.headers).json["data"]
    assert len(listed) == 2 and all("code" not in i for i in listed)


def test_usage_report_by_account_model_and_day(app, client, admin, accounts):
    first = accounts.make(email="a@example.com", credit="1")
    second = accounts.make(email="b@example.com", credit="1")
    spend(app, first.id, prompt=100, completion=50)
    spend(app, second.id, model="mimo-v2.5", prompt=10, completion=5)
    report = client.get("/v1/admin/usage", headers=admin.headers).json
    assert [(r["account"], r["total_tokens"]) for r in report["by_account"]] == [
        ("a@example.com", 150), ("b@example.com", 15)]
    assert {r["model"] for r in report["by_model"]} == {"deepseek-chat", "mimo-v2.5"}
    import json
    from decimal import Decimal

    from silk.database import utcnow

    exact = json.loads(client.get("/v1/admin/usage", headers=admin.headers).text,
                       parse_float=Decimal)
    assert sum(r["cost"] for r in exact["by_day"]) == sum(r["cost"] for r in exact["by_account"])
    assert [(r["date"], r["total_tokens"], r["requests"]) for r in report["by_day"]] == [
        (utcnow().date().isoformat(), 165, 2)]
    only = client.get("/v1/admin/usage?account=b@example.com", headers=admin.headers).json
    assert [r["account"] for r in only["by_account"]] == ["b@example.com"]
    assert [r["total_tokens"] for r in only["by_day"]] == [15]
