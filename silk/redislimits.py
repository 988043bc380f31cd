"""Rate limits shared by every worker and host through Redis: one round trip to admit a
request at all its levels, one to finish it; admits requests if Redis is down (fails open),
while the abuse limits (`hit`) are counted in the worker's memory meanwhile.

A concurrency slot is a member of a sorted set scored by the time its lease ends (Redis's
own clock, so hosts need not agree on the time). The worker renews the leases of its live
requests every third of SILK_CONCURRENCY_LEASE, so a worker that dies mid-request stops
renewing, and its slots are free again within one lease: admission drops expired members
before it counts. A finished request removes its member at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import weakref
from collections.abc import Sequence

from silk.limits import NOTHING_HELD, WINDOW, Level, MemoryLimiter, Ticket, refusal, window

log = logging.getLogger("silk.limits")

_COUNTER_TTL = WINDOW * 2  # seconds a minute's counter outlives its minute

# KEYS: per level its requests, tokens and slots keys. ARGV: the lease, its seconds, the
# tokens to count, then per level its rpm, tpm and concurrency (-1: no limit). Every level
# is checked before any is counted, so the script either counts all or refuses with the
# first level (0-based) and limit ("r", "t" or "c") that has no room.
_ADMIT = """
local lease, ttl, tokens = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local levels = #KEYS / 3
for i = 0, levels - 1 do
  local rpm, tpm, slots = tonumber(ARGV[4 + i * 3]), tonumber(ARGV[5 + i * 3]),
                          tonumber(ARGV[6 + i * 3])
  if rpm >= 0 and tonumber(redis.call('GET', KEYS[1 + i * 3]) or '0') >= rpm then
    return {i, 'r'}
  end
  if tpm >= 0 and tonumber(redis.call('GET', KEYS[2 + i * 3]) or '0') >= tpm then
    return {i, 't'}
  end
  if slots >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3 + i * 3], '-inf', now)
    if redis.call('ZCARD', KEYS[3 + i * 3]) >= slots then
      return {i, 'c'}
    end
  end
end
for i = 0, levels - 1 do
  if tonumber(ARGV[4 + i * 3]) >= 0 then
    redis.call('INCR', KEYS[1 + i * 3])
    redis.call('EXPIRE', KEYS[1 + i * 3], COUNTER_TTL)
  end
  if tonumber(ARGV[5 + i * 3]) >= 0 then
    redis.call('INCRBY', KEYS[2 + i * 3], tokens)
    redis.call('EXPIRE', KEYS[2 + i * 3], COUNTER_TTL)
  end
  if tonumber(ARGV[6 + i * 3]) >= 0 then
    redis.call('ZADD', KEYS[3 + i * 3], now + ttl, lease)
    redis.call('EXPIRE', KEYS[3 + i * 3], math.ceil(ttl) * 2)
  end
