"""Authentication: three ways to present a key, and every way a key can be bad."""

from datetime import timedelta

import pytest

from silk.account.keys import hash_secret


def test_bearer_header(client, accounts):
    acct = accounts.make()
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {acct.key}"}
                      ).status_code == 200


def test_x_api_key_header(client, accounts):
    acct = accounts.make()
    assert client.get("/v1/models", headers={"X-Api-Key": acct.key}).status_code == 200


def test_query_parameter(client, accounts):
    acct = accounts.make()
    assert client.get(f"/v1/models?api_key={acct.key}").status_code == 200


def test_bearer_wins_over_the_other_forms(client, accounts):
    acct = accounts.make()
    response = client.get("/v1/models?api_key=sk-bad", headers={
        "Authorization": f"Bearer {acct.key}", "X-Api-Key": "sk-also-bad"})
    assert response.status_code == 200


@pytest.mark.parametrize("headers,query", [
    ({}, ""),
    ({"Authorization": "Bearer sk-unknown-key-000000000000000000000000000000"}, ""),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, ""),
    ({"Authorization": "Bearer "}, ""),
    ({"X-Api-Key": "x" * 5000}, ""),
    ({}, "?api_key=sk-nope"),
])
def test_missing_and_unknown_keys_are_401(client, accounts, headers, query):
    accounts.make()
    response = client.get("/v1/models" + query, headers=headers)
    assert response.status_code == 401
    error = response.json["error"]
    assert error["type"] == "authentication_error"
    assert set(error) == {"message", "type", "param", "code"}


def test_revoked_key_is_401(app, client, accounts):
    from silk.account.auth import key_cache
    from silk.account.service import revoke_key

    acct = accounts.make()
    assert client.get("/v1/models", headers=acct.headers).status_code == 200
    with app.app_context():
        revoke_key(acct.key_id)
        key_cache().clear()  # other workers see it within SILK_KEY_CACHE_TTL
    assert client.get("/v1/models", headers=acct.headers).status_code == 401


def test_revocation_reaches_a_cached_key_within_the_ttl(app, client, accounts):
    import time

    from silk.account.service import revoke_key

    app.extensions.pop("silk.keycache", None)
    app.config["SILK_KEY_CACHE_TTL"] = 0.3
    acct = accounts.make()
    assert client.get("/v1/models", headers=acct.headers).status_code == 200
    with app.app_context():
        revoke_key(acct.key_id)
    time.sleep(0.4)
    assert client.get("/v1/models", headers=acct.headers).status_code == 401


def test_expired_key_is_401(app, client, accounts):
    from silk.account.service import create_key
    from silk.database import utcnow

    acct = accounts.make()
    with app.app_context():
        soon = create_key(acct.id, name="soon", expires_at=utcnow() + timedelta(hours=1))
        gone = create_key(acct.id, name="gone", expires_at=utcnow() - timedelta(seconds=1))
    assert client.get("/v1/models", headers={"X-Api-Key": soon.secret}).status_code == 200
    response = client.get("/v1/models", headers={"X-Api-Key": gone.secret})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "expired_api_key"


def test_keys_are_stored_only_as_hashes(app, accounts):
    from sqlalchemy import text

    from silk.extensions import db

    acct = accounts.make()
    with app.app_context():
        rows = db.session.execute(text("SELECT key_hash, prefix FROM api_keys")).all()
    assert rows == [(hash_secret(acct.key), acct.key[:10])]
    assert acct.key.startswith("sk-") and len(acct.key) >= 43


def test_last_used_is_recorded(app, client, accounts):
    from silk.account.models import ApiKey
    from silk.extensions import db

    acct = accounts.make()
    client.get("/v1/models", headers=acct.headers)
    with app.app_context():
        assert db.session.get(ApiKey, acct.key_id).last_used_at is not None


def test_last_used_does_not_wait_for_the_disk(app, client, accounts):
    """A key's last use is not money: the answer does not wait for its flush."""
    from silk.extensions import db
    from tests.support.durability import committed_lightly, statements

    acct = accounts.make()
    with app.app_context():
        engine = db.engine
    with statements(engine) as seen:
        assert client.get("/v1/models", headers=acct.headers).status_code == 200
    assert committed_lightly(engine, seen, "UPDATE api_keys SET last_used_at")


