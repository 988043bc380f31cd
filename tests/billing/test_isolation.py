"""One account never sees or spends another's money, through any endpoint."""

from __future__ import annotations

from silk.pricing import usd_to_units


def test_each_key_sees_only_its_own_account(app, client, accounts, upstream):
    alice = accounts.make(credit="5", email="alice@example.com")
    bob = accounts.make(credit="1", email="bob@example.com")
    chat = {"model": "deepseek-chat", "stream": False,
            "messages": [{"role": "user", "content": "hello there"}]}
    assert client.post("/v1/chat/completions", json=chat, headers=alice.headers).status_code == 200

    assert client.get("/v1/balance", headers=bob.headers).json["balance"] == 1
    assert client.get("/v1/usage", headers=bob.headers).json["requests"] == 0
    assert client.get("/v1/billing", headers=bob.headers).json["usage"]["requests"] == 0
    assert client.get("/v1/usage", headers=alice.headers).json["requests"] == 1
    bob_keys = client.get("/v1/keys", headers=bob.headers).json["data"]
    assert [k["id"] for k in bob_keys] == [bob.key_id]
    # Bob cannot revoke Alice's key: it does not exist for him.
    assert client.delete(f"/v1/keys/{alice.key_id}", headers=bob.headers).status_code == 404
    assert client.get("/v1/balance", headers=alice.headers).status_code == 200


def test_no_one_spends_or_credits_another_account(app, client, accounts):
    app.config["SILK_OPEN_TOPUP"] = True
    admin = accounts.make(admin=True)
    alice = accounts.make(credit="5")
    bob = accounts.make(credit="1")
    # Bob cannot top up (or drain) Alice, even with open top-up on.
    assert client.post("/v1/topup", json={"amount": 1, "account": alice.id},
                       headers=bob.headers).status_code == 403
    # A code Bob redeems pays Bob, whoever it was meant for.
    code = client.post("/v1/admin/redemption-codes", headers=admin.headers,
                       json={"amount": 2, "note": "for alice"}).json["data"][0]["code"]
    assert client.post("/v1/topup", json={"code": code}, headers=bob.headers).json[
        "account_id"] == bob.id
    assert client.post("/v1/topup", json={"code": code}, headers=alice.headers).status_code == 409
    # Idempotency keys are per account: Alice replaying Bob's key gets her own top-up.
    first = client.post("/v1/topup", json={"amount": 1},
                        headers={**bob.headers, "Idempotency-Key": "same"}).json
    second = client.post("/v1/topup", json={"amount": 1},
                         headers={**alice.headers, "Idempotency-Key": "same"}).json
    assert (first["account_id"], second["account_id"]) == (bob.id, alice.id)
    # Bob's key cannot reach admin routes to credit himself or read Alice.
    assert client.post(f"/v1/admin/accounts/{bob.id}/credits", json={"amount": 5},
                       headers=bob.headers).status_code == 403
    assert client.get(f"/v1/admin/accounts/{alice.id}/ledger",
                      headers=bob.headers).status_code == 403

    assert accounts.balance_units(alice.id) == usd_to_units(6)
    assert accounts.balance_units(bob.id) == usd_to_units(4)
    assert accounts.audit() == []


def test_an_account_without_balance_cannot_spend_past_its_quota(app, client, accounts, upstream):
    admin = accounts.make(admin=True, credit="100")
    client.put("/v1/admin/tiers/free", headers=admin.headers,
               json={"discount_percent": 0, "monthly_free_tokens": 0})
    poor = accounts.make()
    chat = {"model": "deepseek-chat", "stream": False, "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", json=chat, headers=poor.headers)
    assert response.status_code == 402
    assert accounts.balance_units(admin.id) == usd_to_units(100)
    assert accounts.balance_units(poor.id) == 0
