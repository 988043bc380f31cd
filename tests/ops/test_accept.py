"""Accepting a burst by share of the listening socket's queue, on real sockets."""

from __future__ import annotations

import socket

import pytest
from gevent.server import StreamServer
from gunicorn.workers import ggevent

from silk.ops.accept import BURST, MOST, ShareOfQueue, accept_shares, waiting


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.setblocking(False)
    clients: list[socket.socket] = []

    def queue(n: int) -> None:
        for _ in range(n):
            clients.append(socket.create_connection(sock.getsockname()))

    yield sock, queue
    for client in clients:
        client.close()
    sock.close()


def test_waiting_is_the_listening_sockets_queue(listener):
    sock, queue = listener
    assert waiting(sock) == 0
    queue(37)
    assert waiting(sock) == 37
    sock.accept()[0].close()
    assert waiting(sock) == 36


def test_a_socket_that_is_not_tcp_has_no_queue_to_read(tmp_path):
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "s"))
        unix.listen(8)
        assert waiting(unix) == 0


def test_a_burst_is_accepted_by_this_workers_share_of_the_queue(listener, monkeypatch):
    sock, queue = listener
    monkeypatch.setattr(ggevent, "StreamServer", StreamServer)  # restored after the test
    accept_shares(2)
    accepted: list = []
    server = ggevent.StreamServer(
        sock, handle=lambda client, address: None,
        spawn=lambda _run, _handle, _close, args: accepted.append(args[0]))
    server.max_accept = 1  # what gunicorn sets when there are several workers
    queue(BURST)
    server._do_read()  # one turn of the loop's accept callback: half, the other worker's half
    assert len(accepted) == BURST // 2 and waiting(sock) == BURST // 2
    server._do_read()  # under a burst: one a turn, as gunicorn
    assert len(accepted) == BURST // 2 + 1 and waiting(sock) == BURST // 2 - 1
    queue(200)
    server._do_read()  # half of what waits is more than a turn takes
    assert len(accepted) == BURST // 2 + 1 + MOST
    for client in accepted:
        client.close()


def test_with_nothing_waiting_a_turn_still_takes_one():
    share = ShareOfQueue(4)

    class Server:
        socket = None  # not a socket the kernel can tell about

    assert share.__get__(Server()) == 1
    assert ShareOfQueue.__get__(share, None, Server) is share


def test_a_lone_worker_keeps_gevents_own_rule(monkeypatch):
    monkeypatch.setattr(ggevent, "StreamServer", StreamServer)
    accept_shares(1)
    assert ggevent.StreamServer is StreamServer and StreamServer.max_accept == 100
