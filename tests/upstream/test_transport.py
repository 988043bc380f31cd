"""The upstream transport speaks HTTP/1.1 correctly on a real socket, byte for byte.

silk.upstream.transport writes requests itself and parses answers with llhttp instead of going
through http.client, so everything http.client used to get right is ours to prove: the bytes of
the request, every way an answer can be framed (length, chunks, the hang-up), when a connection
may go back to the pool and when it must not, and which requests exception each failure becomes.
A mocked socket would only echo our own assumptions back, so each test here scripts the exact
bytes a tiny loopback server answers, and the server counts the TCP connections it accepted and
keeps the raw requests it received.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from silk.upstream.transport import Transport

PATH = "/v1/chat/completions"
BODY = b'{"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]}'
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
TIMEOUT = urllib3.Timeout(connect=2, read=2)
WAIT = 5  # seconds any scripted wait may last before the test counts as broken


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    """An HTTP/1.1 answer framed by Content-Length."""
    head = "".join(f"{h}\r\n" for h in (*headers, f"Content-Length: {len(body)}"))
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


CHUNKED_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


class Peer:
    """The server's side of one accepted connection, driven by a test's script."""

    def __init__(self, server: Server, sock: socket.socket, index: int):
        self.server = server
        self.sock = sock
        self.index = index  # 0 for the first connection the server accepted
        self.eof = threading.Event()  # the client closed its side
        self._buffer = b""

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:  # the client closed with our bytes still unread
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
        """Write the parts as separate TCP writes, pausing between them."""
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            self.sock.sendall(part)

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
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class Server:
    """A raw-socket HTTP server on 127.0.0.1: a thread per connection runs `handler(peer)`."""

    def __init__(self, handler: Callable[[Peer], None]):
        self.handler = handler
        self.lock = threading.Lock()
        self.peers: list[Peer] = []
        self.requests: list[bytes] = []  # each request's raw bytes, in arrival order
        self.reads: list[list[bytes]] = []  # the recv() results each request arrived in
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

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
            with self.lock:
                peer = Peer(self, sock, len(self.peers))
                self.peers.append(peer)
            thread = threading.Thread(target=self._run, args=(peer,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, peer: Peer) -> None:
        try:
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
                peer.sock.shutdown(socket.SHUT_RDWR)  # wakes a handler still reading
        for thread in self._threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in [self._acceptor, *self._threads])
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def serve():
    """Start a scripted server and a Transport posting to it; both are shut at the end."""
    started: list[tuple[Server, Transport]] = []

    def start(handler: Callable[[Peer], None]) -> tuple[Server, Transport]:
        server = Server(handler)
        transport = Transport(HTTPAdapter(max_retries=0), server.url)
        started.append((server, transport))
        return server, transport

    yield start
    for server, transport in started:
        transport.pool.close()
        server.stop()


def post(transport: Transport, headers: dict[str, str] | None = None,
         timeout: urllib3.Timeout = TIMEOUT) -> requests.Response:
    return transport.post(BODY, HEADERS if headers is None else headers, timeout)


def keep_serving(body: bytes = b"next") -> Callable[[Peer], None]:
    def handler(peer: Peer) -> None:
        peer.serve(body)
    return handler


# the request


def test_the_request_is_one_well_formed_write(serve):
    server, transport = serve(keep_serving(b"{}"))
    headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json",
               "Accept": "application/json", "X-Trace": "abc"}
    assert post(transport, headers).content == b"{}"
    assert server.requests == [
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nX-Trace: abc\r\nContent-Length: {len(BODY)}\r\n\r\n"
        .encode() + BODY]
    assert server.reads == [[server.requests[0]]]  # head and body came in one piece


def test_a_content_length_the_caller_gave_is_not_repeated(serve):
    server, transport = serve(keep_serving(b"{}"))
    headers = {"Content-Length": str(len(BODY)), "User-Agent": "SilkGateway"}
    post(transport, headers).close()
    assert server.requests == [
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Length: {len(BODY)}\r\nUser-Agent: SilkGateway\r\n\r\n".encode() + BODY]


@pytest.mark.parametrize(("url", "first_lines"), [
    ("http://api.example.test/v1/chat?x=1",
     "POST /v1/chat?x=1 HTTP/1.1\r\nHost: api.example.test\r\n"),
    ("https://api.example.test:443/api/v3/chat",
     "POST /api/v3/chat HTTP/1.1\r\nHost: api.example.test\r\n"),
    ("https://api.example.test:8443/chat",
     "POST /chat HTTP/1.1\r\nHost: api.example.test:8443\r\n"),
])
def test_the_host_header_names_the_port_only_when_it_is_not_the_default(url, first_lines):
    head = Transport(HTTPAdapter(), url).head({"Accept": "*/*"}, 7)
    assert head == f"{first_lines}Accept: */*\r\nContent-Length: 7\r\n\r\n".encode()


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent(serve):
    server, transport = serve(keep_serving(b"ok"))
    assert post(transport).content == b"ok"  # one connection, idle in the pool
    for value in ("sk-1\r\nX-Injected: 1", "sk-1\nX-Injected: 1", "sk-1\rX"):
        with pytest.raises(requests.exceptions.InvalidHeader):
            post(transport, {"Authorization": value})
    assert post(transport).content == b"ok"  # the idle connection was neither used nor lost
    assert server.accepted == 1
    assert len(server.requests) == 2
    assert not any(b"X-Injected" in raw for raw in server.requests)


def test_a_header_name_with_a_line_break_is_refused_before_anything_is_sent(serve):
    # requests refuses such a name (check_header_validity); written out, it injects a header
    server, transport = serve(keep_serving(b"ok"))
    with pytest.raises(requests.exceptions.InvalidHeader):
        post(transport, {"X-Trace\r\nX-Injected": "1"})
    assert server.requests == []


# answers and the pool


def test_a_content_length_answer_is_read_and_its_connection_reused(serve):
    body = b'{"id": "chatcmpl-1", "choices": []}'
    server, transport = serve(keep_serving(body))
    first = post(transport)
    assert (first.status_code, first.reason) == (200, "OK")
    assert first.headers["content-length"] == str(len(body))
    assert first.content == body
    assert first.raw.closed  # read to its end: the connection went back to the pool
    assert post(transport).content == body
    assert server.accepted == 1
    assert len(server.requests) == 2


def test_read_with_a_size_hands_out_that_many_bytes_and_keeps_the_rest(serve):
    _, transport = serve(keep_serving(b"0123456789"))
    raw = post(transport).raw
    assert [raw.read(4), raw.read(4), raw.read(4), raw.read(4)] == [b"0123", b"4567", b"89", b""]


def test_a_chunked_answer_is_decoded_as_it_arrives_and_the_connection_reused(serve):
    go = threading.Event()

    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        assert go.wait(WAIT)
        # chunks split mid-size, mid-data and mid-CRLF over separate writes, then a trailer
        rest = (chunk(b"data: 22\n\n") + chunk(b"data: 333333333333333\n\n")
                + b"0\r\nX-Checksum: abc\r\n\r\n")
        cuts = [0, 1, 9, 14, 16, 40, len(rest) - 3, len(rest)]
        peer.send(*(rest[a:b] for a, b in itertools.pairwise(cuts)), pause=0.005)
        peer.serve(b"after")

    server, transport = serve(handler)
    response = post(transport)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.raw.read1() == b"data: 1\n\n"  # before the rest was even sent
    go.set()
    pieces = []
    while piece := response.raw.read1():
        pieces.append(piece)
    assert b"".join(pieces) == b"data: 22\n\ndata: 333333333333333\n\n"
    assert response.raw.read1() == b""  # the end stays the end
    assert response.raw.closed
    assert post(transport).content == b"after"
    assert server.accepted == 1


def test_closing_a_stream_whose_rest_has_arrived_keeps_the_connection(serve):
    go, rest_sent = threading.Event(), threading.Event()

    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        assert go.wait(WAIT)
        peer.send(chunk(b"data: 2\n\n") + chunk(b"data: [DONE]\n\n") + LAST_CHUNK)
        rest_sent.set()
        peer.serve(b"second")

    server, transport = serve(handler)
    response = post(transport)
    assert response.raw.read1() == b"data: 1\n\n"
    go.set()
    assert rest_sent.wait(WAIT)
    response.close()  # the caller stops reading; the rest is on the socket already
    assert response.raw.closed
    assert post(transport).content == b"second"  # not the first answer's leftovers
    assert server.accepted == 1


def test_closing_a_stream_whose_rest_has_not_arrived_closes_the_connection(serve):
    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
            peer.wait_eof()  # the rest is never sent
        else:
            peer.serve(b"second")

    server, transport = serve(handler)
    response = post(transport)
    assert response.raw.read1() == b"data: 1\n\n"
    started = time.monotonic()
    response.close()
    assert time.monotonic() - started < 0.5  # it did not wait for the rest
    assert response.raw.closed
    assert server.peers[0].eof.wait(WAIT)  # the first connection was closed
    assert post(transport).content == b"second"
    assert server.accepted == 2


def test_a_connection_close_answer_is_not_reused(serve):
    server, transport = serve(lambda peer: peer.serve(b"bye", "Connection: close"))
    for _ in range(2):
        assert post(transport).content == b"bye"
    assert server.accepted == 2
    assert server.peers[0].eof.wait(WAIT)  # the server kept it open; the client closed it


def interim_then_final(peer: Peer) -> None:
    """Answer each request with a 100 Continue, then (in a later write) a 201."""
    while peer.request() is not None:
        peer.send(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n",
                  answer(b'{"ok": true}', "X-Final: yes", status="201 Created"), pause=0.005)


def test_an_interim_100_continue_is_skipped(serve):
    _, transport = serve(interim_then_final)
    for _ in range(2):
        response = post(transport)
        assert (response.status_code, response.reason) == (201, "Created")
        assert dict(response.headers) == {"X-Final": "yes", "Content-Length": "12"}
        assert response.content == b'{"ok": true}'


def test_a_connection_whose_answer_began_with_100_continue_is_reused(serve):
    # the 1xx is part of the same exchange: once the final answer is read, the connection
    # is as reusable as after any other complete keep-alive answer
    server, transport = serve(interim_then_final)
    for _ in range(2):
        assert post(transport).content == b'{"ok": true}'
    assert server.accepted == 1


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_an_answer_ended_by_the_hang_up_is_read_whole(serve, version):
    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.send(f"{version} 200 OK\r\nContent-Type: application/json\r\n\r\n".encode(),
                      b'{"choices": ', b"[]}", pause=0.005)
        else:
            peer.serve(b"second")

    server, transport = serve(handler)
    response = post(transport)
    assert response.content == b'{"choices": []}'
    assert response.raw.closed
    assert post(transport).content == b"second"  # the pool still hands out connections
    assert server.accepted == 2


TEXT = b'{"choices": [{"message": {"content": "' + b"compressible " * 200 + b'"}}]}'
PACKED = {"gzip": gzip.compress(TEXT), "deflate": zlib.compress(TEXT)}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_is_decoded(serve, encoding):
    server, transport = serve(
        lambda peer: peer.serve(PACKED[encoding], f"Content-Encoding: {encoding}"))
    for _ in range(2):
        response = post(transport)
        assert response.headers["content-encoding"] == encoding
        assert response.content == TEXT
    assert server.accepted == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_stream_in_small_chunks_is_decoded_whole(serve, encoding):
    # The first chunk is only the compressed stream's header: it decodes to no bytes at all,
    # which must not read as the end of the body.
    packed = PACKED[encoding]
    first = 10 if encoding == "gzip" else 2  # the gzip or zlib header alone

    def handler(peer: Peer) -> None:
        while peer.request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Encoding: " + encoding.encode()
                      + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(packed[:first]),
                      b"".join(chunk(packed[i:i + 7]) for i in range(first, len(packed), 7))
                      + LAST_CHUNK, pause=0.005)

    server, transport = serve(handler)
    raw = post(transport).raw
    pieces = []
    while piece := raw.read1():
        pieces.append(piece)
    assert b"".join(pieces) == TEXT
    assert post(transport).content == TEXT
    assert server.accepted == 1


def test_a_corrupt_compressed_answer_is_a_connection_error(serve):
    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(answer(b"this is not gzip at all", "Content-Encoding: gzip"))
        peer.wait_eof()

    server, transport = serve(handler)
    with pytest.raises(requests.ConnectionError):
        post(transport).content  # noqa: B018 - from post() or from reading: the head came along
    assert server.peers[0].eof.wait(WAIT)


@pytest.mark.parametrize(
    "stale", [b"", b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n"])
def test_a_pooled_connection_the_server_gave_up_on_is_replaced(serve, stale):
    given_up = threading.Event()

    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.send(answer(b"first", "Connection: keep-alive"))
            if stale:
                peer.send(stale)  # unasked: the connection is no good any more
                given_up.set()
                peer.wait_eof()
            else:
                peer.sock.close()  # keep-alive was promised, yet it closes while idle
                given_up.set()
        else:
            peer.serve(b"second")

    server, transport = serve(handler)
    assert post(transport).content == b"first"
    assert given_up.wait(WAIT)
    response = post(transport)
    assert (response.status_code, response.content) == (200, b"second")
    assert server.accepted == 2
    assert len(server.requests) == 2  # nothing was written to the abandoned connection


# failures


def test_an_answer_cut_short_is_a_connection_error(serve):
    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.send(answer(b"x" * 100)[:-90])  # Content-Length 100, 10 bytes of it
        else:
            peer.serve(b"second")

    server, transport = serve(handler)
    response = post(transport)
    with pytest.raises(requests.ConnectionError):
        response.content  # noqa: B018
    assert response.raw.closed
    assert post(transport).content == b"second"
    assert server.accepted == 2


def test_a_chunked_answer_cut_mid_chunk_is_a_connection_error(serve):
    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n") + b"20\r\ndata: 2")

    _, transport = serve(handler)
    raw = post(transport).raw
    received = b""
    with pytest.raises(requests.ConnectionError):
        while True:
            piece = raw.read1()
            assert piece, "a cut answer ended as if it were whole"
            received += piece
    assert received == b"data: 1\n\ndata: 2"
    assert raw.closed


def test_an_answer_the_server_closes_before_its_head_is_a_connection_error(serve):
    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")

    _, transport = serve(handler)
    with pytest.raises(requests.ConnectionError):
        post(transport)


def test_a_reset_is_a_connection_error(serve):
    go = threading.Event()

    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.reset()  # before any answer
        elif peer.index == 1:
            peer.request()
            peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
            assert go.wait(WAIT)
            peer.reset()  # mid-answer

    _, transport = serve(handler)
    with pytest.raises(requests.ConnectionError):
        post(transport)
    raw = post(transport).raw
    assert raw.read1() == b"data: 1\n\n"
    go.set()
    with pytest.raises(requests.ConnectionError):
        raw.read1()
    assert raw.closed


def test_an_answer_that_is_not_http_is_a_connection_error(serve):
    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(b"hello\r\n\r\n")
        peer.wait_eof()

    server, transport = serve(handler)
    with pytest.raises(requests.ConnectionError):
        post(transport)
    assert server.peers[0].eof.wait(WAIT)  # the client closed it, not pooled it


def test_a_server_that_never_answers_is_a_read_timeout(serve):
    def handler(peer: Peer) -> None:
        peer.request()
        peer.wait_eof()

    server, transport = serve(handler)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        post(transport, timeout=urllib3.Timeout(connect=2, read=0.3))
    assert 0.25 <= time.monotonic() - started < 1.5
    assert server.peers[0].eof.wait(WAIT)  # the connection was closed, not pooled


def test_silence_mid_answer_is_a_read_timeout(serve):
    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        peer.wait_eof()

    server, transport = serve(handler)
    raw = post(transport, timeout=urllib3.Timeout(connect=2, read=0.3)).raw
    assert raw.read1() == b"data: 1\n\n"
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        raw.read1()
    assert 0.25 <= time.monotonic() - started < 1.5
    assert raw.closed
    assert server.peers[0].eof.wait(WAIT)


def test_a_refused_connection_is_a_connection_error():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = Transport(HTTPAdapter(max_retries=0), f"http://127.0.0.1:{port}{PATH}")
    with pytest.raises(requests.ConnectionError) as caught:
        post(transport)
    assert not isinstance(caught.value, requests.Timeout)


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping the SYN")
def test_a_connection_that_cannot_be_made_in_time_is_a_connect_timeout():
    # Linux drops a SYN to a listener whose accept queue is full: the connect hangs.
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())  # fills the queue; never accepted
        url = f"http://127.0.0.1:{listener.getsockname()[1]}{PATH}"
        transport = Transport(HTTPAdapter(max_retries=0), url)
        started = time.monotonic()
        with pytest.raises(requests.ConnectTimeout):
            post(transport, timeout=urllib3.Timeout(connect=0.2, read=2))
        assert time.monotonic() - started < 1.5
