"""Revocation, disabling and tier changes reach every worker and host within a second.

With REDIS_URL each change is published on the invalidation channel and every worker drops
its cached answers; the key cache TTL stays at its default 10 s throughout, so only the
channel can explain a refusal within a second. Without Redis the TTL is the bound, and
nothing else changes. Each test uses a channel of its own; the gateways count no failed
key checks in Redis (SILK_AUTH_FAILURES_PER_MINUTE=0), so they leave no keys behind.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from sqlalchemy import update

from tests.chat.helpers import set_quota_left
from tests.reliability.helpers import assert_money_exact, gateways, wait_until

BUDGET = 1.0  # seconds a change may take to reach every worker and host


def _channel() -> str:
    return f"silk:test:invalidate:{uuid.uuid4().hex}"


def ask(url: str, key: str, path: str = "/v1/balance", method: str = "GET", **kw):
    """One request on a connection of its own (so requests spread over the workers)."""
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    return requests.request(method, url + path, headers=headers, timeout=10, **kw)


def within(budget: float, predicate, start: float) -> float | None:
    """Seconds from `start` to the beginning of the first poll that found `predicate()` true;
    None when a poll begun past the budget found it false. A poll is many requests: on a
    loaded machine one can take longer than the budget, and what counts is when it looked."""
    while True:
        began = time.monotonic()
        if predicate():
            return began - start
        if began - start > budget:
            return None
        time.sleep(0.02)


def _all(urls: list[str], key: str, status: int, path: str = "/v1/balance",
         rounds: int = 4) -> bool:
    """True when every one of `rounds` requests to each URL answers `status`."""
    return all(ask(url, key, path).status_code == status for url in urls
               for _ in range(rounds))


def _subscribers(redis_url: str, channel: str) -> int:
    import redis

    return redis.Redis.from_url(redis_url).pubsub_numsub(channel)[0][1]


@pytest.fixture
def redis_env(gateway_env, redis_url):
    """A gateway environment with Redis, a channel of its own and the default key cache TTL."""
    env = {**gateway_env, "REDIS_URL": redis_url, "SILK_INVALIDATION_CHANNEL": _channel(),
           "SILK_AUTH_FAILURES_PER_MINUTE": "0"}
    assert "SILK_KEY_CACHE_TTL" not in env
    return env


@pytest.fixture
def two_hosts(app, database_url, redis_env, redis_url, tmp_path):
    """Two gateways (two "hosts") of two workers each, every worker subscribed."""
    with gateways(database_url, redis_env, 2, tmp_path, workers=2) as (one, two):
        wait_until(lambda: _subscribers(redis_url, redis_env["SILK_INVALIDATION_CHANNEL"]) == 4)
        yield one.url, two.url


@pytest.mark.slow
def test_a_revoked_key_is_refused_by_every_worker_and_host_within_a_second(two_hosts,
                                                                          accounts):
    one, two = two_hosts
    user = accounts.make(credit="1")
    spare = ask(one, user.key, "/v1/keys", "POST", json={"name": "spare"}).json()
    assert _all([one, two], spare["key"], 200)  # cached as good in the workers that answered
    assert ask(one, user.key, f"/v1/keys/{spare['id']}", "DELETE").status_code == 200
    start = time.monotonic()  # revoked (the request itself may be slow on a loaded machine)
    took = within(BUDGET, lambda: _all([one, two], spare["key"], 401), start)
    assert took is not None, "a worker still accepted the revoked key after a second"
    assert _all([one, two], user.key, 200)  # the account's other key still works


@pytest.mark.slow
def test_a_disabled_account_is_refused_at_once_and_enabling_it_works(two_hosts, accounts):
    one, two = two_hosts
    admin, user = accounts.make(admin=True), accounts.make(credit="1")
    assert _all([one, two], user.key, 200, "/v1/keys")
    patched = ask(one, admin.key, f"/v1/admin/accounts/{user.id}", "PATCH",
                  json={"disabled": True})
    start = time.monotonic()  # disabled
    assert patched.status_code == 200 and patched.json()["disabled"] is True
    for url in (one, two):  # making a key reads the key and its account afresh
        assert ask(url, user.key, "/v1/keys", "POST", json={"name": "late"}).status_code == 401
    took = within(BUDGET, lambda: _all([one, two], user.key, 401), start)
    assert took is not None, "a worker still served the disabled account after a second"
    chat = ask(two, user.key, "/v1/chat/completions", "POST", json={
        "model": "deepseek-chat", "stream": False,
        "messages": [{"role": "user", "content": "hello"}]})
    assert chat.status_code == 401
    assert ask(one, admin.key, f"/v1/admin/accounts/{user.id}", "PATCH",
               json={"disabled": False}).status_code == 200
    start = time.monotonic()  # enabled
    assert within(BUDGET, lambda: _all([one, two], user.key, 200), start) is not None
    assert [k["name"] for k in ask(two, user.key, "/v1/keys").json()["data"]] == ["default"]


@pytest.mark.slow
def test_tier_changes_take_effect_everywhere_at_once(two_hosts, accounts):
    one, two = two_hosts
    admin, user = accounts.make(admin=True), accounts.make(credit="1")

    def quota_everywhere(tier: str, free: int) -> bool:
        return all(ask(url, user.key, "/v1/billing").json()["tier"] == tier
                   and ask(url, user.key, "/v1/billing").json()["quota"]["free"] == free
                   for url in (one, two) for _ in range(3))

    before = ask(one, user.key, "/v1/billing").json()["quota"]["free"]
    assert quota_everywhere("free", before)  # the tier table is cached in those workers
    edited = ask(one, admin.key, "/v1/admin/tiers/free", "PUT",
                 json={"discount_percent": 5, "monthly_free_tokens": before + 1234})
    start = time.monotonic()  # edited
    assert edited.status_code == 200
    took = within(BUDGET, lambda: quota_everywhere("free", before + 1234), start)
    assert took is not None, "a worker still used the old tier table after a second"
    pro = ask(one, admin.key, "/v1/admin/tiers").json()["data"]
    pro_free = next(t["monthly_free_tokens"] for t in pro if t["name"] == "pro")
    assert ask(one, admin.key, f"/v1/admin/accounts/{user.id}", "PATCH",
               json={"tier": "pro"}).status_code == 200
    start = time.monotonic()  # moved
    assert within(BUDGET, lambda: quota_everywhere("pro", pro_free), start) is not None


# Two apps built by create_app in this process stand for two workers: each has its own
# caches and, with Redis, its own subscriber.


@pytest.fixture
def peer_config(database_url):
    """Configuration for a second app on the test's database (tests add Redis to it)."""
    return {"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url,
            "SECRET_KEY": "peer-" + uuid.uuid4().hex, "SILK_SWEEP_INTERVAL": 0,
            "SILK_AUTH_FAILURES_PER_MINUTE": 0}


