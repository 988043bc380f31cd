"""While the event loop runs late, a stream's reads after its first output wait, to carry more.

A worker handed more stream events than its core can relay runs late on everything: every
upstream read still costs a wakeup, a parse and a write to the client, often for a single
event, and the requests still waiting to start (their first token) queue behind them.
While a probe finds the loop late by `late` seconds or more, each read of a stream that
has delivered output waits `seconds` before it, so one wakeup and one write carry the
events that came meanwhile, and the core goes to the streams not yet started. A stream's
first output token is never held, the bytes and the bill are the same, and a worker on
time does not wait at all.
"""

from __future__ import annotations

import time

LONGEST = 1.0  # seconds: a longer wait would stall a stream rather than pace it


class Pace:
    """How long a stream's next read waits now: `seconds` while the loop is late, else 0."""

    __slots__ = ("seconds", "late", "now")

    def __init__(self, seconds: float = 0.0, late: float = 0.0) -> None:
        self.set(seconds, late)

    def set(self, seconds: float, late: float) -> None:
        """Wait `seconds` (at most LONGEST) while the loop is `late` seconds late or more."""
        self.seconds = min(max(0.0, seconds), LONGEST)
        self.late = max(0.0, late)
        self.now = 0.0

    def observe(self, lateness: float) -> None:
        """The probe's timer fired `lateness` seconds after it was due."""
        self.now = self.seconds if lateness >= self.late else 0.0

    def wait(self) -> None:
        """Before a stream's read once it delivered output (time.sleep is gevent's in a worker)."""
        if self.now:
            time.sleep(self.now)


pace = Pace()  # no probe, no wait: outside a gevent worker reads never wait


def start_probe(seconds: float, late: float, interval: float = 0.05):
    """In a gevent worker: time a timer every `interval` seconds and set `pace` from how
    late it fires. The probing greenlet, or None when pacing is off (`seconds` 0)."""
    import gevent

    pace.set(seconds, late)
    pace.observe(0.0)  # on time so far
    if not pace.seconds:
        return None

    def run() -> None:
        clock = time.monotonic
        while True:
            due = clock() + interval
            gevent.sleep(interval)
            pace.observe(clock() - due)

    return gevent.spawn(run)
