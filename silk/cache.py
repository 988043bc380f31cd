"""Per-process caches of database answers that a burst of requests reloads once, not once each.

A hot path that caches a lookup for a few seconds meets the database again when the entry
expires, and under load that is a burst: hundreds of greenlets miss at the same instant,
each takes a pooled connection (or queues for one) to ask the same question. Here one
caller reloads an expired entry while the others keep using the old value, and callers
with no value at all wait for the one lookup in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_WAIT = 5.0  # seconds a caller waits for another's lookup before asking itself


class ExpiringCache(Generic[K, V]):
    """Answers kept for `ttl` seconds (or a per-answer lifetime), reloaded one caller at a time."""

    def __init__(self, ttl: float, max_entries: int = 50_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, threading.Event] = {}
        self._lock = threading.Lock()
        # Counts forget() and clear() calls: a lookup that started before one of them may
        # have read what it dropped, so its answer is returned but not kept.
        self._generation = 0

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, value) while the answer is fresh, else (False, None)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def fetch(self, key: K, load: Callable[[K], V],
              lifetime: Callable[[V], float | None] | None = None) -> V:
        """The fresh answer, else `load`'s; while another caller loads it, the expired one.

        `lifetime(value)` may give an answer its own number of seconds (None: `ttl`). A
        change made elsewhere is seen within the lifetime plus one lookup.
        """
        entry = self._entries.get(key)
        if entry is not None and entry[0] >= time.monotonic():
            return entry[1]
        loading = self._loading.get(key)
        if loading is not None:
            if entry is not None:
                return entry[1]
            loading.wait(_WAIT)
            fresh, value = self.get(key)
            if fresh:
                return value
        loading = self._loading[key] = threading.Event()
        generation = self._generation
        try:
            value = load(key)
            if generation == self._generation:
                self.put(key, value, lifetime(value) if lifetime else None)
        finally:
            self._loading.pop(key, None)
            loading.set()
        return value

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        """Remember an answer (bounded: forget everything when full)."""
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)

    def forget(self, key: K) -> None:
        """Drop one answer, e.g. after it changed."""
        self._generation += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop every answer."""
        self._generation += 1
        self._entries.clear()
