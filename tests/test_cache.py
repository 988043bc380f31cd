"""A cached answer is reloaded once for a burst of requests that find it expired, not once each."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from silk.account.auth import Principal
from silk.cache import ExpiringCache


def _principal(key_id: int) -> Principal:
    return Principal(key_id=key_id, key_hash=f"h{key_id}", account_id=key_id, is_admin=False,
                     allowed_models=None, rpm_limit=None, tpm_limit=None, expires_at=None)


class SlowLookup:
    """A lookup that holds until released and counts how often it was asked."""

    def __init__(self, answer: Principal | None):
        self.answer = answer
        self.calls = 0
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, key_hash: str) -> Principal | None:
        self.calls += 1
        self.started.set()
        assert self.release.wait(5)
        return self.answer


def test_a_burst_with_an_unknown_key_waits_for_one_lookup():
    cache, lookup = ExpiringCache(ttl=10), SlowLookup(_principal(1))
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = [pool.submit(cache.fetch, "h1", lookup) for _ in range(20)]
        assert lookup.started.wait(5)
        time.sleep(0.05)  # the other 19 arrive while the first lookup is in flight
        lookup.release.set()
        results = [future.result(timeout=5) for future in answers]
    assert lookup.calls == 1
    assert results == [_principal(1)] * 20


def test_an_expired_answer_serves_the_burst_while_one_request_refreshes_it():
    cache = ExpiringCache(ttl=0.01)
    cache.put("h1", _principal(1))
    time.sleep(0.02)  # expired
    lookup = SlowLookup(_principal(2))
    with ThreadPoolExecutor(max_workers=1) as pool:
        refreshing = pool.submit(cache.fetch, "h1", lookup)
        assert lookup.started.wait(5)
        # Meanwhile nobody waits: the expired answer is used, and nobody else asks.
        assert cache.fetch("h1", SlowLookup(None)) == _principal(1)
        lookup.release.set()
        assert refreshing.result(timeout=5) == _principal(2)
    assert lookup.calls == 1
    assert cache.fetch("h1", SlowLookup(None)) == _principal(2)  # fresh now: no lookup


def test_a_failed_lookup_is_not_remembered_and_the_next_request_asks_again():
    cache = ExpiringCache(ttl=10)

    def broken(key_hash):
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError):
        cache.fetch("h1", broken)
    lookup = SlowLookup(_principal(1))
    lookup.release.set()
    assert cache.fetch("h1", lookup) == _principal(1)
    assert lookup.calls == 1


def test_an_unknown_key_is_remembered_briefly_and_a_good_one_for_the_lifetime(
        app, accounts):
    from silk.account import auth

    acct = accounts.make()
    with app.test_request_context(headers={"Authorization": "Bearer sk-unknown"}):
        with pytest.raises(auth.AuthenticationFailed):
            auth.authenticate()
        cache = auth.key_cache()
        assert cache.get(auth.hash_secret("sk-unknown")) == (True, None)
    with app.test_request_context(headers=acct.headers):
        assert auth.authenticate().key_id == acct.key_id
    bad_until = cache._entries[auth.hash_secret("sk-unknown")][0] - time.monotonic()
    good_until = cache._entries[auth.hash_secret(acct.key)][0] - time.monotonic()
    assert bad_until <= auth._BAD_KEY_TTL < good_until <= cache.ttl


def test_an_answer_read_before_an_invalidation_is_not_kept():
    # A lookup reads the key as good; the key is revoked and the invalidation arrives while
    # that lookup is still on its way back: its answer must not outlive the invalidation.
    from silk.account.auth import KeyCache

    cache, lookup = KeyCache(ttl=10), SlowLookup(_principal(1))
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(cache.fetch, "h1", lookup)
        assert lookup.started.wait(5)
        cache.forget("h1")
        lookup.release.set()
        assert loading.result(5) == _principal(1)  # the caller that asked still gets it
    assert cache.get("h1") == (False, None)
    cache.fetch("h1", lookup)
    cache.forget_account(1)  # dropping an account's keys counts as an invalidation too
    assert cache.get("h1") == (False, None)
