"""Spend caps and roles through the API: what a key may set, show and do."""

from __future__ import annotations

import pytest

from tests.chat.helpers import set_quota_left
from tests.messages.helpers import HEADERS as MESSAGES_HEADERS
from tests.messages.helpers import request as messages_request


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def make_key(client, headers, **body):
    return client.post("/v1/keys", json=body, headers=headers)


def chat(client, headers, text="hi"):
    return client.post("/v1/chat/completions", headers=headers, json={
        "model": "deepseek-chat", "stream": False, "max_tokens": 1000,
        "messages": [{"role": "user", "content": text}]})


def test_a_key_with_caps_shows_them_with_its_spend(client, accounts, upstream, app):
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    made = make_key(client, owner.headers, name="ci", role="member",
                    spend_caps={"day": 5, "month": "20", "total": 100})
    assert made.status_code == 201, made.json
    assert made.json["role"] == "member"
    assert made.json["spend_caps"] == {"day": 5, "month": 20, "total": 100}
    assert made.json["spend"] == {"day": 0, "month": 0, "total": 0, "held": 0}
    answer = chat(client, bearer(made.json["key"]))
    assert answer.status_code == 200
    cost = answer.json["usage"]["cost"]
    assert cost > 0
    [shown] = client.get("/v1/keys", headers=bearer(made.json["key"])).json["data"]
    assert shown["id"] == made.json["id"]  # a member key sees itself alone
    assert shown["spend"] == {"day": cost, "month": cost, "total": cost, "held": 0}
    everyone = client.get("/v1/keys", headers=owner.headers).json["data"]
    assert {key["id"] for key in everyone} == {made.json["id"], owner.key_id}
    assert {key["role"] for key in everyone} == {"owner", "member"}


def test_the_cap_refusal_in_every_surface_envelope(client, accounts, upstream, app):
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    capped = make_key(client, owner.headers, spend_caps={"day": "0.0001"}).json["key"]

    refused = chat(client, bearer(capped))
    assert refused.status_code == 402
    error = refused.json["error"]
    assert (error["code"], error["type"]) == ("key_budget_exceeded", "insufficient_quota")
    assert "daily spend cap of $0.0001" in error["message"]
    assert "resets at " in error["message"] and "T00:00:00Z" in error["message"]
    assert refused.headers["x-should-retry"] == "false"

    native = client.post("/v1/messages", json=messages_request(),
                         headers={"x-api-key": capped, **MESSAGES_HEADERS})
    assert native.status_code == 402
    assert native.json["error"]["type"] == "billing_error"
    assert "daily spend cap" in native.json["error"]["message"]

    responses = client.post("/v1/responses", headers=bearer(capped), json={
        "model": "deepseek-chat", "input": "hi", "max_output_tokens": 1000})
    assert responses.status_code == 402
    assert responses.json["error"]["code"] == "key_budget_exceeded"
    assert accounts.audit() == []


