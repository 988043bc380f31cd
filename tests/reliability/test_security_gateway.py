"""Security properties only a real gunicorn process can show: what reaches its logs and its
database, and how its HTTP parser bounds a request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket

import pytest
import requests
from sqlalchemy import select

from silk.account.keys import hash_secret
from tests.reliability.helpers import CHAT, body, call, stream_ok
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def database_url(pg_url):
    """PostgreSQL, the production database, whose rows are searched for secrets."""
    return pg_url


def _dump_database(app) -> str:
    """Every row of every table as text, to search for secrets."""
    from silk.extensions import db

    chunks = []
    with app.app_context(), db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


def test_keys_are_hashed_at_rest_never_logged_never_forwarded(app, accounts, upstream,
                                                              gateway_env, database_url,
                                                              tmp_path, redis_url):
    env = {**gateway_env, "SILK_REGISTRATION": "open", "REDIS_URL": redis_url,
           # A proxy in the environment must not capture upstream traffic.
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "", "no_proxy": ""}
    acct = accounts.make(credit="1")
    prompt = "the secret prompt words 7d1f0c"
    log = tmp_path / "gunicorn.log"
    with Gateway(database_url, env, workers=2, log_path=log) as gateway:
        url = gateway.url
        ok = [
            requests.post(url + CHAT, json=body(prompt, stream=False),
                          headers={"Authorization": f"Bearer {acct.key}"}, timeout=10),
            requests.post(url + CHAT, json=body(prompt), headers={"X-Api-Key": acct.key},
                          timeout=10),
            requests.get(url + "/v1/balance", params={"api_key": acct.key}, timeout=10),
            requests.get(url + "/v1/usage?api_key=" + acct.key, timeout=10),
        ]
        made = requests.post(url + "/v1/keys", json={"name": "second"}, timeout=10,
                             headers={"Authorization": f"Bearer {acct.key}"})
        registered = requests.post(url + "/v1/register", json={"email": "new@example.com"},
                                   timeout=10)
        wrong = acct.key[:-4] + "abcd"
        bad = [requests.get(url + "/v1/balance", params={"api_key": wrong}, timeout=10),
               requests.post(url + CHAT, json=body(prompt), timeout=10,
                             headers={"Authorization": f"Bearer {wrong}"})]
    assert [r.status_code for r in ok] == [200] * 4, [r.text for r in ok]
    assert made.status_code == 201 and registered.status_code == 201
    assert [r.status_code for r in bad] == [401, 401]
    secrets = [acct.key, made.json()["key"], registered.json()["api_key"], wrong]

    logged = log.read_text()
    assert '"request_id"' in logged  # the log did capture the requests
    for secret in secrets:
        assert secret not in logged
    assert prompt not in logged

    stored = _dump_database(app)
    for secret in secrets:
        assert secret not in stored
    assert hash_secret(acct.key) == hashlib.sha256(acct.key.encode()).hexdigest()
    assert hash_secret(acct.key) in stored  # what is kept is the hash

    # The provider sees the operator's key, never the client's.
    for record in upstream.requests:
        assert record.key in ("sk-ds-good", "sk-ds-second")
        assert acct.key not in record.raw_body.decode() + json.dumps(record.headers)


def test_request_sizes_are_bounded_under_gunicorn(app, accounts, upstream, gateway):
    acct = accounts.make(credit="1")
    host, port = gateway.url.removeprefix("http://").split(":")

    def raw(request: bytes) -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            with contextlib.suppress(OSError):  # it may answer before reading it all
                sock.sendall(request)
            return sock.recv(4096)

    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(80))
    chunked = raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + acct.key.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    # No length is no loophole: at most MAX_CONTENT_LENGTH of a chunked body is read, the
    # rest makes it too large, and nothing is passed on.
    assert chunked.split(b" ")[1] == b"413", chunked[:200]
    assert upstream.requests == []
    header = raw(b"GET /v1/balance HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert header.split(b" ")[1] in (b"400", b"431"), header[:100]
    line = raw(b"GET /v1/balance?" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert line.split(b" ")[1] in (b"400", b"414"), line[:100]
    status, answer = call(gateway.url, acct.key, body("still fine"))
    assert status == 200 and stream_ok(answer)
    assert accounts.audit() == []


def test_repeated_key_headers_under_gunicorn(app, accounts, upstream, gateway):
    """gunicorn hands a repeated header to the app as one, its values joined by ','; two
    Authorization headers with different keys were checked as the key "a,Bearer b" and
    refused as invalid, a failed guess. They are a 401 saying several keys were sent; the
    same key twice is that key."""
    acct = accounts.make(credit="1")
    other = "sk-" + "o" * 43
    host, port = gateway.url.removeprefix("http://").split(":")

    def get(*headers: str) -> tuple[int, dict]:
        lines = "".join(f"{header}\r\n" for header in headers)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET /v1/balance HTTP/1.1\r\nHost: x\r\n{lines}"
                         "Connection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), json.loads(rest)

    for headers in ((f"Authorization: Bearer {acct.key}", f"Authorization: Bearer {other}"),
                    (f"x-api-key: {other}", f"x-api-key: {acct.key}")):
        status, answer = get(*headers)
        assert status == 401, answer
        assert answer["error"]["code"] == "several_api_keys"
        assert acct.key not in answer["error"]["message"]
    status, answer = get(f"Authorization: Bearer {acct.key}", f"Authorization: Bearer {acct.key}")
    assert status == 200 and answer["balance"] == 1
    assert upstream.requests == []


def _read_answer(sock: socket.socket) -> bytes:
    """What the gateway sends before it closes (b"" if it just closes)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("trickle,chunked", [(False, False), (True, False), (False, True)],
                         ids=["stalled", "trickle", "chunked"])
