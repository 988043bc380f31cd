"""A raw-socket HTTP/1.1 server that a test scripts byte for byte, with or without TLS.

The upstream transport writes its requests itself and parses answers with llhttp, so its tests
need a server that answers exactly the bytes a test chose: every way an answer can be framed,
split over writes (or TLS records) where the test wants it, cut short, reset, or never sent.
A mocked socket would only echo our own assumptions back. `Server` listens on 127.0.0.1 and
runs a test's handler in a thread per accepted connection, driving a `Peer`; given an
`ssl.SSLContext` it first shakes hands as a TLS server in that thread, and records a handshake
the client refuses. It counts the connections it accepted and keeps the raw requests it got.

Both test_transport.py (plain HTTP) and test_transport_tls.py use it, along with the framing
helpers, the scripts (handlers) and the few client-side checks that hold the same on either.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from silk.upstream.transport import SilentAfterRequest, Transport

PATH = "/v1/chat/completions"
BODY = b'{"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]}'
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
TIMEOUT = urllib3.Timeout(connect=2, read=2)
SHORT_READ = urllib3.Timeout(connect=2, read=0.3)  # for the tests that wait for a read timeout
WAIT = 5  # seconds any scripted wait may last before the test counts as broken


# framing


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    """An HTTP/1.1 answer framed by Content-Length."""
    head = "".join(f"{h}\r\n" for h in (*headers, f"Content-Length: {len(body)}"))
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


CHUNKED_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
LAST_CHUNK = b"0\r\n\r\n"
FIRST_EVENT = b"data: 1\n\n"  # what `Peer.start_stream` sends first


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# the server


class Peer:
    """The server's side of one accepted connection, driven by a test's script."""

    def __init__(self, server: Server, sock: socket.socket, index: int):
        self.server = server
        self.sock = sock  # an ssl.SSLSocket when the server speaks TLS
        self.index = index  # 0 for the first connection the server accepted
        self.eof = threading.Event()  # the client closed its side
        self._buffer = b""

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):  # closed with our bytes unread
            data = b""
        if not data:
            self.eof.set()
        return data

    def request(self) -> bytes | None:
        """Read one whole request (head, then a Content-Length body); None if the client left."""
        reads: list[bytes] = []
        while b"\r\n\r\n" not in self._buffer:
            data = self._recv()
            if not data:
                assert not self._buffer, f"the client left mid-request: {self._buffer!r}"
                return None
            reads.append(data)
            self._buffer += data
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = self._recv()
            assert data, "the client left mid-body"
            reads.append(data)
            rest += data
        raw = head + b"\r\n\r\n" + rest[:length]
        self._buffer = rest[length:]
        with self.server.lock:
            self.server.requests.append(raw)
            self.server.reads.append(reads)
        return raw

    def send(self, *parts: bytes, pause: float = 0.0) -> None:
        """Write the parts as separate writes (TLS: records), pausing between them."""
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            self.sock.sendall(part)

    def start_stream(self) -> None:
        """Read a request and answer the head of an event stream with its first event."""
        self.request()
        self.send(CHUNKED_HEAD + chunk(FIRST_EVENT))

    def wait_eof(self) -> None:
        """Read until the client closes its side (it must, within WAIT)."""
        self.sock.settimeout(WAIT)
        while self._recv():
            pass

    def serve(self, body: bytes = b"next", *headers: str) -> None:
        """Answer every further request on this connection the same way, until the client leaves."""
        while self.request() is not None:
            self.send(answer(body, *headers))

    def reset(self) -> None:
        """Close with SO_LINGER 0: the client gets a TCP reset, not an orderly end."""
        self.cut("reset")

    def cut(self, how: str) -> None:
        """End the connection mid-answer: with a TLS close_notify, a bare TCP close, or a reset."""
        if how == "close_notify":
            # unwrap() sends close_notify, then waits for the client's, which never comes:
            # the client closes the TCP connection instead
            with contextlib.suppress(OSError):
                self.sock.unwrap()
        elif how == "reset":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class Server:
    """A server on 127.0.0.1: a thread per connection runs `handler(peer)`.

    With a `context` it speaks TLS: the connection's thread shakes hands first, and a handshake
    the client refuses is recorded in `refused` (and sets `handshake_failed`), not counted as a
    server error.
    """

    def __init__(self, handler: Callable[[Peer], None], context: ssl.SSLContext | None = None):
        self.handler = handler
        self.context = context
        self.lock = threading.Lock()
        self.peers: list[Peer] = []
        self.requests: list[bytes] = []  # each request's raw bytes, in arrival order
        self.reads: list[list[bytes]] = []  # the recv() results each request arrived in
        self.refused: list[ssl.SSLError] = []  # TLS handshakes that failed
        self.handshake_failed = threading.Event()
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def url(self, host: str = "127.0.0.1") -> str:
        scheme = "http" if self.context is None else "https"
        return f"{scheme}://{host}:{self.port}{PATH}"

    @property
    def accepted(self) -> int:
        """How many TCP connections the server accepted."""
        with self.lock:
            return len(self.peers)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(WAIT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:  # the handshake is left to the connection's thread
                sock = self.context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
            with self.lock:
                peer = Peer(self, sock, len(self.peers))
                self.peers.append(peer)
            thread = threading.Thread(target=self._run, args=(peer,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, peer: Peer) -> None:
        try:
            if self.context is not None:
                try:
                    peer.sock.do_handshake()
                except ssl.SSLError as exc:
                    self.refused.append(exc)
                    self.handshake_failed.set()
                    return
            self.handler(peer)
        except BaseException as exc:  # noqa: BLE001 - reported when the server stops
            if not self._stopping:
                self.errors.append(exc)
        finally:
            peer.sock.close()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
        self._acceptor.join(WAIT)
        self.listener.close()
        for peer in self.peers:
            with contextlib.suppress(OSError):
                # the TCP shutdown (under the TLS layer, if any) wakes a handler still reading;
                # SSLSocket.shutdown would also drop the TLS state under that reader
                socket.socket.shutdown(peer.sock, socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in [self._acceptor, *self._threads])
        if self.errors:
            raise self.errors[0]


Start = Callable[..., tuple[Server, Transport]]


@contextlib.contextmanager
def serving() -> Iterator[Start]:
    """Start scripted servers, each with a Transport posting to it; all are shut at the end.

    `start(handler, context=None, host="127.0.0.1", verify=True)`: `context` makes the server
    speak TLS, `host` is what the transport's URL names, `verify` as requests takes it.
    """
    started: list[tuple[Server, Transport]] = []

    def start(handler: Callable[[Peer], None], context: ssl.SSLContext | None = None,
              host: str = "127.0.0.1", verify: bool | str = True) -> tuple[Server, Transport]:
        server = Server(handler, context)
        transport = Transport(HTTPAdapter(max_retries=0), server.url(host), verify=verify)
        started.append((server, transport))
        return server, transport

    yield start
    for server, transport in started:
        transport.pool.close()
        server.stop()


# scripts: what a connection's handler does


def keep_serving(body: bytes = b"next") -> Callable[[Peer], None]:
    def handler(peer: Peer) -> None:
        peer.serve(body)
    return handler


def first_then_serve(script: Callable[[Peer], None]) -> Callable[[Peer], None]:
    """The first connection runs `script`; every later one answers b"second" to each request."""
    def handler(peer: Peer) -> None:
        if peer.index == 0:
            script(peer)
        else:
            peer.serve(b"second")
    return handler


def never_answer(peer: Peer) -> None:
    """Read the request, then wait for the client to give up."""
    peer.request()
    peer.wait_eof()


def stall_mid_stream(peer: Peer) -> None:
    """Send a stream's first event, never the rest; wait for the client to give up."""
    peer.start_stream()
    peer.wait_eof()


