"""The upstream transport speaks HTTP/1.1 correctly on a real socket, byte for byte.

silk.upstream.transport writes requests itself and parses answers with llhttp instead of going
through http.client, so everything http.client used to get right is ours to prove: the bytes of
the request, every way an answer can be framed (length, chunks, the hang-up), when a connection
may go back to the pool and when it must not, and which requests exception each failure becomes.
A mocked socket would only echo our own assumptions back, so each test here scripts the exact
bytes a tiny loopback server (tests/upstream/scripted.py) answers, and the server counts the TCP
connections it accepted and keeps the raw requests it received.
"""

from __future__ import annotations

import gzip
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from silk.upstream.transport import SilentAfterRequest, Transport
from tests.upstream import scripted
from tests.upstream.scripted import WAIT, Peer, answer, chunk, keep_serving, post


@pytest.fixture
def serve():
    """Start a scripted server and a Transport posting to it; both are shut at the end."""
    with scripted.serving() as start:
        yield start


# the request


def test_the_request_is_one_well_formed_write(serve):
    server, transport = serve(keep_serving(b"{}"))
    headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json",
               "Accept": "application/json", "X-Trace": "abc"}
    assert post(transport, headers).content == b"{}"
    assert server.requests == [
        f"POST {scripted.PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
        "Accept: application/json\r\nX-Trace: abc\r\n"
        f"Content-Length: {len(scripted.BODY)}\r\n\r\n".encode() + scripted.BODY]
    assert server.reads == [[server.requests[0]]]  # head and body came in one piece


def test_a_content_length_the_caller_gave_is_not_repeated(serve):
    server, transport = serve(keep_serving(b"{}"))
    headers = {"Content-Length": str(len(scripted.BODY)), "User-Agent": "SilkGateway"}
    post(transport, headers).close()
    assert server.requests == [
        f"POST {scripted.PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Length: {len(scripted.BODY)}\r\nUser-Agent: SilkGateway\r\n\r\n".encode()
        + scripted.BODY]


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
    scripted.check_a_stream_in_pieces_is_decoded_as_it_arrives(serve)


def test_closing_a_stream_whose_rest_has_arrived_keeps_the_connection(serve):
    go, rest_sent = threading.Event(), threading.Event()
    rest = chunk(b"data: 2\n\n") + chunk(b"data: [DONE]\n\n") + scripted.LAST_CHUNK
    server, transport = serve(scripted.rest_then_serve(go, rest_sent, rest))
    response = post(transport)
    assert response.raw.read1() == scripted.FIRST_EVENT
    go.set()
    assert rest_sent.wait(WAIT)
    response.close()  # the caller stops reading; the rest is on the socket already
    assert response.raw.closed
    assert post(transport).content == b"second"  # not the first answer's leftovers
    assert server.accepted == 1


def test_closing_a_stream_whose_rest_has_not_arrived_closes_the_connection(serve):
    scripted.check_closing_a_stream_before_its_rest_closes_the_connection(serve)


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
    def hang_up(peer: Peer) -> None:
        peer.request()
        peer.send(f"{version} 200 OK\r\nContent-Type: application/json\r\n\r\n".encode(),
                  b'{"choices": ', b"[]}", pause=0.005)

    server, transport = serve(scripted.first_then_serve(hang_up))
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
                      + scripted.LAST_CHUNK, pause=0.005)

    server, transport = serve(handler)
    assert scripted.read_stream(post(transport).raw) == TEXT
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

    def give_up(peer: Peer) -> None:
        peer.request()
        peer.send(answer(b"first", "Connection: keep-alive"))
        if stale:
            peer.send(stale)  # unasked: the connection is no good any more
            given_up.set()
            peer.wait_eof()
        else:
            peer.sock.close()  # keep-alive was promised, yet it closes while idle
            given_up.set()

    server, transport = serve(scripted.first_then_serve(give_up))
    assert post(transport).content == b"first"
    scripted.check_the_given_up_connection_is_replaced(server, transport, given_up)


# failures


def test_an_answer_cut_short_is_a_connection_error(serve):
    server, transport = serve(scripted.first_then_serve(scripted.cut_short))
    response = post(transport)
    with pytest.raises(requests.ConnectionError):
        response.content  # noqa: B018
    assert response.raw.closed
    assert post(transport).content == b"second"
    assert server.accepted == 2


