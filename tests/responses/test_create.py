"""POST /v1/responses end to end on both databases: answers, streams, every ending, exact money."""

from __future__ import annotations

from decimal import Decimal

import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests.chat.helpers import assert_charged_once, expected_cost, set_quota_left, units
from tests.fakes.upstream import (
    count_prompt_tokens,
    tool_arg_pieces,
    tool_call_deltas,
    tool_call_tokens,
)
from tests.responses.helpers import output_items, post, typed_events
from tests.support.images import IMAGE_URL, data_url, patch_tokens


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_json_answer_is_charged_exactly_and_names_the_surface(app, client, accounts,
                                                                 upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = post(client, acct, {"model": "deepseek-chat", "input": "What is silk?",
                                   "instructions": "Be brief.", "max_output_tokens": 100})
    assert response.status_code == 200, response.json
    prompt = count_prompt_tokens([{"content": "Be brief."}, {"content": "What is silk?"}])
    cost = expected_cost("deepseek-chat", prompt, 6)
    assert Decimal(response.headers["x-silk-cost"]) == cost  # before the body: an under-bill
    assert accounts.balance_units(acct.id) == 10**9 - units(cost)
    body = response.json
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["id"].startswith("resp_") and body["model"] == "deepseek-chat"
    assert body["output"][0]["content"][0]["text"] == "Hello from the fake upstream ."
    usage = body["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (prompt, 6)
    assert usage["total_tokens"] == prompt + 6 and Decimal(str(usage["cost"])) == cost
    sent = upstream.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 100 and sent["stream"] is False
    [record] = accounts.usage_records(acct.id)
    assert record.surface == "responses" and record.status == "ok"
    assert record.cost_units == units(cost)
    assert accounts.audit() == []


def test_a_stream_is_charged_exactly_and_ends_with_response_completed(app, client, accounts,
                                                                     upstream):
    acct = accounts.make(tier="team", credit="1")
    set_quota_left(app, acct.id)
    response = post(client, acct, {"model": "deepseek-reasoner", "input": "Think [[fake: "
                                   "pieces=12]]", "stream": True, "max_output_tokens": 200})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = typed_events(response.data)
    prompt = count_prompt_tokens(_user("Think [[fake: pieces=12]]"))
    cost = expected_cost("deepseek-reasoner", prompt, 12 + 4, tier="team")
    final = events[-1]
    assert final["type"] == "response.completed"
    assert Decimal(str(final["response"]["usage"]["cost"])) == cost
    assert accounts.balance_units(acct.id) == 10**9 - units(cost)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == " ".join(f"w{i}" for i in range(12))
    reasoning = "".join(e["delta"] for e in events
                        if e["type"] == "response.reasoning_summary_text.delta")
    assert reasoning == "Let me think ."
    usage = final["response"]["usage"]
    assert usage["output_tokens_details"]["reasoning_tokens"] == 4
    assert upstream.requests[-1].body["thinking"] == {"type": "enabled"}
    [record] = accounts.usage_records(acct.id)
    assert record.surface == "responses" and record.stream and not record.estimated
    assert accounts.audit() == []


def test_a_tool_call_streams_as_a_function_call_item(client, accounts, upstream):
    acct = accounts.make(credit="1")
    args = '{"cmd":"echo hi"}'
    text = f"run [[fake: tool_call=shell tool_args='{args}']]"
    response = post(client, acct, {"model": "deepseek-chat", "input": text, "stream": True,
                                   "tools": [{"type": "function", "name": "shell",
                                              "parameters": {"type": "object"}}]})
    events = typed_events(response.data)
    [call] = events[-1]["response"]["output"]
    assert call["type"] == "function_call" and call["name"] == "shell"
    assert call["arguments"] == args and call["status"] == "completed"
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done[0]["arguments"] == args
    assert events[-1]["response"]["usage"]["output_tokens"] == tool_call_tokens(args)
    assert upstream.requests[-1].body["tools"][0]["function"]["name"] == "shell"


TWO_TOOLS = [{"type": "function", "name": name, "parameters": {"type": "object"}}
             for name in ("read_file", "shell")]
TWO_CALLS = [{"name": "read_file", "arguments": '{"path": "/etc/hostname", "limit": 20}'},
             {"name": "shell", "arguments": '{"cmd": "ls -la /tmp", "timeout_ms": 5000}'}]


@pytest.mark.parametrize("order", ["sequential", "interleaved", "rounds"])
def test_interleaved_tool_calls_stream_as_whole_function_call_items_charged_once(
        app, client, accounts, upstream, order):
    """A chat stream may send a call's arguments after the next call has started: every
    piece reaches its own function_call item, items one after another."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    upstream.enqueue("deepseek", tool_calls=TWO_CALLS, tool_stream=order)
    response = post(client, acct, {"model": "deepseek-chat", "input": "read and run",
                                   "stream": True, "tools": TWO_TOOLS})
    events = typed_events(response.data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    items = output_items(events)
    rid = upstream.requests[-1].request_id.removeprefix("fakereq-")
    assert [(i["type"], i["name"], i["call_id"], i["arguments"]) for i in items] == [
        ("function_call", call["name"], f"call_{rid}_{n}", call["arguments"])
        for n, call in enumerate(TWO_CALLS)]
    assert [i["done"]["arguments"] for i in items] == [c["arguments"] for c in TWO_CALLS]
    assert {i["done"]["status"] for i in items} == {"completed"}
    if order == "sequential":  # each piece is sent as it comes, as for a single call
        assert [i["deltas"] for i in items] == [
            len(tool_arg_pieces(call["arguments"])) for call in TWO_CALLS]
    final = events[-1]
    assert final["type"] == "response.completed"
    assert [(o["name"], o["arguments"]) for o in final["response"]["output"]] == [
        (call["name"], call["arguments"]) for call in TWO_CALLS]
    output = sum(tool_call_tokens(call["arguments"]) for call in TWO_CALLS)
    prompt = count_prompt_tokens(_user("read and run"))
    cost = expected_cost("deepseek-chat", prompt, output)
    assert final["response"]["usage"]["output_tokens"] == output
    assert Decimal(str(final["response"]["usage"]["cost"])) == cost
    assert_charged_once(accounts, acct.id, output, cost)


def test_a_stream_cut_between_interleaved_calls_sends_every_piece_before_failing(
        app, client, accounts, upstream):
    """A broken stream sends each call that was waiting, as far as it came, before
    response.failed; the calls are not told completed."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    upstream.enqueue("deepseek", tool_calls=TWO_CALLS, tool_stream="interleaved", cut_after=7)
    events = typed_events(post(client, acct, {"model": "deepseek-chat", "input": "go",
                                              "stream": True, "tools": TWO_TOOLS}).data)
    # The role chunk, then six tool call deltas: both calls' starts and first pieces, and
    # the next two pieces of the first call.
    sent = list(tool_call_deltas([{"id": str(i), **c} for i, c in enumerate(TWO_CALLS)],
                                 "interleaved"))[:6]
    delivered = ["".join(d["function"]["arguments"] for i, d in sent if i == n) for n in (0, 1)]
    assert delivered == [TWO_CALLS[0]["arguments"][:12], TWO_CALLS[1]["arguments"][:4]]
    items = output_items(events)
    assert [(i["name"], i["arguments"]) for i in items] == [
        ("read_file", delivered[0]), ("shell", delivered[1])]
    assert items[0]["done"]["status"] == "incomplete" and items[1]["done"] is None
    final = events[-1]
    assert final["type"] == "response.failed"
    assert [(o["arguments"], o["status"]) for o in final["response"]["output"]] == [
        (delivered[0], "incomplete"), (delivered[1], "in_progress")]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.cost_units == units(Decimal(str(final["response"]["usage"]["cost"])))
    assert [e.kind for e in accounts.ledger(acct.id)] == ["topup", "charge"]
    assert accounts.audit() == []


def test_several_tool_calls_in_a_json_answer(client, accounts, upstream):
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", tool_calls=TWO_CALLS)
    response = post(client, acct, {"model": "deepseek-chat", "input": "read and run",
                                   "tools": TWO_TOOLS})
    assert response.status_code == 200, response.json
    assert [(o["name"], o["arguments"], o["status"]) for o in response.json["output"]] == [
        (call["name"], call["arguments"], "completed") for call in TWO_CALLS]


def test_a_cut_stream_charges_what_was_delivered_once(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = post(client, acct, {"model": "deepseek-chat", "stream": True,
                                   "input": "cut me [[fake: pieces=30 cut_after=11]]"})
    events = typed_events(response.data)
    final = events[-1]
    assert final["type"] == "response.failed"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated and record.surface == "responses"
    assert record.completion_tokens == 10
    cost = expected_cost("deepseek-chat", record.prompt_tokens, 10)
    assert record.cost_units == units(cost)
    assert f"Charged ${cost.normalize():f} for an estimate" in final["response"]["error"]["message"]
    assert Decimal(str(final["response"]["usage"]["cost"])) == cost
    ledger = accounts.ledger(acct.id)
    assert [(e.kind, e.amount_units) for e in ledger] == [("topup", 10**9),
                                                          ("charge", -units(cost))]
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


def test_a_client_that_leaves_mid_stream_pays_for_what_it_received(app, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = app.test_client().post("/v1/responses", headers=acct.headers, buffered=False,
                                      json={"model": "deepseek-chat", "stream": True,
                                            "input": "long [[fake: pieces=200 "
                                                     "chunk_delay=0.02]]"})
    chunks = iter(response.response)
    received = b""
    while received.count(b"response.output_text.delta\ndata") < 5:
        received += next(chunks)
    response.close()  # the client goes away mid-stream
    disconnects = upstream.wait_for(lambda: upstream.disconnects, timeout=5)
    assert disconnects[0].chunks_sent < 200
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and record.estimated
    assert 5 <= record.completion_tokens < 200
    assert record.cost_units == units(expected_cost("deepseek-chat", record.prompt_tokens,
                                                    record.completion_tokens))
    ledger = accounts.ledger(acct.id)
    assert [(e.kind, e.amount_units) for e in ledger] == [("topup", 10**9),
                                                          ("charge", -record.cost_units)]
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_error_before_the_answer_costs_nothing(client, accounts, upstream, stream):
    acct = accounts.make(credit="1")
    response = post(client, acct, {"model": "deepseek-chat", "stream": stream,
                                   "input": "x [[fake: status=500]]"})
    assert response.status_code == 502
    assert set(response.json["error"]) == {"message", "type", "param", "code"}
    assert accounts.balance_units(acct.id) == 10**9
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


@pytest.mark.parametrize("body,param", [
    ({"input": "x"}, "model"),
    ({"model": "deepseek-chat"}, "input"),
    ({"model": "deepseek-chat", "input": "x", "stream": "yes"}, "stream"),
    ({"model": "deepseek-chat", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "deepseek-chat", "input": "x", "tools": [{"type": "web_search"}]},
     "tools[0].type"),
    ({"model": "deepseek-chat", "input": [{"role": "user", "content": 7}]},
     "input[0].content"),
    ({"model": "deepseek-chat", "input": "x", "background": True}, "background"),
    ({"model": "deepseek-chat", "input": "x", "conversation": "conv_1"}, "conversation"),
    ({"model": "deepseek-chat", "input": "x", "conversation": {"id": "conv_1"}},
     "conversation"),
    ({"model": "deepseek-chat", "input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"model": "deepseek-chat", "input": [{"id": "a", "role": "user", "content": "x"},
                                          {"role": "user", "content": "y"},
                                          {"id": "a", "role": "user", "content": "z"}]},
     "input[2].id"),
    ({"model": "no-such-model", "input": "x"}, "model"),
])
def test_bad_input_is_a_4xx_in_openais_envelope_naming_the_field(client, accounts, upstream,
                                                                 body, param):
    acct = accounts.make(credit="1")
    response = post(client, acct, body)
    assert response.status_code in (400, 404)
    error = response.json["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert not upstream.requests
    assert accounts.balance_units(acct.id) == 10**9


def test_what_codex_sends_besides_is_accepted(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = post(client, acct, {
        "model": "deepseek-chat", "input": [{"type": "message", "role": "developer",
                                             "content": [{"type": "input_text",
                                                          "text": "rules"}]},
                                            {"type": "message", "role": "user",
                                             "content": [{"type": "input_text",
                                                          "text": "say pong"}]}],
        "stream": True, "store": False, "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "auto"}, "prompt_cache_key": "k", "tool_choice": "auto",
        "parallel_tool_calls": True, "client_metadata": {"turn_id": "t"},
        "metadata": {"a": "b"}, "text": {"verbosity": "low"}})
    assert response.status_code == 200
    assert typed_events(response.data)[-1]["type"] == "response.completed"


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_the_providers_filter_cut_is_incomplete_stored_so_and_charged_once(
        app, client, accounts, upstream, stream):
    """A chat finish_reason content_filter ends an answer the provider cut short: OpenAI's
    incomplete response (reason content_filter), kept as such, billed what was delivered."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    text = "tell me [[fake: pieces=5 finish_reason=content_filter]]"
    response = post(client, acct, {"model": "deepseek-chat", "stream": stream, "input": text})
    assert response.status_code == 200, response.data
    if stream:
        final = typed_events(response.data)[-1]
        assert final["type"] == "response.incomplete"
        body = final["response"]
    else:
        body = response.json
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "content_filter"}
    [message] = body["output"]
    assert message["status"] == "incomplete"
    assert message["content"][0]["text"] == "w0 w1 w2 w3 w4"
    kept = client.get(f"/v1/responses/{body['id']}", headers=acct.headers).json
    assert (kept["status"], kept["incomplete_details"]) == ("incomplete",
                                                            {"reason": "content_filter"})
    prompt = count_prompt_tokens(_user(text))
    cost = expected_cost("deepseek-chat", prompt, 5)
    assert Decimal(str(body["usage"]["cost"])) == cost
    assert accounts.balance_units(acct.id) == 10**9 - units(cost)
    assert_charged_once(accounts, acct.id, 5, cost)


@pytest.mark.parametrize("finish", ["insufficient_system_resource", "repetition_truncation"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_the_provider_interrupted_is_failed_stored_so_and_charged_once(
        app, client, accounts, upstream, finish, stream):
    """DeepSeek's insufficient_system_resource (and MiMo's repetition_truncation) end an
    answer the model had not finished: a failed response (stream: response.failed) whose
    error says so and what was charged, the output kept and its last item incomplete; it
    was answered as completed."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    text = f"tell me [[fake: pieces=5 finish_reason={finish}]]"
    response = post(client, acct, {"model": "deepseek-chat", "stream": stream, "input": text})
    assert response.status_code == 200, response.data
    if stream:
        final = typed_events(response.data)[-1]
        assert final["type"] == "response.failed"
        body = final["response"]
    else:
        body = response.json
    Response.model_validate(body)
    assert body["status"] == "failed" and body["incomplete_details"] is None
    assert body["error"]["code"] == "server_error"
    assert f"finish_reason {finish}" in body["error"]["message"]
    [message] = body["output"]
    assert message["status"] == "incomplete"
    assert message["content"][0]["text"] == "w0 w1 w2 w3 w4"
    cost = expected_cost("deepseek-chat", count_prompt_tokens(_user(text)), 5)
    assert f"Charged ${cost.normalize():f} " in body["error"]["message"]
    assert Decimal(str(body["usage"]["cost"])) == cost
    kept = client.get(f"/v1/responses/{body['id']}", headers=acct.headers).json
    assert (kept["status"], kept["error"]) == ("failed", body["error"])
    assert_charged_once(accounts, acct.id, 5, cost)


SDK_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.mark.parametrize("text,extra", [
    ("hi", {}),
    ("think", {"model": "deepseek-reasoner"}),
    ("run [[fake: tool_call=ns__go]]", {"tools": [{"type": "namespace", "name": "ns",
                                                   "description": "Tools of ns.",
                                                   "tools": [{"type": "function",
                                                              "name": "go"}]}]}),
    ("long [[fake: pieces=20]]", {"max_output_tokens": 3}),
    ("cut [[fake: pieces=10 cut_after=4]]", {}),
    ("busy [[fake: pieces=4 finish_reason=insufficient_system_resource]]", {}),
    ("no [[fake: refusal]]", {}),
])
def test_every_event_and_response_is_what_the_openai_sdk_types_require(client, accounts,
                                                                       upstream, text, extra):
    """Each streamed event, and the JSON Response, validates against the openai SDK's own
    pydantic types, every field they require present and of its type."""
    acct = accounts.make(credit="1")
    body = {"model": "deepseek-chat", "input": text, **extra}
    for event in typed_events(post(client, acct, {**body, "stream": True}).data):
        typed = SDK_EVENT.validate_python(event)
        if hasattr(typed, "response"):
            Response.model_validate(event["response"])
    if "cut_after" not in text:
        Response.model_validate(post(client, acct, body).json)


@pytest.mark.parametrize("image", ["png", "https"])
def test_a_cut_stream_bills_an_image_as_the_provider_does(app, client, accounts, upstream,
                                                          image):
    """An input_image is billed from its pixels (held in the request) or at the allowance
    (by URL) when the stream is cut before usage, not as a token-cheap low-detail tile."""
    url, tokens = ((data_url(2048, 2048), patch_tokens(2048, 2048)) if image == "png"
                   else (IMAGE_URL, app.config["SILK_IMAGE_TOKEN_ALLOWANCE"]))
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    text = {"type": "input_text", "text": "describe it [[fake: pieces=30 cut_after=3]]"}
    for parts in ([text], [text, {"type": "input_image", "image_url": url}]):
        response = post(client, acct, {"model": "doubao-seed-2.0-pro", "stream": True,
                                       "input": [{"role": "user", "content": parts}]})
        assert typed_events(response.data)[-1]["type"] == "response.failed"
    plain, pictured = accounts.usage_records(acct.id)
    assert plain.estimated and pictured.estimated and pictured.surface == "responses"
    assert pictured.prompt_tokens - plain.prompt_tokens == tokens
    cost = expected_cost("doubao-seed-2.0-pro", pictured.prompt_tokens,
                         pictured.completion_tokens)
    assert pictured.cost_units == units(cost)
    assert [e.amount_units for e in accounts.ledger(acct.id)][-1] == -units(cost)
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0
