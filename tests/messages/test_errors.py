"""Errors on /v1/messages: Anthropic's envelope and statuses, before and after the answer."""

import pytest

from tests.chat.helpers import set_quota_left
from tests.messages.helpers import HEADERS, request


def _key(app, account_id, **options):
    from silk.account.service import create_key

    with app.app_context():
        return create_key(account_id, name="k", **options).secret


def _error(response, status, kind):
    assert response.status_code == status, response.data
    assert response.json["type"] == "error", response.json
    assert response.json["error"]["type"] == kind
    assert isinstance(response.json["error"]["message"], str)
    return response.json["error"]["message"]


@pytest.mark.parametrize("change,field", [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "text"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "data": "x"}}]}]}, "media_type"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "tool_use_id"),
    ({"system": 5}, "system"),
    ({"system": [{"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}]},
     "system"),
    ({"system": [{"type": "text"}]}, "system"),
    ({"temperature": 3}, "temperature"),
    ({"tools": [{"name": "f"}]}, "input_schema"),
    ({"tool_choice": {"type": "maybe"}}, "tool_choice"),
    ({"thinking": {"type": "enabled"}}, "budget_tokens"),
    ({"stop_sequences": "END"}, "stop_sequences"),
])
def test_bad_input_is_a_400_naming_the_field(client, accounts, upstream, change, field):
    acct = accounts.make(credit="1")
    body = request()
    for name, value in change.items():
        if value is None:
            body.pop(name)
        else:
            body[name] = value
    response = client.post("/v1/messages", headers={**acct.headers, **HEADERS}, json=body)
    assert field in _error(response, 400, "invalid_request_error")
    assert upstream.requests == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("content", [
    [], [{"type": "hologram", "data": "x"}],
    [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": 5}}],
], ids=["no-blocks", "unknown-block", "document-without-text"])
def test_a_conversation_that_translates_to_nothing_is_a_400_before_the_hold(
        app, client, accounts, upstream, content, stream):
    """A turn whose blocks hold nothing a chat model reads left the chat body without a
    message: it was held for, sent, refused by the provider ("missing field `messages`")
    and recorded as a failed request. It is refused first, as chat and Responses do."""
    acct = accounts.make(credit="1")
    body = request(messages=[{"role": "user", "content": content}], stream=stream)
    response = client.post("/v1/messages", headers={**acct.headers, **HEADERS}, json=body)
    assert "messages" in _error(response, 400, "invalid_request_error")
    assert upstream.requests == []
    assert accounts.usage_records(acct.id) == []
    assert accounts.row(acct.id).reserved_units == 0
    # With a turn the model reads beside it, the request is served as before.
    body["messages"].append({"role": "user", "content": "hi"})
    served = client.post("/v1/messages", headers={**acct.headers, **HEADERS}, json=body)
    assert served.status_code == 200
    assert accounts.audit() == []


def test_max_tokens_above_the_model_maximum_is_lowered_to_it(client, accounts, upstream):
    acct = accounts.make(credit="5")
    response = client.post("/v1/messages", headers=acct.headers,
                           json=request(max_tokens=128_000))
    assert response.status_code == 200, response.json
    assert upstream.requests[-1].body["max_tokens"] == 8192
    assert accounts.audit() == []


def test_what_claude_code_sends_besides_is_accepted(client, accounts, upstream):
    acct = accounts.make(credit="1")
    body = request(metadata={"user_id": "u"}, context_management={"edits": []},
                   output_config={"effort": "high"}, thinking={"type": "adaptive"},
                   top_k=5, stop_sequences=["END"], temperature=1,
                   system=[{"type": "text", "text": "sys", "cache_control": {
                       "type": "ephemeral"}}])
    body["messages"].append({"role": "system", "content": [{"type": "text", "text": "env"}]})
    body["messages"].append({"role": "user", "content": "go"})
    response = client.post("/v1/messages?beta=true", json=body, headers={
        **acct.headers, **HEADERS, "anthropic-beta": "claude-code-20250219"})
    assert response.status_code == 200, response.json
    sent = upstream.requests[-1].body
    assert sent["stop"] == ["END"] and "top_k" not in sent and "metadata" not in sent
    assert sent["messages"][0] == {"role": "system", "content": "sys"}
    assert sent["messages"][2] == {"role": "system", "content": "env"}


def test_key_from_x_api_key_or_bearer(client, accounts, upstream):
    acct = accounts.make(credit="1")
    assert client.post("/v1/messages", json=request(),
                       headers={"x-api-key": acct.key, **HEADERS}).status_code == 200
    assert client.post("/v1/messages", json=request(), headers={
        "Authorization": f"Bearer {acct.key}", **HEADERS}).status_code == 200


def test_auth_errors(client, accounts, upstream):
    _error(client.post("/v1/messages", json=request(), headers=HEADERS), 401,
           "authentication_error")
    _error(client.post("/v1/messages", json=request(),
                       headers={"x-api-key": "sk-wrong", **HEADERS}), 401,
           "authentication_error")


def test_402_403_404(app, client, accounts, upstream):
    broke = accounts.make(credit="0")
    set_quota_left(app, broke.id)
    _error(client.post("/v1/messages", json=request(), headers=broke.headers), 402,
           "billing_error")
    acct = accounts.make(credit="1")
    secret = _key(app, acct.id, allowed_models=["mimo-v2.5"])
    _error(client.post("/v1/messages", json=request(), headers={"x-api-key": secret}), 403,
           "permission_error")
    _error(client.post("/v1/messages", json=request(model="claude-nope"),
                       headers=acct.headers), 404, "not_found_error")


def test_app_errors_on_messages_paths_are_in_anthropic_shape(client, accounts, upstream):
    acct = accounts.make(credit="1")
    _error(client.get("/v1/messages", headers=acct.headers), 405, "invalid_request_error")
    _error(client.post("/v1/messages/nope", headers=acct.headers, json={}), 404,
           "not_found_error")
    big = {"model": "deepseek-chat", "max_tokens": 5, "messages": [
        {"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    _error(client.post("/v1/messages", headers=acct.headers, json=big), 413,
           "request_too_large")
    _error(client.post("/v1/messages", headers=acct.headers, data=b"{not json",
                       content_type="application/json"), 400, "invalid_request_error")
    # Chat keeps its own envelope.
    assert "error" in client.get("/v1/chat/completions").json


def test_rate_limit_is_429_with_retry_after(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    secret = _key(app, acct.id, rpm_limit=2)
    statuses = [client.post("/v1/messages", json=request(), headers={"x-api-key": secret})
                for _ in range(2)]
    assert [r.status_code for r in statuses] == [200, 200]
    blocked = client.post("/v1/messages/count_tokens", json=request(),
                          headers={"x-api-key": secret})
    _error(blocked, 429, "rate_limit_error")
    assert int(blocked.headers["retry-after"]) >= 1


@pytest.mark.parametrize("status,ours,kind", [
    (429, 429, "rate_limit_error"), (503, 503, "overloaded_error"),
    (500, 502, "api_error"), (404, 502, "api_error")])
def test_upstream_errors(client, accounts, upstream, status, ours, kind):
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", status=status, times=2)
    response = client.post("/v1/messages", json=request(), headers=acct.headers)
    _error(response, ours, kind)
    assert accounts.row(acct.id).reserved_units == 0
    assert [e.kind for e in accounts.ledger(acct.id)] == ["topup"]


def test_count_tokens_costs_nothing(client, accounts, upstream):
    acct = accounts.make(credit="1")
    body = request("one two three four")
    body.pop("max_tokens")
    response = client.post("/v1/messages/count_tokens", json=body, headers=acct.headers)
    assert response.status_code == 200, response.json
    assert response.json["input_tokens"] > 0
    assert set(response.json) == {"input_tokens"}
    assert upstream.requests == []
    assert [e.kind for e in accounts.ledger(acct.id)] == ["topup"]