@pytest.mark.parametrize("header,problem", [
    ("{key}", "the key is not preceded by 'Bearer '"),
    ("sk-unknown-key-000000000000000000000000000000", "the key is not preceded by 'Bearer '"),
    ("Basic dXNlcjpwYXNz", "it uses another scheme than 'Bearer'"),
    ("Token {key}", "it uses another scheme than 'Bearer'"),
    ("Bearer", "no key after 'Bearer'"),
    ("Bearer   ", "no key after 'Bearer'"),
    ("bearer", "no key after 'Bearer'"),
    ("Bearer:{key}", "the key is not preceded by 'Bearer '"),
])
def test_a_malformed_authorization_header_says_it_must_be_bearer(client, accounts, header,
                                                                  problem):
    acct = accounts.make()
    value = header.format(key=acct.key)
    for path in ("/v1/models", "/v1/balance"):
        response = client.get(path, headers={"Authorization": value})
        assert response.status_code == 401
        error = response.json["error"]
        assert error["code"] == "invalid_authorization_header"
        assert error["message"] == (f"Malformed Authorization header: {problem}. It must be "
                                    "'Authorization: Bearer <key>', e.g. 'Bearer sk-...'.")
        assert acct.key not in error["message"] and "issing" not in error["message"]
    response = client.post("/v1/chat/completions", headers={"Authorization": value},
                           json={"model": "deepseek-chat", "messages": []})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_authorization_header"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "Bearer  "])
def test_bearer_in_any_case_and_spacing(client, accounts, scheme):
    acct = accounts.make()
    response = client.get("/v1/models", headers={"Authorization": f"{scheme} {acct.key} "})
    assert response.status_code == 200


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "sk-something"])
def test_the_other_key_sources_work_beside_a_foreign_authorization_header(client, accounts,
                                                                         header):
    acct = accounts.make()
    assert client.get("/v1/models", headers={"Authorization": header,
                                             "X-Api-Key": acct.key}).status_code == 200
    assert client.get(f"/v1/models?api_key={acct.key}",
                      headers={"Authorization": header}).status_code == 200


def test_no_key_at_all_is_still_missing(client, accounts):
    for headers in ({}, {"Authorization": "   "}, {"X-Api-Key": " "}):
        response = client.get("/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "missing_api_key"


OTHER = "sk-" + "o" * 43


@pytest.mark.parametrize("path", ["/v1/models", "/v1/messages", "/v1/responses"])
def test_several_different_keys_in_one_header_are_a_401_saying_so(client, accounts, path):
    """Repeated headers reach the app as one, joined by commas (gunicorn and werkzeug's
    server join with ',', its test client with ', '): "Bearer a,Bearer b" was checked as
    one key and refused as an invalid key, counted as a failed guess."""
    acct = accounts.make()
    for headers in ({"Authorization": f"Bearer {acct.key},Bearer {OTHER}"},
                    {"Authorization": f"Bearer {OTHER}, Bearer {acct.key}"},
                    {"X-Api-Key": f"{acct.key},{OTHER}"}):
        response = (client.get(path, headers=headers) if path == "/v1/models" else
                    client.post(path, headers={**headers, "anthropic-version": "2023-06-01"},
                                json={"model": "deepseek-chat", "max_tokens": 5,
                                      "input": "hi", "messages": []}))
        assert response.status_code == 401, response.json
        error = response.json["error"]
        assert error["type"] == "authentication_error"
        assert "several" in error["message"].lower(), error
        assert acct.key not in error["message"] and OTHER not in error["message"]
        if path != "/v1/messages":
            assert error["code"] == "several_api_keys"
        else:
            assert response.json["type"] == "error"


def test_the_same_key_repeated_is_one_key(client, accounts):
    acct = accounts.make()
    for headers in ({"Authorization": f"Bearer {acct.key},Bearer {acct.key}"},
                    {"X-Api-Key": f"{acct.key}, {acct.key}"},
                    {"Authorization": f"Basic dXNlcjpwYXNz,Bearer {acct.key}"}):
        assert client.get("/v1/models", headers=headers).status_code == 200, headers


def test_an_invalid_bearer_key_beside_a_different_x_api_key_says_which_was_checked(
        client, accounts):
    """The Anthropic SDKs send x-api-key and, with an auth token set, Authorization too:
    when the two differ the Authorization header's key is checked (it is read first) and a
    bad one was a bare "Invalid API key."."""
    acct = accounts.make()
    response = client.post("/v1/messages", headers={
        "Authorization": f"Bearer {OTHER}", "x-api-key": acct.key,
        "anthropic-version": "2023-06-01"}, json={})
    assert response.status_code == 401
    message = response.json["error"]["message"]
    assert "Authorization" in message and "X-Api-Key" in message and "different" in message
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {OTHER}",
                                                  "X-Api-Key": OTHER})
    assert response.json["error"]["message"] == "Invalid API key."
