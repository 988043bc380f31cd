"""Each level (key, account, account and model) and each limit (requests and tokens per
minute, requests at once) end to end, per worker and through Redis, on both databases;
the operator's defaults where nothing is set; the 429 in every surface's envelope."""

from __future__ import annotations

import pytest

from tests.chat.helpers import messages
from tests.limits.conftest import redis_limiter
from tests.reliability.helpers import fresh_window

JSON = {"Accept": "application/json"}
CHAT = "/v1/chat/completions"


@pytest.fixture(params=["memory", "redis"])
def limiter_kind(request, app):
    fresh_window(8)  # requests and tokens are counted in fixed one-minute windows
    if request.param == "redis":
        app.extensions["silk.limiter"] = redis_limiter()
    return request.param


def _key(app, account_id: int, **limits) -> dict:
    from silk.account.service import create_key

    with app.app_context():
        secret = create_key(account_id, name="limited", **limits).secret
    return {"Authorization": f"Bearer {secret}", **JSON}


def _limit(client, admin, account_id: int, level: str, field: str, value: int | None):
    """Set a limit through the admin API, as an operator does."""
    body = {field: value}
    if level == "account_model":
        body["model"] = "deepseek-chat"
    answer = client.patch(f"/v1/admin/accounts/{account_id}/limits", headers=admin.headers,
                          json=body)
    assert answer.status_code == 200, answer.json
    return answer.json


def _setup(app, client, accounts, level: str, field: str, value: int):
    """An account limited at `level`: the key that requests, and another key of the account
    (which the key's limit does not bind but the account's does)."""
    acct = accounts.make(credit="1")
    if level == "key":
        return _key(app, acct.id, **{field: value}), _key(app, acct.id), acct
    admin = accounts.make(admin=True)
    _limit(client, admin, acct.id, level, field, value)
    return _key(app, acct.id), _key(app, acct.id), acct


LABELS = {"key": "this API key", "account": "this account",
          "account_model": "this account on the model 'deepseek-chat'"}
LEVELS = list(LABELS)


def _chat(client, headers, model="deepseek-chat", directive="", **options):
    return client.post(CHAT, headers=headers, json={"model": model,
                                                    "messages": messages("hi", directive),
                                                    **options}, **(
        {"buffered": False} if options.get("stream") else {}))


def _refused(answer, code: str, label: str) -> None:
    assert answer.status_code == 429, answer.get_data(as_text=True)
    assert answer.json["error"]["type"] == "rate_limit_error"
    assert answer.json["error"]["code"] == code
    assert answer.json["error"]["message"].endswith(
        f"for {label}.") or f"for {label};" in answer.json["error"]["message"]
    assert 1 <= int(answer.headers["retry-after"]) <= 61


@pytest.mark.parametrize("level", LEVELS)
def test_requests_per_minute(app, client, accounts, upstream, limiter_kind, level):
    headers, other, acct = _setup(app, client, accounts, level, "rpm_limit", 2)
    assert [_chat(client, headers).status_code for _ in range(2)] == [200, 200]
    _refused(_chat(client, headers), "rate_limit_exceeded", LABELS[level])
    sent = len(upstream.requests)
    # Another key of the account is bound by the account's limits, not by the key's.
    expected = 200 if level == "key" else 429
    assert _chat(client, other).status_code == expected
    if level == "account_model":  # the account's other models are not
        assert _chat(client, headers, model="mimo-v2.5").status_code == 200
    assert len(upstream.requests) == sent + (expected == 200) + (level == "account_model")
    assert accounts.audit() == []


@pytest.mark.parametrize("level", LEVELS)
def test_tokens_per_minute(app, client, accounts, upstream, limiter_kind, level):
    headers, other, acct = _setup(app, client, accounts, level, "tpm_limit", 30)
    # Admitted while the minute has room; what it used (over 40 tokens) fills the minute.
    assert _chat(client, headers, directive="pieces=40").status_code == 200
    _refused(_chat(client, headers), "tokens_per_minute_exceeded", LABELS[level])
    assert _chat(client, other).status_code == (200 if level == "key" else 429)
    assert accounts.audit() == []


@pytest.mark.parametrize("level", LEVELS)
def test_tokens_per_minute_count_what_was_used_not_the_hold(app, client, accounts, upstream,
                                                            limiter_kind, level):
    """A request is counted at its worst case while it runs, and at what it used after."""
    headers, _, _ = _setup(app, client, accounts, level, "tpm_limit", 1000)
    first = _chat(client, headers, stream=True, max_tokens=2000)  # open: counted at 2000+
    _refused(_chat(client, headers), "tokens_per_minute_exceeded", LABELS[level])
    assert first.get_data(as_text=True).endswith("data: [DONE]\n\n")
    first.close()  # it used a handful of tokens: the minute has room again
    assert _chat(client, headers).status_code == 200


