"""Provider addresses, looked up once a while: a burst of new connections asks DNS once.

Under gevent every lookup goes through a small pool of threads, even for a numeric
address, so 500 streams starting together queued 500 lookups of the same host behind each
other before their first byte could go out. The answer is kept for a short while (like
nginx's `resolver valid=`, in silk.cache, so that when it expires one connection looks the
host up again while the others use the old answer) and each connection tries its addresses
in order, as `socket.create_connection` does; a host none of whose addresses answered is
looked up afresh next time.
"""

from __future__ import annotations

import socket

from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from silk.cache import ExpiringCache

TTL = 30.0  # seconds an answer is used

_answers: ExpiringCache[tuple[str, int], list] = ExpiringCache(TTL)


def addresses(host: str, port: int) -> list:
    """getaddrinfo's answer for a host and port (stream sockets), from the cache if fresh."""
    return _answers.fetch((host, port), _lookup)


def _lookup(key: tuple[str, int]) -> list:
    host, port = key
    return socket.getaddrinfo(host.strip("[]"), port, allowed_gai_family(), socket.SOCK_STREAM)


def forget(host: str, port: int) -> None:
    """Drop a host's answer: none of its addresses took a connection."""
    _answers.forget((host, port))


def connect(host: str, port: int, timeout, source_address=None,
            socket_options=None) -> socket.socket:
    """A connected socket to the first of the host's addresses that answers."""
    error: OSError | None = None
    for family, kind, proto, _, address in addresses(host, port):
        sock = None
        try:
            sock = socket.socket(family, kind, proto)
            for option in socket_options or ():
                sock.setsockopt(*option)
            if timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
            return sock
        except OSError as exc:
            error = exc
            if sock is not None:
                sock.close()
    forget(host, port)
    raise error or OSError(f"no address for {host}")
