"""Rate limits (requests and tokens per minute, requests at once) for every level a request
counts against: its key, its account, and its account on its model.

Requests and tokens are counted in fixed one-minute windows: cheap, and exact enough for
abuse control. A request is admitted only when every level has room, and then counted at
every level at once, so a refusal at one level costs no other level anything. Tokens are
counted on admission at the request's estimate (its prompt estimate plus the output it may
produce, as OpenAI's limiter counts), so a burst of concurrent requests cannot all slip
under the limit; when the request ends its `Ticket` corrects the count to the tokens it
was billed, in the minute it was admitted. A concurrency slot is held by the ticket until
the request ends.

Without Redis each worker counts alone (silk.limits here), which the README states, but for
the abuse limits (`hit`: failed key checks, sign-ups), which the database counts for all
(silk.abuse); with Redis every worker and host shares the counts (silk.redislimits).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from silk.errors import RateLimited

log = logging.getLogger("silk.limits")

WINDOW = 60  # seconds of a requests- or tokens-per-minute window


def window() -> tuple[int, int]:
    """The current minute's number, and the seconds until the next one starts (retry-after)."""
    now = time.time()
    minute = int(now // 60)
    return minute, max(1, int(60 - (now - minute * 60)) + 1)


@dataclass(frozen=True, slots=True)
class Level:
    """One scope a request counts against, and its limits there (None: no limit)."""

    name: str  # the counters' name: "key:7", "account:3", "account:3:model:deepseek-chat"
    label: str  # how a refusal names it: "this API key", "this account", ...
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def limited(self) -> bool:
        """True when the level has any limit to count against."""
        return self.rpm is not None or self.tpm is not None or self.concurrency is not None


def refusal(level: Level, which: str, retry_after: int) -> RateLimited:
    """The 429 for a level that has no room: `which` is "r", "t" or "c"."""
    if which == "r":
        return RateLimited(f"Rate limit reached: {level.rpm} requests per minute for "
                           f"{level.label}.", retry_after=retry_after,
                           code="rate_limit_exceeded")
    if which == "t":
        return RateLimited(f"Rate limit reached: {level.tpm} tokens per minute for "
                           f"{level.label}.", retry_after=retry_after,
                           code="tokens_per_minute_exceeded")
    return RateLimited(f"Concurrency limit reached: {level.concurrency} requests at once for "
                       f"{level.label}; retry when one of them ends.", retry_after=1,
                       code="concurrency_limit_exceeded")


class Ticket:
    """A request's admission: the tokens counted for it and the slots it holds.

    `finish` corrects the token counts to what the request used and frees its slots; it is
    safe to call twice. A ticket that is dropped unfinished frees its slots too: in this
    process when it is collected, in Redis when its lease is no longer renewed.
    """

    __slots__ = ("limiter", "levels", "minute", "tokens", "lease", "done", "__weakref__")

    def __init__(self, limiter, levels: Sequence[Level], minute: int, tokens: int,
                 lease: str | None = None):
        self.limiter = limiter
        self.levels = tuple(levels)
        self.minute = minute
        self.tokens = tokens
        self.lease = lease
        self.done = False

    def finish(self, used: int) -> None:
        """The request ended having used `used` tokens: correct the counts, free the slots."""
        if self.done:
            return
        self.done = True
        if self.limiter is not None:
            self.limiter.finish(self, max(0, used))

    @property
    def slots(self) -> tuple[Level, ...]:
        """The levels whose concurrency this ticket counts against."""
        return tuple(level for level in self.levels if level.concurrency is not None)


NOTHING_HELD = Ticket(None, (), 0, 0)  # an admission that counts nothing (no limits)


class MemoryLimiter:
    """Counters in this process; `hits`, when given, counts the abuse limits instead."""

    def __init__(self, hits=None):
        self._hits = hits
        self._counts: dict[tuple, list[float]] = {}  # key -> [count, end of its window]
        self._slots: dict[str, weakref.WeakSet[Ticket]] = {}  # level name -> live tickets
        self._lock = threading.RLock()
        self._next_prune = 0.0

    def _bump(self, key: tuple, amount: int, window_seconds: int = WINDOW) -> int:
        """Add to the counter `key`, whose last item is its bucket in windows of that length."""
        now = time.time()
        with self._lock:
            # Windows of different lengths live side by side (minutes for rates, an hour
            # for sign-ups), so a counter is dropped when its own window ends, not another's.
            if now >= self._next_prune:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
                self._slots = {k: v for k, v in self._slots.items() if len(v)}
                self._next_prune = now + 60
            entry = self._counts.get(key)
            if entry is None:
                entry = self._counts[key] = [0, (key[-1] + 1) * window_seconds]
            entry[0] += amount
            return int(entry[0])

    def _count(self, key: tuple) -> int:
        entry = self._counts.get(key)
        return int(entry[0]) if entry is not None else 0

    def admit(self, levels: Sequence[Level], tokens: int, *, slot: bool = True) -> Ticket:
        """Admit a request at every level or raise 429 naming the first without room."""
        levels = [level for level in levels if level.limited]
        if not levels:
            return NOTHING_HELD
        minute, retry = window()
        if not slot:
            levels = [Level(lv.name, lv.label, lv.rpm, lv.tpm) for lv in levels]
        with self._lock:
            for level in levels:
                if level.rpm is not None and self._count((level.name, "r", minute)) >= level.rpm:
                    raise refusal(level, "r", retry)
                if level.tpm is not None and self._count((level.name, "t", minute)) >= level.tpm:
                    raise refusal(level, "t", retry)
                held = self._slots.get(level.name)
                if level.concurrency is not None and held is not None and (
                        len(held) >= level.concurrency):
                    raise refusal(level, "c", 1)
            ticket = Ticket(self, levels, minute, tokens)
            for level in levels:
                if level.rpm is not None:
                    self._bump((level.name, "r", minute), 1)
                if level.tpm is not None:
                    self._bump((level.name, "t", minute), tokens)
                if level.concurrency is not None:
                    self._slots.setdefault(level.name, weakref.WeakSet()).add(ticket)
        return ticket

    def finish(self, ticket: Ticket, used: int) -> None:
        """Correct the admission minute's token counts and free the ticket's slots."""
        with self._lock:
            for level in ticket.levels:
                key = (level.name, "t", ticket.minute)
                if level.tpm is not None and key in self._counts:
                    self._bump(key, used - ticket.tokens)
                held = self._slots.get(level.name)
                if held is not None:
                    held.discard(ticket)

    def in_use(self, name: str) -> int:
        """Slots held now at the level `name` (for tests and the operator)."""
        with self._lock:
            return len(self._slots.get(name, ()))

    def hit(self, name: str, limit: int, window_seconds: int) -> int:
        """Count one event in a window of any length; return the count so far (this
        worker's own when `hits` cannot count: an abuse limit never fails open)."""
        if self._hits is not None:
            shared = self._hits.hit(name, limit, window_seconds)
            if shared is not None:
                return shared
        bucket = int(time.time() // window_seconds)
        return self._bump((name, "h", window_seconds, bucket), 1, window_seconds)



def build_limiter(redis_url: str | None, lease_seconds: float = 60.0):
    """Redis-backed limiter when REDIS_URL is set, else per-process counters and the abuse
    limits counted in the database (an attacker's N workers must not mean N times the
    guesses)."""
    if not redis_url:
        from silk.abuse import DatabaseHits

        return MemoryLimiter(DatabaseHits())
    from silk.redislimits import RedisLimiter

    return RedisLimiter(redis_url, lease_seconds=lease_seconds)
