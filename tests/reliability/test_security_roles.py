"""Who reaches what, read from the url_map so that a route added later is covered too: the
console's pages and actions for a signed-in admin key alone, the admin API for no member
key, and of the account's own /v1 routes only those the README gives a member key."""

from __future__ import annotations

import re

import pytest

from tests.ops.helpers import csrf_from
from tests.ops.helpers import sign_in as dashboard_sign_in

# Everything a console form might send, so that a route that forgot its guard would act.
_FORM = {"disabled": "1", "tier": "pro", "kind": "topup", "amount": "5", "note": "x",
         "token": "t" * 20, "email": "new@example.com", "credit": "5", "admin": "on",
         "count": "1", "uses": "1", "name": "startup", "discount_percent": "50",
         "monthly_free_tokens": "999999999", "back": "account"}
# The console pages a visitor reaches without a session: the sign-in form and its POST.
_OPEN_CONSOLE = {"operator.login", "operator.login_submit"}
# What the README gives a member key ("Roles"): the API, its own usage, itself in the key
# list, the public routes; everything else of the account's is for owner keys.
_MEMBER_MAY = {"chat.create_chat_completion", "messages.create_message",
               "messages.count_tokens", "responses.create_response",
               "responses.get_response", "responses.delete_response",
               "responses.list_input_items", "models.list_models", "models.get_model",
               "models.pricing", "billing.usage", "account.list_keys",
               "account.register", "account.registration_mode"}


def _fill(rule, account_id: int, key_id: int) -> str:
    path = rule.rule
    for name in rule.arguments:
        value = {"account_id": account_id, "key_id": key_id}.get(name, "free")
        path = re.sub(rf"<(\w+:)?{name}>", str(value), path)
    return path


def _member_of(client, owner) -> str:
    made = client.post("/v1/keys", headers=owner.headers, json={"role": "member"})
    assert made.status_code == 201, made.json
    return made.json["key"]


def _state(app, accounts, victim) -> tuple:
    """What a console action could change: the victim's row, ledger and keys, every code."""
    from sqlalchemy import func, select

    from silk.account.models import ApiKey, InviteCode
    from silk.billing.models import RedemptionCode
    from silk.extensions import db

    row = accounts.row(victim.id)
    with app.app_context():
        keys = db.session.execute(select(ApiKey.id, ApiKey.revoked_at).order_by(ApiKey.id)).all()
        codes = (db.session.scalar(select(func.count()).select_from(RedemptionCode)),
                 db.session.scalar(select(func.count()).select_from(InviteCode)))
        db.session.remove()
    return (row.disabled, row.tier, accounts.balance_units(victim.id),
            len(accounts.ledger(victim.id)), tuple(keys), codes)


@pytest.mark.parametrize("who", ["customer", "member of an admin account"])
def test_console_routes_are_for_admin_sessions_only(app, client, accounts, who):
    admin = accounts.make(admin=True, email="ops@example.com")
    victim = accounts.make(credit="1", email="victim@example.com")
    key = (accounts.make(credit="1", email="ada@example.com").key if who == "customer"
           else _member_of(client, admin))
    # The strongest footing a non-admin can get: a dashboard session with its key, a refused
    # console sign-in, and the console's own CSRF token from its sign-in page.
    assert dashboard_sign_in(client, key).status_code == 302
    token = csrf_from(client.get("/admin/login").text)
    refused = client.post("/admin/login", data={"api_key": key, "csrf_token": token})
    assert refused.status_code == 403
    before = _state(app, accounts, victim)
    rules = [r for r in app.url_map.iter_rules()
             if r.rule.startswith("/admin/") and r.endpoint not in _OPEN_CONSOLE]
    assert len(rules) >= 20
    for rule in rules:
        path = _fill(rule, victim.id, victim.key_id)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            answer = client.open(path, method=method, data={**_FORM, "csrf_token": token})
            if path.endswith(".json"):
                assert answer.status_code == 401, (method, path)
                assert answer.json["error"]["code"] == "console_signed_out"
            else:
                assert answer.status_code == 302, (method, path, answer.status_code)
                assert answer.location.endswith("/admin/login"), (method, path)
            assert b"victim@example.com" not in answer.data, (method, path)
    assert _state(app, accounts, victim) == before
    assert client.get("/dashboard/").status_code == 200  # the dashboard session is its own


