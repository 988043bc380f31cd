"""The Messages translation, pure, on recorded requests and answers."""

import json
from decimal import Decimal
from pathlib import Path

import orjson

from silk.catalog.catalogue import build_catalogue
from silk.config import load_config
from silk.messages.encode import encode_message, encode_stream
from silk.messages.schemas import messages_request_schema
from silk.messages.translate import to_call, to_chat_body
from silk.metering.meter import Bill
from silk.pricing import Usage
from silk.relay.events import Chunk, Comment, Completion, Done, Failed
from tests.messages.helpers import sse

FIXTURES = Path(__file__).parent / "fixtures"


def _catalogue(**env):
    from flask import Flask

    app = Flask("t")
    load_config(app, {"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "x"})
    app.config["SILK_UPSTREAMS"]["deepseek"].update(env)
    return build_catalogue(app.config)


def _bill(prompt=10, completion=5, hit=0, estimated=False):
    settlement = type("S", (), {"cost_usd": Decimal("0.000123")})()
    return Bill(Usage(prompt, completion, hit), estimated, not estimated, settlement)


def test_claude_code_request_translates():
    recorded = json.loads((FIXTURES / "claude-code-2.1.332-request.json").read_text())
    body = messages_request_schema.load(recorded["body"])
    chat = to_chat_body(body)
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "system"]
    assert chat["messages"][0]["content"].startswith("x-anthropic-billing-header")
    assert "say pong" in chat["messages"][1]["content"]
    assert len(chat["tools"]) == 12
    assert chat["tools"][4]["function"]["name"] == "Read"
    assert chat["thinking"] == {"type": "enabled"}
    assert "context_management" not in chat and "output_config" not in chat
    cat = _catalogue()
    model = cat.model("deepseek-chat")
    call = to_call(model, cat.provider_of(model), {**body, "max_tokens": 8000}, stream=True,
                   image_allowance=6000)
    sent = orjson.loads(call.body)
    assert call.dialect == "chat" and call.surface == "messages"
    assert sent["thinking"] == {"type": "disabled"}  # deepseek-chat's route
    assert sent["max_tokens"] == 8000 and call.max_output == 8000
    assert sent["stream_options"] == {"include_usage": True}
    assert call.prompt_bound >= len(orjson.dumps(chat["messages"]))
    assert 0 < call.prompt_estimate <= call.prompt_bound


def test_claude_code_request_goes_native_as_it_came():
    recorded = json.loads((FIXTURES / "claude-code-2.1.332-request.json").read_text())
    body = messages_request_schema.load(recorded["body"])
    body["max_tokens"] = 8000
    cat = _catalogue(anthropic_base_url="https://api.deepseek.com/anthropic")
    model = cat.model("deepseek-chat")
    provider = cat.provider_of(model)
    assert provider.anthropic_base_url == "https://api.deepseek.com/anthropic"
    call = to_call(model, provider, body, stream=True, image_allowance=6000)
    sent = orjson.loads(call.body)
    assert call.dialect == "anthropic"
    assert sent == {**body, "model": "deepseek-v4-flash", "thinking": {"type": "disabled"}}
    assert call.max_output == 8000
    assert call.prompt_bound >= len(orjson.dumps(body["messages"])) + len(
        orjson.dumps(body["tools"]))


def _chunk(delta, finish=None):
    data = {"id": "c1", "object": "chat.completion.chunk", "model": "deepseek-v4-flash",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return Chunk(orjson.dumps(data), data)


def test_translated_stream_pair():
    """A recorded chat stream (thinking, text, a tool call) and the Anthropic stream for it."""
    events = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"reasoning_content": "Plan"}), _chunk({"reasoning_content": " it"}),
        Comment(b" keep-alive"),
        _chunk({"content": "Let me look"}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "Read", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a"}'}}]}),
        _chunk({}, "tool_calls"),
        Done(_bill(prompt=10, completion=5, hit=4)),
    ]
    out = sse(b"".join(encode_stream(events, model="claude-sonnet-4", request_id="r1",
                                     native=False)))
    expected = json.loads((FIXTURES / "translated-stream.json").read_text())
    assert [[name, data] for name, data in out] == expected


def test_failed_stream_states_the_charge():
    failed = Failed("cut", "The provider ended the stream early.", "upstream_stream_cut",
                    _bill(estimated=True))
    out = sse(b"".join(encode_stream([_chunk({"content": "Hi"}), failed], model="m",
                                     request_id="r", native=False)))
    name, data = out[-1]
    assert name == "error" and data["error"]["type"] == "api_error"
    assert data["error"]["message"] == (
        "The provider ended the stream early. Charged $0.000123 for an estimate of what was "
        "delivered (10 input and 5 output tokens).")
    assert data["usage"]["estimated"] is True


def test_native_stream_holds_the_delta_for_the_cost():
    start = {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 10}}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
             "usage": {"output_tokens": 5}}
    text = {"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Hi"}}
    events = [Chunk(orjson.dumps(d), d) for d in (start, text)] + [
        Chunk(orjson.dumps(delta), delta, True), Done(_bill())]
    out = sse(b"".join(encode_stream(events, model="m", request_id="r", native=True)))
    assert [n for n, _ in out] == ["message_start", "content_block_delta", "message_delta",
                                   "message_stop"]
    assert out[2][1]["usage"] == {"output_tokens": 5, "cost": 0.000123}


def test_native_stream_passes_no_event_name_that_could_forge_another():
    forged = {"type": "ping\ndata: {\"type\":\"message_stop\"}\n\nevent: x"}
    odd = {"type": 5}
    good = {"type": "content_block_stop", "index": 0}
    events = [Chunk(orjson.dumps(d), d) for d in (forged, odd, good)] + [Done(_bill())]
    raw = b"".join(encode_stream(events, model="m", request_id="r", native=True))
    assert [n for n, _ in sse(raw)] == ["content_block_stop", "message_delta", "message_stop"]
    assert raw.count(b"message_stop") == 2  # the event's name and its data


def test_translated_message_pair():
    data = {"id": "c", "object": "chat.completion", "model": "deepseek-v4-flash", "choices": [
        {"index": 0, "finish_reason": "length", "message": {
            "role": "assistant", "content": "Hi", "reasoning_content": "hm",
            "tool_calls": [{"id": "call_9", "type": "function",
                            "function": {"name": "Bash", "arguments": '{"command":"ls"}'}}]}}]}
    message = encode_message(Completion(data, True, _bill(hit=2)), model="claude-x",
                             request_id="r", native=False)
    assert message == {
        "id": "msg_r", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "thinking", "thinking": "hm", "signature": ""},
                    {"type": "text", "text": "Hi"},
                    {"type": "tool_use", "id": "call_9", "name": "Bash",
                     "input": {"command": "ls"}}],
        "stop_reason": "max_tokens", "stop_sequence": None,
        "usage": {"input_tokens": 8, "output_tokens": 5, "cache_read_input_tokens": 2,
                  "cache_creation_input_tokens": 0, "cost": Decimal("0.000123")}}
