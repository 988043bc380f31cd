"""A burst of connections is accepted in a few turns of a worker's loop, shared by the workers.

gunicorn's gevent worker accepts one connection per turn of its event loop when there are
several workers, so that one worker does not take them all. Under a burst of streams a turn
lasts as long as the streams already open keep the worker busy: of 2000 connections opened
at once, 1,300 to 1,700 were still waiting in the listening socket's queue a second later,
and it took the workers seconds to accept them one per turn.

Here, when at least `BURST` connections wait (the queue's length, which the kernel reports
in `TCP_INFO`), a turn accepts this worker's share of them: the queue divided by the number
of workers, at most `MOST`. The queue empties in a few turns and the workers still split it.
`MOST` bounds the requests a turn starts at once: each runs its first steps (reading,
checking, the reservation's queue) before the turn can go on with the streams already open.
Under `BURST` a turn takes one, as gunicorn does: a client's keep-alive connections opened
together (32 at c=32) must spread over the workers, not all go to the one that woke first.
The queue of a 2000-stream burst emptied within 0.2-0.6 s instead of seconds, and the burst's
p99 TTFT fell from 5.5-7.8 s to 2.9-3.5 s (PostgreSQL, two workers).
"""

from __future__ import annotations

import socket
import struct

# struct tcp_info: eight one-byte fields, then rto, ato, snd_mss, rcv_mss and unacked, which
# on a listening socket is the number of connections waiting to be accepted.
_WAITING = struct.Struct("=I")
_WAITING_AT = 24
_INFO_SIZE = _WAITING_AT + _WAITING.size
BURST = 64  # connections waiting from which a turn accepts more than one
MOST = 32  # connections a worker accepts in one turn of its loop


def waiting(sock: socket.socket) -> int:
    """Connections waiting in a listening TCP socket's queue (0 if the kernel cannot say)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO_SIZE)
    except (OSError, AttributeError):  # not TCP (a Unix socket), or no TCP_INFO here
        return 0
    if len(info) < _INFO_SIZE:
        return 0
    return int(_WAITING.unpack_from(info, _WAITING_AT)[0])


class ShareOfQueue:
    """A gevent server's `max_accept`, read at each turn: one, or in a burst this worker's
    share of the queue (at most `MOST`).

    gunicorn sets `max_accept = 1` on each server when there are several workers; that
    setting is ignored and the share is used instead.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(workers, 1)

    def __get__(self, server, owner=None):
        if server is None:
            return self
        queued = waiting(server.socket)
        if queued < BURST:
            return 1
        return min(-(-queued // self.workers), MOST)

    def __set__(self, server, value) -> None:
        """Ignored (a setter keeps an instance attribute from hiding the share)."""


def accept_shares(workers: int) -> None:
    """Make gunicorn's gevent worker accept by share of the queue (call before it runs).

    A lone worker keeps gevent's own rule (up to 100 a turn): it has nobody to share with.
    """
    if workers < 2:
        return
    from gevent.server import StreamServer
    from gunicorn.workers import ggevent

    class SharingServer(StreamServer):
        """gevent's server, accepting this worker's share of the waiting connections."""

        max_accept = ShareOfQueue(workers)

    ggevent.StreamServer = SharingServer