def test_a_chunked_answer_cut_mid_chunk_is_a_connection_error(serve):
    def handler(peer: Peer) -> None:
        peer.start_stream()
        peer.send(b"20\r\ndata: 2")

    _, transport = serve(handler)
    assert scripted.read_until_cut(post(transport).raw) == scripted.FIRST_EVENT + b"data: 2"


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
            peer.start_stream()
            assert go.wait(WAIT)
            peer.reset()  # mid-answer

    _, transport = serve(handler)
    with pytest.raises(requests.ConnectionError):
        post(transport)
    raw = post(transport).raw
    assert raw.read1() == scripted.FIRST_EVENT
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
    scripted.check_a_server_that_never_answers_is_a_read_timeout(serve)


def test_silence_mid_answer_is_a_read_timeout(serve):
    scripted.check_silence_mid_answer_is_a_read_timeout(serve)


def _silent_then(*parts: bytes, quiet: float) -> Callable[[Peer], None]:
    """Read the request; send each part after `quiet` seconds of silence; then serve."""
    def handler(peer: Peer) -> None:
        peer.request()
        for part in parts:
            time.sleep(quiet)
            peer.send(part)
        peer.serve(b"second")
    return handler


@pytest.mark.parametrize("parts", [
    [answer(b"whole")],  # the head only once the answer is complete
    [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"whole"],  # the head at once
])
def test_the_first_body_byte_may_take_the_wait_given(serve, parts):
    """A provider that sends a JSON answer only once it is complete is silent while it
    generates it: until the body begins, each wait may last `first_byte`, not the read
    timeout; the connection is reused after it."""
    server, transport = serve(_silent_then(*parts, quiet=0.6))
    response = scripted.post(transport, timeout=scripted.SHORT_READ, first_byte=2.0)
    assert response.content == b"whole"
    assert scripted.post(transport).content == b"second"
    assert server.accepted == 1


def test_the_first_body_byte_waits_once_however_the_head_and_body_come(serve):
    """The head after 1.2 s, the body 1.2 s later: each wait is under `first_byte` (1.8 s),
    the two are not, and the body must begin within it (a JSON answer's one wait). The read
    waits what is left of it, about 0.6 s: not the read timeout (0.1 s), nor a fresh
    `first_byte` (the body would come), with slack for a test process paused a few tenths."""
    server, transport = serve(_silent_then(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                                           b"whole", quiet=1.2))
    response = scripted.post(transport, timeout=urllib3.Timeout(connect=2, read=0.1),
                             first_byte=1.8)
    with scripted.lasting(0.3, 1.15), pytest.raises(requests.ReadTimeout):
        response.raw.read1()
    assert server.peers[0].eof.wait(WAIT)


def test_the_wait_for_the_first_body_byte_is_bounded_too(serve):
    server, transport = serve(scripted.never_answer)
    with scripted.lasting(0.55, 1.5), pytest.raises(SilentAfterRequest):
        scripted.post(transport, timeout=scripted.SHORT_READ, first_byte=0.6)
    assert server.peers[0].eof.wait(WAIT)


def test_once_the_body_began_each_silence_is_the_read_timeout(serve):
    server, transport = serve(scripted.first_then_serve(scripted.stall_mid_stream))
    raw = scripted.post(transport, timeout=scripted.SHORT_READ, first_byte=3.0).raw
    assert raw.read1() == scripted.FIRST_EVENT
    with scripted.lasting(0.25, 1.5), pytest.raises(requests.ReadTimeout):
        raw.read1()
    assert raw.closed
    assert server.peers[0].eof.wait(WAIT)


def test_a_refused_connection_is_a_connection_error():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = Transport(HTTPAdapter(max_retries=0), f"http://127.0.0.1:{port}{scripted.PATH}")
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
        url = f"http://127.0.0.1:{listener.getsockname()[1]}{scripted.PATH}"
        transport = Transport(HTTPAdapter(max_retries=0), url)
        with scripted.lasting(0, 1.5), pytest.raises(requests.ConnectTimeout):
            post(transport, timeout=urllib3.Timeout(connect=0.2, read=2))
