"""How many requests this process is serving, for work worth doing only when others wait.

Handing a blocking call to a thread frees the worker for its other requests, but costs a
lone request the trip there and back: callers ask `others()` first. A JSON answer counts
from the moment it reaches the app until the app is done with it; a stream until the
server closes it.
"""

from __future__ import annotations

_serving = 0


def started() -> None:
    """A request reached the app."""
    global _serving
    _serving += 1


def ended() -> None:
    """A request the app counted is done."""
    global _serving
    _serving = max(_serving - 1, 0)


def others() -> bool:
    """Whether this process serves another request besides the caller's."""
    return _serving > 1
