"""Per-key rate limits (requests and tokens per minute), shared through Redis when configured.

Fixed one-minute windows: cheap (one round trip), and exact enough for abuse control.
Without Redis each worker counts alone, which the README states.
"""

from __future__ import annotations

import logging
import threading
import time

from silk.errors import RateLimited

log = logging.getLogger("silk.limits")


def _window() -> tuple[int, int]:
    now = time.time()
    minute = int(now // 60)
    return minute, max(1, int(60 - (now - minute * 60)) + 1)


class MemoryLimiter:
    """Counters in this process."""

    def __init__(self):
        self._counts: dict[tuple, list[float]] = {}  # key -> [count, end of its window]
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def _bump(self, key: tuple, amount: int, window: int = 60) -> int:
        """Add to the counter `key`, whose last item is its bucket in windows of `window` s."""
        now = time.time()
        with self._lock:
            # Windows of different lengths live side by side (minutes for rates, an hour
            # for sign-ups), so a counter is dropped when its own window ends, not another's.
            if now >= self._next_prune:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
                self._next_prune = now + 60
            entry = self._counts.get(key)
            if entry is None:
                entry = self._counts[key] = [0, (key[-1] + 1) * window]
            entry[0] += amount
            return int(entry[0])

    def admit(self, name: str, rpm: int | None, tpm: int | None) -> None:
        """Count a request against `name`'s limits or raise 429."""
        minute, retry = _window()
        if rpm is not None and self._bump((name, "r", minute), 1) > rpm:
            raise RateLimited(f"Rate limit reached: {rpm} requests per minute for this key.",
                              retry_after=retry)
        if tpm is not None and self._bump((name, "t", minute), 0) >= tpm:
            raise RateLimited(f"Rate limit reached: {tpm} tokens per minute for this key.",
                              retry_after=retry, code="tokens_per_minute_exceeded")

    def add_tokens(self, name: str, tokens: int) -> None:
        """Count tokens a finished request used."""
        if tokens > 0:
            self._bump((name, "t", _window()[0]), tokens)

    def hit(self, name: str, limit: int, window_seconds: int) -> int:
        """Count one event in a window of any length; return the count so far."""
        bucket = int(time.time() // window_seconds)
        return self._bump((name, "h", window_seconds, bucket), 1, window_seconds)


class RedisLimiter:
    """Counters in Redis, shared by every worker and host; fails open if Redis is down."""

    def __init__(self, url: str):
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def admit(self, name: str, rpm: int | None, tpm: int | None) -> None:
        """Count a request against `name`'s limits or raise 429."""
        if rpm is None and tpm is None:
            return
        minute, retry = _window()
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(f"silk:rl:{name}:r:{minute}")
            pipe.expire(f"silk:rl:{name}:r:{minute}", 120)
            pipe.get(f"silk:rl:{name}:t:{minute}")
            requests, _, tokens = pipe.execute()
        except Exception:  # noqa: BLE001 - a limiter outage must not stop paid traffic
            log.warning("redis unavailable; rate limit not enforced", exc_info=True)
            return
        if rpm is not None and requests > rpm:
            raise RateLimited(f"Rate limit reached: {rpm} requests per minute for this key.",
                              retry_after=retry)
        if tpm is not None and int(tokens or 0) >= tpm:
            raise RateLimited(f"Rate limit reached: {tpm} tokens per minute for this key.",
                              retry_after=retry, code="tokens_per_minute_exceeded")

    def add_tokens(self, name: str, tokens: int) -> None:
        """Count tokens a finished request used."""
        if tokens <= 0:
            return
        minute, _ = _window()
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incrby(f"silk:rl:{name}:t:{minute}", tokens)
            pipe.expire(f"silk:rl:{name}:t:{minute}", 120)
            pipe.execute()
        except Exception:  # noqa: BLE001
            log.warning("redis unavailable; tokens not counted", exc_info=True)

    def hit(self, name: str, limit: int, window_seconds: int) -> int:
        """Count one event in a window of any length; return the count so far."""
        bucket = int(time.time() // window_seconds)
        key = f"silk:rl:{name}:h:{window_seconds}:{bucket}"
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, window_seconds * 2)
            return int(pipe.execute()[0])
        except Exception:  # noqa: BLE001
            log.warning("redis unavailable; abuse limit not enforced", exc_info=True)
            return 0


def build_limiter(redis_url: str | None):
    """Redis-backed limiter when REDIS_URL is set, else per-process counters."""
    return RedisLimiter(redis_url) if redis_url else MemoryLimiter()
