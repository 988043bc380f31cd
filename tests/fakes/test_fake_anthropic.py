"""The fake upstream's Anthropic Messages dialect: shape, counts, tool calls and faults."""

from __future__ import annotations

import json

import pytest
import requests

from .anthropic import prompt_tokens
from .upstream import FakeUpstream


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as server:
        yield server


def _post(fake, body, key="sk-ds-good", stream=False, **headers):
    return requests.post(fake.anthropic_base_url("deepseek") + "/v1/messages", json=body,
                         headers={"x-api-key": key, **headers}, stream=stream, timeout=10)


def _body(text="Hello there", **extra):
    return {"model": "deepseek-v4-flash", "max_tokens": 100,
            "messages": [{"role": "user", "content": text}], **extra}


def _events(response):
    out = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_message_with_anthropic_counts(fake):
    body = _body("one two [[fake: pieces=3 cache_hit=2]]", system="be brief")
    doc = _post(fake, body).json()
    assert doc["type"] == "message" and doc["content"] == [{"type": "text",
                                                            "text": "w0 w1 w2"}]
    prompt = prompt_tokens(body)
    assert prompt == (5 + 4) + (2 + 4)  # the directive is words too
    assert doc["usage"] == {"input_tokens": prompt - 2, "output_tokens": 3,
                            "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0}
    assert fake.requests[-1].key == "sk-ds-good"


def test_stream_events_and_cumulative_delta(fake):
    body = _body("hi [[fake: pieces=2 reasoning_pieces=2]]", stream=True,
                 thinking={"type": "adaptive"})
    events = _events(_post(fake, body, stream=True))
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert events[0][1]["message"]["usage"]["output_tokens"] == 1
    assert events[-2][1]["usage"] == {"output_tokens": 4}
    kinds = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert kinds == ["thinking", "text"]


def test_tool_call_until_a_result_comes_back(fake):
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    body = _body("""run [[fake: tool_call=Bash tool_args='{"command": "ls"}']]""",
                 tools=tools)
    doc = _post(fake, body).json()
    assert doc["stop_reason"] == "tool_use"
    assert doc["content"][0]["input"] == {"command": "ls"}
    body["messages"] += [{"role": "assistant", "content": doc["content"]}, {
        "role": "user", "content": [{"type": "tool_result", "tool_use_id": "x",
                                     "content": "ok"}, {"type": "text",
                                                        "text": "[[fake: tool_call=Bash]]"}]}]
    assert _post(fake, body).json()["stop_reason"] == "end_turn"


def test_faults_in_anthropic_shape(fake):
    error = _post(fake, _body("x [[fake: status=529]]"))
    assert error.status_code == 529 and error.json()["error"]["type"] == "overloaded_error"
    assert _post(fake, _body(), key="bad").json()["type"] == "error"
    events = _events(_post(fake, _body("x [[fake: stream_error=boom]]", stream=True),
                           stream=True))
    assert events[-1][0] == "error" and events[-1][1]["error"]["message"] == "boom"
    cut = _post(fake, _body("x [[fake: pieces=9 cut_after=3]]", stream=True), stream=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = cut.content