@pytest.mark.parametrize("level", LEVELS)
def test_concurrent_requests(app, client, accounts, upstream, limiter_kind, level):
    headers, other, acct = _setup(app, client, accounts, level, "concurrency_limit", 1)
    held = _chat(client, headers, stream=True)  # admitted and answering: holds the slot
    assert held.status_code == 200
    _refused(_chat(client, headers), "concurrency_limit_exceeded", LABELS[level])
    assert _chat(client, other).status_code == (200 if level == "key" else 429)
    held.close()  # the client leaves mid-stream: the slot is free again
    assert _chat(client, headers).status_code == 200
    finished = _chat(client, headers, stream=True)
    assert finished.get_data(as_text=True).endswith("data: [DONE]\n\n")  # read to the end
    finished.close()
    assert _chat(client, headers).status_code == 200
    assert accounts.audit() == []


def test_a_slot_is_freed_when_the_upstream_fails_or_the_balance_refuses(app, client, accounts,
                                                                          upstream,
                                                                          limiter_kind):
    acct = accounts.make(credit="1")
    headers = _key(app, acct.id, concurrency_limit=1, tpm_limit=100_000)
    upstream.enqueue("deepseek", status=500, times=10)
    assert _chat(client, headers).status_code >= 500
    poor = accounts.make(credit="0")
    from tests.chat.helpers import set_quota_left

    set_quota_left(app, poor.id, 0)
    poor_headers = _key(app, poor.id, concurrency_limit=1)
    assert _chat(client, poor_headers, max_tokens=1000).status_code == 402
    upstream.reset()
    upstream.clear()
    assert _chat(client, headers).status_code == 200
    assert _chat(client, poor_headers).status_code == 402  # refused for money, not a slot


@pytest.mark.parametrize("level, setting", [("key", "SILK_DEFAULT_RPM"),
                                            ("account", "SILK_ACCOUNT_RPM"),
                                            ("account_model", "SILK_ACCOUNT_MODEL_RPM")])
def test_the_operators_default_applies_where_nothing_is_set(app, client, accounts, upstream,
                                                            limiter_kind, level, setting):
    app.config[setting] = 1
    acct = accounts.make(credit="1")
    headers, other = _key(app, acct.id), _key(app, acct.id)
    assert _chat(client, headers).status_code == 200
    _refused(_chat(client, headers), "rate_limit_exceeded", LABELS[level])
    assert _chat(client, other).status_code == (200 if level == "key" else 429)
    # A limit set at the level replaces the default there.
    if level == "key":
        assert _chat(client, _key(app, acct.id, rpm_limit=5)).status_code == 200
    else:
        admin = accounts.make(admin=True)
        _limit(client, admin, acct.id, level, "rpm_limit", 5)
        assert _chat(client, headers).status_code == 200


def test_concurrency_default_per_account(app, client, accounts, upstream, limiter_kind):
    app.config["SILK_ACCOUNT_CONCURRENCY"] = 1
    acct = accounts.make(credit="1")
    held = _chat(client, acct.headers | JSON, stream=True)
    _refused(_chat(client, acct.headers | JSON), "concurrency_limit_exceeded", "this account")
    held.close()
    assert _chat(client, acct.headers | JSON).status_code == 200


SURFACES = {
    "chat": (CHAT, {"model": "deepseek-chat", "messages": messages("hi")}),
    "messages": ("/v1/messages", {"model": "deepseek-chat", "max_tokens": 50,
                                  "messages": [{"role": "user", "content": "hi"}]}),
    "responses": ("/v1/responses", {"model": "deepseek-chat", "input": "hi"}),
}


@pytest.mark.parametrize("surface", list(SURFACES))
@pytest.mark.parametrize("field, code", [("rpm_limit", "rate_limit_exceeded"),
                                         ("concurrency_limit", "concurrency_limit_exceeded")])
