"""The upstream transport over TLS: verified, pooled and read correctly, as providers are served.

Providers are HTTPS, and TLS changes what the transport sees: urllib3 verifies the certificate
while connecting, every write of the server arrives as a record that is decrypted whole, and
bytes already decrypted sit in the TLS layer where the operating system's poll cannot see them
(`_ready()` asks `sock.pending()` for those). Each test scripts the records a loopback TLS server
sends (one `sendall` is one record); its certificate comes from a trustme test CA that the
transport is told to trust the test CA the way requests is: `verify=<path of the bundle>`.
The server counts the TCP connections it accepted and keeps the requests it received.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

import pytest
import requests
import trustme
import urllib3
from requests.adapters import HTTPAdapter

from silk.upstream import transport as transport_module
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
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# certificates


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """The test CA the transport is made to trust."""
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> str:
    """The trusted CA's certificate as a PEM bundle on disk (what `verify=` names)."""
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(issuer: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server's TLS context with a certificate `issuer` signed for `names`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    issuer.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture(scope="module")
def good_context(ca) -> ssl.SSLContext:
    """The certificate a trusting client accepts for 127.0.0.1 and localhost."""
    return server_context(ca, "127.0.0.1", "localhost")


# the server


class Peer:
    """The server's side of one accepted TLS connection, driven by a test's script."""

    def __init__(self, server: TLSServer, sock: ssl.SSLSocket, index: int):
        self.server = server
        self.sock = sock
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
        while b"\r\n\r\n" not in self._buffer:
            data = self._recv()
            if not data:
                assert not self._buffer, f"the client left mid-request: {self._buffer!r}"
                return None
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
            rest += data
        raw = head + b"\r\n\r\n" + rest[:length]
        self._buffer = rest[length:]
        with self.server.lock:
            self.server.requests.append(raw)
        return raw

    def send(self, *parts: bytes, pause: float = 0.0) -> None:
        """Write the parts as separate TLS records, pausing between them."""
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            self.sock.sendall(part)

    def wait_eof(self) -> None:
        """Read until the client closes its side (it must, within WAIT)."""
        self.sock.settimeout(WAIT)
        while self._recv():
            pass

    def serve(self, body: bytes = b"next") -> None:
        """Answer every further request on this connection the same way, until the client leaves."""
        while self.request() is not None:
            self.send(answer(body))

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


class TLSServer:
    """A TLS server on 127.0.0.1: a thread per connection shakes hands, then runs `handler(peer)`.

    A handshake the client refuses is recorded in `refused`, not counted as a server error.
    """

    def __init__(self, handler: Callable[[Peer], None], context: ssl.SSLContext):
        self.handler = handler
        self.context = context
        self.lock = threading.Lock()
        self.peers: list[Peer] = []
        self.requests: list[bytes] = []  # each request's bytes, in arrival order
        self.refused: list[ssl.SSLError] = []  # handshakes that failed
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

    def url(self, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{PATH}"

    @property
    def accepted(self) -> int:
        """How many TCP connections the server accepted."""
        with self.lock:
            return len(self.peers)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(WAIT)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            with self.lock:
                peer = Peer(self, sock, len(self.peers))
                self.peers.append(peer)
            thread = threading.Thread(target=self._run, args=(peer,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, peer: Peer) -> None:
        try:
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
                # the TCP shutdown under the TLS layer wakes a handler still reading;
                # SSLSocket.shutdown would also drop the TLS state under that reader
                socket.socket.shutdown(peer.sock, socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in [self._acceptor, *self._threads])
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def serve(good_context, ca_file):
    """Start a scripted TLS server and a Transport posting to it; both are shut at the end.

    By default the server shows the trusted CA's certificate for 127.0.0.1 and localhost, the
    transport posts to https://localhost:PORT and trusts that CA (`trust=False`: requests'
    default bundle, certifi's; a path: that bundle).
    """
    started: list[tuple[TLSServer, Transport]] = []

    def start(handler: Callable[[Peer], None], context: ssl.SSLContext | None = None,
              host: str = "localhost", trust: bool | str = True) -> tuple[TLSServer, Transport]:
        server = TLSServer(handler, context or good_context)
        verify = ca_file if trust is True else (trust or True)
        transport = Transport(HTTPAdapter(max_retries=0), server.url(host), verify=verify)
        started.append((server, transport))
        return server, transport

    yield start
    for server, transport in started:
        transport.pool.close()
        server.stop()


def post(transport: Transport, timeout: urllib3.Timeout = TIMEOUT) -> requests.Response:
    return transport.post(BODY, HEADERS, timeout)


def keep_serving(body: bytes = b"next") -> Callable[[Peer], None]:
    def handler(peer: Peer) -> None:
        peer.serve(body)
    return handler


def pooled(transport: Transport) -> list:
    """The connections idle in the transport's pool (urllib3 fills free slots with None)."""
    return [conn for conn in list(transport.pool.pool.queue) if conn is not None]


def read_stream(raw) -> bytes:
    pieces = []
    while piece := raw.read1():
        pieces.append(piece)
    return b"".join(pieces)


# answers and the pool


@pytest.mark.parametrize("size", [40, 100_000])  # one TLS record; several (16 KiB at most each)
def test_a_content_length_answer_is_read_whole_and_its_tls_connection_reused(serve, size):
    body = bytes(itertools.islice(itertools.cycle(b'{"id": "chatcmpl-1"}'), size))
    server, transport = serve(keep_serving(body))
    first = post(transport)
    assert (first.status_code, first.reason) == (200, "OK")
    assert first.content == body
    assert first.raw.closed  # read to its end: the connection went back to the pool
    assert len(pooled(transport)) == 1
    assert post(transport).content == body
    assert server.accepted == 1
    assert server.requests == [
        f"POST {PATH} HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
        "Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY] * 2


def test_a_chunked_stream_in_several_records_is_read_exactly_and_the_connection_reused(serve):
    go = threading.Event()

    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        assert go.wait(WAIT)
        # records split mid-size, mid-data and mid-CRLF, then a trailer
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
    assert read_stream(response.raw) == b"data: 22\n\ndata: 333333333333333\n\n"
    assert response.raw.read1() == b""  # the end stays the end
    assert response.raw.closed
    assert post(transport).content == b"after"
    assert server.accepted == 1


def rest_then_serve(go: threading.Event, rest_sent: threading.Event, *rest: bytes):
    """Send a stream's first event, on `go` the rest of it (as records), then keep serving."""
    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        assert go.wait(WAIT)
        peer.send(*rest)
        rest_sent.set()
        peer.serve(b"second")
    return handler


@pytest.mark.parametrize("records", [1, 3])
def test_closing_a_stream_whose_rest_has_arrived_keeps_the_tls_connection(serve, records):
    go, rest_sent = threading.Event(), threading.Event()
    rest = [chunk(b"data: 2\n\n"), chunk(b"data: [DONE]\n\n"), LAST_CHUNK]
    if records == 1:
        rest = [b"".join(rest)]
    server, transport = serve(rest_then_serve(go, rest_sent, *rest))
    response = post(transport)
    assert response.raw.read1() == b"data: 1\n\n"
    go.set()
    assert rest_sent.wait(WAIT)
    time.sleep(0.05)  # sent is not yet arrived: let loopback deliver the records
    response.close()  # the caller stops reading; the rest is on the socket already
    assert response.raw.closed
    assert len(pooled(transport)) == 1
    assert post(transport).content == b"second"  # not the first answer's leftovers
    assert server.accepted == 1


def test_closing_a_stream_whose_rest_is_decrypted_already_keeps_the_connection(
        serve, monkeypatch):
    # With 64 KiB reads a TLS record (16 KiB at most) is always taken whole. Small reads leave
    # the rest of a record decrypted inside the TLS layer, where the operating system's poll
    # does not see it: only `sock.pending()` tells close() that the rest of the answer is here.
    monkeypatch.setattr(transport_module, "_READ_SIZE", 8)
    go, rest_sent = threading.Event(), threading.Event()
    rest = chunk(b"data: 2\n\n") + chunk(b"data: [DONE]\n\n") + LAST_CHUNK  # one record
    server, transport = serve(rest_then_serve(go, rest_sent, rest))
    response = post(transport)
    first = b""
    while len(first) < len(b"data: 1\n\n"):
        first += response.raw.read1()
    assert first == b"data: 1\n\n"
    go.set()
    assert rest_sent.wait(WAIT)
    time.sleep(0.05)  # let loopback deliver the record
    response.close()  # reads 8 bytes of the record; the rest is only `pending()`
    assert response.raw.closed
    assert len(pooled(transport)) == 1
    assert post(transport).content == b"second"
    assert server.accepted == 1


def test_a_pooled_connection_with_stale_bytes_decrypted_already_is_replaced(
        serve, monkeypatch):
    # The answer and an unasked 408 come in one record; the answer ends exactly where a read
    # does, so the 408 stays decrypted in the TLS layer while the connection goes idle. The
    # pool's check must see it (`pending()`) and drop the connection rather than reuse it.
    monkeypatch.setattr(transport_module, "_READ_SIZE", 8)
    given_up = threading.Event()
    stale = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n"
    first = next(whole for pad in range(16)
                 if len(whole := answer(b"first" + b" " * pad)) % 8 == 0)

    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.send(first + stale)
            given_up.set()
            peer.wait_eof()
        else:
            peer.serve(b"second")

    server, transport = serve(handler)
    assert post(transport).content.rstrip() == b"first"
    assert len(pooled(transport)) == 1  # it looked whole and reusable when the answer ended
    assert given_up.wait(WAIT)
    response = post(transport)
    assert (response.status_code, response.content) == (200, b"second")
    assert server.accepted == 2
    assert len(server.requests) == 2  # nothing was written to the abandoned connection


def test_closing_a_stream_whose_rest_has_not_arrived_closes_the_tls_connection(serve):
    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
            peer.wait_eof()  # the rest is never sent
        else:
            peer.serve(b"second")

    server, transport = serve(handler)
    response = post(transport)  # read timeout 2 s: close() must not wait for it
    assert response.raw.read1() == b"data: 1\n\n"
    started = time.monotonic()
    response.close()
    assert time.monotonic() - started < 0.5  # it did not wait for the rest
    assert response.raw.closed
    assert pooled(transport) == []
    assert server.peers[0].eof.wait(WAIT)  # the first connection was closed
    assert post(transport).content == b"second"
    assert server.accepted == 2


# certificates


@pytest.mark.parametrize("trust", ["default bundle", "another CA"])
def test_a_certificate_from_an_untrusted_ca_is_an_ssl_error(serve, tmp_path, trust):
    bundle: bool | str = False  # requests' default bundle, certifi's
    if trust == "another CA":
        path = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(path))
        bundle = str(path)
    server, transport = serve(keep_serving(b"never"), trust=bundle)
    with pytest.raises(requests.exceptions.SSLError) as caught:
        post(transport)
    assert isinstance(caught.value, requests.ConnectionError)
    assert "certificate verify failed" in str(caught.value)
    assert pooled(transport) == []
    assert server.handshake_failed.wait(WAIT)  # the client refused it while shaking hands
    assert server.requests == []  # nothing was sent over the unverified connection


def test_after_a_refused_certificate_the_pool_still_connects(serve, ca_file):
    server, transport = serve(keep_serving(b"ok"), trust=False)
    with pytest.raises(requests.exceptions.SSLError):
        post(transport)
    trusting = Transport(HTTPAdapter(max_retries=0), server.url("localhost"), verify=ca_file)
    assert post(trusting).content == b"ok"
    trusting.pool.close()
    assert server.accepted == 2
    assert len(server.refused) == 1


@pytest.mark.parametrize(("names", "host"), [
    (("other.example",), "localhost"),  # a name the certificate does not carry
    (("localhost",), "127.0.0.1"),  # an IP address the certificate does not carry
    (("127.0.0.1",), "localhost"),  # the address is right, yet the name asked for is not
])
def test_a_certificate_for_another_host_is_an_ssl_error(serve, ca, names, host):
    server, transport = serve(keep_serving(b"never"), server_context(ca, *names), host=host)
    with pytest.raises(requests.exceptions.SSLError) as caught:
        post(transport)
    assert "certificate verify failed" in str(caught.value)
    assert pooled(transport) == []
    assert server.requests == []


def test_a_certificate_for_the_ip_address_is_accepted_by_ip(serve, ca):
    server, transport = serve(keep_serving(b"ok"), server_context(ca, "127.0.0.1"),
                              host="127.0.0.1")
    assert post(transport).content == b"ok"
    assert server.requests[0].startswith(
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode())


# failures


def test_a_tls_server_that_never_answers_is_a_read_timeout(serve):
    def handler(peer: Peer) -> None:
        peer.request()
        peer.wait_eof()

    server, transport = serve(handler)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        post(transport, timeout=urllib3.Timeout(connect=2, read=0.3))
    assert 0.25 <= time.monotonic() - started < 1.5
    assert pooled(transport) == []
    assert server.peers[0].eof.wait(WAIT)  # the connection was closed, not pooled


def test_a_tls_server_stalling_mid_answer_is_a_read_timeout(serve):
    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
            peer.wait_eof()
        else:
            peer.serve(b"second")

    server, transport = serve(handler)
    raw = post(transport, timeout=urllib3.Timeout(connect=2, read=0.3)).raw
    assert raw.read1() == b"data: 1\n\n"
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        raw.read1()
    assert 0.25 <= time.monotonic() - started < 1.5
    assert raw.closed
    assert server.peers[0].eof.wait(WAIT)
    assert post(transport).content == b"second"
    assert server.accepted == 2


@pytest.mark.parametrize("how", ["close_notify", "bare close", "reset"])
def test_a_tls_connection_cut_mid_body_is_a_connection_error(serve, how):
    head_read = threading.Event()

    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.request()
            peer.send(answer(b"x" * 100)[:-90])  # Content-Length 100, 10 bytes of it
            assert head_read.wait(WAIT)  # a reset could otherwise beat the head to the client
            peer.cut(how)
        else:
            peer.serve(b"second")

    server, transport = serve(handler)
    response = post(transport)
    head_read.set()
    with pytest.raises(requests.ConnectionError):
        response.content  # noqa: B018
    assert response.raw.closed
    assert post(transport).content == b"second"
    assert server.accepted == 2


@pytest.mark.parametrize("how", ["close_notify", "bare close", "reset"])
def test_a_tls_stream_cut_mid_chunk_is_a_connection_error(serve, how):
    go = threading.Event()

    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        assert go.wait(WAIT)
        peer.send(b"20\r\ndata: 2")
        peer.cut(how)

    _, transport = serve(handler)
    raw = post(transport).raw
    assert raw.read1() == b"data: 1\n\n"
    go.set()
    received = b""
    with pytest.raises(requests.ConnectionError):
        while True:
            piece = raw.read1()
            assert piece, "a cut answer ended as if it were whole"
            received += piece
    assert received in (b"", b"data: 2")  # a reset may discard what was not read yet
    assert raw.closed


def test_a_tls_handshake_that_stalls_is_a_timeout():
    # The TCP connection is made (the kernel queues it) but no TLS server ever answers the
    # ClientHello. The connect timeout bounds the handshake; HTTPAdapter.send raises
    # requests.ReadTimeout here, and callers count any requests.Timeout as the provider
    # being slow (UpstreamClient.open), not unreachable.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"https://127.0.0.1:{listener.getsockname()[1]}{PATH}"
        transport = Transport(HTTPAdapter(max_retries=0), url)
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            post(transport, timeout=urllib3.Timeout(connect=0.3, read=2))
        assert time.monotonic() - started < 1.5
        assert pooled(transport) == []