def test_a_body_that_does_not_arrive_is_cut_off(app, accounts, upstream, gateway_env,
                                                database_url, tmp_path, trickle, chunked):
    """Headers, then half a body and silence (or a byte now and then): the gateway answers
    408 (or closes) within SILK_BODY_READ_TIMEOUT and serves others meanwhile."""
    import threading
    import time

    acct = accounts.make(credit="1")
    env = {**gateway_env, "SILK_BODY_READ_TIMEOUT": "1"}
    with Gateway(database_url, env, workers=1, log_path=tmp_path / "gunicorn.log") as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        payload = json.dumps(body("never finished", stream=False)).encode()
        sock = socket.create_connection((host, int(port)), timeout=8)
        half = payload[:len(payload) // 2]
        framing = (b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(half) + half + b"\r\n"
                   if chunked else b"Content-Length: %d\r\n\r\n" % len(payload) + half)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + acct.key.encode() + b"\r\nContent-Type: application/json\r\n"
                     + framing)
        began = time.monotonic()
        stop = threading.Event()

        def drip():
            for byte in payload[len(payload) // 2:-1]:
                if stop.wait(0.2):
                    return
                with contextlib.suppress(OSError):
                    sock.send(bytes([byte]))

        dripper = threading.Thread(target=drip, daemon=True)
        if trickle:
            dripper.start()
        try:
            status, answer = call(gateway.url, acct.key, body("served meanwhile"))
            assert status == 200 and stream_ok(answer)
            try:
                reply = _read_answer(sock)
            except TimeoutError:
                pytest.fail("the gateway still waits for the body")
            waited = time.monotonic() - began
        finally:
            stop.set()
            sock.close()
        assert waited < 6, waited  # 1 s and a streamed request; the socket gives up at 8
        assert reply == b"" or reply.split(b" ")[1] == b"408", reply[:200]
        if reply:
            assert b'"request_timeout"' in reply
    assert upstream.requests[0].body["messages"][0]["content"] == "served meanwhile"
    assert len(upstream.requests) == 1
    assert accounts.audit() == []
