"""Request bodies whose HTTP framing is broken, sent on raw sockets to the gateway under gunicorn.

A chunked body with a bad chunk size, a chunk without its CRLF or a bad chunk extension, and a
body cut short by a client that half-closes, are the client's mistakes: each gets a 400 in its
surface's envelope (never a 500, never "internal_error"), nothing reaches the provider, no
hold is taken and nothing is logged as the gateway's error.
"""

from __future__ import annotations

import contextlib
import json
import socket

import pytest

from tests.reliability.helpers import body, call, errors_logged, open_reservations, stream_ok

pytestmark = pytest.mark.slow

_BROKEN_CHUNKS = {
    "size_not_hex": lambda data: b"zz\r\n" + data + b"\r\n0\r\n\r\n",
    "size_negative": lambda data: b"-5\r\n" + data + b"\r\n0\r\n\r\n",
    "no_crlf_after_data": lambda data: b"%x\r\n" % len(data) + data + b"XX0\r\n\r\n",
    "bad_extension": lambda data: b"%x;=\r\n" % len(data) + data + b"\r\n0\r\n\r\n",
}


def _exchange(gateway, request: bytes, *, half_close: bool = False) -> bytes:
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in answer or not _complete(answer):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        return answer


def _complete(answer: bytes) -> bool:
    head, _, rest = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":")[1])
    return False


def _head(path: str, key: str, framing: bytes) -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + key.encode() + b"\r\nx-api-key: " + key.encode()
            + b"\r\nContent-Type: application/json\r\n" + framing + b"\r\n")


def _status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer[:200]
    return int(head.split(b" ")[1]), json.loads(rest)


def _assert_untouched(app, accounts, upstream, gateway, acct) -> None:
    assert upstream.requests == []
    assert open_reservations(app) == [] and accounts.usage_records(acct.id) == []
    assert errors_logged(gateway) == []
    status, text = call(gateway.url, acct.key, body("still serving"))
    assert status == 200 and stream_ok(text)
    assert accounts.audit() == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_broken_chunked_body_is_a_400_in_the_surfaces_envelope(app, accounts, upstream,
                                                                  gateway, path):
    acct = accounts.make(credit="1")
    payload = json.dumps(body("framed badly", stream=False)
                         if path.endswith("completions") else
                         {"model": "deepseek-chat", "max_tokens": 50,
                          "messages": [{"role": "user", "content": "framed badly"}]}).encode()
    for name, frame in _BROKEN_CHUNKS.items():
        answer = _exchange(gateway, _head(path, acct.key, b"Transfer-Encoding: chunked\r\n")
                           + frame(payload))
        status, envelope = _status_and_body(answer)
        assert status == 400, (name, answer[:300])
        if path == "/v1/messages":  # Anthropic's envelope
            assert envelope["type"] == "error", name
            assert envelope["error"]["type"] == "invalid_request_error", name
        else:
            assert envelope["error"]["type"] == "invalid_request_error", name
            assert envelope["error"]["code"] == "malformed_body", (name, envelope)
    _assert_untouched(app, accounts, upstream, gateway, acct)


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_body_cut_short_by_a_half_close_is_a_400_not_an_internal_error(app, accounts,
                                                                        upstream, gateway,
                                                                        chunked):
    acct = accounts.make(credit="1")
    payload = json.dumps(body("cut short", stream=False)).encode()
    half = payload[:len(payload) // 2]
    framing = (b"Transfer-Encoding: chunked\r\n", b"%x\r\n" % len(payload) + half) if chunked \
        else (b"Content-Length: %d\r\n" % len(payload), half)
    answer = _exchange(gateway, _head("/v1/chat/completions", acct.key, framing[0])
                       + framing[1], half_close=True)
    status, envelope = _status_and_body(answer)
    assert status == 400, answer[:300]
    assert envelope["error"]["type"] == "invalid_request_error"
    assert envelope["error"]["code"] == "incomplete_body", envelope
    _assert_untouched(app, accounts, upstream, gateway, acct)
