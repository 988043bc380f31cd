"""The group commit on its own: batching, one result per caller, faults kept to their batch."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import gevent
import gevent.event
import gevent.lock
import pytest

from silk.metering.groupcommit import BatchInterrupted, GroupCommit


def greenlet_commit(runner) -> GroupCommit:
    """A group commit for greenlets in this unpatched test process (gunicorn patches)."""
    return GroupCommit(runner, lock=gevent.lock.Semaphore, event=gevent.event.Event)


class Recorder:
    """A batch runner that doubles numbers, fails on 13, and notes each batch it ran."""

    def __init__(self, pause: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.pause = pause
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, ops):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.pause)
        with self.lock:
            self.batches.append(list(ops))
            self.running -= 1
        return [ValueError(f"bad {op}") if op == 13 else op * 2 for op in ops]


def test_lone_caller_runs_at_once_and_gets_its_result():
    runner = Recorder()
    commit = GroupCommit(runner)
    assert commit.submit(4) == 8
    assert commit.submit(5) == 10
    assert runner.batches == [[4], [5]]


def test_callers_arriving_during_a_batch_share_the_next_one():
    runner = Recorder(pause=0.02)
    commit = GroupCommit(runner, max_batch=16)
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(commit.submit, range(100, 300)))
    assert results == [n * 2 for n in range(100, 300)]
    assert sorted(op for batch in runner.batches for op in batch) == list(range(100, 300))
    assert len(runner.batches) < 60  # 200 ops, at most 16 to a batch, mostly full
    assert max(len(batch) for batch in runner.batches) > 1
    assert max(len(batch) for batch in runner.batches) <= 16
    assert runner.most_at_once == 1  # never two batches at once


def test_an_error_reaches_only_its_own_caller():
    runner = Recorder(pause=0.01)
    commit = GroupCommit(runner)

    def call(n):
        try:
            return commit.submit(n)
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, [11, 12, 13, 14, 15, 16]))
    assert results == [22, 24, "bad 13", 28, 30, 32]


def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs():
    calls = []

    def runner(ops):
        calls.append(list(ops))
        if len(calls) == 1:
            raise ConnectionError("lost")
        return ops

    commit = GroupCommit(runner)
    with pytest.raises(ConnectionError):
        commit.submit(1)
    assert commit.submit(2) == 2


def test_a_runner_that_miscounts_fails_the_batch():
    commit = GroupCommit(lambda ops: [])
    with pytest.raises(RuntimeError, match="wrong number"):
        commit.submit(1)


def hanging_commit(hangs):
    """A greenlet group commit whose batches for which `hangs(ops)` is true wait on `release`."""
    release = gevent.event.Event()
    ran: list[list[int]] = []

    def runner(ops):
        ran.append(list(ops))
        if hangs(ops):
            release.wait()
        return ops

    return greenlet_commit(runner), release, ran


def test_killed_leader_frees_its_followers_and_passes_the_lead():
    commit, _, ran = hanging_commit(lambda ops: ops[0] == 1)  # hangs until its leader dies
    leader = gevent.spawn(commit.submit, 1)
    gevent.sleep(0.01)
    followers = [gevent.spawn(commit.submit, n) for n in (2, 3)]
    gevent.sleep(0.01)
    leader.kill(block=True)
    gevent.joinall(followers, timeout=2)
    assert [f.value for f in followers] == [2, 3]  # the next batch ran them
    assert ran == [[1], [2, 3]]
    assert commit.submit(4) == 4


def test_followers_of_a_killed_batch_hear_it_was_interrupted():
    commit, release, ran = hanging_commit(lambda ops: len(ops) > 1 or ops[0] == 0)
    first = gevent.spawn(commit.submit, 0)
    gevent.sleep(0.01)
    second = [gevent.spawn(commit.submit, n) for n in (1, 2)]
    gevent.sleep(0.01)
    release.set()  # the first batch ends; 1 (now leading) and 2 run together and hang
    release.clear()
    gevent.sleep(0.01)
    assert ran == [[0], [1, 2]]
    second[0].kill(block=True)
    gevent.joinall(second, timeout=2)
    assert first.value == 0
    assert isinstance(second[1].exception, BatchInterrupted)
    assert commit.submit(5) == 5


def test_waiter_killed_before_its_batch_is_dropped():
    commit, release, ran = hanging_commit(lambda ops: ops[0] == 1)
    leader = gevent.spawn(commit.submit, 1)
    gevent.sleep(0.01)
    doomed = gevent.spawn(commit.submit, 2)
    kept = gevent.spawn(commit.submit, 3)
    gevent.sleep(0.01)
    doomed.kill(block=True)
    release.set()
    gevent.joinall([leader, kept], timeout=2)
    assert (leader.value, kept.value) == (1, 3)
    assert ran == [[1], [3]]  # the killed caller's op never ran
