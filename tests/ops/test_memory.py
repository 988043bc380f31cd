"""The worker's trimmer: malloc_trim as a burst of connections ends, never in steady load."""

from __future__ import annotations

import gevent
import gevent.socket

from silk.ops.memory import AfterBursts, _malloc_trim, start_trimmer


def _trims(counts: list[int]) -> list[int]:
    """The positions in a series of active-watcher counts where a trim happened."""
    done: list[int] = []
    bursts = AfterBursts(lambda: done.append(len(done)))
    return [i for i, active in enumerate(counts) if bursts.seen(active)]


def test_steady_load_never_trims():
    assert _trims([30, 32, 31, 33, 29, 32] * 20) == []


def test_a_burst_is_trimmed_as_it_ends_a_few_times_at_most():
    counts = [30, 400, 1100, 1050, 900, 700, 500, 300, 40, 35, 30, 32]
    # 700 is not under half of 1100; 500 is (and 600 fewer); then 300 is not under half of
    # 500, 40 is: each trim needs the count halved again, so a burst gets a few at most
    assert _trims(counts) == [6, 8]


def test_a_small_swing_is_not_a_burst():
    assert _trims([10, 150, 12, 180, 9]) == []  # never 200 fewer than the peak


def test_each_burst_gets_its_own_trim():
    assert _trims([0, 600, 20, 20, 700, 650, 30]) == [2, 6]


def test_this_platform_can_trim():
    trim = _malloc_trim()
    assert trim is not None  # glibc, as the CI machine and the Debian image have
    assert trim() in (0, 1)


def test_the_trimmer_sees_the_event_loop_s_watchers(monkeypatch):
    """Under gevent, connections waited on are what the trimmer counts."""
    seen: list[int] = []
    monkeypatch.setattr(AfterBursts, "seen", lambda self, active: seen.append(active))
    checking = start_trimmer(interval=0.05)
    assert checking is not None
    pairs = [gevent.socket.socketpair() for _ in range(40)]
    waiting = [gevent.spawn(a.recv, 1) for a, _ in pairs]
    gevent.sleep(0.2)
    assert max(seen) >= 40
    for _, b in pairs:
        b.sendall(b"x")
    gevent.joinall(waiting, timeout=5)
    seen.clear()
    gevent.sleep(0.2)
    assert seen and max(seen) < 40
    checking.kill()
    for a, b in pairs:
        a.close()
        b.close()


class _Node:
    """An object that can be part of a reference cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_freeze_startup_collects_garbage_first_then_freezes_what_lives():
    import gc
    import weakref

    from silk.ops.memory import freeze_startup

    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle only the collector can free
    dead = weakref.ref(a)
    del a, b
    alive = _Node()
    try:
        frozen = freeze_startup()
        assert dead() is None  # collected, not frozen forever
        assert frozen > 0 and gc.get_freeze_count() > 0
        assert not any(obj is alive for obj in gc.get_objects())  # out of the walked heap
    finally:
        gc.unfreeze()
    assert any(obj is alive for obj in gc.get_objects())
