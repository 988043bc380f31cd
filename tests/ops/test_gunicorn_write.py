"""gunicorn.conf.py's write path: one send where the socket takes it all, sendall for the rest."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import gevent
import gevent.socket
import pytest
from gunicorn import util

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def patched_write():
    """gunicorn's util.write as the project's workers run it, restored afterwards."""
    spec = importlib.util.spec_from_file_location("silk_gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    original = util.write
    spec.loader.exec_module(conf)
    conf._write_in_one_send()
    assert util.write is not original
    yield util.write
    util.write = original


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
