"""gunicorn.conf.py's write path: one send where the socket takes it all, sendall for the rest,
and a response's headers in the send of its first body bytes."""

from __future__ import annotations

import importlib.util
import re
import socket
from pathlib import Path

import gevent
import gevent.socket
import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi

ROOT = Path(__file__).resolve().parents[2]


def _conf():
    spec = importlib.util.spec_from_file_location("silk_gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


@pytest.fixture
def patched_write():
    """gunicorn's util.write as the project's workers run it, restored afterwards."""
    original = util.write
    _conf()._write_in_one_send()
    assert util.write is not original
    yield util.write
    util.write = original


_RESPONSE_STEPS = ("write", "send_headers", "_emit_body", "close")


def _exchange(write, pieces: list[bytes], chunked: bool, reader_pause: float) -> bytes:
    """Write the pieces on one end of a socket pair while the other end reads slowly."""
    left, right = gevent.socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # partial sends happen
    right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    left.settimeout(10)
    received = bytearray()

    def read():
        gevent.sleep(reader_pause)
        while True:
            data = right.recv(65536)
            if not data:
                return
            received.extend(data)

    reader = gevent.spawn(read)
    for piece in pieces:
        write(left, piece, chunked)
    left.close()
    reader.join(timeout=20)
    right.close()
    return bytes(received)


def test_a_large_piece_to_a_slow_reader_arrives_whole(patched_write):
    body = bytes(range(256)) * 8192  # 2 MiB: far more than the socket takes in one send
    assert _exchange(patched_write, [body], chunked=False, reader_pause=0.2) == body


def test_chunked_pieces_are_framed_as_gunicorn_frames_them(patched_write):
    pieces = [b"data: one\n\n", b"x" * 300_000, "d\u00e9j\u00e0".encode(), b"data: [DONE]\n\n"]
    expected = b"".join(b"%X\r\n%b\r\n" % (len(p), p) for p in pieces)
    assert _exchange(patched_write, pieces, chunked=True, reader_pause=0.1) == expected
    # a str piece is written as UTF-8, as gunicorn's own write_chunk does
    assert _exchange(patched_write, ["d\u00e9j\u00e0"], chunked=True, reader_pause=0) == (
        b"6\r\nd\xc3\xa9j\xc3\xa0\r\n")


def test_a_peer_that_is_gone_raises_as_before(patched_write):
    left, right = gevent.socket.socketpair()
    right.close()
    with pytest.raises(OSError):
        for _ in range(100):
            patched_write(left, b"x" * 65536, False)
    left.close()


class _Request:
    """What gunicorn's Response reads of the request it answers."""

    def __init__(self, method: str = "GET", version: tuple[int, int] = (1, 1)):
        self.method = method
        self.version = version

    def should_close(self) -> bool:
        return False


class _Counting:
    """A real socket's sending end, counting its sends (each a segment on the wire)."""

    def __init__(self, sock):
        self.sock = sock
        self.sends = 0

    def send(self, data, flags=0):
        self.sends += 1
        return self.sock.send(data, flags)

    def sendall(self, data, flags=0):
        self.sends += 1
        return self.sock.sendall(data, flags)


def _answer(status: str, headers: list, body: list[bytes], method: str = "GET"):
    """Run one response through gunicorn's Response on a socket pair: the bytes the client
    got and the number of sends."""
    left, right = socket.socketpair()
    counting = _Counting(left)
    response = wsgi.Response(_Request(method), counting, Config())
    write = response.start_response(status, headers)
    for piece in body:
        write(piece)
    response.close()
    left.close()
    got = bytearray()
    while data := right.recv(65536):
        got.extend(data)
    right.close()
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", bytes(got)), counting.sends


_ANSWERS = {
    "json": ("200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")],
             [b'{"ok":true}'], "GET"),
    "stream": ("200 OK", [("Content-Type", "text/event-stream")],
               [b"data: 1\n\n", b"", b"data: 2\n\n", b"data: [DONE]\n\n"], "POST"),
    "empty stream": ("200 OK", [("Content-Type", "text/event-stream")], [b""], "GET"),
    "no content": ("204 No Content", [], [], "DELETE"),
    "head": ("200 OK", [("Content-Length", "11")], [b'{"ok":true}'], "HEAD"),
    "too long": ("200 OK", [("Content-Length", "0")], [b"extra"], "GET"),
}


@pytest.mark.parametrize("name", list(_ANSWERS))
def test_headers_go_out_with_the_first_body_bytes(name):
    """The client gets the same bytes as from gunicorn's own Response; an answer with a
    body takes one send fewer, the headers riding in the first body bytes' send."""
    status, headers, body, method = _ANSWERS[name]
    original = {step: getattr(wsgi.Response, step) for step in _RESPONSE_STEPS}
    before, sends_before = _answer(status, headers, body, method)
    _conf()._headers_with_the_body()
    try:
        assert any(getattr(wsgi.Response, s) is not original[s] for s in _RESPONSE_STEPS)
        after, sends_after = _answer(status, headers, body, method)
    finally:
        for step, function in original.items():
            setattr(wsgi.Response, step, function)
    assert after == before
    assert after.startswith(b"HTTP/1.1 " + status.encode()) and b"\r\nDate: -\r\n" in after
    carries_body = name in ("json", "stream")
    assert sends_after == sends_before - (1 if carries_body else 0), (sends_before, sends_after)