def cut_short(peer: Peer) -> None:
    """Answer with Content-Length 100 and only 10 bytes of it."""
    peer.request()
    peer.send(answer(b"x" * 100)[:-90])


def rest_then_serve(go: threading.Event, rest_sent: threading.Event, *rest: bytes):
    """Send a stream's first event, on `go` the rest of it (as writes), then keep serving."""
    def handler(peer: Peer) -> None:
        peer.start_stream()
        assert go.wait(WAIT)
        peer.send(*rest)
        rest_sent.set()
        peer.serve(b"second")
    return handler


# the client's side


def post(transport: Transport, headers: dict[str, str] | None = None,
         timeout: urllib3.Timeout = TIMEOUT, first_byte: float | None = None
         ) -> requests.Response:
    return transport.post(BODY, HEADERS if headers is None else headers, timeout,
                          first_byte=first_byte)


def pooled(transport: Transport) -> list:
    """The connections idle in the transport's pool (urllib3 fills free slots with None)."""
    return [conn for conn in list(transport.pool.pool.queue) if conn is not None]


def read_stream(raw) -> bytes:
    """Read a body with read1() to its end."""
    pieces = []
    while piece := raw.read1():
        pieces.append(piece)
    return b"".join(pieces)


def read_until_cut(raw) -> bytes:
    """Read a body that must end in a ConnectionError, not as if whole; what came before it."""
    received = b""
    with pytest.raises(requests.ConnectionError):
        while True:
            piece = raw.read1()
            assert piece, "a cut answer ended as if it were whole"
            received += piece
    assert raw.closed
    return received


