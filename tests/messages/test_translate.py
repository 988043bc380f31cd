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
from tests.messages.helpers import content_blocks, sse

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


def _call(index, arguments="", call_id=None, name=None):
    call = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return _chunk({"tool_calls": [call]})


def _as_sent(events):
    """The Anthropic events each chat event causes, as encode_stream sends them."""
    sent: list[list] = []

    def source():
        for item in events:
            sent.append([])
            yield item

    for out in encode_stream(source(), model="m", request_id="r", native=False):
        sent[-1].extend(sse(out))
    return sent


def test_calls_one_after_another_stream_every_piece_as_it_comes():
    events = [_call(0, call_id="call_a", name="Read"), _call(0, '{"path":'),
              _call(0, ' "a"}'), _call(1, call_id="call_b", name="Bash"),
              _call(1, '{"command":'), _call(1, ' "ls"}'), _chunk({}, "tool_calls"),
              Done(_bill())]
    sent = _as_sent(events)
    assert [[name for name, _ in out] for out in sent[:6]] == [
        ["message_start", "ping", "content_block_start"], ["content_block_delta"],
        ["content_block_delta"], ["content_block_stop", "content_block_start"],
        ["content_block_delta"], ["content_block_delta"]]
    blocks = content_blocks([event for out in sent for event in out])
    assert [(b["id"], b["name"], b["partial_json"]) for b in blocks] == [
        ("call_a", "Read", '{"path": "a"}'), ("call_b", "Bash", '{"command": "ls"}')]


def test_interleaved_calls_wait_for_the_open_one_to_be_whole():
    """Pieces of the first call after the second has started go to the first call's block,
    which stays open; the second, kept back with text that came meanwhile, follows whole."""
    events = [_chunk({"content": "Looking"}), _call(0, call_id="call_a", name="Read"),
              _call(0, '{"path":'), _call(1, '{"comm', "call_b", "Bash"),
              _chunk({"content": " now"}), _call(0, ' "a"'), _call(1, 'and": "ls"}'),
              _call(0, "}"), _chunk({}, "tool_calls"), Done(_bill())]
    sent = _as_sent(events)
    assert sent[3] == sent[4] == []  # the second call and the text wait
    assert [name for name, _ in sent[5]] == ["content_block_delta"]
    assert [name for name, _ in sent[7]] == [  # the first call is whole: the rest follows
        "content_block_delta", "content_block_stop", "content_block_start",
        "content_block_delta", "content_block_stop", "content_block_start",
        "content_block_delta"]
    blocks = content_blocks([event for out in sent for event in out])
    assert [(b["type"], b.get("partial_json", b.get("text"))) for b in blocks] == [
        ("text", "Looking"), ("tool_use", '{"path": "a"}'),
        ("tool_use", '{"command": "ls"}'), ("text", " now")]
    assert sent[-1][-2][1]["delta"]["stop_reason"] == "tool_use"


def test_calls_that_are_never_whole_follow_at_the_end_and_a_new_id_is_a_new_call():
    """Arguments that are no JSON object keep the next call waiting until the stream ends;
    a call with a new id at a chat index already used is a call of its own."""
    events = [_call(0, "", "call_a", "Now"), _call(0, call_id="call_b", name="Later"),
              _call(0, '{"x": 1}'), _call(1, "not json", "call_c", "Odd"),
              _call(2, '{"y"', "call_d", "Last"), _call(1, "!"), _call(2, ": 2}"),
              _chunk({}, "tool_calls"), Done(_bill())]
    sent = _as_sent(events)
    blocks = content_blocks([event for out in sent for event in out])
    assert [(b["id"], b["name"], b.get("partial_json")) for b in blocks] == [
        ("call_a", "Now", None), ("call_b", "Later", '{"x": 1}'),
        ("call_c", "Odd", "not json!"), ("call_d", "Last", '{"y": 2}')]
    assert [name for name, _ in sent[-1]][-4:] == [
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]


def test_a_broken_stream_sends_the_waiting_calls_before_its_error():
    """The open call is stopped for them; the last is left open, as an error leaves it."""
    failed = Failed("cut", "The provider ended the stream early.", "upstream_stream_cut",
                    _bill(estimated=True))
    events = [_call(0, '{"path":', "call_a", "Read"), _call(1, '{"command"', "call_b", "Bash"),
              _call(0, ' "a'), failed]
    out = sse(b"".join(encode_stream(events, model="m", request_id="r", native=False)))
    blocks = content_blocks(out)
    assert [(b["id"], b["partial_json"]) for b in blocks] == [
        ("call_a", '{"path": "a'), ("call_b", '{"command"')]
    assert [name for name, _ in out][-5:] == ["content_block_delta", "content_block_stop",
                                              "content_block_start", "content_block_delta",
                                              "error"]
    out = sse(b"".join(encode_stream(events[:1] + events[2:], model="m", request_id="r",
                                     native=False)))
    assert [name for name, _ in out][-3:] == ["content_block_delta", "content_block_delta",
                                              "error"]


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
