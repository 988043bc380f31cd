"""A stream whose key is revoked (or whose account is disabled) mid-answer ends at once, in
its surface's own failure event, billed for what was delivered, its upstream closed.

The key is revoked through the API while a slow stream runs; the stream ends before its
next upstream read. Other workers (Redis, or the key cache TTL) are in
tests/reliability/test_invalidation.py.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from silk.defaults import PROVIDERS
from tests.chat.helpers import expected_cost, set_quota_left, units
from tests.reliability.helpers import assert_money_exact, wait_until

PIECES = 400  # reply words of the slow stream: 8 s at 0.02 s each, far more than a test waits
SLOW = f"pieces={PIECES} chunk_delay=0.02"

REQUESTS = {
    "chat": ("/v1/chat/completions", {"model": "deepseek-chat", "stream": True,
                                      "messages": [{"role": "user",
                                                    "content": f"go [[fake: {SLOW}]]"}]}),
    "messages": ("/v1/messages", {"model": "deepseek-chat", "stream": True, "max_tokens": 1000,
                                  "messages": [{"role": "user",
                                                "content": f"go [[fake: {SLOW}]]"}]}),
    "responses": ("/v1/responses", {"model": "deepseek-chat", "stream": True,
                                    "input": f"go [[fake: {SLOW}]]"}),
}


def events(raw: bytes) -> list[tuple[str | None, object]]:
    """(event name, data) of each SSE event; data '[DONE]' kept as a string."""
    found = []
    for block in raw.decode().split("\n\n"):
        lines = block.split("\n")
        data = "\n".join(line[5:].lstrip() for line in lines if line.startswith("data:"))
        if not data:
            continue
        name = next((line[6:].strip() for line in lines if line.startswith("event:")), None)
        found.append((name, data if data == "[DONE]" else json.loads(data)))
    return found


def text_of(surface: str, raw: bytes) -> str:
    """The answer's text as a client of the surface reads it from the events it received."""
    text = []
    for _, data in events(raw):
        if not isinstance(data, dict):
            continue
        if surface == "chat":
            for choice in data.get("choices") or ():
                text.append((choice.get("delta") or {}).get("content") or "")
        elif surface == "messages" and data.get("type") == "content_block_delta":
            text.append(data["delta"].get("text", ""))
        elif surface == "responses" and data.get("type") == "response.output_text.delta":
            text.append(data["delta"])
    return "".join(text)


def _words(surface: str, raw: bytes) -> int:
    return len(text_of(surface, raw).split())