@pytest.fixture
def peer(app, peer_config):
    """A second app on the same database: another worker's caches."""
    from silk import create_app
    from silk.extensions import db
    from silk.invalidation import stop_subscriber

    second = create_app(peer_config)
    yield second
    stop_subscriber(second)
    with second.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def with_redis(app_config, peer_config, redis_url):
    """Both apps on Redis and one channel of the test's own."""
    channel = _channel()
    for config in (app_config, peer_config):
        config.update(REDIS_URL=redis_url, SILK_INVALIDATION_CHANNEL=channel,
                      SILK_AUTH_FAILURES_PER_MINUTE=0)
    return channel


@pytest.fixture
def stop_app_subscriber(app):
    """Stop the test app's subscriber when the test ends."""
    yield
    from silk.invalidation import stop_subscriber

    stop_subscriber(app)


def _listening(application) -> bool:
    state = application.extensions.get("silk.invalidation")
    return state is not None and state.listening.is_set()


def test_two_workers_in_one_process_see_a_revocation_at_once(with_redis, app, peer, client,
                                                             accounts, stop_app_subscriber):
    user = accounts.make(credit="1")
    spare = client.post("/v1/keys", json={"name": "spare"}, headers=user.headers).json
    other = peer.test_client()
    other.get("/v1/models")  # the first request starts the subscriber
    wait_until(lambda: _listening(app) and _listening(peer))
    spare_headers = {"Authorization": f"Bearer {spare['key']}"}
    assert other.get("/v1/balance", headers=spare_headers).status_code == 200  # cached
    assert client.delete(f"/v1/keys/{spare['id']}", headers=user.headers).status_code == 200
    start = time.monotonic()  # revoked
    refused = within(BUDGET, lambda: other.get("/v1/balance", headers=spare_headers
                                               ).status_code == 401, start)
    assert refused is not None
    assert other.get("/v1/balance", headers=user.headers).status_code == 200


