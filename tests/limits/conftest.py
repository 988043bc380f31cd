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


class LateRedis:
    """A TCP proxy to the tests' Redis that passes commands on at once and holds each answer
    back `delay` seconds: a Redis that runs what it is sent but answers too late."""

    def __init__(self, url: str):
        import socket
        import threading
        from urllib.parse import urlsplit

        target = urlsplit(url)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 6379)
        self.delay = 0.0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.server.getsockname()[1]}{target.path}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True),
                             daemon=True).start()

    def _pump(self, source, target, late: bool) -> None:
        try:
            while data := source.recv(65536):
                if late:
                    time.sleep(self.delay)
                target.sendall(data)
        except OSError:
            pass
        finally:
            source.close()
            target.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def late_redis():
    proxy = LateRedis(redis_or_skip())
    yield proxy
    proxy.close()
