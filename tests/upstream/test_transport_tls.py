"""The upstream transport over TLS: verified, pooled and read correctly, as providers are served.

Providers are HTTPS, and TLS changes what the transport sees: urllib3 verifies the certificate
while connecting, every write of the server arrives as a record that is decrypted whole, and
bytes already decrypted sit in the TLS layer where the operating system's poll cannot see them
(`silk.sockets.readable_now()` asks `sock.pending()` for those). Each test scripts the records
a loopback TLS server (tests/upstream/scripted.py) sends (one `sendall` is one record); its
certificate comes from a trustme test CA that the transport is told to trust the way requests
is: `verify=<path of the bundle>`. The server counts the TCP connections it accepted and keeps
the requests it received.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time

import pytest
import requests
import trustme
import urllib3
from requests.adapters import HTTPAdapter

from silk.upstream import transport as transport_module
from silk.upstream.transport import Transport
from tests.upstream import scripted
from tests.upstream.scripted import WAIT, Peer, answer, chunk, keep_serving, pooled, post

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


@pytest.fixture
def serve(good_context, ca_file):
    """Start a scripted TLS server and a Transport posting to it; both are shut at the end.

    By default the server shows the trusted CA's certificate for 127.0.0.1 and localhost, the
    transport posts to https://localhost:PORT and trusts that CA (`trust=False`: requests'
    default bundle, certifi's; a path: that bundle).
    """
    with scripted.serving() as start:
        def start_tls(handler, context: ssl.SSLContext | None = None, host: str = "localhost",
                      trust: bool | str = True):
            verify = ca_file if trust is True else (trust or True)
            return start(handler, context or good_context, host, verify)

        yield start_tls


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
        f"POST {scripted.PATH} HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
        "Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(scripted.BODY)}\r\n\r\n".encode() + scripted.BODY] * 2


def test_a_chunked_stream_in_several_records_is_read_exactly_and_the_connection_reused(serve):
    scripted.check_a_stream_in_pieces_is_decoded_as_it_arrives(serve)  # each piece a record


def close_once_the_rest_arrived(serve, *rest: bytes, small_reads: bool = False) -> None:
    """Stream the first event, then `rest` as records, and close the response once they are
    on the socket: the connection goes back to the pool and serves the next request."""
    go, rest_sent = threading.Event(), threading.Event()
    server, transport = serve(scripted.rest_then_serve(go, rest_sent, *rest))
    response = post(transport)
    first = response.raw.read1()
    while small_reads and len(first) < len(scripted.FIRST_EVENT):
        first += response.raw.read1()
    assert first == scripted.FIRST_EVENT
    go.set()
    assert rest_sent.wait(WAIT)
    time.sleep(0.05)  # sent is not yet arrived: let loopback deliver the records
    response.close()  # the caller stops reading; the rest is on the socket already
    assert response.raw.closed
    assert len(pooled(transport)) == 1
    assert post(transport).content == b"second"  # not the first answer's leftovers
    assert server.accepted == 1


@pytest.mark.parametrize("records", [1, 3])
def test_closing_a_stream_whose_rest_has_arrived_keeps_the_tls_connection(serve, records):
    rest = [chunk(b"data: 2\n\n"), chunk(b"data: [DONE]\n\n"), scripted.LAST_CHUNK]
    if records == 1:
        rest = [b"".join(rest)]
    close_once_the_rest_arrived(serve, *rest)


def test_closing_a_stream_whose_rest_is_decrypted_already_keeps_the_connection(
        serve, monkeypatch):
    # With 64 KiB reads a TLS record (16 KiB at most) is always taken whole. Small reads leave
    # the rest of a record decrypted inside the TLS layer, where the operating system's poll
    # does not see it: only `sock.pending()` tells close() that the rest of the answer is here
    # (close() reads 8 bytes of the record; the rest is only `pending()`).
    monkeypatch.setattr(transport_module, "_READ_SIZE", 8)
    rest = chunk(b"data: 2\n\n") + chunk(b"data: [DONE]\n\n") + scripted.LAST_CHUNK  # one record
    close_once_the_rest_arrived(serve, rest, small_reads=True)


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

    def give_up(peer: Peer) -> None:
        peer.request()
        peer.send(first + stale)
        given_up.set()
        peer.wait_eof()

    server, transport = serve(scripted.first_then_serve(give_up))
    assert post(transport).content.rstrip() == b"first"
    assert len(pooled(transport)) == 1  # it looked whole and reusable when the answer ended
    scripted.check_the_given_up_connection_is_replaced(server, transport, given_up)


def test_closing_a_stream_whose_rest_has_not_arrived_closes_the_tls_connection(serve):
    scripted.check_closing_a_stream_before_its_rest_closes_the_connection(serve)


# certificates


def assert_refused(server, transport) -> None:
    """The transport refuses the server's certificate while shaking hands, and sends nothing."""
    with pytest.raises(requests.exceptions.SSLError) as caught:
        post(transport)
    assert isinstance(caught.value, requests.ConnectionError)
    assert "certificate verify failed" in str(caught.value)
    assert pooled(transport) == []
    assert server.handshake_failed.wait(WAIT)  # the client refused it while shaking hands
    assert server.requests == []  # nothing was sent over the unverified connection


