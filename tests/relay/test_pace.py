"""A worker whose loop runs late paces its streams' reads; the first output, the bytes and the
bill stay what they were (silk.relay.pace).

Under gunicorn the probe sets the pace; `SILK_STREAM_PACE_WHEN_LATE_MS=0` makes every
worker count as late, so the rule can be seen on an idle machine. Arrival times are taken as
the bytes come off the socket.
"""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

import orjson
import pytest

from silk.relay.pace import Pace
from tests.messages.conftest import native_gateway  # noqa: F401 - the fixture
from tests.messages.helpers import HEADERS

PIECES = 12
GAP = 0.05  # seconds between the fake provider's events
PACE_MS = 300


def test_the_pace_follows_the_loops_lateness():
    pace = Pace(seconds=0.08, late=0.005)
    assert pace.now == 0
    pace.observe(0.004)
    assert pace.now == 0
    pace.observe(0.005)
    assert pace.now == 0.08
    pace.observe(0.0)
    assert pace.now == 0
    off = Pace(seconds=0, late=0)
    off.observe(10.0)
    assert off.now == 0
    assert Pace(seconds=-1, late=-1).seconds == 0
    assert Pace(seconds=float("inf"), late=0).seconds == 1.0  # a pace, never a stall


def test_only_a_paced_read_waits():
    pace = Pace(seconds=0.05, late=0.01)
    started = time.monotonic()
    pace.wait()
    assert time.monotonic() - started < 0.04
    pace.observe(0.02)
    started = time.monotonic()
    pace.wait()
    assert time.monotonic() - started >= 0.05


def _arrivals(url: str, path: str, headers: dict, body: dict) -> list[tuple[float, dict]]:
    """(arrival time, event) of a stream's JSON events, read as the bytes arrive."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", path, body=orjson.dumps(body),
                 headers={**headers, "Content-Type": "application/json", "Connection": "close"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    events, buffer = [], b""
    while chunk := response.read1(65536):
        now = time.monotonic()
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            data = b"\n".join(line[5:].strip() for line in block.split(b"\n")
                              if line.startswith(b"data:"))
            if data and data != b"[DONE]":
                events.append((now, orjson.loads(data)))
    conn.close()
    return events


def _arrivals_of_text(events, text_of) -> list[tuple[float, str]]:
    return [(at, text) for at, event in events if (text := text_of(event))]


def _chat_text(event: dict) -> str:
    choices = event.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or ""


def _messages_text(event: dict) -> str:
    delta = event.get("delta") if event.get("type") == "content_block_delta" else None
    return (delta or {}).get("text") or ""


def _reads(arrivals: list[tuple[float, str]]) -> int:
    """How many socket reads brought the pieces (pieces of one read share its time)."""
    return len({at for at, _ in arrivals})


def _stream(gateway, acct, path: str):
    text = f"Go [[fake: pieces={PIECES} chunk_delay={GAP}]]"
    if path == "/v1/messages":
        body = {"model": "deepseek-chat", "max_tokens": 100, "stream": True,
                "messages": [{"role": "user", "content": text}]}
        return _arrivals_of_text(_arrivals(gateway.url, path, {**acct.headers, **HEADERS}, body),
                                 _messages_text)
    body = {"model": "deepseek-chat", "stream": True,
            "messages": [{"role": "user", "content": text}]}
    return _arrivals_of_text(_arrivals(gateway.url, path, acct.headers, body), _chat_text)


@pytest.mark.parametrize("paced", [True, False], ids=["late-worker", "pacing-off"])
@pytest.mark.parametrize("surface", ["chat", "messages", "messages-native"])
def test_a_late_worker_sends_each_stream_in_fewer_writes_and_bills_it_the_same(
        request, gateway_env, accounts, paced, surface):
    if surface == "messages-native":
        request.getfixturevalue("native_gateway")
    path = "/v1/chat/completions" if surface == "chat" else "/v1/messages"
    gateway_env["SILK_STREAM_PACE_WHEN_LATE_MS"] = "0"
    gateway_env["SILK_STREAM_PACE_MS"] = str(PACE_MS) if paced else "0"
    gateway = request.getfixturevalue("gateway")
    acct = accounts.make(credit="1")
    started = time.monotonic()
    pieces = _stream(gateway, acct, path)

    assert "".join(text for _, text in pieces) == " ".join(f"w{i}" for i in range(PIECES))
    reads = _reads(pieces)
    if paced:
        # The first piece is not held: its read brings it alone (or with the next, on a busy
        # machine), where a pause before it would have gathered six events.
        first_read = sum(1 for at, _ in pieces if at == pieces[0][0])
        assert first_read <= 2, [round(at - started, 3) for at, _ in pieces]
        # The rest, 11 events over 0.55 s, come in a few reads spaced by the pause.
        assert reads <= 5, [round(at - started, 3) for at, _ in pieces]
        assert pieces[-1][0] - pieces[1][0] >= 0.8 * PACE_MS / 1000
    else:
        assert reads >= PIECES - 2, [round(at - started, 3) for at, _ in pieces]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok"
    assert record.completion_tokens == PIECES
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []
