"""Limits under gunicorn: two gateway instances (two workers each) share every level's
counts and slots through Redis, and a killed worker's slots come back when their lease
runs out."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.limits.conftest import redis_or_skip
from tests.reliability.helpers import body, call, fresh_window, gateways, wait_until

pytestmark = pytest.mark.slow

RPM = 6
SLOW = "pieces=60 chunk_delay=0.1"  # a stream of about six seconds


@pytest.fixture
def shared_redis():
    """This module's Redis database, emptied: the gateways' counters start from nothing."""
    import redis

    url = redis_or_skip()
    redis.Redis.from_url(url).flushdb()
    return url


def _open_stream(url: str, key: str) -> requests.Response:
    """Start a slow stream and read its first bytes: it holds its slots until closed."""
    answer = requests.post(f"{url}/v1/chat/completions", json=body("slow", SLOW, stream=True),
                           headers={"Authorization": f"Bearer {key}"}, stream=True, timeout=30)
    assert answer.status_code == 200, answer.text
    # Read from the socket itself: a dropped iter_content generator would close it.
    assert answer.raw.read(5) == b"data:"
    return answer


def _error(result: tuple[int, str]) -> str:
    import json

    status, text = result
    assert status == 429, (status, text[:300])
    return json.loads(text)["error"]["code"]


def test_two_instances_share_every_level(app, accounts, upstream, gateway_env, shared_redis,
                                         tmp_path):
    from silk.account.limits import set_limits
    from silk.account.service import create_key

    acct = accounts.make(credit="5")
    other = accounts.make(credit="5")  # its key's burst is not held back by acct's slots
    with app.app_context():
        rpm_key = create_key(other.id, name="rpm", rpm_limit=RPM).secret
        set_limits(acct.id, {"concurrency_limit": 2})
        set_limits(acct.id, {"tpm_limit": 30}, model="mimo-v2.5")
    env = {**gateway_env, "REDIS_URL": shared_redis}
    with gateways(app.config["SQLALCHEMY_DATABASE_URI"], env, 2, tmp_path) as (one, two):
        urls = itertools.cycle([one.url, two.url])
        fresh_window(20)  # every burst below falls in one rate-limit minute
        # Key, requests per minute: exactly RPM of a burst spread over both instances.
        with ThreadPoolExecutor(max_workers=6) as pool:
            burst = list(pool.map(lambda i: call(next(urls), rpm_key, body(f"rpm {i}")),
                                  range(RPM * 2)))
        assert Counter(status for status, _ in burst) == {200: RPM, 429: RPM}
        # Account, requests at once: one stream on each instance takes both slots.
        streams = [_open_stream(one.url, acct.key), _open_stream(two.url, acct.key)]
        assert _error(call(one.url, acct.key, body("third"))) == "concurrency_limit_exceeded"
        assert _error(call(two.url, acct.key, body("third"))) == "concurrency_limit_exceeded"
        streams[0].close()  # the client leaves: its slot is free on both instances
        wait_until(lambda: call(two.url, acct.key, body("again"))[0] == 200)
        streams[1].close()
        # Account and model, tokens per minute: what one instance used counts on the other.
        assert call(one.url, acct.key, body("tokens", "pieces=40", model="mimo-v2.5"))[0] == 200
        assert _error(call(two.url, acct.key, body("more", model="mimo-v2.5"))) == (
            "tokens_per_minute_exceeded")
        assert call(two.url, acct.key, body("other model"))[0] == 200
    assert accounts.audit() == []


def test_a_killed_workers_slots_come_back_within_a_lease(app, accounts, upstream, gateway_env,
                                                         shared_redis, tmp_path):
    from silk.account.service import create_key
    from silk.redislimits import RedisLimiter

    acct = accounts.make(credit="5")
    with app.app_context():
        key = create_key(acct.id, name="one at a time", concurrency_limit=1)
    env = {**gateway_env, "REDIS_URL": shared_redis, "SILK_CONCURRENCY_LEASE": "3"}
    slots = RedisLimiter(shared_redis)
    name = f"key:{key.record.id}"
    with gateways(app.config["SQLALCHEMY_DATABASE_URI"], env, 1, tmp_path) as (gateway,):
        stream = _open_stream(gateway.url, key.secret)
        assert _error(call(gateway.url, key.secret, body("second"))) == (
            "concurrency_limit_exceeded")
        # Renewed while the request runs, past its three-second lease.
        time.sleep(4)
        assert slots.in_use(name) == 1
        for pid in gateway.worker_pids():
            os.kill(pid, signal.SIGKILL)  # nothing of the worker runs again
        stream.close()
        # No one finishes the ticket: the lease runs out and the slot is free again.
        wait_until(lambda: slots.in_use(name) == 0, timeout=20)
        wait_until(lambda: call(gateway.url, key.secret, body("after"))[0] == 200, timeout=30)
    assert accounts.audit() == []
