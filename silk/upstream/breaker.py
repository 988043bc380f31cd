"""Circuit breakers for routes: a route that keeps failing rests, then one request probes it.

State is per worker; with Redis, a breaker that opens tells every worker (a key that
expires when the rest ends), so a provider that went down is rested everywhere at once.
Each breaker also keeps its recent failures and latencies for the operator's view.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("silk.upstream")

_LATENCIES = 200  # answers kept per route for its percentiles
_SHARED_FOR = 1.0  # seconds a worker trusts what it last read from Redis


@dataclass(frozen=True, slots=True)
class State:
    """What the operator sees of one breaker."""

    name: str
    state: str  # serving, resting, probing
    resting_until: float | None  # wall-clock seconds
    failures: int  # consecutive failures now
    recent_failures: int  # failures among the recent answers
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


class Breaker:
    """One route's breaker: closed (serving), open (resting until a time), half-open (one
    probe in flight; its answer closes or reopens it)."""

    def __init__(self, name: str, board: Breakers):
        self.name = name
        self.board = board
        self.failures = 0
        self.open_until = 0.0  # monotonic
        self.probing = False
        self.recent: collections.deque[tuple[bool, float]] = collections.deque(
            maxlen=_LATENCIES)
        self._shared_checked = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a request may try this route now (a rested route lets one probe through)."""
        now = time.monotonic()
        self._read_shared(now)
        with self._lock:
            if self.open_until <= 0:
                return True
            if now < self.open_until or self.probing:
                return False
            self.probing = True  # the rest is over: this request is the probe
            return True

    def resting(self) -> bool:
        """Whether the route rests now (or its probe is in flight): try it last."""
        now = time.monotonic()
        self._read_shared(now)
        with self._lock:
            return self.open_until > 0 and (now < self.open_until or self.probing)

    def succeeded(self, seconds: float) -> None:
        """The route answered: close the breaker."""
        with self._lock:
            reopened = self.open_until > 0
            self.failures, self.open_until, self.probing = 0, 0.0, False
            self.recent.append((True, seconds))
        if reopened:
            self.board.share(self.name, 0.0)
            self.board.changed(self.name, False)

    def failed(self, seconds: float) -> None:
        """The route failed before its first byte: count it, and rest it past the threshold
        (a failed probe rests it again at once)."""
        with self._lock:
            self.failures += 1
            self.recent.append((False, seconds))
            opening = self.probing or self.failures >= self.board.threshold
            if opening:
                self.open_until = time.monotonic() + self.board.rest
                self.probing = False
        if opening:
            log.warning("route resting", extra={"fields": {"route": self.name,
                                                           "seconds": self.board.rest}})
            self.board.share(self.name, self.board.rest)
            self.board.changed(self.name, True)

    def state(self) -> State:
        """The breaker as the operator sees it."""
        now = time.monotonic()
        self._read_shared(now)
        with self._lock:
            latencies = sorted(s * 1000 for ok, s in self.recent if ok)
            if self.open_until <= 0:
                name, until = "serving", None
            elif self.probing or now >= self.open_until:
                name, until = "probing", None
            else:
                name, until = "resting", time.time() + (self.open_until - now)
            return State(self.name, name, until, self.failures,
                         sum(1 for ok, _ in self.recent if not ok),
                         _percentile(latencies, 50), _percentile(latencies, 90),
                         _percentile(latencies, 99))

    def _read_shared(self, now: float) -> None:
        """Take a rest another worker started (at most once a second)."""
        if self.board.redis is None or now - self._shared_checked < _SHARED_FOR:
            return
        self._shared_checked = now
        left = self.board.shared_rest(self.name)
        if left > 0:
            with self._lock:
                self.open_until = max(self.open_until, now + left)


def _percentile(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, (len(values) * pct) // 100)], 1)


class Breakers:
    """Every route's breaker in this worker: `threshold` failures in a row rest a route for
    `rest` seconds; with `redis`, rests are shared by every worker."""

    def __init__(self, threshold: int, rest: float, redis_url: str | None = None,
                 prefix: str = "silk:breaker:",
                 on_change: Callable[[str, bool], None] | None = None):
        self.threshold = max(1, threshold)
        self.on_change = on_change  # (route, resting): whoever counts it, e.g. the metrics
        self.rest = rest
        self.prefix = prefix
        self.redis: Any = None
        if redis_url:
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=0.5,
                                              socket_connect_timeout=0.5)
        self._breakers: dict[str, Breaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Breaker:
        """The breaker of a route (made on first use)."""
        breaker = self._breakers.get(name)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(name, Breaker(name, self))
        return breaker

    def states(self) -> list[State]:
        """Every breaker this worker has used."""
        return [breaker.state() for breaker in list(self._breakers.values())]

    def changed(self, name: str, resting: bool) -> None:
        """Tell whoever listens that a route started or stopped resting."""
        if self.on_change is not None:
            self.on_change(name, resting)

    def share(self, name: str, seconds: float) -> None:
        """Tell every worker a route rests for `seconds` (0: it serves again)."""
        if self.redis is None:
            return
        try:
            if seconds > 0:
                self.redis.set(self.prefix + name, "1", px=int(seconds * 1000))
            else:
                self.redis.delete(self.prefix + name)
        except Exception:  # noqa: BLE001 - the breaker still works in this worker
            log.warning("redis unavailable; route rest not shared", exc_info=True)

    def shared_rest(self, name: str) -> float:
        """Seconds another worker's rest of this route has left (0: none)."""
        try:
            left = self.redis.pttl(self.prefix + name)
        except Exception:  # noqa: BLE001 - fall back to this worker's own view
            return 0.0
        return left / 1000 if left and left > 0 else 0.0