def test_429_in_each_surfaces_envelope(app, client, accounts, upstream, surface, field, code):
    acct = accounts.make(credit="1")
    headers = _key(app, acct.id, **{field: 1})
    path, body = SURFACES[surface]
    held = client.post(path, headers=headers, json={**body, "stream": True}, buffered=False)
    assert held.status_code == 200
    blocked = client.post(path, headers=headers, json=body)
    held.close()
    assert blocked.status_code == 429 and 1 <= int(blocked.headers["retry-after"]) <= 61
    error = blocked.json["error"]
    if surface == "messages":
        assert blocked.json["type"] == "error" and error["type"] == "rate_limit_error"
    else:
        assert error["type"] == "rate_limit_error" and error["code"] == code
    assert "for this API key" in error["message"]
    assert accounts.audit() == []


def test_count_tokens_counts_a_request_and_holds_no_slot(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    headers = _key(app, acct.id, rpm_limit=3, concurrency_limit=1)
    path, body = SURFACES["messages"]
    held = client.post(path, headers=headers, json={**body, "stream": True}, buffered=False)
    counted = client.post("/v1/messages/count_tokens", headers=headers, json=body)
    assert counted.status_code == 200  # the stream holds the slot; counting needs none
    held.close()
    assert client.post(path, headers=headers, json=body).status_code == 200
    blocked = client.post("/v1/messages/count_tokens", headers=headers, json=body)
    assert blocked.status_code == 429 and blocked.json["error"]["type"] == "rate_limit_error"


def test_a_keys_rate_limits_change_with_patch(app, client, accounts, upstream, limiter_kind):
    """PATCH /v1/keys/<id> sets, changes and removes a key's rate limits, and the next
    request is held to them; a limited key cannot give a key more than it has."""
    acct = accounts.make(credit="1")
    made = client.post("/v1/keys", headers=acct.headers, json={"name": "ci", "rpm_limit": 100})
    assert made.status_code == 201, made.json
    key_id, headers = made.json["id"], {"Authorization": f"Bearer {made.json['key']}", **JSON}
    assert [_chat(client, headers).status_code for _ in range(2)] == [200, 200]

    changed = client.patch(f"/v1/keys/{key_id}", headers=acct.headers, json={"rpm_limit": 2})
    assert changed.status_code == 200 and changed.json["rpm_limit"] == 2
    _refused(_chat(client, headers), "rate_limit_exceeded", LABELS["key"])
    removed = client.patch(f"/v1/keys/{key_id}", headers=acct.headers,
                           json={"rpm_limit": None, "concurrency_limit": 3, "tpm_limit": 50000})
    assert removed.status_code == 200, removed.json
    assert (removed.json["rpm_limit"], removed.json["concurrency_limit"],
            removed.json["tpm_limit"]) == (None, 3, 50000)
    assert _chat(client, headers).status_code == 200

    for bad in ({"rpm_limit": 0}, {"tpm_limit": "5"}, {"concurrency_limit": 1.5}):
        answer = client.patch(f"/v1/keys/{key_id}", headers=acct.headers, json=bad)
        assert answer.status_code == 400, bad
        assert answer.json["error"]["param"] == next(iter(bad))

    limited = client.post("/v1/keys", headers=acct.headers, json={"name": "lead",
                                                                 "rpm_limit": 10})
    lead = {"Authorization": f"Bearer {limited.json['key']}", **JSON}
    # The key above has no rpm limit: wider than the lead, which may not change it at all
    # (as it may not revoke it), not even to narrow it.
    for change in ({"rpm_limit": 20}, {"rpm_limit": 5}):
        answer = client.patch(f"/v1/keys/{key_id}", headers=lead, json=change)
        assert answer.status_code == 403, answer.json
        assert answer.json["error"]["code"] == "key_scope_exceeded"
        assert answer.json["error"]["param"] == "id"
    # A key no wider than the lead: the lead may narrow it, never give it more than it has.
    narrow = client.post("/v1/keys", headers=acct.headers, json={"name": "dev", "rpm_limit": 8})
    for wider in ({"rpm_limit": 20}, {"rpm_limit": None}):
        answer = client.patch(f"/v1/keys/{narrow.json['id']}", headers=lead, json=wider)
        assert answer.status_code == 403, answer.json
        assert answer.json["error"]["code"] == "key_scope_exceeded"
        assert answer.json["error"]["param"] == "rpm_limit"
    narrowed = client.patch(f"/v1/keys/{narrow.json['id']}", headers=lead,
                            json={"rpm_limit": 5})
    assert narrowed.status_code == 200 and narrowed.json["rpm_limit"] == 5

    admin = accounts.make(admin=True)
    opened = client.patch(f"/v1/admin/keys/{key_id}", headers=admin.headers,
                          json={"rpm_limit": 1000})
    assert opened.status_code == 200 and opened.json["rpm_limit"] == 1000
    assert accounts.audit() == []