def test_a_key_with_a_cap_makes_no_keys_and_sets_no_cap_above_its_own(client, accounts):
    owner = accounts.make(credit="1")
    limited = make_key(client, owner.headers, spend_caps={"day": 1, "total": 10}).json
    headers = bearer(limited["key"])

    # A new key counts its own spend from zero: made by a capped key, it would be that
    # budget again, and N of them N times it. Any key it asks for is refused, narrower too.
    def ids():
        return [key["id"] for key in client.get("/v1/keys", headers=owner.headers).json["data"]]

    before = ids()
    for body in ({"spend_caps": {"day": 1, "total": 10}}, {"spend_caps": {"day": "0.5"}},
                 {}, {"role": "member", "spend_caps": {"month": 3}}):
        refused = make_key(client, headers, **body)
        assert refused.status_code == 403, (body, refused.json)
        assert (refused.json["error"]["code"], refused.json["error"]["param"]) == (
            "key_scope_exceeded", "spend_caps.day")
        assert "may not create keys" in refused.json["error"]["message"]
    assert ids() == before
    only_total = make_key(client, owner.headers, spend_caps={"total": 10}).json
    refused = make_key(client, bearer(only_total["key"]))
    assert refused.json["error"]["param"] == "spend_caps.total"

    # Changing caps follows the caller's ceiling; a key may lower its own caps, not raise them.
    lower = make_key(client, owner.headers, spend_caps={"day": "0.5", "total": 10}).json
    raised = client.patch(f"/v1/keys/{lower['id']}", headers=headers,
                          json={"spend_caps": {"day": 5}})
    assert raised.status_code == 403 and raised.json["error"]["code"] == "key_scope_exceeded"
    assert raised.json["error"]["param"] == "spend_caps.day"
    # Even up to its own: the two keys could then spend more together than before.
    for caps in ({"day": 1}, {"day": "0.5", "total": "10.01"}, {"total": None}):
        refused = client.patch(f"/v1/keys/{lower['id']}", headers=headers,
                               json={"spend_caps": caps})
        assert refused.status_code == 403, (caps, refused.json)
        assert refused.json["error"]["code"] == "key_scope_exceeded"
    narrowed = client.patch(f"/v1/keys/{lower['id']}", headers=headers,
                            json={"spend_caps": {"day": "0.25", "total": 10, "month": 4}})
    assert narrowed.status_code == 200, narrowed.json
    assert narrowed.json["spend_caps"] == {"day": 0.25, "month": 4, "total": 10}
    own = client.patch(f"/v1/keys/{limited['id']}", headers=headers,
                       json={"spend_caps": {"day": 2}})
    assert own.status_code == 403
    lowered = client.patch(f"/v1/keys/{limited['id']}", headers=headers,
                           json={"spend_caps": {"day": "0.25"}, "name": "lowered"})
    assert lowered.status_code == 200
    assert (lowered.json["name"], lowered.json["spend_caps"]["day"]) == ("lowered", 0.25)
    # An owner key without caps may set any, and remove them again; the key may then make keys.
    removed = client.patch(f"/v1/keys/{limited['id']}", headers=owner.headers,
                           json={"spend_caps": {"day": None, "total": None}})
    assert removed.json["spend_caps"] == {"day": None, "month": None, "total": None}
    made = make_key(client, headers, spend_caps={"month": 3})
    assert made.status_code == 201 and made.json["spend_caps"]["month"] == 3


@pytest.mark.parametrize("caps, param", [
    ({"day": -1}, "spend_caps.day"), ({"month": "x"}, "spend_caps.month"),
    ({"total": True}, "spend_caps.total"), ({"week": 1}, "spend_caps.week"),
    ("5", "spend_caps"), ({"day": 10**12}, "spend_caps.day")])
def test_bad_caps_are_400s_naming_the_field(client, accounts, caps, param):
    owner = accounts.make()
    response = make_key(client, owner.headers, spend_caps=caps)
    assert response.status_code == 400
    assert response.json["error"]["param"] == param
    bad_role = make_key(client, owner.headers, role="admin")
    assert (bad_role.status_code, bad_role.json["error"]["param"]) == (400, "role")


