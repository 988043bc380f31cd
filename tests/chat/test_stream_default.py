"""An omitted `stream`: the client's Accept when it prefers one answer, else SILK_STREAM_DEFAULT."""

import pytest
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from silk.chat.service import wants_stream
from tests.chat.helpers import messages


def _accept(header: str) -> MIMEAccept:
    return parse_accept_header(header, MIMEAccept)


@pytest.mark.parametrize("header,json_wins", [
    ("application/json", True),
    ("Application/JSON; charset=utf-8", True),
    ("application/json, text/plain, */*", True),  # axios
    ("application/*", True),
    ("text/event-stream", False),
    ("text/event-stream, application/json;q=0.9", False),
    ("application/json;q=0.5, text/event-stream;q=0.8", False),
    ("application/json;q=0.9, text/event-stream;q=0.5", True),
    ("text/*, application/json;q=0.2", False),
    ("application/*;q=0.1, application/json", True),  # the most specific type counts
    ("application/json;q=0, text/event-stream;q=0.1", False),
])
def test_a_preference_decides_under_either_default(header, json_wins):
    for default in (True, False):
        assert wants_stream({}, lambda h=header: _accept(h), default) is not json_wins


@pytest.mark.parametrize("header", [
    "", "*/*", "text/html,application/xhtml+xml,*/*;q=0.8", "application/json, text/event-stream",
    "text/plain", "application/json;q=0",
])
def test_no_preference_follows_the_default(header):
    assert wants_stream({}, lambda: _accept(header), True) is True
    assert wants_stream({}, lambda: _accept(header), False) is False


def test_a_stream_field_always_wins():
    for header in ("application/json", "text/event-stream", "*/*"):
        for default in (True, False):
            assert wants_stream({"stream": True}, lambda h=header: _accept(h), default) is True
            assert wants_stream({"stream": False}, lambda h=header: _accept(h), default) is False


@pytest.mark.parametrize("setting,accept,streams", [
    (True, None, True), (True, "*/*", True), (False, None, False), (False, "*/*", False),
    (False, "text/event-stream", True), (True, "application/json", False),
])
def test_the_setting_end_to_end(app, client, accounts, upstream, setting, accept, streams):
    app.config["SILK_STREAM_DEFAULT"] = setting
    acct = accounts.make(credit="1")
    headers = {**acct.headers, **({"Accept": accept} if accept else {})}
    # A null `stream` is the same as none.
    for body in ({"model": "deepseek-chat", "messages": messages()},
                 {"model": "deepseek-chat", "messages": messages(), "stream": None}):
        response = client.post("/v1/chat/completions", headers=headers, json=body)
        assert response.status_code == 200
        assert response.mimetype == ("text/event-stream" if streams else "application/json")
        assert upstream.requests[-1].body["stream"] is streams


@pytest.mark.parametrize("raw,value", [("false", False), ("true", True), ("0", False)])
def test_the_setting_comes_from_the_environment(monkeypatch, raw, value):
    from silk import create_app

    monkeypatch.setenv("SILK_STREAM_DEFAULT", raw)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert app.config["SILK_STREAM_DEFAULT"] is value