def test_a_subscriber_that_lost_redis_reconnects_and_drops_what_it_missed(
        with_redis, app, client, accounts, redis_url, stop_app_subscriber):
    import redis

    from silk.account.models import ApiKey
    from silk.database import utcnow
    from silk.extensions import db

    user = accounts.make(credit="1")
    client.get("/v1/models")  # the first request starts the subscriber
    wait_until(lambda: _listening(app))
    state = app.extensions["silk.invalidation"]
    assert client.get("/v1/balance", headers=user.headers).status_code == 200  # now cached
    with app.app_context():  # revoked with no message sent: as if it was lost in an outage
        db.session.execute(update(ApiKey).where(ApiKey.id == user.key_id)
                           .values(revoked_at=utcnow()))
        db.session.commit()
    assert client.get("/v1/balance", headers=user.headers).status_code == 200  # still cached
    server = redis.Redis.from_url(redis_url)
    [mine] = [c for c in server.client_list() if c["name"] == state.client_name]
    subscribed = state.subscriptions
    server.client_kill_filter(_id=mine["id"])
    # Subscribed again (by the subscriber, or by redis-py's own reconnect, which leaves
    # `listening` set), and past the drop that follows it.
    wait_until(lambda: any(c["name"] == state.client_name and c["id"] != mine["id"]
                           for c in server.client_list())
               and state.subscriptions > subscribed and _listening(app))
    assert client.get("/v1/balance", headers=user.headers).status_code == 401


def test_without_redis_a_change_applies_here_at_once_and_elsewhere_within_the_ttl(
        app_config, peer_config, app, peer, client, accounts):
    peer.config["SILK_KEY_CACHE_TTL"] = 0.5
    user = accounts.make(credit="1")
    spare = client.post("/v1/keys", json={"name": "spare"}, headers=user.headers).json
    spare_headers = {"Authorization": f"Bearer {spare['key']}"}
    other = peer.test_client()
    assert other.get("/v1/balance", headers=spare_headers).status_code == 200
    assert client.delete(f"/v1/keys/{spare['id']}", headers=user.headers).status_code == 200
    assert client.get("/v1/balance", headers=spare_headers).status_code == 401
    assert other.get("/v1/balance", headers=spare_headers).status_code == 200  # cached
    wait_until(lambda: other.get("/v1/balance", headers=spare_headers).status_code == 401,
               timeout=3)
    assert "silk.invalidation" not in app.extensions  # no channel, no subscriber


def test_a_redis_outage_does_not_fail_a_revocation(app_config, app, client, accounts,
                                                   stop_app_subscriber):
    from tests.support.gateway import free_port

    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app.config["SILK_INVALIDATION_CHANNEL"] = _channel()
    user = accounts.make(credit="1")
    spare = client.post("/v1/keys", json={"name": "spare"}, headers=user.headers).json
    start = time.monotonic()
    response = client.delete(f"/v1/keys/{spare['id']}", headers=user.headers)
    assert response.status_code == 200 and response.json["status"] == "revoked"
    assert time.monotonic() - start < 2
    assert client.get("/v1/balance", headers={"Authorization": f"Bearer {spare['key']}"}
                      ).status_code == 401


# An open stream of a revoked key ends as a new request is refused: with Redis within a
# second in every worker, without it within 1.5 x the key cache TTL (silk.relay.revocation).

SLOW_STREAM = {"model": "deepseek-chat", "stream": True, "messages": [
    {"role": "user", "content": "go [[fake: pieces=400 chunk_delay=0.02]]"}]}


def _stream_until_it_ends(response) -> dict:
    """Read a test client's stream to its end: its last event."""
    body = b"".join(response.response)
    response.close()
    last = [block for block in body.decode().split("\n\n") if block.startswith("data: ")][-1]
    return json.loads(last[6:])


def _ended_after(upstream, revoked: float, streams: int = 1) -> list[float]:
    """Seconds from `revoked` (wall clock) until each stream stopped reading its provider,
    as the provider saw it. That is when a stream's end is decided; it then settles and
    tells its client, which takes what a loaded machine's database takes."""
    gone = upstream.wait_for(lambda: len(upstream.disconnects) >= streams and
                             upstream.disconnects, timeout=10)
    return [record.time - revoked for record in gone]