def test_admin_routes_refuse_member_keys_of_admin_accounts(app, client, accounts):
    admin = accounts.make(admin=True)
    member = {"Authorization": f"Bearer {_member_of(client, admin)}"}
    victim = accounts.make(credit="1")
    before = _state(app, accounts, victim)
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/v1/admin")]
    assert len(rules) >= 15
    for rule in rules:
        path = _fill(rule, victim.id, victim.key_id)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            answer = client.open(path, method=method, headers=member,
                                 json={"amount": 5, "disabled": True, "email": "n@example.com"})
            assert answer.status_code == 403, (method, path)
            assert answer.json["error"]["type"] == "permission_error"
    assert _state(app, accounts, victim) == before


def test_member_keys_reach_only_the_routes_the_readme_gives_them(app, client, accounts,
                                                                  upstream):
    owner = accounts.make(credit="1")
    member = {"Authorization": f"Bearer {_member_of(client, owner)}"}
    before = _state(app, accounts, owner)
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/v1/")
             and not r.rule.startswith("/v1/admin") and r.endpoint not in _MEMBER_MAY]
    assert len(rules) >= 8
    for rule in rules:
        path = _fill(rule, owner.id, owner.key_id)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            # An empty body is valid for each (a key with the defaults, no change), so
            # the refusal, not a 400, is what answers.
            answer = client.open(path, method=method, headers=member, json={})
            assert answer.status_code == 403, (method, path, answer.json)
            assert answer.json["error"]["code"] == "owner_key_required", (method, path)
    assert _state(app, accounts, owner) == before


_LIMITS = {"models": {"models": ["deepseek-chat"]}, "expires_at": {"expires_in_days": 30},
           "rpm_limit": {"rpm_limit": 60}, "concurrency_limit": {"concurrency_limit": 2},
           "spend_caps.month": {"spend_caps": {"month": 5}}}


@pytest.mark.parametrize("limit", list(_LIMITS))
def test_an_owner_key_with_limits_holds_no_admin_power(app, client, accounts, limit):
    """README "Your API keys": a key never makes a wider key. An admin account's owner key
    with a model list, an expiry, a rate or a spend cap made itself an unlimited key through
    the admin API (or an admin account, or money): admin power needs a key without limits."""
    from sqlalchemy import func, select

    from silk.account.models import Account, ApiKey
    from silk.extensions import db

    admin = accounts.make(admin=True, email="ops@example.com")
    made = client.post("/v1/keys", headers=admin.headers, json={"name": "ci", **_LIMITS[limit]})
    assert made.status_code == 201, made.json
    limited = {"Authorization": f"Bearer {made.json['key']}"}

    def count(table):
        with app.app_context():
            found = db.session.scalar(select(func.count()).select_from(table))
            db.session.remove()
            return found

    keys, accounts_before = count(ApiKey), count(Account)
    wider = client.post(f"/v1/admin/accounts/{admin.id}/keys", headers=limited, json={})
    assert wider.status_code == 403
    error = wider.json["error"]
    assert (error["code"], error["param"]) == ("key_scope_exceeded", limit)
    assert "without limits" in error["message"]
    assert client.post("/v1/admin/accounts", headers=limited,
                       json={"email": "root@example.com", "admin": True}).status_code == 403
    assert (count(ApiKey), count(Account)) == (keys, accounts_before)

    victim = accounts.make(credit="1")
    before = _state(app, accounts, victim)
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/v1/admin")]
    for rule in rules:
        path = _fill(rule, victim.id, victim.key_id)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            answer = client.open(path, method=method, headers=limited,
                                 json={"amount": 5, "disabled": True, "email": "n@example.com"})
            assert answer.status_code == 403, (method, path)
            assert answer.json["error"]["code"] == "key_scope_exceeded", (method, path)
    credit = client.post("/v1/topup", headers=limited, json={"amount": 5, "account": victim.id})
    assert credit.status_code == 403 and credit.json["error"]["code"] == "admin_required"
    assert _state(app, accounts, victim) == before

    token = csrf_from(client.get("/admin/login").text)
    console = client.post("/admin/login", data={"api_key": made.json["key"],
                                                "csrf_token": token})
    assert console.status_code == 403 and "without limits" in console.text
    assert client.get("/admin/accounts").status_code == 302

    # The account's own key without limits keeps every power.
    assert client.post(f"/v1/admin/accounts/{admin.id}/keys", headers=admin.headers,
                       json={}).status_code == 201
