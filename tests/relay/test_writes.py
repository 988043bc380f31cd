"""What one upstream read brought goes to the client in one write, and none of it waits.

The WSGI server writes each piece of the response body with a system call of its own, so a
stream's pieces are read here as the server would get them (the app's response iterable).
The fake upstream writes its events several at a time (`together`), as a provider's events
pile up while a busy worker is not reading.
"""

from __future__ import annotations

import math

import pytest

from tests.chat.helpers import set_quota_left
from tests.messages.conftest import native  # noqa: F401 - the fixture, for the native path
from tests.messages.helpers import HEADERS

SURFACES = ["chat", "messages", "messages-native", "responses"]


def _open(client, acct, surface: str, directive: str):
    """A stream on `surface`, not read yet: the response whose body is read piece by piece."""
    text = f"Tell me [[fake: {directive}]]"
    if surface == "chat":
        path, headers = "/v1/chat/completions", acct.headers
        body = {"model": "deepseek-chat", "stream": True,
                "messages": [{"role": "user", "content": text}]}
    elif surface.startswith("messages"):
        path, headers = "/v1/messages", {**acct.headers, **HEADERS}
        body = {"model": "deepseek-chat", "max_tokens": 1000, "stream": True,
                "messages": [{"role": "user", "content": text}]}
    else:
        path, headers = "/v1/responses", acct.headers
        body = {"model": "deepseek-chat", "stream": True, "input": text}
    response = client.post(path, headers=headers, json=body, buffered=False)
    assert response.status_code == 200, response.get_data()
    return response


@pytest.fixture(params=SURFACES)
def surface(request) -> str:
    """The surface a test streams on; ask for it before `app` (the native path's upstream
    must be set before the app is made)."""
    if request.param == "messages-native":
        request.getfixturevalue("native")
    return request.param


# The events the fake writes before the first reply piece: the role chunk on chat, or
# message_start, ping and the text block's start on the native Messages path.
_BEFORE_TEXT = {"chat": 1, "messages": 1, "messages-native": 3, "responses": 1}


def test_a_read_goes_out_before_the_relay_waits_for_the_next(surface, app, accounts):
    """The first write carries the first reply piece, then the provider falls silent: the
    client has that piece before the silence ends in a timeout, not together with it."""
    for upstream in app.extensions["silk.upstreams"].values():
        upstream.timeout = (2.0, 1.0)
    acct = accounts.make(credit="1")
    first = _BEFORE_TEXT[surface] + 1
    response = _open(app.test_client(), acct, surface,
                     f"pieces=4 together={first} stall_after={first}")
    pieces = list(response.response)
    response.close()
    carrying = [i for i, piece in enumerate(pieces) if b"w0" in piece]
    assert carrying, pieces
    silence = b"The provider stopped sending in time"
    assert silence not in pieces[carrying[0]]
    assert b"w1" not in b"".join(pieces)
    assert silence in pieces[-1]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "timeout" and record.completion_tokens == 1
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


def test_the_events_of_one_read_go_out_as_one_piece(surface, app, accounts):
    """Each write of four events becomes at most one piece, which ends on an event's end."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _open(app.test_client(), acct, surface, "pieces=8 together=4 chunk_delay=0.05")
    pieces = list(response.response)
    response.close()
    body = b"".join(pieces)
    assert all(piece.endswith(b"\n\n") for piece in pieces), pieces
    text_events = 8
    # Upstream events: chat's role chunk, the pieces, the finish chunk, usage and [DONE];
    # Anthropic's message_start, ping, the block's start and stop, message_delta and stop.
    upstream_events = text_events + (6 if surface == "messages-native" else 4)
    writes = math.ceil(upstream_events / 4)
    # One piece per write and one after settling; Responses' opening events go with the
    # first read's.
    assert len(pieces) <= writes + 1, pieces
    assert body.count(b"\n\n") > len(pieces) + 4  # several events shared a piece
    for n in range(text_events):
        assert f"w{n}".encode() in body
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and record.completion_tokens == text_events
    assert accounts.audit() == []


def test_what_a_failing_encoder_made_of_a_read_still_goes_out(app, accounts, monkeypatch):
    """A fault in the gateway's own encoder, in the middle of a read that carried four
    events: the pieces it encoded before it failed reach the client, and the request is
    settled as the gateway's error, billed for what the provider delivered."""
    from silk.chat import translate
    from silk.sse import encode_data

    def failing(payload: bytes) -> bytes:
        if b"w2" in payload:
            raise RuntimeError("an encoder fault")
        return encode_data(payload)

    monkeypatch.setattr(translate, "encode_data", failing)
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _open(app.test_client(), acct, "chat", "pieces=8 together=4 chunk_delay=0.05")
    pieces = []
    with pytest.raises(RuntimeError, match="an encoder fault"):
        for piece in response.response:
            pieces.append(piece)
    response.close()
    body = b"".join(pieces)
    assert b"w0" in body and b"w1" in body and b"w2" not in body
    [record] = accounts.usage_records(acct.id)
    assert record.status == "error" and record.completion_tokens == 3  # w0, w1, w2 came
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []
