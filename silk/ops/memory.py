"""A worker's memory: the startup heap kept out of the collector's way, and freed memory given
back to the system once a burst of connections is over.

Python's cyclic collector walks every object it tracks in a full collection. A worker's
app, catalogue, schemas and libraries are hundreds of thousands of objects that live as long
as the worker, and a full pass over them stopped a worker for 100-240 ms at a time during a
burst of streams (about 0.8 s per worker over three 2000-stream bursts). `freeze_startup`
moves them, once the worker has started, into the collector's permanent generation.

glibc keeps the memory a process frees for its own reuse. After a burst (a thousand
streams' buffers, frames and parsed bodies freed within a second) a worker's resident size
would stay at the burst's peak until the next one. Each second this looks at the event
loop's active watchers (about one per connection waited on): when they have fallen to under
half of their peak since the last trim, and by at least `drop`, `malloc_trim` returns the
free pages. That walks the heap (2-3 ms for a 250 MB worker); each trim needs the count
halved again, so a burst ending gets a few at most, and steady load none.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable


def freeze_startup() -> int:
    """Collect what startup left as garbage, then freeze every object alive now (they stay
    alive and are no longer walked by collections); the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class AfterBursts:
    """Decides when a burst is over, from the number of active watchers seen each time."""

    def __init__(self, trim: Callable[[], object], drop: int = 200):
        self.trim = trim
        self.drop = drop
        self.peak = 0

    def seen(self, active: int) -> bool:
        """Record the active watchers now; trim (and say so) if a burst just ended."""
        self.peak = max(self.peak, active)
        if self.peak - active >= self.drop and active * 2 < self.peak:
            self.trim()
            self.peak = active
            return True
        return False


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where the C library is another (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's name; no ldconfig run to find it
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    return lambda: trim(0)


def start_trimmer(interval: float = 1.0):
    """In a gevent worker: check once per `interval` seconds. The checking greenlet, or None
    where nothing can trim."""
    import gevent

    trim = _malloc_trim()
    if trim is None:
        return None
    bursts = AfterBursts(trim)
    loop = gevent.get_hub().loop

    def run() -> None:
        while True:
            gevent.sleep(interval)
            bursts.seen(loop.activecnt)

    return gevent.spawn(run)