def start_stream(client, surface: str, key: str, body: dict | None = None):
    """Open a slow stream with `key` (the surface's usual request, or `body`) and read it
    until five words arrived."""
    path, usual = REQUESTS[surface]
    body = usual if body is None else body
    response = client.post(path, json=body, buffered=False,
                           headers={"Authorization": f"Bearer {key}",
                                    "anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    pieces = iter(response.response)
    received = b""
    while _words(surface, received) < 5:
        received += next(pieces)
    return response, pieces, received


def _open_streams(app) -> int:
    from silk.relay.revocation import open_streams

    return len(open_streams(app))


@pytest.mark.parametrize("surface", ["chat", "messages", "responses"])
def test_a_key_revoked_mid_stream_ends_it_in_the_surface_s_failure_event(
        app, client, accounts, upstream, surface):
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    spare = client.post("/v1/keys", json={"name": "leaked"}, headers=owner.headers).json
    response, rest, received = start_stream(client, surface, spare["key"])
    before = _words(surface, received)
    assert client.delete(f"/v1/keys/{spare['id']}", headers=owner.headers).status_code == 200
    revoked = time.monotonic()  # from here: the delete itself may be slow on a loaded machine
    for piece in rest:
        received += piece
    took = time.monotonic() - revoked
    response.close()
    delivered = _words(surface, received)
    # Ended at its next read, not read on to its end (8 s more): at most the rest of one
    # upstream read reached the client, in a few seconds at most even on a loaded machine.
    assert took < 4 and delivered <= before + 3
    [gone] = upstream.wait_for(lambda: upstream.disconnects, timeout=5)
    assert gone.chunks_sent < PIECES  # the upstream was closed, not read to its end

    [record] = accounts.usage_records(owner.id)
    assert record.status == "revoked" and record.http_status == 401 and record.estimated
    assert record.surface == surface
    assert record.completion_tokens == delivered  # exactly what reached the client
    cost = expected_cost("deepseek-chat", record.prompt_tokens, delivered)
    assert record.cost_units == units(cost)
    charge = f"Charged ${cost.normalize():f} for an estimate of what was delivered"

    name, last = events(received)[-1]
    assert isinstance(last, dict)
    if surface == "chat":
        assert last["error"]["type"] == "authentication_error"
        assert last["error"]["code"] == "key_revoked"
        assert last["error"]["message"].startswith("This API key was revoked")
        assert charge in last["error"]["message"]
        assert last["usage"]["completion_tokens"] == delivered
        assert Decimal(str(last["usage"]["cost"])) == cost
    elif surface == "messages":
        assert name == "error" and last["type"] == "error"
        assert last["error"]["type"] == "authentication_error"
        assert last["error"]["message"].startswith("This API key was revoked")
        assert charge in last["error"]["message"]
        assert last["usage"]["output_tokens"] == delivered
    else:
        assert name == last["type"] == "response.failed"
        error = last["response"]["error"]
        assert error["code"] == "key_revoked" and charge in error["message"]
        assert last["response"]["usage"]["output_tokens"] == delivered
    assert_money_exact(accounts, owner.id, "1")
    assert _open_streams(app) == 0
    # The key is refused from now on, and the owner's own key still streams to the end.
    refused = client.post(REQUESTS[surface][0], json=REQUESTS[surface][1],
                          headers={"Authorization": f"Bearer {spare['key']}"})
    assert refused.status_code == 401


@pytest.fixture
def native(monkeypatch, upstream):
    """DeepSeek serves Anthropic Messages at the fake; ask for it before `app`."""
    monkeypatch.setenv("DEEPSEEK_ANTHROPIC_BASE_URL", upstream.anthropic_base_url("deepseek"))


def test_a_native_anthropic_stream_ends_too(native, app, client, accounts, upstream):
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    spare = client.post("/v1/keys", json={"name": "leaked"}, headers=owner.headers).json
    response, rest, received = start_stream(client, "messages", spare["key"])
    assert client.delete(f"/v1/keys/{spare['id']}", headers=owner.headers).status_code == 200
    for piece in rest:
        received += piece
    response.close()
    name, last = events(received)[-1]
    assert name == "error" and last["error"]["type"] == "authentication_error"
    assert upstream.requests[-1].path.endswith("/messages")  # the provider's Anthropic API
    [record] = accounts.usage_records(owner.id)
    assert record.status == "revoked" and record.completion_tokens == _words("messages", received)
    assert last["usage"]["output_tokens"] == record.completion_tokens
    assert_money_exact(accounts, owner.id, "1")


def test_an_account_disabled_mid_stream_ends_its_streams(app, client, accounts, upstream):
    admin, user = accounts.make(admin=True), accounts.make(credit="1")
    set_quota_left(app, user.id)
    response, rest, received = start_stream(client, "chat", user.key)
    patched = client.patch(f"/v1/admin/accounts/{user.id}", json={"disabled": True},
                           headers=admin.headers)
    assert patched.status_code == 200
    for piece in rest:
        received += piece
    response.close()
    _, last = events(received)[-1]
    assert isinstance(last, dict)
    assert last["error"]["code"] == "account_disabled"
    assert last["error"]["type"] == "authentication_error"
    [record] = accounts.usage_records(user.id)
    assert record.status == "revoked" and record.completion_tokens == _words("chat", received)
    assert_money_exact(accounts, user.id, "1")


def test_a_change_that_leaves_the_key_serving_does_not_end_the_stream(app, client, accounts,
                                                                     upstream):
    """A renamed key, a changed tier or limit: the stream checks its key and goes on."""
    admin, owner = accounts.make(admin=True), accounts.make(credit="1")
    set_quota_left(app, owner.id)
    upstream.behave(chunk_delay=0.005)
    path, body = REQUESTS["chat"]
    body = {**body, "messages": [{"role": "user", "content": "go [[fake: pieces=60]]"}]}
    response = client.post(path, json=body, buffered=False, headers=owner.headers)
    pieces = iter(response.response)
    received = next(pieces) + next(pieces)
    assert client.patch(f"/v1/keys/{owner.key_id}", json={"name": "renamed"},
                        headers=owner.headers).status_code == 200
    assert client.patch(f"/v1/admin/accounts/{owner.id}", json={"tier": "pro"},
                        headers=admin.headers).status_code == 200
    for piece in pieces:
        received += piece
    response.close()
    assert events(received)[-1] == (None, "[DONE]")
    [record] = accounts.usage_records(owner.id)
    assert record.status == "ok" and record.completion_tokens == 60


def test_streams_are_held_weakly_and_the_timer_stops_with_the_last(app, client, accounts,
                                                                   upstream):
    """The registry holds no more than the streams open now; its timer ends with them."""
    from silk.relay.revocation import open_streams

    app.extensions.pop("silk.keycache", None)
    app.config["SILK_KEY_CACHE_TTL"] = 2.0  # the timer marks every second
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    opened = [start_stream(client, "chat", owner.key) for _ in range(3)]
    streams = open_streams(app)
    assert len(streams) == 3
    wait_until(lambda: all(watch.check for watch in list(streams._open)), timeout=5)
    # Marked by the timer: each checks its key and goes on. The timer marks them again a
    # period later, perhaps while they are read on a loaded machine: then another round.
    for _ in range(10):
        for _, rest, _ in opened:
            received = next(rest) + next(rest) + next(rest)
            assert b"error" not in received
        if not any(watch.check for watch in list(streams._open)):
            break
    else:
        raise AssertionError("the streams never checked their marks")
    for response, _, _ in opened:
        response.close()
    assert len(streams) == 0
    wait_until(lambda: streams._timer is None, timeout=5)
    assert [r.status for r in accounts.usage_records(owner.id)] == ["client_closed"] * 3


def test_a_key_revoked_while_its_stream_waits_for_the_provider_ends_it_at_once(
        app, client, accounts, upstream):
    """Revoked after the request's key check but before its stream is registered (the
    provider has not answered yet): the mark finds no stream to end, so the stream checks
    its key on its first read, not at the timer's next mark (30 s here)."""
    import threading

    app.extensions.pop("silk.keycache", None)
    app.config["SILK_KEY_CACHE_TTL"] = 60.0  # the timer marks every 30 s
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    spare = client.post("/v1/keys", json={"name": "leaked"}, headers=owner.headers).json
    path, body = REQUESTS["chat"]
    body = {**body, "messages": [{"role": "user", "content": f"go [[fake: {SLOW} delay=1]]"}]}
    revoked = threading.Event()

    def revoke() -> None:
        # the request is waiting for the provider's headers by now
        upstream.wait_for(lambda: upstream.requests, timeout=5)
        deleted = app.test_client().delete(f"/v1/keys/{spare['id']}", headers=owner.headers)
        assert deleted.status_code == 200
        revoked.set()

    thread = threading.Thread(target=revoke)
    thread.start()
    response = client.post(path, json=body, buffered=False,
                           headers={"Authorization": f"Bearer {spare['key']}"})
    thread.join(timeout=10)
    assert revoked.is_set() and response.status_code == 200
    start = time.monotonic()
    received = b"".join(response.response)
    response.close()
    assert time.monotonic() - start < 4  # not the 8 s of the whole answer
    _, last = events(received)[-1]
    assert isinstance(last, dict) and last["error"]["code"] == "key_revoked"
    [record] = accounts.usage_records(owner.id)
    assert record.status == "revoked"
    assert record.completion_tokens == _words("chat", received)
    # The provider had taken the prompt: it is paid, whether output came or not (a key
    # revoked at once must not make a long prompt free).
    assert record.estimated and record.prompt_tokens > 0 and record.cost_units > 0
    assert_money_exact(accounts, owner.id, "1")


@pytest.mark.parametrize("surface", ["chat", "responses"])
def test_a_key_that_expires_mid_stream_ends_it_at_its_expiry(app, client, accounts, upstream,
                                                             surface):
    """A key that expired while its stream ran was refused for new requests but streamed
    on to the end. The timer wakes at the expiry (not at its next period, 30 s here) and
    the stream ends in its surface's failure event, billed for what was delivered."""
    from datetime import timedelta

    from silk.database import utcnow

    app.extensions.pop("silk.keycache", None)
    app.config["SILK_KEY_CACHE_TTL"] = 60.0  # the timer's period: 30 s
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    # After the stream began, on a loaded machine too (3 s once was not), and well before
    # the answer's end: 1,000 words at 0.02 s, 20 s.
    expires = utcnow() + timedelta(seconds=6)
    made = client.post("/v1/keys", json={"name": "short", "expires_at": expires.isoformat()
                                         + "Z"}, headers=owner.headers)
    assert made.status_code == 201, made.json
    body = json.loads(json.dumps(REQUESTS[surface][1]).replace(SLOW,
                                                               "pieces=1000 chunk_delay=0.02"))
    response, rest, received = start_stream(client, surface, made.json["key"], body)
    for piece in rest:
        received += piece
    ended = utcnow()
    response.close()
    assert expires <= ended < expires + timedelta(seconds=4)  # not the 20 s of the answer
    name, last = events(received)[-1]
    assert isinstance(last, dict)
    if surface == "chat":
        assert last["error"]["code"] == "expired_api_key"
        assert last["error"]["message"].startswith("This API key expired")
        told = last["usage"]["completion_tokens"]
    else:
        assert name == "response.failed"
        assert last["response"]["error"]["code"] == "expired_api_key"
        told = last["response"]["usage"]["output_tokens"]
    [record] = accounts.usage_records(owner.id)
    assert record.status == "revoked" and record.http_status == 401 and record.estimated
    # an estimate of the delivered text (some of the fake's words are two tokens)
    assert record.completion_tokens == told >= _words(surface, received)
    assert_money_exact(accounts, owner.id, "1")
    assert _open_streams(app) == 0


def test_a_native_stream_of_a_provider_that_hides_its_reasoning_is_read_to_its_usage(
        native, database_url, app_config, request, upstream):
    """Where the provider bills reasoning only its final usage counts, a revoked key's
    stream sends nothing more but is read on to that usage, which it is charged."""
    app_config["SILK_PROVIDERS"] = {
        **PROVIDERS, "deepseek": {**PROVIDERS["deepseek"], "reasoning_streamed": False}}
    app, client = request.getfixturevalue("app"), request.getfixturevalue("client")
    accounts = request.getfixturevalue("accounts")
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    spare = client.post("/v1/keys", json={"name": "leaked"}, headers=owner.headers).json
    body = {**REQUESTS["messages"][1], "model": "deepseek-reasoner",
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "go [[fake: pieces=100 chunk_delay=0.02]]"}]}
    response, pieces, received = start_stream(client, "messages", spare["key"], body)
    assert client.delete(f"/v1/keys/{spare['id']}", headers=owner.headers).status_code == 200
    before = _words("messages", received)
    for piece in pieces:
        received += piece
    response.close()
    assert _words("messages", received) <= before + 3  # at most the rest of one read
    name, last = events(received)[-1]
    assert name == "error" and last["error"]["type"] == "authentication_error"
    assert upstream.disconnects == []  # read to its end
    [record] = accounts.usage_records(owner.id)
    assert record.status == "revoked" and not record.estimated
    assert record.completion_tokens >= 100  # the provider's count: all it made
    assert last["usage"]["output_tokens"] == record.completion_tokens
    assert_money_exact(accounts, owner.id, "1")
