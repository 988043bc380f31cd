"""The SSE parser: the same events however the bytes are cut, linear work, a bounded event."""

from __future__ import annotations

import json
import time

import pytest

from silk.sse import EventTooLarge, SSEParser, encode_comment, encode_data
from tests.chat.helpers import messages, sse_events, strict_sse

STREAM = (b": keep-alive\r\n\r\ndata: {\"a\": 1}\n\ndata: one\ndata: two\r\n\r\n"
          b"event: x\nid: 7\ndata:three\n\n: ping\n\ndata: [DONE]\n\n")
EVENTS = [("comment", b"keep-alive"), ("data", b'{"a": 1}'), ("data", b"one\ntwo"),
          ("data", b"three"), ("comment", b"ping"), ("data", b"[DONE]")]


def _parse(pieces) -> list:
    parser = SSEParser()
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, len(STREAM)])
def test_the_same_events_however_the_stream_is_cut(size):
    pieces = [STREAM[i:i + size] for i in range(0, len(STREAM), size)]
    assert _parse(pieces) == EVENTS


def test_an_unterminated_last_event_is_flushed():
    assert _parse([b"data: {\"cut\": ", b"true}"]) == [("data", b'{"cut": true}')]


def _feed_seconds(line_count: int, line_size: int, piece: int = 65536) -> float:
    """Best of three: parse `line_count` data lines of `line_size` bytes fed in pieces."""
    stream = (b"data: " + b"x" * line_size + b"\n\n") * line_count
    pieces = [stream[i:i + piece] for i in range(0, len(stream), piece)]
    best = float("inf")
    for _ in range(3):
        parser = SSEParser(max_event=64 * 1024 * 1024)
        began = time.perf_counter()
        events = [event for chunk in pieces for event in parser.feed(chunk)]
        best = min(best, time.perf_counter() - began)
        assert len(events) == line_count and len(events[0][1]) == line_size
    return best


def test_one_long_line_costs_what_many_short_ones_do():
    """A 32 MB line in 64 KiB pieces: a parser that re-copies and re-scans its buffer on
    every piece does ~250 times the work of 32 lines of 1 MB; a linear one the same work."""
    long_line = _feed_seconds(1, 32 * 1024 * 1024)
    short_lines = _feed_seconds(32, 1024 * 1024)
    assert long_line < 20 * short_lines + 0.1, (long_line, short_lines)


def test_a_line_beyond_the_bound_raises_and_frees_the_buffer():
    parser = SSEParser(max_event=1000)
    parser.feed(b"data: " + b"x" * 900)
    with pytest.raises(EventTooLarge):
        parser.feed(b"x" * 200)
    assert isinstance(EventTooLarge("x"), ValueError)  # the relay's read loop ends on it
    assert len(parser._partial) == 0


def test_an_event_of_many_lines_beyond_the_bound_raises():
    parser = SSEParser(max_event=1000)
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            parser.feed(b"data: " + b"y" * 50 + b"\n")


def test_a_bound_line_at_the_limit_passes():
    parser = SSEParser(max_event=1000)
    assert parser.feed(b"data: " + b"z" * 990 + b"\n\n") == [("data", b"z" * 990)]


@pytest.fixture
def app_config():
    return {"SILK_SSE_MAX_EVENT": 256 * 1024}


def test_an_upstream_event_beyond_the_bound_ends_the_stream_as_cut(client, accounts, upstream):
    acct = accounts.make(credit="1")
    upstream.behave(long_line=2 * 1024 * 1024)
    response = client.post("/v1/chat/completions", headers=acct.headers, buffered=True,
                           json={"model": "deepseek-chat", "stream": True,
                                 "messages": messages()})
    assert response.status_code == 200
    events = sse_events(response.data)
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    assert len(response.data) < 64 * 1024  # the long line was not passed on
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut"
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


def test_a_payload_of_several_lines_goes_out_as_as_many_data_lines():
    """A reader joins an event's data lines with newlines; one line holding a newline or a
    CR (a line break to a reader) would end the field early and leave a stray line."""
    assert encode_data(b'{"a":\n1,\r\n"b":\r2}') == \
        b'data: {"a":\ndata: 1,\ndata: "b":\ndata: 2}\n\n'
    assert encode_data(b'{"a": 1}') == b'data: {"a": 1}\n\n'
    # A comment keeps every line a comment: a CR left in it forges no data event.
    assert encode_comment(b'keep-alive\rdata: {"x": 1}') == \
        b': keep-alive\n: data: {"x": 1}\n\n'


def test_an_event_the_provider_writes_over_several_data_lines_reaches_the_client_whole(
        client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers=acct.headers, buffered=True,
                           json={"model": "deepseek-chat", "stream": True,
                                 "stream_options": {"include_usage": True},
                                 "messages": messages("hi", "multiline_data")})
    assert response.status_code == 200
    events = [data for _, data in strict_sse(response.data)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(data) for data in events[:-1]]
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks
                   if chunk["choices"]) == "Hello from the fake upstream ."
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    assert accounts.row(acct.id).reserved_units == 0 and accounts.audit() == []
