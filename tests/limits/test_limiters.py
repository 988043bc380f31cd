"""The limiters on their own: every level checked before any is counted, tokens corrected
when a request ends, concurrency slots freed however it ends; in memory and in Redis."""

from __future__ import annotations

import gc
import uuid

import pytest

from silk.errors import RateLimited
from silk.limits import Level
from tests.limits.conftest import redis_limiter


def refused(limiter, levels, tokens=0) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        limiter.admit(levels, tokens)
    return caught.value


def test_requests_per_minute_name_the_level(make_limiter):
    limiter = make_limiter()
    key = Level("key:1", "this API key", rpm=2)
    limiter.admit([key], 0)
    limiter.admit([key], 0)
    err = refused(limiter, [key])
    assert err.code == "rate_limit_exceeded" and "2 requests per minute for this API key" in (
        err.message)
    assert 1 <= int(err.headers["retry-after"]) <= 61


def test_a_refusal_at_one_level_counts_nothing_at_the_others(make_limiter):
    limiter = make_limiter()
    key = Level("key:1", "this API key", rpm=3)
    account = Level("account:1", "this account", rpm=1)
    limiter.admit([key, account], 0)
    err = refused(limiter, [key, account])
    assert "for this account" in err.message
    refused(limiter, [key, account])
    # Only the admitted request counted against the key: two more fit.
    limiter.admit([key], 0)
    limiter.admit([key], 0)
    refused(limiter, [key])


def test_tokens_count_the_estimate_until_the_request_ends(make_limiter):
    limiter = make_limiter()
    level = Level("account:2:model:deepseek-chat", "this account on the model 'deepseek-chat'",
                  tpm=100)
    ticket = limiter.admit([level], 150)  # room left: admitted, whatever its size
    err = refused(limiter, [level], 10)
    assert err.code == "tokens_per_minute_exceeded" and "100 tokens per minute" in err.message
    ticket.finish(30)  # it used 30, not the 150 it might have
    second = limiter.admit([level], 10)
    second.finish(69)  # 99 in all: still room
    limiter.admit([level], 1).finish(1)
    refused(limiter, [level], 1)


def test_concurrency_slots_are_held_until_the_request_ends(make_limiter):
    limiter = make_limiter()
    level = Level("key:3", "this API key", concurrency=2)
    first = limiter.admit([level], 0)
    second = limiter.admit([level], 0)
    err = refused(limiter, [level])
    assert err.code == "concurrency_limit_exceeded" and err.headers["retry-after"] == "1"
    assert "2 requests at once for this API key" in err.message
    assert limiter.in_use("key:3") == 2
    first.finish(0)
    first.finish(0)  # twice frees nothing more
    third = limiter.admit([level], 0)
    refused(limiter, [level])
    second.finish(0)
    third.finish(0)
    assert limiter.in_use("key:3") == 0


def test_a_request_without_a_slot_takes_none(make_limiter):
    limiter = make_limiter()
    level = Level("key:4", "this API key", rpm=5, concurrency=1)
    held = limiter.admit([level], 0)
    limiter.admit([level], 0, slot=False)  # count_tokens: counted, holds nothing
    refused(limiter, [level])
    held.finish(0)


def test_two_limiters_share_redis_counts_and_slots():
    first = redis_limiter()
    second = redis_limiter()
    second.prefix = first.prefix  # two workers of one gateway
    level = Level("account:5", "this account", rpm=10, concurrency=1)
    ticket = first.admit([level], 0)
    err = refused(second, [level])
    assert err.code == "concurrency_limit_exceeded"
    ticket.finish(0)
    second.admit([level], 0).finish(0)


def test_a_dead_workers_slot_comes_back_when_its_lease_runs_out():
    """A worker killed mid-request never finishes its ticket nor renews its lease: the
    lease's end is then the slot's end. (The lease is aged here rather than waited for.)"""
    dead = redis_limiter()
    alive = redis_limiter()
    alive.prefix = dead.prefix
    level = Level("account:6", "this account", concurrency=1)
    ticket = dead.admit([level], 0)
    assert alive.renew() == 0  # the other worker renews only its own leases
    assert dead.renew() == 1
    refused(alive, [level])
    slots = f"{dead.prefix}account:6:c"
    dead.redis.zadd(slots, {ticket.lease: 1.0})  # the lease ended long ago, unrenewed
    assert alive.in_use("account:6") == 0
    alive.admit([level], 0)
    # Its finish frees only its own slot, and a renewal does not bring a finished one back.
    ticket.finish(0)
    assert alive.in_use("account:6") == 1
    assert dead.renew() == 0 and dead.redis.zscore(slots, ticket.lease) is None


def test_renewal_extends_a_live_lease():
    limiter = redis_limiter(lease_seconds=30)
    level = Level("key:7", "this API key", concurrency=3)
    ticket = limiter.admit([level], 0)
    slots = f"{limiter.prefix}key:7:c"
    limiter.redis.zadd(slots, {ticket.lease: 1.0})  # as if the lease were about to end
    assert limiter.renew() == 1
    (seconds, _) = limiter.redis.time()
    assert limiter.redis.zscore(slots, ticket.lease) > seconds + 20
    ticket.finish(0)


def test_a_dropped_ticket_frees_its_memory_slot():
    """In one process a request that is gone without ending (its objects collected) holds
    no slot: the slots are a weak set of live tickets."""
    from silk.limits import MemoryLimiter

    limiter = MemoryLimiter()
    level = Level("key:8", "this API key", concurrency=1)
    limiter.admit([level], 0)  # dropped at once
    gc.collect()
    limiter.admit([level], 0)


def test_redis_down_fails_open():
    from silk.redislimits import RedisLimiter

    limiter = RedisLimiter("redis://127.0.0.1:1/0")
    ticket = limiter.admit([Level("key:9", "this API key", rpm=1, concurrency=1)], 5)
    ticket.finish(5)
    assert limiter.renew() == 0


def test_a_slot_admitted_by_a_late_answer_is_freed_when_the_request_ends(late_redis):
    """Redis ran the admission but answered after the limiter stopped waiting: the request
    is admitted (fail open), and the slot the script took is given back when it ends, not
    held a whole lease by a request that is over."""
    from silk.redislimits import RedisLimiter

    slow = RedisLimiter(late_redis.url, prefix=f"silk:test:{uuid.uuid4().hex}:")
    other = redis_limiter()
    other.prefix = slow.prefix  # another worker, whose Redis answers in time
    level = Level("key:10", "this API key", concurrency=1)
    slow.redis.ping()  # connected while Redis answers in time
    late_redis.delay = 0.8  # past the limiter's 0.5 s wait
    ticket = slow.admit([level], 5)  # admitted, its answer lost
    late_redis.delay = 0.0
    ticket.finish(5)
    assert other.in_use("key:10") == 0
    other.admit([level], 0).finish(0)