def test_member_keys_are_refused_what_only_owners_may_do(client, accounts, upstream, app):
    owner = accounts.make(credit="1", admin=True)
    member = make_key(client, owner.headers, role="member").json
    headers = bearer(member["key"])
    refusals = [
        make_key(client, headers, name="another"),
        client.patch(f"/v1/keys/{owner.key_id}", headers=headers, json={"name": "x"}),
        client.patch(f"/v1/keys/{member['id']}", headers=headers,
                     json={"spend_caps": {"day": 1}}),
        client.delete(f"/v1/keys/{owner.key_id}", headers=headers),
        client.delete(f"/v1/keys/{member['id']}", headers=headers),
        client.get("/v1/balance", headers=headers),
        client.get("/v1/billing", headers=headers),
        client.post("/v1/topup", headers=headers, json={"code": "SILK-NOPE"}),
        client.get("/v1/account/alerts", headers=headers),
        client.put("/v1/account/alerts", headers=headers, json={"balance_threshold": "1"}),
        client.get("/v1/admin/accounts", headers=headers),
        client.get(f"/v1/admin/accounts/{owner.id}/ledger", headers=headers),
    ]
    for response in refusals:
        assert response.status_code == 403, (response.request.path, response.json)
        assert response.json["error"]["code"] in ("owner_key_required", "permission_denied")
    assert {r.json["error"]["code"] for r in refusals[:10]} == {"owner_key_required"}
    # What a member key may do: use the API and see its own usage.
    assert chat(client, headers).status_code == 200
    assert chat(client, owner.headers).status_code == 200
    assert chat(client, owner.headers).status_code == 200
    own = client.get("/v1/usage", headers=headers).json
    everything = client.get("/v1/usage", headers=owner.headers).json
    assert own["requests"] == 1
    assert everything["requests"] == 3
    assert client.get("/v1/models", headers=headers).status_code == 200
    # The owner still manages the member's key.
    assert client.delete(f"/v1/keys/{member['id']}", headers=owner.headers).status_code == 200


def test_the_cli_sets_and_shows_caps(runner, app, accounts):
    owner = accounts.make()
    made = runner.invoke(args=["silk", "create-key", str(owner.id), "--role", "member",
                               "--cap-day", "2", "--cap-total", "50"])
    assert made.exit_code == 0, made.output
    key_id = made.output.split()[1]
    listed = runner.invoke(args=["silk", "list-keys", "--account", str(owner.id)]).output
    line = next(line for line in listed.splitlines() if line.startswith(key_id + "\t"))
    assert "role=member" in line
    assert "day=$0/$2" in line and "month=$0/-" in line and "total=$0/$50" in line
    changed = runner.invoke(args=["silk", "set-key-caps", key_id, "--day", "none",
                                  "--month", "7.5"])
    assert changed.exit_code == 0, changed.output
    assert "day=$0/-" in changed.output and "month=$0/$7.5" in changed.output
    shown = runner.invoke(args=["silk", "show-account", str(owner.id)]).output
    assert "total=$0/$50" in shown


@pytest.mark.parametrize("args", [
    ["set-key-caps", "{key}", "--day", "-5"],
    ["set-key-caps", "{key}", "--total", "1e20"],
    ["set-key-caps", "{key}", "--month", "1000000000.01"],
    ["create-key", "{account}", "--cap-total", "-1"],
    ["create-key", "{account}", "--rpm", "0"],
    ["create-key", "{account}", "--tpm", "-3"],
    ["create-key", "{account}", "--tpm", "99999999999999"],
    ["create-key", "{account}", "--concurrency", "99999999999999"],
    ["set-limits", "{account}", "--tpm", "99999999999999"],
    ["set-limits", "{account}", "--rpm", "²"],
])
def test_the_cli_refuses_caps_and_rates_the_api_refuses(runner, accounts, args):
    owner = accounts.make()
    argv = [arg.format(key=owner.key_id, account=owner.id) for arg in args]
    done = runner.invoke(args=["silk", *argv])
    # A message and a failing status (click's usage error, or the API schema's), no traceback.
    assert done.exit_code in (1, 2) and isinstance(done.exception, SystemExit), (
        done.output, done.exception)
    assert "Invalid" in done.output
    listed = runner.invoke(args=["silk", "list-keys", "--account", str(owner.id)]).output
    assert len(listed.splitlines()) == 1  # no key was made
    assert "day=$0/- month=$0/- total=$0/-" in listed  # and no cap was set
    assert "rpm=" not in runner.invoke(args=["silk", "show-limits", str(owner.id)]).output.split(
        "default")[0]  # and no limit