@contextlib.contextmanager
def lasting(shortest: float, longest: float) -> Iterator[None]:
    """The block takes at least `shortest` seconds and less than `longest`."""
    started = time.monotonic()
    yield
    assert shortest <= time.monotonic() - started < longest


# checks that hold the same over plain TCP and TLS


def check_a_stream_in_pieces_is_decoded_as_it_arrives(serve: Start) -> None:
    """A chunked stream whose writes split it mid-size, mid-data and mid-CRLF, then end in a
    trailer, is handed out as it arrives, exactly, and its connection goes back to the pool."""
    go = threading.Event()

    def handler(peer: Peer) -> None:
        peer.start_stream()
        assert go.wait(WAIT)
        rest = (chunk(b"data: 22\n\n") + chunk(b"data: 333333333333333\n\n")
                + b"0\r\nX-Checksum: abc\r\n\r\n")
        cuts = [0, 1, 9, 14, 16, 40, len(rest) - 3, len(rest)]
        peer.send(*(rest[a:b] for a, b in itertools.pairwise(cuts)), pause=0.005)
        peer.serve(b"after")

    server, transport = serve(handler)
    response = post(transport)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.raw.read1() == FIRST_EVENT  # before the rest was even sent
    go.set()
    assert read_stream(response.raw) == b"data: 22\n\ndata: 333333333333333\n\n"
    assert response.raw.read1() == b""  # the end stays the end
    assert response.raw.closed
    assert len(pooled(transport)) == 1
    assert post(transport).content == b"after"
    assert server.accepted == 1


def check_closing_a_stream_before_its_rest_closes_the_connection(serve: Start) -> None:
    """Closing a stream whose rest has not arrived closes its connection, without waiting."""
    server, transport = serve(first_then_serve(stall_mid_stream))
    response = post(transport)  # read timeout 2 s: close() must not wait for it
    assert response.raw.read1() == FIRST_EVENT
    with lasting(0, 0.5):  # it did not wait for the rest
        response.close()
    assert response.raw.closed
    assert pooled(transport) == []
    assert server.peers[0].eof.wait(WAIT)  # the first connection was closed
    assert post(transport).content == b"second"
    assert server.accepted == 2


def check_a_server_that_never_answers_is_a_read_timeout(serve: Start) -> None:
    server, transport = serve(never_answer)
    # The server took the whole request: the timeout says so (it may be working on it).
    with lasting(0.25, 1.5), pytest.raises(SilentAfterRequest):
        post(transport, timeout=SHORT_READ)
    assert pooled(transport) == []
    assert server.peers[0].eof.wait(WAIT)  # the connection was closed, not pooled


def check_the_given_up_connection_is_replaced(server: Server, transport: Transport,
                                             given_up: threading.Event) -> None:
    """Once the server gave up on the pooled connection, the next request takes a new one."""
    assert given_up.wait(WAIT)
    response = post(transport)
    assert (response.status_code, response.content) == (200, b"second")
    assert server.accepted == 2
    assert len(server.requests) == 2  # nothing was written to the abandoned connection


def check_silence_mid_answer_is_a_read_timeout(serve: Start) -> None:
    server, transport = serve(first_then_serve(stall_mid_stream))
    raw = post(transport, timeout=SHORT_READ).raw
    assert raw.read1() == FIRST_EVENT
    with lasting(0.25, 1.5), pytest.raises(requests.ReadTimeout) as caught:
        raw.read1()
    assert not isinstance(caught.value, SilentAfterRequest)  # its answer had begun
    assert raw.closed
    assert server.peers[0].eof.wait(WAIT)
    assert post(transport).content == b"second"
    assert server.accepted == 2
