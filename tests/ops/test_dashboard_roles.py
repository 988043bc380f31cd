"""The dashboard follows the key's role: a member key sees its own usage and caps only."""

from __future__ import annotations

from tests.chat.helpers import set_quota_left
from tests.ops.helpers import csrf_from, sign_in


def _chat(client, key: str):
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "deepseek-chat", "stream": False,
                             "messages": [{"role": "user", "content": "hello"}]})


def _member(client, owner, **caps):
    body = {"name": "helper", "role": "member"}
    if caps:
        body["spend_caps"] = caps
    return client.post("/v1/keys", json=body, headers=owner.headers).json


def test_a_member_sees_its_own_requests_and_caps_not_the_accounts_money(app, client,
                                                                        accounts, upstream):
    owner = accounts.make(credit="12.50")
    set_quota_left(app, owner.id)
    member = _member(client, owner, day="0.5", total=3)
    assert _chat(client, owner.key).status_code == 200
    assert _chat(client, member["key"]).status_code == 200

    sign_in(client, member["key"])
    page = client.get("/dashboard/").text
    assert 'data-testid="balance"' not in page and "$12.4" not in page
    assert "Redeem a code" not in page
    assert 'data-testid="budget"' in page and "no cap" in page and "$3.00" in page
    assert page.count('<td><code class="small">') == 1  # its own request only
    keys = client.get("/dashboard/keys").text
    assert keys.count('data-testid="role-') == 1 and 'data-testid="member-note"' in keys
    assert "Create a key" not in keys and "revoke-" not in keys

    token = csrf_from(keys)
    refused = client.post("/dashboard/keys", data={"csrf_token": token, "name": "x"})
    assert refused.status_code == 403
    revoke = client.post(f"/dashboard/keys/{owner.key_id}/revoke",
                         data={"csrf_token": token}, follow_redirects=True)
    assert "member key may not manage" in revoke.text
    redeem = client.post("/dashboard/redeem", data={"csrf_token": token, "code": "silk-x"},
                         follow_redirects=True)
    assert "member key may not top up" in redeem.text
    listed = client.get("/v1/keys", headers=owner.headers).json["data"]
    assert all(key["status"] == "active" for key in listed)


def test_an_owner_sees_every_key_with_role_and_spend_and_makes_capped_members(
        app, client, accounts):
    owner = accounts.make(credit="1")
    member = _member(client, owner, month=20)
    sign_in(client, owner.key)
    keys = client.get("/dashboard/keys").text
    assert f'data-testid="role-{member["id"]}">member<' in keys
    assert "$0.00 / $20.00" in keys
    made = client.post("/dashboard/keys", data={
        "csrf_token": csrf_from(keys), "name": "ci", "role": "member", "cap_day": "1.5"})
    assert made.status_code == 200 and 'data-testid="new-secret"' in made.text
    listed = client.get("/v1/keys", headers=owner.headers).json["data"]
    ci = next(key for key in listed if key["name"] == "ci")
    assert (ci["role"], ci["spend_caps"]["day"]) == ("member", 1.5)
    bad = client.post("/dashboard/keys", data={
        "csrf_token": csrf_from(keys), "name": "bad", "cap_total": "lots"})
    assert bad.status_code == 400 and "spend_caps.total" in bad.text


def test_an_owner_key_with_a_cap_makes_no_keys_in_the_dashboard(client, accounts):
    owner = accounts.make(credit="1")
    capped = client.post("/v1/keys", json={"name": "lead", "spend_caps": {"month": 5}},
                         headers=owner.headers).json
    sign_in(client, capped["key"])
    keys = client.get("/dashboard/keys").text
    assert 'data-testid="capped-note"' in keys and "Create a key" not in keys
    before = len(client.get("/v1/keys", headers=owner.headers).json["data"])
    refused = client.post("/dashboard/keys", data={
        "csrf_token": csrf_from(keys), "name": "again", "cap_month": "5"})
    assert refused.status_code == 403 and "may not create keys" in refused.text
    assert len(client.get("/v1/keys", headers=owner.headers).json["data"]) == before
