"""PATCH /v1/keys/<id> follows the rule DELETE follows: a key may not act on a key with
wider access than its own. Capping the account's unlimited key at $0 or one request a
minute is a revocation in all but name, and one the capped key cannot even undo (its own
caps are then the ceiling of what it may set)."""

from __future__ import annotations

from tests.account.test_budgets_and_roles import chat


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def test_a_limited_key_cannot_cap_or_throttle_a_wider_key(client, accounts, upstream):
    owner = accounts.make(credit="5")
    models_only = client.post("/v1/keys", headers=owner.headers, json={
        "name": "chat-only", "models": ["deepseek-chat"]}).json
    refused = client.patch(f"/v1/keys/{owner.key_id}", headers=bearer(models_only["key"]),
                           json={"spend_caps": {"total": 0}, "rpm_limit": 1})
    assert refused.status_code == 403, refused.json
    limited = client.post("/v1/keys", headers=owner.headers, json={
        "name": "ci", "models": ["deepseek-chat"], "rpm_limit": 10,
        "spend_caps": {"day": 1}}).json
    headers = bearer(limited["key"])
    # Each change keeps every cap and rate at or under the limited key's own; only the
    # target is wider (all models, no limits).
    for change in ({"spend_caps": {"day": 0, "month": 0, "total": 0}, "rpm_limit": 10},
                   {"rpm_limit": 1, "spend_caps": {"day": 1}},
                   {"concurrency_limit": 1, "rpm_limit": 10, "spend_caps": {"day": 1}}):
        refused = client.patch(f"/v1/keys/{owner.key_id}", headers=headers, json=change)
        assert refused.status_code == 403, (change, refused.json)
        assert refused.json["error"]["code"] == "key_scope_exceeded"
    [own] = [k for k in client.get("/v1/keys", headers=owner.headers).json["data"]
             if k["id"] == owner.key_id]
    assert own["spend_caps"] == {"day": None, "month": None, "total": None}
    assert (own["rpm_limit"], own["concurrency_limit"]) == (None, None)
    assert chat(client, owner.headers).status_code == 200
    # What it may still do: change itself and keys no wider than itself.
    narrower = client.post("/v1/keys", headers=owner.headers, json={
        "models": ["deepseek-chat"], "rpm_limit": 5, "spend_caps": {"day": 1}}).json
    assert client.patch(f"/v1/keys/{narrower['id']}", headers=headers,
                        json={"spend_caps": {"day": "0.5"}}).status_code == 200
    assert client.patch(f"/v1/keys/{limited['id']}", headers=headers,
                        json={"rpm_limit": 5}).status_code == 200