@pytest.mark.parametrize("trust", ["default bundle", "another CA"])
def test_a_certificate_from_an_untrusted_ca_is_an_ssl_error(serve, tmp_path, trust):
    bundle: bool | str = False  # requests' default bundle, certifi's
    if trust == "another CA":
        path = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(path))
        bundle = str(path)
    server, transport = serve(keep_serving(b"never"), trust=bundle)
    assert_refused(server, transport)


def test_after_a_refused_certificate_the_pool_still_connects(serve, ca_file):
    server, transport = serve(keep_serving(b"ok"), trust=False)
    assert_refused(server, transport)
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
    assert_refused(server, transport)


def test_a_certificate_for_the_ip_address_is_accepted_by_ip(serve, ca):
    server, transport = serve(keep_serving(b"ok"), server_context(ca, "127.0.0.1"),
                              host="127.0.0.1")
    assert post(transport).content == b"ok"
    assert server.requests[0].startswith(
        f"POST {scripted.PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode())


# failures


def test_a_tls_server_that_never_answers_is_a_read_timeout(serve):
    scripted.check_a_server_that_never_answers_is_a_read_timeout(serve)


def test_a_tls_server_stalling_mid_answer_is_a_read_timeout(serve):
    scripted.check_silence_mid_answer_is_a_read_timeout(serve)


CUTS = ["close_notify", "bare close", "reset"]


@pytest.mark.parametrize("how", CUTS)
def test_a_tls_connection_cut_mid_body_is_a_connection_error(serve, how):
    head_read = threading.Event()

    def cut_after_the_head(peer: Peer) -> None:
        scripted.cut_short(peer)
        assert head_read.wait(WAIT)  # a reset could otherwise beat the head to the client
        peer.cut(how)

    server, transport = serve(scripted.first_then_serve(cut_after_the_head))
    response = post(transport)
    head_read.set()
    with pytest.raises(requests.ConnectionError):
        response.content  # noqa: B018
    assert response.raw.closed
    assert post(transport).content == b"second"
    assert server.accepted == 2


@pytest.mark.parametrize("how", CUTS)
def test_a_tls_stream_cut_mid_chunk_is_a_connection_error(serve, how):
    go = threading.Event()

    def handler(peer: Peer) -> None:
        peer.start_stream()
        assert go.wait(WAIT)
        peer.send(b"20\r\ndata: 2")
        peer.cut(how)

    _, transport = serve(handler)
    raw = post(transport).raw
    assert raw.read1() == scripted.FIRST_EVENT
    go.set()
    # a reset may discard what was not read yet
    assert scripted.read_until_cut(raw) in (b"", b"data: 2")


def test_a_tls_handshake_that_stalls_is_a_timeout():
    # The TCP connection is made (the kernel queues it) but no TLS server ever answers the
    # ClientHello. The connect timeout bounds the handshake; HTTPAdapter.send raises
    # requests.ReadTimeout here, and callers count any requests.Timeout as the provider
    # being slow (UpstreamClient.open), not unreachable.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"https://127.0.0.1:{listener.getsockname()[1]}{scripted.PATH}"
        transport = Transport(HTTPAdapter(max_retries=0), url)
        with scripted.lasting(0, 1.5), pytest.raises(requests.Timeout):
            post(transport, timeout=urllib3.Timeout(connect=0.3, read=2))
        assert pooled(transport) == []
