"""Per-key rate limits: requests and tokens per minute, in process or shared through Redis."""

import uuid

import pytest

from tests.chat.helpers import messages
from tests.reliability.helpers import fresh_window

JSON = {"Accept": "application/json"}


def _limited_key(app, account_id, **limits):
    from silk.account.service import create_key

    with app.app_context():
        return create_key(account_id, name="limited", **limits).secret


@pytest.fixture(params=["memory", "redis"])
def limiter_kind(request, app):
    fresh_window(8)  # requests are counted in fixed one-minute windows: a test uses one
    if request.param == "redis":
        import redis

        from silk.redislimits import RedisLimiter

        try:
            redis.Redis.from_url("redis://127.0.0.1:6379/15").flushdb()
        except redis.RedisError:
            pytest.skip("Redis not reachable")
        app.extensions["silk.limiter"] = RedisLimiter("redis://127.0.0.1:6379/15")
    return request.param


def test_requests_per_minute(app, client, accounts, upstream, limiter_kind):
    acct = accounts.make(credit="1")
    secret = _limited_key(app, acct.id, rpm_limit=3)
    headers = {"Authorization": f"Bearer {secret}", **JSON}
    body = {"model": "deepseek-chat", "messages": messages()}
    statuses = [client.post("/v1/chat/completions", headers=headers, json=body).status_code
                for _ in range(4)]
    assert statuses[:3] == [200, 200, 200]
    blocked = client.post("/v1/chat/completions", headers=headers, json=body)
    assert blocked.status_code == 429
    assert blocked.json["error"]["type"] == "rate_limit_error"
    assert 1 <= int(blocked.headers["retry-after"]) <= 61
    assert len(upstream.requests) == 3
    # Another key of the same account is not limited by this one's counter.
    assert client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                       json=body).status_code == 200
    assert accounts.audit() == []


def test_tokens_per_minute(app, client, accounts, upstream, limiter_kind):
    acct = accounts.make(credit="1")
    secret = _limited_key(app, acct.id, tpm_limit=30)
    headers = {"Authorization": f"Bearer {secret}", **JSON}
    body = {"model": "deepseek-chat", "messages": messages("x", "pieces=40")}
    assert client.post("/v1/chat/completions", headers=headers, json=body).status_code == 200
    blocked = client.post("/v1/chat/completions", headers=headers, json=body)
    assert blocked.status_code == 429
    assert blocked.json["error"]["code"] == "tokens_per_minute_exceeded"


def test_redis_counters_are_shared_between_app_instances(app, accounts, upstream):
    """Two limiters stand in for two workers: one key's limit holds across both."""
    import redis

    from silk.errors import RateLimited
    from silk.limits import Level
    from silk.redislimits import RedisLimiter

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/15").ping()
    except redis.RedisError:
        pytest.skip("Redis not reachable")
    fresh_window(8)
    first, second = RedisLimiter("redis://127.0.0.1:6379/15"), RedisLimiter(
        "redis://127.0.0.1:6379/15")
    level = Level(f"key:shared-{uuid.uuid4().hex}", "this API key", rpm=2)
    first.admit([level], 0)
    second.admit([level], 0)
    with pytest.raises(RateLimited):
        first.admit([level], 0)
