"""A member key of an admin account is no admin key: the console refuses it as the admin
API does (README: the admin API answers a member key with 403 owner_key_required)."""

from __future__ import annotations

import re


def _token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _sign_in(client, key: str):
    token = _token(client.get("/admin/login").text)
    return client.post("/admin/login", data={"api_key": key, "csrf_token": token})


def test_a_member_key_of_an_admin_account_cannot_sign_in_to_the_console(client, accounts):
    admin = accounts.make(admin=True, email="ops@example.com")
    made = client.post("/v1/keys", headers=admin.headers,
                       json={"name": "intern", "role": "member",
                             "spend_caps": {"total": 1}})
    assert made.status_code == 201
    member = made.json["key"]
    assert client.get("/v1/admin/accounts",
                      headers={"Authorization": f"Bearer {member}"}).status_code == 403
    answer = _sign_in(client, member)
    assert answer.status_code == 403 and "not an admin" in answer.text
    assert client.get("/admin/accounts").status_code == 302  # still signed out


def test_a_console_session_ends_when_its_key_is_a_member_key(app, client, accounts):
    """Signed in with an owner key that is later made a member one (the row changes under a
    live session): the next page signs out."""
    admin = accounts.make(admin=True, email="ops@example.com")
    assert _sign_in(client, admin.key).status_code == 302
    assert client.get("/admin/accounts").status_code == 200
    from sqlalchemy import update

    from silk.account.models import ApiKey
    from silk.extensions import db

    with app.app_context():
        db.session.execute(update(ApiKey).where(ApiKey.id == admin.key_id).values(role="member"))
        db.session.commit()
    answer = client.get("/admin/accounts")
    assert answer.status_code == 302 and answer.location.endswith("/admin/login")