end
return {-1, ''}
""".replace("COUNTER_TTL", str(_COUNTER_TTL))

# KEYS: slot sets; ARGV: the lease's seconds, then the lease held in each set. A lease that
# was finished (removed) is not brought back (XX).
_RENEW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 1])
  redis.call('EXPIRE', key, math.ceil(ttl) * 2)
end
return #KEYS
"""


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisLimiter:
    """Counters and slots in Redis, shared by every worker and host."""

    def __init__(self, url: str, *, lease_seconds: float = 60.0, prefix: str = "silk:rl:"):
        import redis

        self.prefix = prefix  # of every key, so tests (and gateways) can share one Redis
        self.redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.lease_seconds = float(lease_seconds)
        self._admit = self.redis.register_script(_ADMIT)
        self._renew = self.redis.register_script(_RENEW)
        # Tickets holding slots, by lease: renewed while alive, forgotten when collected.
        self._live: weakref.WeakValueDictionary[str, Ticket] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._local = MemoryLimiter()  # counts the abuse limits while Redis cannot

    def _keys(self, level: Level, minute: int) -> tuple[str, str, str]:
        """The level's requests and tokens counters of `minute`, and its slots set."""
        base = f"{self.prefix}{level.name}"
        return f"{base}:r:{minute}", f"{base}:t:{minute}", f"{base}:c"

    def admit(self, levels: Sequence[Level], tokens: int, *, slot: bool = True) -> Ticket:
        """Admit a request at every level or raise 429 naming the first without room."""
        levels = [level for level in levels if level.limited]
        if not slot:
            levels = [Level(lv.name, lv.label, lv.rpm, lv.tpm) for lv in levels if
                      lv.rpm is not None or lv.tpm is not None]
        if not levels:
            return NOTHING_HELD
        minute, retry = window()
        lease = secrets.token_hex(8)
        keys: list[str] = []
        args: list[str | int | float] = [lease, self.lease_seconds, max(0, tokens)]
        for level in levels:
            keys.extend(self._keys(level, minute))
            args.extend((_limit(level.rpm), _limit(level.tpm), _limit(level.concurrency)))
        try:
            refused, which = self._admit(keys=keys, args=args)
        except Exception:  # noqa: BLE001 - a limiter outage must not stop paid traffic
            log.warning("redis unavailable; rate limits not enforced", exc_info=True)
            return self._held(self._unanswered(levels, minute, lease))
        if refused >= 0:
            raise refusal(levels[refused], which.decode() if isinstance(which, bytes)
                          else which, retry)
        return self._held(Ticket(self, levels, minute, max(0, tokens), lease))

    def _unanswered(self, levels: Sequence[Level], minute: int, lease: str) -> Ticket:
        """The fail-open admission: when Redis answers too late the script may still have run,
        so the request frees the slots it may hold when it ends (not a lease later), and
        corrects no token count it may not have made."""
        slots = [Level(lv.name, lv.label, concurrency=lv.concurrency) for lv in levels
                 if lv.concurrency is not None]
        return Ticket(self, slots, minute, 0, lease) if slots else NOTHING_HELD

    def _held(self, ticket: Ticket) -> Ticket:
        """Renew the ticket's slot leases while it is alive."""
        if ticket.slots:
            with self._lock:
                self._live[ticket.lease or ""] = ticket
            self._start_renewing()
        return ticket

    def finish(self, ticket: Ticket, used: int) -> None:
        """Free the ticket's slots and correct its minute's token counts, in one round trip."""
        with self._lock:
            self._live.pop(ticket.lease or "", None)
        delta = used - ticket.tokens
        current = window()[0] == ticket.minute  # a past minute's count no longer matters
        try:
            pipe = self.redis.pipeline(transaction=False)
            for level in ticket.levels:
                _, tokens_key, slots_key = self._keys(level, ticket.minute)
                if level.concurrency is not None:
                    pipe.zrem(slots_key, ticket.lease or "")
                if level.tpm is not None and delta and current:
                    pipe.incrby(tokens_key, delta)
                    pipe.expire(tokens_key, _COUNTER_TTL)
            if len(pipe):
                pipe.execute()
        except Exception:  # noqa: BLE001 - the lease runs out by itself
            log.warning("redis unavailable; slots freed when their lease ends", exc_info=True)

    def renew(self) -> int:
        """Extend the lease of every slot this process holds; how many leases were renewed."""
        with self._lock:
            tickets = list(self._live.values())
        keys: list[str] = []
        leases: list[str] = []
        for ticket in tickets:
            for level in ticket.slots:
                keys.append(self._keys(level, ticket.minute)[2])
                leases.append(ticket.lease or "")
        if not keys:
            return 0
        try:
            self._renew(keys=keys, args=[self.lease_seconds, *leases])
        except Exception:  # noqa: BLE001 - retried next round; a lease is three rounds long
            log.warning("redis unavailable; slot leases not renewed", exc_info=True)
            return 0
        return len(leases)

    def in_use(self, name: str) -> int:
        """Slots held now at the level `name`, by every worker (for tests and the operator)."""
        key = f"{self.prefix}{name}:c"
        pipe = self.redis.pipeline(transaction=True)
        pipe.time()
        pipe.zrange(key, 0, -1, withscores=True)
        (seconds, micros), members = pipe.execute()
        now = seconds + micros / 1e6
        return sum(1 for _, expiry in members if expiry > now)

    def _start_renewing(self) -> None:
        """Start this process's renewal loop (a greenlet under gevent) if it is not running."""
        if self._renewer is not None:
            return
        with self._lock:
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._run, name="silk-slot-leases",
                                                 daemon=True)
                self._renewer.start()

    def _run(self) -> None:
        pause = max(0.1, self.lease_seconds / 3)
        stop = threading.Event()
        while not stop.wait(pause):
            self.renew()

    def hit(self, name: str, limit: int, window_seconds: int) -> int:
        """Count one event in a window of any length; return the count so far (this
        worker's own while Redis cannot count: an abuse limit never fails open)."""
        bucket = int(time.time() // window_seconds)
        key = f"{self.prefix}{name}:h:{window_seconds}:{bucket}"
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, window_seconds * 2)
            return int(pipe.execute()[0])
        except Exception:  # noqa: BLE001
            log.warning("redis unavailable; abuse limit counted in this worker only",
                        exc_info=True)
            return self._local.hit(name, limit, window_seconds)