def _open_slow_stream(other, key: str):
    response = other.post("/v1/chat/completions", json=SLOW_STREAM, buffered=False,
                          headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    pieces = iter(response.response)
    received = b""
    while received.count(b"data: ") < 6:  # the role chunk and five words
        received += next(pieces)
    return response


def test_a_stream_in_another_worker_ends_within_a_second_of_its_revocation(
        with_redis, app, peer, client, accounts, upstream, stop_app_subscriber):
    user = accounts.make(credit="1")
    spare = client.post("/v1/keys", json={"name": "leaked"}, headers=user.headers).json
    other = peer.test_client()
    other.get("/v1/models")
    wait_until(lambda: _listening(app) and _listening(peer))
    response = _open_slow_stream(other, spare["key"])
    assert client.delete(f"/v1/keys/{spare['id']}", headers=user.headers).status_code == 200
    revoked = time.time()
    last = _stream_until_it_ends(response)
    assert last["error"]["code"] == "key_revoked"
    [took] = _ended_after(upstream, revoked)
    assert took < BUDGET  # not read on to its end (8 s), nor to the TTL's next mark (5 s)
    [record] = accounts.usage_records(user.id)
    assert record.status == "revoked" and record.completion_tokens == last["usage"][
        "completion_tokens"]


def test_without_redis_a_stream_in_another_worker_ends_within_the_ttl_and_a_half(
        app, peer, client, accounts, upstream):
    peer.config["SILK_KEY_CACHE_TTL"] = 0.5
    user = accounts.make(credit="1")
    spare = client.post("/v1/keys", json={"name": "leaked"}, headers=user.headers).json
    other = peer.test_client()
    response = _open_slow_stream(other, spare["key"])
    assert client.delete(f"/v1/keys/{spare['id']}", headers=user.headers).status_code == 200
    revoked = time.time()
    last = _stream_until_it_ends(response)
    assert last["error"]["code"] == "key_revoked"
    [took] = _ended_after(upstream, revoked)
    assert took < 0.75 + 0.5
    [record] = accounts.usage_records(user.id)
    assert record.status == "revoked"


@pytest.mark.slow
@pytest.mark.parametrize("with_redis_too", [True, False])
def test_streams_of_a_revoked_key_end_under_gunicorn(app, database_url, gateway_env,
                                                     redis_url, accounts, upstream, tmp_path,
                                                     with_redis_too):
    """Two gevent workers: the stream may run in the worker that did not revoke the key.
    Without Redis the key cache TTL (1 s here) bounds it: 1.5 s and a read."""
    env = {**gateway_env, "SILK_AUTH_FAILURES_PER_MINUTE": "0"}
    if with_redis_too:
        env.update(REDIS_URL=redis_url, SILK_INVALIDATION_CHANNEL=_channel())
    else:
        env["SILK_KEY_CACHE_TTL"] = "1"
    with gateways(database_url, env, 1, tmp_path, workers=2) as (gateway,):
        if with_redis_too:
            wait_until(lambda: _subscribers(redis_url, env["SILK_INVALIDATION_CHANNEL"]) == 2)
        user = accounts.make(credit="1")
        set_quota_left(app, user.id)
        spare = ask(gateway.url, user.key, "/v1/keys", "POST", json={"name": "leaked"}).json()
        streams = [requests.post(gateway.url + "/v1/chat/completions", json=SLOW_STREAM,
                                 stream=True, timeout=10,
                                 headers={"Authorization": f"Bearer {spare['key']}"})
                   for _ in range(4)]  # on both workers, most likely
        for stream in streams:
            assert stream.status_code == 200
        assert ask(gateway.url, user.key, f"/v1/keys/{spare['id']}", "DELETE").ok
        revoked = time.time()
        bound = BUDGET if with_redis_too else 1.5 + 0.5
        for stream in streams:
            body = stream.content  # to its end
            last = [b for b in body.decode().split("\n\n") if b.startswith("data: ")][-1]
            assert json.loads(last[6:])["error"]["code"] == "key_revoked"
        took = _ended_after(upstream, revoked, streams=4)
        assert max(took) < bound, took
        records = wait_until(lambda: len(accounts.usage_records(user.id)) == 4
                             and accounts.usage_records(user.id))
        assert {r.status for r in records} == {"revoked"}
        assert_money_exact(accounts, user.id, "1")
