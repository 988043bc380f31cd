"""POST /v1/topup: who may add money, how amounts are checked, and that a retry applies once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from silk.pricing import usd_to_units


def topup(client, account, body, key=None):
    headers = dict(account.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/topup", json=body, headers=headers)


def issue_code(client, admin, amount="5", **extra) -> str:
    response = client.post("/v1/admin/redemption-codes", headers=admin.headers,
                           json={"amount": amount, **extra})
    assert response.status_code == 201, response.json
    return response.json["data"][0]["code"]


def test_an_admin_key_tops_up_its_own_account(client, accounts):
    admin = accounts.make(admin=True, credit="10.50")
    response = topup(client, admin, {"amount": 25})
    assert response.status_code == 200
    body = response.json
    assert body["balance"] == 35.5
    assert body["currency"] == "USD"
    assert body["credited"] == 25
    assert body["account_id"] == admin.id
    assert body["kind"] == "topup"
    entry = accounts.ledger(admin.id)[-1]
    assert body["transaction_id"] == entry.id
    assert (entry.kind, entry.amount_units, entry.balance_after_units) == (
        "topup", usd_to_units(25), usd_to_units("35.5"))
    assert client.get("/v1/balance", headers=admin.headers).json == {"balance": 35.5,
                                                                      "currency": "USD"}
    assert accounts.audit() == []


@pytest.mark.parametrize("ref", ["id", "id as text", "email"])
def test_an_admin_key_credits_any_account(client, accounts, ref):
    admin = accounts.make(admin=True)
    user = accounts.make(email="Customer@Example.com")
    target = {"id": user.id, "id as text": str(user.id), "email": "customer@example.com"}[ref]
    response = topup(client, admin, {"amount": "12.34", "account": target, "note": "invoice 7"})
    assert response.status_code == 200
    assert response.json["account_id"] == user.id
    assert Decimal(str(response.json["balance"])) == Decimal("12.34")
    assert accounts.balance_units(user.id) == usd_to_units("12.34")
    assert accounts.balance_units(admin.id) == 0
    assert accounts.ledger(user.id)[-1].note == "invoice 7"


def test_an_admin_crediting_an_unknown_account_gets_404(client, accounts):
    admin = accounts.make(admin=True)
    response = topup(client, admin, {"amount": 5, "account": 999})
    assert response.status_code == 404
    assert response.json["error"]["param"] == "account"


def test_a_plain_key_cannot_mint_money_by_default(client, accounts):
    user = accounts.make()
    response = topup(client, user, {"amount": 25})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "topup_not_allowed"
    assert accounts.balance_units(user.id) == 0
    assert accounts.ledger(user.id) == []


class TestOpenTopup:
    @pytest.fixture
    def app_config(self, app_config):
        app_config["SILK_OPEN_TOPUP"] = True
        return app_config

    def test_a_plain_key_tops_up_itself_when_the_operator_allows(self, client, accounts):
        user = accounts.make()
        response = topup(client, user, {"amount": 7.5})
        assert response.status_code == 200
        assert response.json["balance"] == 7.5
        assert accounts.ledger(user.id)[-1].kind == "topup"

    def test_but_never_another_account(self, client, accounts):
        user = accounts.make()
        other = accounts.make()
        response = topup(client, user, {"amount": 5, "account": other.id})
        assert response.status_code == 403
        assert accounts.balance_units(other.id) == 0


@pytest.mark.parametrize("amount, problem", [
    (0, "greater than 0"), (-5, "greater than 0"), ("-0.01", "greater than 0"),
    (1.234, "2 decimal"), ("0.001", "2 decimal"), (10000.01, "at most"), (1e12, "at most"),
    ("abc", "number"), (True, "number"), (None, "null"), ([5], "number"), ({}, "number"),
    ("NaN", "finite"), ("Infinity", "finite"), ("", "number"),
])
def test_a_bad_amount_is_a_400_naming_amount(client, accounts, amount, problem):
    admin = accounts.make(admin=True)
    response = topup(client, admin, {"amount": amount})
    assert response.status_code == 400, response.json
    assert response.json["error"]["param"] == "amount"
    assert problem in response.json["error"]["message"]
    assert accounts.ledger(admin.id) == []


@pytest.mark.parametrize("amount, units", [("10000", usd_to_units(10000)), (0.01, 10**7),
                                           ("19.90", usd_to_units("19.9")), (3, 3 * 10**9)])
def test_good_amounts_up_to_the_maximum(client, accounts, amount, units):
    admin = accounts.make(admin=True)
    response = topup(client, admin, {"amount": amount})
    assert response.status_code == 200
    assert accounts.balance_units(admin.id) == units


class TestSmallMaximum:
    @pytest.fixture
    def app_config(self, app_config):
        app_config["SILK_TOPUP_MAX"] = "50"
        return app_config

    def test_the_configured_maximum_is_enforced(self, client, accounts):
        admin = accounts.make(admin=True)
        assert topup(client, admin, {"amount": 50}).status_code == 200
        response = topup(client, admin, {"amount": 50.01})
        assert response.status_code == 400
        assert "$50" in response.json["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({}, "amount"), ({"amount": 5, "code": "silk-rc-x"}, "code"), ({"amont": 5}, "amont"),
    ({"code": 5}, "code"), ({"code": ""}, "code"), ({"amount": 5, "account": True}, "account"),
    ({"amount": 5, "note": 7}, "note"),
    ({"amount": 5, "note": "x\x00"}, "note"), ({"code": "silk-rc-\x00"}, "code"),
])
def test_a_malformed_body_is_a_400_naming_the_field(client, accounts, body, param):
    admin = accounts.make(admin=True)
    response = topup(client, admin, body)
    assert response.status_code == 400
    assert response.json["error"]["param"] == param
    assert accounts.balance_units(admin.id) == 0 and len(accounts.ledger(admin.id)) == 0


@pytest.mark.parametrize("raw", [b"{", b"[1]", b'"25"', b"\xff"])
def test_a_body_that_is_not_a_json_object_is_a_400(client, accounts, raw):
    admin = accounts.make(admin=True)
    response = client.post("/v1/topup", data=raw, headers={**admin.headers,
                                                           "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json["error"]["type"] == "invalid_request_error"


def test_topup_needs_a_key(client):
    response = client.post("/v1/topup", json={"amount": 5})
    assert response.status_code == 401


def test_an_idempotency_key_makes_a_retry_apply_once(client, accounts):
    admin = accounts.make(admin=True)
    first = topup(client, admin, {"amount": 25}, key="order-1")
    again = topup(client, admin, {"amount": 25}, key="order-1")
    assert first.status_code == again.status_code == 200
    assert again.json == first.json
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert accounts.balance_units(admin.id) == usd_to_units(25)
    assert len(accounts.ledger(admin.id)) == 1
    # A new key is a new top-up.
    assert topup(client, admin, {"amount": 25}, key="order-2").json["balance"] == 50


def test_an_idempotency_key_reused_for_another_request_is_a_422(client, accounts):
    admin = accounts.make(admin=True)
    assert topup(client, admin, {"amount": 25}, key="k").status_code == 200
    response = topup(client, admin, {"amount": 26}, key="k")
    assert response.status_code == 422
    assert response.json["error"]["code"] == "idempotency_key_reused"
    assert accounts.balance_units(admin.id) == usd_to_units(25)


def test_idempotency_keys_belong_to_one_account(client, accounts):
    first = accounts.make(admin=True)
    second = accounts.make(admin=True)
    assert topup(client, first, {"amount": 1}, key="same").json["balance"] == 1
    assert topup(client, second, {"amount": 1}, key="same").json["account_id"] == second.id
    assert accounts.balance_units(second.id) == usd_to_units(1)


@pytest.mark.parametrize("key", ["", "x" * 129, "tab\there"])
def test_a_bad_idempotency_key_is_a_400(client, accounts, key):
    admin = accounts.make(admin=True)
    response = topup(client, admin, {"amount": 1}, key=key)
    assert response.status_code == 400
    assert response.json["error"]["param"] == "Idempotency-Key"
    assert accounts.balance_units(admin.id) == 0


def test_a_failed_request_stores_nothing_so_its_retry_runs(client, accounts):
    admin = accounts.make(admin=True)
    user = accounts.make()
    code = issue_code(client, admin, "4")
    assert topup(client, user, {"code": code + "x"}, key="r").status_code == 400
    response = topup(client, user, {"code": code}, key="r")
    assert response.status_code == 200
    assert response.json["credited"] == 4


def test_a_user_redeems_an_operator_code_once(client, accounts):
    admin = accounts.make(admin=True)
    user = accounts.make(credit="1")
    code = issue_code(client, admin, "5.25", note="promo")
    response = topup(client, user, {"code": code})
    assert response.status_code == 200
    assert response.json["kind"] == "redeem"
    assert response.json["credited"] == 5.25
    assert response.json["balance"] == 6.25
    entry = accounts.ledger(user.id)[-1]
    assert (entry.kind, entry.amount_units) == ("redeem", usd_to_units("5.25"))
    assert code not in entry.note  # only the prefix is kept

    again = topup(client, user, {"code": code})
    assert again.status_code == 409
    assert again.json["error"]["code"] == "code_already_redeemed"
    assert accounts.balance_units(user.id) == usd_to_units("6.25")
    codes = client.get("/v1/admin/redemption-codes", headers=admin.headers).json["data"]
    assert codes[0]["state"] == "redeemed"
    assert codes[0]["redeemed_by"] == user.id
    assert "code" not in codes[0]


def test_an_unknown_or_expired_code_credits_nothing(app, client, accounts):
    from datetime import timedelta

    from silk.billing.models import RedemptionCode
    from silk.database import utcnow
    from silk.extensions import db

    admin = accounts.make(admin=True)
    user = accounts.make()
    response = topup(client, user, {"code": "silk-rc-nonsense"})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_code"

    code = issue_code(client, admin, "5")
    with app.app_context():
        db.session.execute(db.update(RedemptionCode).values(expires_at=utcnow()
                                                             - timedelta(seconds=1)))
        db.session.commit()
    response = topup(client, user, {"code": code})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "code_expired"
    assert accounts.balance_units(user.id) == 0
    assert accounts.audit() == []


class TestLargeBalances:
    @pytest.fixture
    def app_config(self, app_config):
        app_config["SILK_TOPUP_MAX"] = "100000000"
        return app_config

    def test_a_balance_past_nine_million_dollars_is_shown_to_the_nano_dollar(self, client,
                                                                           accounts):
        """A double holds 15 significant digits: $9,000,000.000000014 has 16, and left as a
        float it read $9,000,000.000000015, a figure the ledger never held."""
        import json

        admin = accounts.make(admin=True)
        assert topup(client, admin, {"amount": 9_000_000}).status_code == 200
        response = client.post(f"/v1/admin/accounts/{admin.id}/credits", headers=admin.headers,
                               json={"amount": "0.000000014", "kind": "adjustment"})
        assert response.status_code == 200, response.json
        exact = Decimal("9000000.000000014")
        assert accounts.balance_units(admin.id) == usd_to_units(exact)

        def read(answer):
            return json.loads(answer.get_data(), parse_float=Decimal)

        assert read(response)["balance"] == exact
        assert read(client.get("/v1/balance", headers=admin.headers))["balance"] == exact
        assert read(client.get("/v1/billing", headers=admin.headers))["balance"] == exact
        ledger = read(client.get(f"/v1/admin/accounts/{admin.id}/ledger",
                                 headers=admin.headers))["data"]
        assert ledger[0]["balance_after"] == exact


class TestTheLargestBalance:
    @pytest.fixture
    def app_config(self, app_config):
        app_config["SILK_TOPUP_MAX"] = "1000000000"  # the most one credit may add
        return app_config

    def test_a_credit_past_the_largest_balance_is_refused_and_the_books_stay_whole(
            self, client, accounts):
        """A balance is a BIGINT of nano-dollars: ten credits of $1e9 would pass 2**63 - 1,
        which SQLite silently made a float (1e19, the ledger no longer exact) and
        PostgreSQL refused with a 500."""
        admin = accounts.make(admin=True)
        for _ in range(9):
            assert topup(client, admin, {"amount": 10**9}).status_code == 200
        held = accounts.balance_units(admin.id)
        assert held == 9 * 10**18
        for kind in ("topup", "refund", "adjustment"):
            response = client.post(f"/v1/admin/accounts/{admin.id}/credits",
                                   headers=admin.headers,
                                   json={"amount": "1000000000", "kind": kind})
            assert response.status_code == 400, response.get_data()
            assert response.json["error"]["code"] == "balance_too_large"
        response = topup(client, admin, {"amount": 10**9})
        assert response.status_code == 400 and response.json["error"]["param"] == "amount"
        assert accounts.balance_units(admin.id) == held
        assert type(accounts.balance_units(admin.id)) is int
        # What still fits is credited, to the last nano-dollar a balance can hold.
        room = 2**63 - 1 - held
        response = client.post(f"/v1/admin/accounts/{admin.id}/credits", headers=admin.headers,
                               json={"amount": str(Decimal(room) / 10**9),
                                     "kind": "adjustment"})
        assert response.status_code == 200, response.get_data()
        assert accounts.balance_units(admin.id) == 2**63 - 1
        assert accounts.audit() == []
