"""Asking a socket about itself cheaply, and waiting for it the way this process runs.

A pooled connection (to a provider or to PostgreSQL) is checked before use: bytes or an
end waiting on an idle connection mean the peer gave up on it. Under gevent a zero-wait
poll through the event loop costs a greenlet switch and a timer, so the check uses the
operating system's poll, which never blocks with no wait. Waiting for a socket, on the
other hand, must let other greenlets run in a gevent worker.
"""

from __future__ import annotations

import functools
import select
from collections.abc import Callable


@functools.cache
def _os_poll():
    """select.poll as the operating system gives it, even after gevent patched select."""
    try:
        from gevent.monkey import get_original
    except ImportError:  # pragma: no cover - gevent is a dependency
        return select.poll
    return get_original("select", "poll")


def readable_now(sock) -> bool:
    """Whether a socket (or file descriptor) has bytes or an end waiting, without waiting."""
    # TLS: bytes already decrypted are not polled. Looked up on the class: on a plain gevent
    # socket an instance lookup of a missing name raises AttributeError twice inside.
    pending = getattr(type(sock), "pending", None)
    if pending is not None and pending(sock):
        return True
    poller = _os_poll()()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


@functools.cache
def cooperative() -> bool:
    """Whether sockets are gevent's here (a gunicorn gevent worker, or a patched process)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return monkey.is_module_patched("socket")


_URGENT = 2  # libev's highest watcher priority (EV_MAXPRI)


@functools.cache
def waiters(urgent: bool = False) -> tuple[Callable[..., None], Callable[..., None]]:
    """(wait_read, wait_write) for a descriptor: gevent's in a patched worker, else the OS's.

    Each takes an optional timeout in seconds and raises TimeoutError when it passes. With
    `urgent`, a gevent worker resumes the waiting greenlet before the others that the same
    turn of its loop finds ready: for a connection every request of the process waits on.
    """
    if cooperative():
        from gevent import socket as gsocket

        if not urgent:
            return gsocket.wait_read, gsocket.wait_write  # raise socket.timeout (TimeoutError)
        from gevent.hub import get_hub

        def first(events: int) -> Callable[..., None]:
            def waiter(fd: int, timeout: float | None = None) -> None:
                watcher = get_hub().loop.io(fd, events, True, _URGENT)
                try:
                    gsocket.wait(watcher, timeout)
                finally:
                    watcher.close()
            return waiter

        return first(1), first(2)

    def wait(events: int) -> Callable[..., None]:
        def waiter(fd: int, timeout: float | None = None) -> None:
            poller = _os_poll()()
            poller.register(fd, events)
            if not poller.poll(None if timeout is None else max(timeout, 0) * 1000):
                raise TimeoutError("timed out")
        return waiter

    return wait(select.POLLIN), wait(select.POLLOUT)
