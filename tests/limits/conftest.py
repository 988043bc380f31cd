"""Fixtures for the rate-limit tests: each limiter kind, on a Redis of their own."""

from __future__ import annotations

import os
import time
import uuid

import pytest

# A Redis database only these tests use, so no other test's flush can empty it mid-test;
# each test's keys carry a prefix of their own besides.
REDIS_URL = os.environ.get("SILK_TEST_LIMITS_REDIS_URL", "redis://127.0.0.1:6379/9")


@pytest.fixture(autouse=True)
def _whole_minute():
    """Start each test at least 10 s before a minute ends: requests and tokens are counted
    in fixed one-minute windows, so a test whose requests straddled a window's end saw its
    count start again (a request it expected refused passed)."""
    from silk.limits import window

    _, left = window()
    if left <= 10:
        time.sleep(left + 0.05)


def redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    return REDIS_URL


def redis_limiter(**options):
    """A Redis limiter whose keys no other test shares."""
    from silk.redislimits import RedisLimiter

    return RedisLimiter(redis_or_skip(), prefix=f"silk:test:{uuid.uuid4().hex}:", **options)


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request):
    """Makes limiters of one kind; two made by it share their counts (as two workers do)
    when the kind is redis."""
    if request.param == "memory":
        from silk.limits import MemoryLimiter

        return MemoryLimiter
    prefix = f"silk:test:{uuid.uuid4().hex}:"
    url = redis_or_skip()

    def make(**options):
        from silk.redislimits import RedisLimiter

        return RedisLimiter(url, prefix=prefix, **options)

    return make
