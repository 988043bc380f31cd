"""The Responses surface's translation, both ways, as pure functions: no app, no database.

Requests are Codex's recorded one and hand-written ones; answers are the fake upstream's
recorded chat chunks (fixtures/chat_answers.json), read as the relay hands them on.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from silk.catalog.catalogue import build_catalogue
from silk.defaults import MODELS, PROVIDERS, TIERS
from silk.errors import InvalidRequest
from silk.metering.meter import Bill
from silk.metering.service import Settlement
from silk.pricing import Cost, Usage
from silk.relay.events import Chunk, Comment, Completion, Done, Failed
from silk.relay.tokens import prompt_bound, prompt_estimate
from silk.responses.answer import Builder
from silk.responses.encode import encode_completion, encode_stream
from silk.responses.translate import to_call
from tests.responses.helpers import output_items, typed_events

FIXTURES = Path(__file__).parent / "fixtures"
ANSWERS = json.loads((FIXTURES / "chat_answers.json").read_text())
CODEX = json.loads((FIXTURES / "codex_request.json").read_text())["body"]
CATALOGUE = build_catalogue({
    "SILK_PROVIDERS": PROVIDERS, "SILK_MODELS": MODELS, "SILK_TIERS": TIERS,
    "SILK_UPSTREAMS": {pid: {"base_url": "http://127.0.0.1:1", "keys": []}
                       for pid in PROVIDERS}})
SETTLED = Settlement(Cost(0, 60, 11_200, 0, 11_200), 11_200, 10**9 - 11_200)
BILLED = Bill(Usage(12, 7), estimated=False, as_reported=True, settlement=SETTLED)
# The reasoning answers' usage as the Meter bills it: 3 of the 7 output tokens reasoning.
REASONED = Bill(Usage(12, 7), estimated=False, as_reported=True, settlement=SETTLED,
                reasoning_tokens=3)


def _call(request: dict, carried=(), *, stream: bool = False, model: str = "deepseek-chat"):
    entry = CATALOGUE.model(model)
    return to_call(entry, CATALOGUE.provider_of(entry), request, list(carried), stream=stream,
                   image_allowance=0)


def _body(request: dict, carried=(), **kw) -> dict:
    return orjson.loads(_call(request, carried, **kw).call.body)


def _builder(request: dict | None = None, names=None) -> Builder:
    return Builder("resp_abc", 1, "deepseek-chat", request or {}, names or {})


def _bad(request: dict, param: str, carried=(), model="deepseek-chat") -> str:
    with pytest.raises(InvalidRequest) as caught:
        _call({"model": model, **request}, carried, model=model)
    assert caught.value.param == param, caught.value.message
    assert caught.value.status == 400
    return caught.value.message


def test_codex_recorded_request_translates_without_its_web_search_tool():
    request = copy.deepcopy(CODEX)
    request["tools"] = [t for t in request["tools"] if t["type"] != "web_search"]
    sent = copy.deepcopy(request)
    call = _call(request, stream=True)
    assert request == sent  # the client's request is read, never changed
    body = orjson.loads(call.call.body)
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "system", "user", "user"]  # developer is the chat system role
    assert body["messages"][-1]["content"] == "say pong"
    assert body["messages"][1]["content"].count("\n\n") >= 1  # two input_text parts joined
    names = [t["function"]["name"] for t in body["tools"]]
    assert "exec_command" in names and "multi_agent_v1__close_agent" in names
    assert call.names["multi_agent_v1__close_agent"] == ("multi_agent_v1", "close_agent")
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    # What Codex sends besides (store, include, prompt_cache_key, client_metadata,
    # reasoning.summary) is accepted and not forwarded.
    for name in ("store", "include", "prompt_cache_key", "client_metadata", "input",
                 "reasoning"):
        assert name not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    model = CATALOGUE.model("deepseek-chat")
    assert body["max_tokens"] == model.max_output_tokens == call.call.max_output
    assert body["thinking"] == {"type": "disabled"}  # the route's word
    assert call.call.surface == "responses"
    assert call.call.prompt_bound == prompt_bound(body, 0)
    assert call.call.prompt_estimate == prompt_estimate(body, call.call.prompt_bound,
                                                        image_allowance=0)


def test_codex_web_search_tool_is_a_400_naming_it():
    message = _bad(copy.deepcopy(CODEX), "tools[8].type")
    assert "web_search" in message and "web_search = \"disabled\"" in message


@pytest.mark.parametrize("kind", ["web_search", "file_search", "computer_use_preview",
                                  "code_interpreter", "image_generation", "mcp",
                                  "local_shell", "custom"])
def test_every_built_in_tool_is_a_400(kind):
    _bad({"input": "hi", "tools": [{"type": "function", "name": "f"}, {"type": kind}]},
         "tools[1].type")


@pytest.mark.parametrize("tool", [{"name": "f"}, {"type": None, "name": "f"}, {"type": ""},
                                  {"type": 3}])
def test_a_tool_without_a_type_is_a_400_asking_for_one(tool):
    message = _bad({"input": "hi", "tools": [tool]}, "tools[0].type")
    assert "is required" in message and "built-in" not in message


def test_items_become_messages_tool_calls_and_outputs():
    items = [
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
                                                         "text": "thinking"}]},
        {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "close_agent",
         "namespace": "multi_agent_v1", "arguments": "{\"id\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": "hi"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "closed"}]},
        {"role": "assistant", "content": "done"},
        {"role": "system", "content": "be brief"},
    ]
    body = _body({"model": "deepseek-chat", "input": items, "instructions": "rules"})
    assert body["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
        {"role": "assistant", "content": None, "reasoning_content": "thinking",
         "tool_calls": [
             {"id": "c1", "type": "function", "function": {"name": "shell",
                                                           "arguments": "{}"}},
             {"id": "c2", "type": "function", "function": {
                 "name": "multi_agent_v1__close_agent", "arguments": "{\"id\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "hi"},
        {"role": "tool", "tool_call_id": "c2", "content": "closed"},
        {"role": "assistant", "content": "done"},
        {"role": "system", "content": "be brief"},
    ]


def test_carried_items_come_before_the_input_and_count_in_the_hold():
    carried = [{"type": "message", "role": "user", "content": "first " * 200},
               {"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "answer"}]}]
    alone = _call({"model": "deepseek-chat", "input": "next"})
    call = _call({"model": "deepseek-chat", "input": "next"}, carried)
    body = orjson.loads(call.call.body)
    assert [m["content"] for m in body["messages"]][1:] == ["answer", "next"]
    assert call.call.prompt_bound >= alone.call.prompt_bound + 1200
    assert call.call.prompt_estimate > alone.call.prompt_estimate + 200


def test_limits_formats_sampling_and_tool_choice():
    body = _body({"model": "deepseek-chat", "input": "x", "max_output_tokens": 50,
                  "temperature": 0.3, "top_p": 0.9, "tools": [{"type": "function",
                  "name": "f", "parameters": {"type": "object"}}],
                  "tool_choice": {"type": "function", "name": "f"},
                  "text": {"format": {"type": "json_schema", "name": "out", "strict": True,
                                      "schema": {"type": "object"}}},
                  "metadata": {"k": "v"}, "store": False, "user": "u"})
    assert body["max_tokens"] == 50 and body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["tools"] == [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object"}}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "out", "schema": {"type": "object"}, "strict": True}}
    assert "metadata" not in body and "user" not in body
    assert _body({"model": "deepseek-chat", "input": "x", "text": {"format": {
        "type": "json_object"}}})["response_format"] == {"type": "json_object"}


def test_reasoning_effort_is_the_thinking_switch_within_the_route():
    mimo = _body({"model": "mimo-v2.5", "input": "x", "reasoning": {"effort": "high"}},
                 model="mimo-v2.5")
    assert mimo["reasoning_effort"] == "high"
    off = _body({"model": "mimo-v2.5", "input": "x", "reasoning": {"effort": "none"}},
                model="mimo-v2.5")
    assert off["thinking"] == {"type": "disabled"} and "reasoning_effort" not in off
    # The catalogue's route is the operator's word: deepseek-chat never thinks.
    chat = _body({"model": "deepseek-chat", "input": "x", "reasoning": {"effort": "high"}})
    assert chat["thinking"] == {"type": "disabled"}


@pytest.mark.parametrize("request_fields,param", [
    ({"input": 5}, "input"),
    ({"input": []}, "input"),
    ({"input": [5]}, "input[0]"),
    ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
     "input[0].content[0].text"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": 3}]},
     "input[0].output"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
     "text.format.schema"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"input": "x", "max_output_tokens": 8193}, "max_output_tokens"),
])
def test_bad_input_is_a_400_naming_the_field(request_fields, param):
    _bad(request_fields, param)


def _stream(chunks: list[dict], end, builder: Builder | None = None, on_done=None):
    builder = builder or _builder()
    events = [Comment(b"keep-alive")]
    for data in chunks:
        events.append(Chunk(orjson.dumps(data), data, data.get("usage") is not None))
    events.append(end)
    raw = b"".join(encode_stream(events, builder, on_done=on_done))
    assert b": keep-alive\n\n" in raw
    return typed_events(raw)


def test_a_text_stream_becomes_typed_events_with_sequence_numbers():
    stored = []
    events = _stream(ANSWERS["text_stream"], Done(BILLED), on_done=stored.append)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added",
                     *["response.output_text.delta"] * 3, "response.output_text.done",
                     "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert "".join(e["delta"] for e in events if e["type"].endswith("text.delta")) == \
        "Hello there ."
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["object"] == "response"
    [message] = final["output"]
    assert message["content"][0]["text"] == "Hello there ." and message["status"] == "completed"
    assert final["usage"] == {"input_tokens": 12, "input_tokens_details": {
                              "cached_tokens": 0, "cache_write_tokens": 0},
                              "output_tokens": 7, "output_tokens_details":
                              {"reasoning_tokens": 0}, "total_tokens": 19,
                              "cost": float(SETTLED.cost_usd)}
    assert stored and stored[0]["id"] == final["id"]  # handed over before the last event


def test_reasoning_then_a_tool_call_stream():
    events = _stream(ANSWERS["reasoning_tool_stream"], Done(REASONED))
    kinds = [e["type"] for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.reasoning_summary_part.added"]
    assert "response.reasoning_summary_text.delta" in kinds
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == ["response.function_call_arguments.done",
                          "response.output_item.done", "response.completed"]
    reasoning, call = events[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Let me see"}]
    assert call["type"] == "function_call" and call["name"] == "exec_command"
    assert call["arguments"] == "{\"cmd\":\"echo hi\"}" and call["call_id"].startswith("call_")
    assert events[-1]["response"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 3


def test_delta_events_are_the_bytes_of_a_whole_event():
    """The frame a delta event is put together from gives `_event`'s bytes, for each kind
    of item at any place in the output, for each delta into an item, and for text that JSON
    must escape."""
    builder = _builder()
    builder.start()
    texts = ['a "quoted"\nline \u00e9\u4e2d \U0001f600 \\ end', "\t</script>\u2028"]
    kinds = [("reasoning_content", "response.reasoning_summary_text.delta",
              {"summary_index": 0}),
             ("content", "response.output_text.delta", {"content_index": 0}),
             ("tool_calls", "response.function_call_arguments.delta", {})]
    for index, (field, kind, position) in enumerate(kinds):
        for number, text in enumerate(texts):
            if field != "tool_calls":
                delta: dict = {field: text}
            else:
                delta = {field: [{"index": 0, "function": {"arguments": text}}]}
                if number == 0:
                    delta[field][0].update(id="call_x", function={"name": "shell",
                                                                  "arguments": text})
            raw = builder.delta(delta)
            builder._sequence -= 1  # the same event again, made the general way
            fields = {"item_id": builder.output[index]["id"], "output_index": index,
                      **position, "delta": text}
            if kind == "response.output_text.delta":
                fields["logprobs"] = []
            assert raw.endswith(builder._event(kind, **fields)), (kind, number)
    output = builder.response("in_progress")["output"]
    assert output[1]["content"][0]["text"] == "".join(texts)
    assert output[2]["arguments"] == "".join(texts)


def _tool(index, arguments="", call_id=None, name=None) -> dict:
    call = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


def _text(content: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": content}}]}


def test_interleaved_calls_wait_for_the_open_one_to_be_whole():
    """Pieces of the first call after the second has started go to the first call's item,
    which stays open; the second, kept back with text that came meanwhile, follows whole."""
    chunks = [_text("Looking"), _tool(0, call_id="call_a", name="read"), _tool(0, '{"path":'),
              _tool(1, '{"cm', "call_b", "shell"), _text(" now"), _tool(0, ' "a"'),
              _tool(1, 'd": "ls"}'), _tool(0, "}"),
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]
    events = _stream(chunks, Done(BILLED))
    items = output_items(events)
    assert [(i["type"], i.get("arguments", i.get("text")), i["deltas"]) for i in items] == [
        ("message", "Looking", 1), ("function_call", '{"path": "a"}', 3),
        ("function_call", '{"cmd": "ls"}', 1), ("message", " now", 1)]
    assert [i.get("call_id") for i in items] == [None, "call_a", "call_b", None]
    assert events[-1]["type"] == "response.completed"
    output = events[-1]["response"]["output"]
    assert [o.get("arguments") for o in output] == [None, '{"path": "a"}', '{"cmd": "ls"}',
                                                    None]


def test_calls_never_whole_follow_at_the_end_and_a_new_id_is_a_new_call():
    """Arguments that are no JSON object keep the next call waiting until the answer ends;
    a call with a new id at a chat index already used is a call of its own."""
    chunks = [_tool(0, "", "call_a", "now"), _tool(0, call_id="call_b", name="later"),
              _tool(0, '{"x": 1}'), _tool(1, "not json", "call_c", "odd"),
              _tool(2, '{"y"', "call_d", "last"), _tool(1, "!"), _tool(2, ": 2}")]
    items = output_items(_stream(chunks, Done(BILLED)))
    assert [(i["call_id"], i["name"], i["arguments"]) for i in items] == [
        ("call_a", "now", ""), ("call_b", "later", '{"x": 1}'),
        ("call_c", "odd", "not json!"), ("call_d", "last", '{"y": 2}')]


def test_a_broken_stream_sends_the_waiting_calls_before_failing():
    estimated = Bill(Usage(12, 4), estimated=True, as_reported=False, settlement=SETTLED)
    failed = Failed("cut", "The provider ended the stream early.", "upstream_stream_cut",
                    estimated)
    chunks = [_tool(0, '{"path":', "call_a", "read"), _tool(1, '{"cmd"', "call_b", "shell"),
              _tool(0, ' "a')]
    events = _stream(chunks, failed)
    items = output_items(events)
    assert [(i["call_id"], i["arguments"]) for i in items] == [
        ("call_a", '{"path": "a'), ("call_b", '{"cmd"')]
    assert items[0]["done"]["status"] == "incomplete" and items[1]["done"] is None
    assert events[-1]["type"] == "response.failed"
    assert [o["status"] for o in events[-1]["response"]["output"]] == ["incomplete",
                                                                      "in_progress"]


def test_a_whole_answer_keeps_each_call_with_its_arguments():
    """A message's calls, whatever their arguments, are items in their order."""
    data = copy.deepcopy(ANSWERS["reasoning_tool_whole"])
    message = data["choices"][0]["message"]
    message["tool_calls"] = [
        {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": ""}},
        {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
        {"id": "call_3", "type": "function", "function": {"name": "c", "arguments": "{"}}]
    quiet = Builder("resp_abc", 1, "deepseek-chat", {}, {}, events=False)
    response = encode_completion(Completion(data, True, BILLED), quiet)
    assert [(o["type"], o.get("call_id"), o.get("arguments")) for o in response["output"]] == [
        ("reasoning", None, None), ("function_call", "call_1", ""),
        ("function_call", "call_2", "{}"), ("function_call", "call_3", "{")]
    assert {o.get("status") for o in response["output"][1:]} == {"completed"}


def test_a_stream_cut_by_the_limit_is_incomplete():
    events = _stream(ANSWERS["length_stream"], Done(BILLED))
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_broken_stream_ends_with_response_failed_stating_its_charge():
    estimated = Bill(Usage(12, 2), estimated=True, as_reported=False, settlement=SETTLED)
    events = _stream(ANSWERS["text_stream"][:3], Failed("cut", "The provider ended the "
                     "stream early.", "upstream_stream_cut", estimated))
    final = events[-1]
    assert final["type"] == "response.failed"
    error = final["response"]["error"]
    assert error["code"] == "server_error"
    assert f"Charged ${SETTLED.cost_usd:f} for an estimate" in error["message"]
    assert final["response"]["usage"]["estimated"] is True
    nothing = Bill(None, estimated=False, as_reported=False, settlement=None)
    events = _stream([], Failed("upstream_error", "Boom.", "upstream_error", nothing))
    assert events[-1]["response"]["error"]["message"].endswith("Nothing was charged.")
    assert events[-1]["response"]["usage"]["cost"] == 0


def test_an_encoding_failure_is_reported_to_the_relay():
    reported = []

    def broken():
        yield Chunk(b"{}", {"choices": [{"index": 0, "delta": {"content": 5j}}]})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        list(encode_stream(broken(), _builder(), on_error=lambda: reported.append(1)))
    assert reported == [1]


def test_a_whole_answer_with_a_namespaced_call_becomes_the_response_object():
    data = copy.deepcopy(ANSWERS["reasoning_tool_whole"])
    builder = _builder({"instructions": "x", "store": False},
                       {"multi_agent_v1__close_agent": ("multi_agent_v1", "close_agent")})
    response = encode_completion(Completion(data, True, REASONED), builder)
    reasoning, call = response["output"]
    assert reasoning["summary"][0]["text"] == "Let me see"
    assert (call["namespace"], call["name"]) == ("multi_agent_v1", "close_agent")
    assert call["call_id"] == "call_00000004" and call["arguments"] == "{\"id\":\"a1\"}"
    assert response["status"] == "completed" and response["store"] is False
    assert response["instructions"] == "x"
    assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == 3
    assert response["usage"]["cost"] == SETTLED.cost_usd
    assert isinstance(response["usage"]["cost"], Decimal)


@pytest.mark.parametrize("finish", ["stop", "length", "tool_calls"])
def test_a_whole_answer_is_the_same_whether_or_not_stream_events_are_made(finish):
    """A non-streaming answer's builder makes no events; the Response is the one a builder
    that makes them would give."""
    data = copy.deepcopy(ANSWERS["reasoning_tool_whole"])
    data["choices"][0]["message"]["content"] = "Closing it now."
    data["choices"][0]["finish_reason"] = finish
    request = {"instructions": "x", "store": False}
    names = {"multi_agent_v1__close_agent": ("multi_agent_v1", "close_agent")}
    quiet = Builder("resp_abc", 1, "deepseek-chat", request, names, events=False)
    assert quiet.delta({"content": "hi"}) == b""
    quiet = Builder("resp_abc", 1, "deepseek-chat", request, names, events=False)
    whole = encode_completion(Completion(copy.deepcopy(data), True, BILLED), quiet)
    evented = encode_completion(Completion(copy.deepcopy(data), True, BILLED),
                                _builder(request, names))
    assert whole == evented
    assert [item["type"] for item in whole["output"]] == ["reasoning", "message",
                                                          "function_call"]
    assert {item.get("status") for item in whole["output"]} >= {
        "incomplete" if finish == "length" else "completed"}


@pytest.mark.parametrize("body", [
    CODEX,
    {"model": "deepseek-chat", "input": "hi", "store": False, "max_output_tokens": 16},
    {"model": "deepseek-chat", "input": "hi", "temperature": 3},
    {"model": "deepseek-chat", "input": 5},
    {"model": "deepseek-chat", "input": "hi", "max_output_tokens": "16", "top_p": 2},
    {"input": "hi", "client_metadata": {"x": 1}},
    {"model": "", "input": [], "text": "plain"},
])
def test_the_schema_of_the_fields_present_loads_as_the_full_one(body):
    """schema_for(body) keeps only the fields the body has: the same result, the same 400."""
    from silk.responses.schemas import ResponsesRequestSchema, schema_for
    from silk.validation import load

    def outcome(schema):
        try:
            return load(schema, copy.deepcopy(body))
        except InvalidRequest as err:
            return (err.param, err.message)

    assert outcome(schema_for(body)) == outcome(ResponsesRequestSchema())
    assert len(schema_for(body).fields) <= len(body.keys() | {"model", "input"})
