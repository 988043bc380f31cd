"""The provider's silence bounded by one timer per answer, not one timer per socket wait.

A socket with a timeout makes gevent build, start and cancel a `Timeout` around every wait
for it; a stream waits once per chunk, so a burst of streams paid for thousands of timers
a second. In a gevent worker the upstream socket has no timeout instead, and a `Silence`
marks each wait: one event-loop timer per answer checks, when it fires, whether the wait
in progress has lasted the read timeout, and if so raises `TimeoutError` in the greenlet
that waits, as the socket's own timeout would have. The bound is the same: no single wait
for the provider lasts longer than the read timeout (sending the request counts as one
wait: the provider must take all of it within that time), unless the transport changed the
bound between waits (`limit`: a JSON answer's first byte may take longer).

The timer runs only while the answer is read: when it fires between two waits (the client
reads slowly, or the answer was abandoned) it is not restarted until the next wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Silence:
    """Raise TimeoutError in a greenlet whose socket wait has lasted `seconds`."""

    __slots__ = ("seconds", "_loop", "_getcurrent", "_timer", "_since", "_reader")

    def __init__(self, seconds: float):
        import gevent
        from greenlet import getcurrent

        self.seconds = seconds
        self._loop = gevent.get_hub().loop
        self._getcurrent = getcurrent
        self._timer: Any = None
        self._since: float | None = None  # the event loop's time when the wait began
        self._reader: Any = None

    def wait(self, operation: Callable[..., T], *args: Any) -> T:
        """Run one socket operation (a recv, a sendall) as a wait the timer bounds."""
        self._since = self._loop.now()
        self._reader = self._getcurrent()
        if self._timer is None:
            self._arm(self.seconds)
        try:
            return operation(*args)
        finally:
            self._since = None
            self._reader = None

    def limit(self, seconds: float) -> None:
        """Bound each wait from now on by `seconds` (between waits: the next one starts the
        timer again)."""
        self.seconds = seconds
        self.stop()

    def stop(self) -> None:
        """The answer is done with: no timer is left in the event loop."""
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _arm(self, after: float) -> None:
        self._timer = self._loop.timer(after)
        self._timer.start(self._fired)

    def _fired(self) -> None:
        """In the event loop: time out the wait in progress, or check again when it would."""
        self._timer.close()
        self._timer = None
        since = self._since
        if since is None:
            return  # between waits: the next wait starts the timer again
        waited = self._loop.now() - since
        if waited < self.seconds - 0.001:
            self._arm(self.seconds - waited)
            return
        reader = self._reader
        self._since = self._reader = None
        reader.throw(TimeoutError(f"no answer within {self.seconds:g} s (read timeout)"))
