"""A user's own keys: GET/POST /v1/keys and DELETE /v1/keys/<id>."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


def make_key(client, account, **body):
    return client.post("/v1/keys", json=body, headers=account.headers)


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def test_list_shows_prefixes_never_secrets(client, accounts):
    user = accounts.make()
    response = client.get("/v1/keys", headers=user.headers)
    assert response.status_code == 200
    assert response.json["object"] == "list"
    [key] = response.json["data"]
    assert key["id"] == user.key_id
    assert key["status"] == "active"
    assert user.key.startswith(key["prefix"])
    assert user.key not in response.get_data(as_text=True)


def test_create_a_key_with_every_limit_and_use_it(client, accounts):
    user = accounts.make()
    expires = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    response = make_key(client, user, name="ci", expires_at=expires.isoformat(),
                        models=["deepseek-chat", "mimo-v2.5"], rpm_limit=60, tpm_limit=10_000)
    assert response.status_code == 201
    body = response.json
    assert body["key"].startswith("sk-") and len(body["key"]) >= 43
    assert (body["name"], body["models"], body["rpm_limit"], body["tpm_limit"]) == (
        "ci", ["deepseek-chat", "mimo-v2.5"], 60, 10_000)
    assert body["expires_at"] == expires.replace(tzinfo=None).isoformat() + "Z"
    models = client.get("/v1/models", headers=bearer(body["key"])).json["data"]
    assert sorted(m["id"] for m in models) == ["deepseek-chat", "mimo-v2.5"]
    listed = client.get("/v1/keys", headers=user.headers).json["data"]
    assert [k["id"] for k in listed] == [body["id"], user.key_id]
    assert "key" not in listed[0]


def test_expires_in_days(client, accounts):
    user = accounts.make()
    body = make_key(client, user, expires_in_days=30).json
    expires = datetime.fromisoformat(body["expires_at"].rstrip("Z"))
    assert timedelta(days=29) < expires - datetime.now(UTC).replace(tzinfo=None) <= timedelta(
        days=30)


@pytest.mark.parametrize("body, param", [
    ({"name": ""}, "name"), ({"name": "x" * 101}, "name"), ({"name": 5}, "name"),
    ({"models": []}, "models"), ({"models": "deepseek-chat"}, "models"),
    ({"models": ["no-such-model"]}, "models"), ({"models": [1]}, "models[0]"),
    ({"rpm_limit": 0}, "rpm_limit"), ({"rpm_limit": 1.5}, "rpm_limit"),
    ({"tpm_limit": "100"}, "tpm_limit"), ({"expires_at": "tomorrow"}, "expires_at"),
    ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "9999-12-31T23:59:59-01:00"}, "expires_at"),  # past 9999 in UTC
    ({"expires_in_days": 0}, "expires_in_days"),
    ({"expires_in_days": 1, "expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
    ({"admin": True}, "admin"),
    ({"name": "a\x00b"}, "name"),  # PostgreSQL's text cannot hold it; both databases refuse
    ({"models": ["deepseek-chat\x00"]}, "models[0]"),
    # More than the INTEGER column holds: SQLite stored it, PostgreSQL refused it unnamed.
    ({"rpm_limit": 2**31}, "rpm_limit"), ({"concurrency_limit": 2**40}, "concurrency_limit"),
    # A valid ISO time whose UTC moment is past year 9999 (or before year 1).
    ({"expires_at": "9999-12-31T23:00:00-05:00"}, "expires_at"),
    ({"expires_at": "0001-01-01T00:00:00+05:00"}, "expires_at"),
])
def test_bad_key_requests_are_400s_naming_the_field(client, accounts, body, param):
    user = accounts.make()
    response = make_key(client, user, **body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["param"] == param
    assert len(client.get("/v1/keys", headers=user.headers).json["data"]) == 1


@pytest.mark.parametrize("field", ["rpm_limit", "tpm_limit", "concurrency_limit"])
def test_a_rate_past_what_its_column_holds_is_a_400_naming_it(client, accounts, field):
    user = accounts.make()
    response = client.patch(f"/v1/keys/{user.key_id}", headers=user.headers,
                            json={field: 2**31})
    assert response.status_code == 400, response.json
    assert response.json["error"]["param"] == field
    assert client.get("/v1/keys", headers=user.headers).json["data"][0][field] is None


def test_a_limited_key_cannot_mint_a_wider_one(client, accounts):
    user = accounts.make()
    limited = make_key(client, user, models=["deepseek-chat"], rpm_limit=10,
                       expires_in_days=1).json
    headers = bearer(limited["key"])
    inherited = client.post("/v1/keys", json={"name": "child"}, headers=headers).json
    assert inherited["models"] == ["deepseek-chat"]
    assert inherited["rpm_limit"] == 10
    assert inherited["expires_at"] == limited["expires_at"]
    for body in ({"models": ["mimo-v2.5"]}, {"rpm_limit": 11}, {"expires_in_days": 2}):
        response = client.post("/v1/keys", json=body, headers=headers)
        assert response.status_code == 403
        assert response.json["error"]["code"] == "key_scope_exceeded"


def test_revoke_takes_effect_at_once(client, accounts):
    user = accounts.make()
    extra = make_key(client, user, name="temp").json
    assert client.get("/v1/balance", headers=bearer(extra["key"])).status_code == 200
    response = client.delete(f"/v1/keys/{extra['id']}", headers=user.headers)
    assert response.status_code == 200
    assert response.json["status"] == "revoked"
    assert response.json["deleted"] is True
    assert client.get("/v1/balance", headers=bearer(extra["key"])).status_code == 401
    # Revoking again is harmless.
    assert client.delete(f"/v1/keys/{extra['id']}", headers=user.headers).status_code == 200


def test_revoke_unknown_key_is_404(client, accounts):
    user = accounts.make()
    assert client.delete("/v1/keys/9999", headers=user.headers).status_code == 404
    assert client.delete("/v1/keys/abc", headers=user.headers).status_code == 404


def test_keys_need_a_key(client):
    assert client.get("/v1/keys").status_code == 401
    assert client.post("/v1/keys", json={}).status_code == 401
    assert client.delete("/v1/keys/1").status_code == 401


def test_a_limited_key_cannot_revoke_a_wider_one(client, accounts):
    user = accounts.make()
    limited = make_key(client, user, models=["deepseek-chat"], rpm_limit=10,
                       expires_in_days=1).json
    wider = make_key(client, user, models=["deepseek-chat"], expires_in_days=1).json
    headers = bearer(limited["key"])
    for target in (user.key_id, wider["id"]):
        response = client.delete(f"/v1/keys/{target}", headers=headers)
        assert response.status_code == 403
        assert response.json["error"]["code"] == "key_scope_exceeded"
    assert client.get("/v1/balance", headers=user.headers).status_code == 200
    narrower = client.post("/v1/keys", json={"rpm_limit": 5}, headers=headers).json
    assert client.delete(f"/v1/keys/{narrower['id']}", headers=headers).status_code == 200
    assert client.delete(f"/v1/keys/{limited['id']}", headers=headers).status_code == 200


def test_a_revoked_key_cached_as_good_cannot_make_keys(app, client, accounts):
    from silk.account.models import ApiKey
    from silk.database import utcnow
    from silk.extensions import db

    user = accounts.make()
    assert client.get("/v1/keys", headers=user.headers).status_code == 200  # now cached
    with app.app_context():  # revoked by another worker: this one's cache still trusts it
        db.session.get(ApiKey, user.key_id).revoked_at = utcnow()
        db.session.commit()
    response = make_key(client, user, name="late")
    assert response.status_code == 401
    assert client.delete(f"/v1/keys/{user.key_id}", headers=user.headers).status_code == 401
