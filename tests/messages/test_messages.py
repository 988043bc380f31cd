"""POST /v1/messages, translated to chat completions: answers, streams, exact metering."""

import json
from decimal import Decimal

import pytest

from tests.chat.helpers import assert_charged_once, expected_cost, set_quota_left, units
from tests.fakes.upstream import tool_arg_pieces, tool_call_deltas, tool_call_tokens
from tests.messages.helpers import HEADERS, chat_prompt_tokens, content_blocks, request, sse


def _post(client, acct, body, **kw):
    return client.post("/v1/messages?beta=true", headers={**acct.headers, **HEADERS},
                       json=body, **kw)


def test_json_message_is_charged_exactly(app, client, accounts, upstream):
    acct = accounts.make(tier="pro", credit="2")
    set_quota_left(app, acct.id)
    body = request("one two three", "pieces=40", system="Be brief.")
    response = _post(client, acct, body)
    assert response.status_code == 200, response.json
    prompt = chat_prompt_tokens(body)
    cost = expected_cost("deepseek-chat", prompt, 40, tier="pro")
    assert Decimal(response.headers["x-silk-cost"]) == cost
    message = response.json
    assert Decimal(str(message["usage"]["cost"])) == cost
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "deepseek-chat"
    assert message["content"] == [{"type": "text", "text": " ".join(
        f"w{i}" for i in range(40))}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == prompt
    assert message["usage"]["output_tokens"] == 40
    sent = upstream.requests[-1]
    assert sent.path.endswith("/chat/completions")
    assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.body["max_tokens"] == 1000 and sent.body["model"] == "deepseek-v4-flash"
    assert accounts.balance_units(acct.id) == units(Decimal("2") - cost)
    [record] = accounts.usage_records(acct.id)
    assert record.surface == "messages" and record.status == "ok"
    assert record.cost_units == units(cost)
    assert accounts.audit() == []
    assert accounts.row(acct.id).reserved_units == 0


def test_stream_events_and_cost(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("stream", "pieces=5", stream=True)
    response = _post(client, acct, body, buffered=True)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = sse(response.data)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "w0 w1 w2 w3 w4"
    delta = events[-2][1]
    cost = expected_cost("deepseek-chat", chat_prompt_tokens(body), 5)
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 5
    assert Decimal(str(delta["usage"]["cost"])) == cost
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == units(cost) and record.surface == "messages"
    assert accounts.audit() == []


def test_keep_alives_before_the_answer_come_after_message_start(app, client, accounts,
                                                              upstream):
    """DeepSeek writes keep-alive comments while it reads a long prompt: the stream still
    begins with message_start, as Anthropic's does, and the pings follow it."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("wait", "pieces=3 first_token_delay=0.3 keepalive_interval=0.05",
                   stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert names.count("ping") > 2
    assert names[-2:] == ["message_delta", "message_stop"]
    assert [b["text"] for b in content_blocks(events)] == ["w0 w1 w2"]
    cost = expected_cost("deepseek-chat", chat_prompt_tokens(body), 3)
    assert Decimal(str(events[-2][1]["usage"]["cost"])) == cost
    assert_charged_once(accounts, acct.id, 3, cost)


def test_cut_stream_ends_with_an_error_event_and_bills_the_delivery(app, client, accounts,
                                                                    upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _post(client, acct, request("x", "pieces=10 cut_after=4", stream=True),
                     buffered=True)
    events = sse(response.data)
    name, data = events[-1]
    assert name == "error" and data["type"] == "error"
    assert "Charged $" in data["error"]["message"]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.cost_units == units(Decimal(str(data["usage"]["cost"])))
    assert accounts.audit() == []
    assert accounts.row(acct.id).reserved_units == 0


def _ending(client, acct, body, stream):
    """The answer's stop reason and stop sequence, JSON or streamed."""
    response = _post(client, acct, {**body, "stream": stream}, buffered=True)
    assert response.status_code == 200, response.data
    if not stream:
        return response.json["stop_reason"], response.json["stop_sequence"]
    (name, delta), last = sse(response.data)[-2:]
    assert (name, last[0]) == ("message_delta", "message_stop")
    return delta["delta"]["stop_reason"], delta["delta"]["stop_sequence"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_the_provider_names_is_stop_reason_stop_sequence(client, accounts,
                                                                         upstream, stream):
    """An answer whose choice names one of the request's stop sequences (SGLang's
    matched_stop, vLLM's stop_reason) ended on it; one naming no sequence of the request,
    or nothing (DeepSeek, Ark and MiMo), reads as end_turn: chat says "stop" for both."""
    acct = accounts.make(credit="1")
    stops = {"stop_sequences": ["END", "\n\nHuman:"]}
    named = request("go", "pieces=3 finish_json='{\"matched_stop\": \"END\"}'", **stops)
    assert _ending(client, acct, named, stream) == ("stop_sequence", "END")
    assert upstream.requests[-1].body["stop"] == ["END", "\n\nHuman:"]
    vllm = request("go", "pieces=3 finish_json='{\"stop_reason\": \"\\n\\nHuman:\"}'",
                   **stops)
    assert _ending(client, acct, vllm, stream) == ("stop_sequence", "\n\nHuman:")
    for other in ('{"matched_stop": "OTHER"}', '{"stop_reason": 2}'):
        unnamed = request("go", f"pieces=3 finish_json='{other}'", **stops)
        assert _ending(client, acct, unnamed, stream) == ("end_turn", None)
    assert _ending(client, acct, request("go", "pieces=3", **stops), stream) == (
        "end_turn", None)
    assert accounts.audit() == []


@pytest.mark.parametrize("finish", ["insufficient_system_resource", "repetition_truncation"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_the_provider_interrupted_is_never_a_whole_turn(app, client, accounts,
                                                                  upstream, finish, stream):
    """DeepSeek's insufficient_system_resource (and MiMo's repetition_truncation) end an
    answer the model had not finished: a stream delivers it, then an overloaded_error event
    (no message_delta says end_turn); a JSON Message says max_tokens. Billed as delivered."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("write", f"pieces=4 finish_reason={finish}", stream=stream)
    response = _post(client, acct, body, buffered=True)
    assert response.status_code == 200, response.data
    cost = expected_cost("deepseek-chat", chat_prompt_tokens(body), 4)
    if stream:
        events = sse(response.data)
        assert [b["text"] for b in content_blocks(events)] == ["w0 w1 w2 w3"]
        assert "message_delta" not in [name for name, _ in events]
        name, error = events[-1]
        assert name == "error" and error["error"]["type"] == "overloaded_error"
        assert f"finish_reason {finish}" in error["error"]["message"]
        charged = f"Charged ${cost.normalize():f} for the provider's count"
        assert charged in error["error"]["message"]
        assert Decimal(str(error["usage"]["cost"])) == cost
    else:
        assert response.json["stop_reason"] == "max_tokens"
        assert response.json["content"] == [{"type": "text", "text": "w0 w1 w2 w3"}]
        assert Decimal(response.headers["x-silk-cost"]) == cost
    assert_charged_once(accounts, acct.id, 4, cost)


TOOLS = [{"name": "Read", "description": "Read a file.",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
          "cache_control": {"type": "ephemeral"}}]


def test_tool_use_round_trip(client, accounts, upstream):
    acct = accounts.make(credit="1")
    body = request("read it", "tool_call=Read tool_args='{\"path\": \"/etc/hostname\"}'",
                   tools=TOOLS, tool_choice={"type": "auto"})
    first = _post(client, acct, body)
    assert first.status_code == 200, first.json
    assert first.json["stop_reason"] == "tool_use"
    [call] = first.json["content"]
    assert call["type"] == "tool_use" and call["name"] == "Read"
    assert call["input"] == {"path": "/etc/hostname"}
    sent = upstream.requests[-1].body
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "Read", "description": "Read a file.",
        "parameters": TOOLS[0]["input_schema"]}}]
    assert sent["tool_choice"] == "auto"
    body["messages"] += [
        {"role": "assistant", "content": first.json["content"]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call["id"],
             "content": [{"type": "text", "text": "gateway-host"}]},
            {"type": "text", "text": "thanks"}]}]
    second = _post(client, acct, body)
    assert second.status_code == 200, second.json
    assert second.json["content"][0]["text"] == "Hello from the fake upstream ."
    sent = upstream.requests[-1].body["messages"]
    assert sent[-3]["tool_calls"][0]["function"] == {
        "name": "Read", "arguments": '{"path":"/etc/hostname"}'}
    assert sent[-2] == {"role": "tool", "tool_call_id": call["id"], "content": "gateway-host"}
    assert sent[-1] == {"role": "user", "content": "thanks"}
    assert accounts.audit() == []


def test_tool_use_streams_input_json_deltas(client, accounts, upstream):
    acct = accounts.make(credit="1")
    body = request("run", "tool_call=Bash tool_args='{\"command\": \"ls\"}'", tools=[
        {"name": "Bash", "input_schema": {"type": "object"}}], stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    [start] = [d for n, d in events if n == "content_block_start"]
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "Bash"
    partial = "".join(d["delta"]["partial_json"] for n, d in events
                      if n == "content_block_delta")
    assert partial == '{"command": "ls"}'
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


TWO_TOOLS = [{"name": "Read", "input_schema": {"type": "object"}},
             {"name": "Bash", "input_schema": {"type": "object"}}]
TWO_CALLS = [{"name": "Read", "arguments": '{"path": "/etc/hostname", "limit": 20}'},
             {"name": "Bash", "arguments": '{"command": "ls -la /tmp", "timeout": 5}'}]


@pytest.mark.parametrize("order", ["sequential", "interleaved", "rounds"])
def test_interleaved_tool_calls_reach_the_client_whole_and_are_charged_once(
        app, client, accounts, upstream, order):
    """A chat stream may send a call's arguments after the next call has started: every
    piece reaches its own tool_use block, in a sequence of blocks Anthropic allows."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    upstream.enqueue("deepseek", tool_calls=TWO_CALLS, tool_stream=order)
    body = request("read and run", tools=TWO_TOOLS, stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    blocks = content_blocks(events)
    assert [(b["type"], b["name"], b.get("partial_json")) for b in blocks] == [
        ("tool_use", call["name"], call["arguments"]) for call in TWO_CALLS]
    rid = upstream.requests[-1].request_id.removeprefix("fakereq-")
    assert [b["id"] for b in blocks] == [f"call_{rid}_0", f"call_{rid}_1"]
    if order == "sequential":  # each piece is sent as it comes, as for a single call
        assert [b["deltas"] for b in blocks] == [
            len(tool_arg_pieces(call["arguments"])) for call in TWO_CALLS]
    names = [name for name, _ in events]
    assert names[-2:] == ["message_delta", "message_stop"]
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    output = sum(tool_call_tokens(call["arguments"]) for call in TWO_CALLS)
    cost = expected_cost("deepseek-chat", chat_prompt_tokens(body), output)
    assert delta["usage"]["output_tokens"] == output
    assert Decimal(str(delta["usage"]["cost"])) == cost
    assert_charged_once(accounts, acct.id, output, cost)


def test_a_stream_cut_between_interleaved_calls_delivers_every_piece_before_the_error(
        app, client, accounts, upstream):
    """A broken stream sends each call that was waiting whole, as far as it came, before
    the error event."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    upstream.enqueue("deepseek", tool_calls=TWO_CALLS, tool_stream="interleaved", cut_after=7)
    events = sse(_post(client, acct, request("go", tools=TWO_TOOLS, stream=True),
                       buffered=True).data)
    # The role chunk, then six tool call deltas: both calls' starts and first pieces, and
    # the next two pieces of the first call.
    sent = list(tool_call_deltas([{"id": str(i), **c} for i, c in enumerate(TWO_CALLS)],
                                 "interleaved"))[:6]
    delivered = ["".join(d["function"]["arguments"] for i, d in sent if i == n) for n in (0, 1)]
    assert delivered == [TWO_CALLS[0]["arguments"][:12], TWO_CALLS[1]["arguments"][:4]]
    blocks = content_blocks(events)
    assert [(b["name"], b.get("partial_json")) for b in blocks] == [
        ("Read", delivered[0]), ("Bash", delivered[1])]
    name, data = events[-1]
    assert name == "error" and "Charged $" in data["error"]["message"]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.cost_units == units(Decimal(str(data["usage"]["cost"])))
    assert [e.kind for e in accounts.ledger(acct.id)] == ["topup", "charge"]
    assert accounts.audit() == []


def test_several_tool_calls_in_a_json_answer(client, accounts, upstream):
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", tool_calls=TWO_CALLS)
    response = _post(client, acct, request("read and run", tools=TWO_TOOLS))
    assert response.status_code == 200, response.json
    assert [(b["name"], b["input"]) for b in response.json["content"]] == [
        (call["name"], json.loads(call["arguments"])) for call in TWO_CALLS]
    assert response.json["usage"]["output_tokens"] == sum(
        tool_call_tokens(call["arguments"]) for call in TWO_CALLS)


def test_thinking_becomes_reasoning_and_comes_back_as_thinking_blocks(client, accounts,
                                                                       upstream):
    acct = accounts.make(credit="5")
    body = request("think", model="deepseek-reasoner",
                   thinking={"type": "enabled", "budget_tokens": 2000}, stream=True)
    body["max_tokens"] = 4000
    events = sse(_post(client, acct, body, buffered=True).data)
    blocks = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert blocks == ["thinking", "text"]
    thought = "".join(d["delta"].get("thinking", "") for n, d in events
                      if n == "content_block_delta")
    assert thought == "Let me think ."
    sent = upstream.requests[-1].body
    assert sent["thinking"] == {"type": "enabled"}
    # Earlier thinking goes back as reasoning_content; redacted thinking is dropped.
    body["messages"] += [{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "text", "text": "done"}]}, {"role": "user", "content": "again"}]
    body["stream"] = False
    response = _post(client, acct, body)
    assert response.json["content"][0] == {"type": "thinking", "thinking": "Let me think .",
                                           "signature": ""}
    assert upstream.requests[-1].body["messages"][-2] == {
        "role": "assistant", "content": "done", "reasoning_content": "hmm"}


def test_images_base64_and_url(client, accounts, upstream):
    acct = accounts.make(credit="1")
    body = request()
    body["messages"][0]["content"] = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is this"}]
    assert _post(client, acct, body).status_code == 200
    parts = upstream.requests[-1].body["messages"][0]["content"]
    assert parts == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is this"}]


def test_documents_plain_text_is_read_and_the_rest_left_out(client, accounts, upstream):
    from silk.messages.translate import OMITTED

    acct = accounts.make(credit="1")
    body = request()
    body["messages"][0]["content"] = [
        {"type": "document", "title": "notes",
         "source": {"type": "text", "media_type": "text/plain", "data": "a b c"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": "JVBERi0xLjQ="}},
        {"type": "text", "text": "summarise"}]
    assert _post(client, acct, body).status_code == 200
    assert upstream.requests[-1].body["messages"][0]["content"] == "\n".join(
        ["notes\na b c", OMITTED.format(kind="document"), "summarise"])


# Anthropic's shapes (anthropic.types): a search result, a plain-text document, a document
# made of blocks, and blocks no chat model reads (a server tool's result, a tool reference).
SEARCH = {"type": "search_result", "source": "https://kb.example/refunds", "title": "Refunds",
          "content": [{"type": "text", "text": "Refunds take 5 days."},
                      {"type": "text", "text": "Ask support."}],
          "citations": {"enabled": True}}
TEXT_DOC = {"type": "document", "title": "notes", "context": "from the wiki",
            "source": {"type": "text", "media_type": "text/plain", "data": "a b c"}}
BLOCKS_DOC = {"type": "document", "title": "slides", "source": {"type": "content", "content": [
    {"type": "text", "text": "page one"},
    {"type": "image", "source": {"type": "url", "url": "https://example.com/p.png"}}]}}
WEB = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
    {"type": "web_search_result", "url": "https://x.test", "title": "X",
     "encrypted_content": "EqQ"}]}


def _research() -> list[dict]:
    return [
        {"role": "user", "content": [SEARCH, TEXT_DOC, BLOCKS_DOC, WEB,
                                     {"type": "text", "text": "go"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "find",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            SEARCH, {"type": "tool_reference", "tool_name": "find"}]}]}]


def test_search_results_and_documents_are_read_and_the_rest_noted(app, client, accounts,
                                                                   upstream):
    """A search result and a document of text or of blocks (alone or in a tool's result)
    hold text a chat model reads: they were dropped unseen (a search result, tools' results
    made of them) or left out (a document of blocks). They go as text under their title and
    source; a block no chat model reads gets the note other left-out blocks get."""
    from silk.messages.translate import OMITTED

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request(messages=_research())
    response = _post(client, acct, body)
    assert response.status_code == 200, response.json
    found = "Refunds\nSource: https://kb.example/refunds\nRefunds take 5 days.\nAsk support."
    sent = upstream.requests[-1].body["messages"]
    assert sent[0]["content"] == [
        {"type": "text", "text": found}, {"type": "text", "text": "notes\nfrom the wiki\na b c"},
        {"type": "text", "text": "slides"}, {"type": "text", "text": "page one"},
        {"type": "image_url", "image_url": {"url": "https://example.com/p.png"}},
        {"type": "text", "text": OMITTED.format(kind="web_search_tool_result")},
        {"type": "text", "text": "go"}]
    assert sent[2] == {"role": "tool", "tool_call_id": "t1", "content": "\n".join(
        [found, OMITTED.format(kind="tool_reference")])}
    usage = response.json["usage"]
    assert usage["input_tokens"] == chat_prompt_tokens(body)
    cost = expected_cost("deepseek-chat", usage["input_tokens"], usage["output_tokens"])
    assert Decimal(response.headers["x-silk-cost"]) == cost > 0
    assert accounts.audit() == []


def test_a_cut_stream_bills_the_search_results_text(app, client, accounts, upstream):
    """A stream cut before the provider's usage bills the gateway's estimate of the prompt:
    it reads the search results' text (100 words each here) as the model did."""
    from silk.messages.translate import to_chat_body
    from silk.relay.tokens import prompt_estimate

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    words = {"type": "text", "text": " ".join(f"fact{i}" for i in range(100))}
    search = {**SEARCH, "content": [words]}
    body = request(stream=True, messages=[{"role": "user", "content": [
        search, {"type": "text", "text": "go [[fake: pieces=20 cut_after=4 no_usage]]"}]}])
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[-1][0] == "error"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    allowance = app.config["SILK_IMAGE_TOKEN_ALLOWANCE"]
    assert record.prompt_tokens == prompt_estimate(to_chat_body(body),
                                                   image_allowance=allowance) > 100
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.fixture
def cache_priced(app_config):
    """deepseek-chat with a cache-hit price, as DeepSeek lists one."""
    from silk.defaults import MODELS

    models = {**MODELS, "deepseek-chat": {**MODELS["deepseek-chat"], "cache_hit": "0.014"}}
    app_config["SILK_MODELS"] = models


def test_cache_hits_are_priced_at_the_cache_price(cache_priced, app, client, accounts,
                                                  upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("a b c d e f g h", "cache_hit=8")
    response = _post(client, acct, body)
    usage = response.json["usage"]
    assert usage["cache_read_input_tokens"] == 8
    prompt = chat_prompt_tokens(body)
    assert usage["input_tokens"] == prompt - 8
    [record] = accounts.usage_records(acct.id)
    assert record.cache_hit_tokens == 8
    cost = (Decimal(prompt - 8) * Decimal("0.14") + 8 * Decimal("0.014")
            + 6 * Decimal("0.28")) / 10**6
    assert Decimal(str(usage["cost"])) == cost
    assert record.cost_units == units(cost)
    assert accounts.audit() == []


def test_upstream_error_before_the_answer_costs_nothing(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = _post(client, acct, request("x", "status=400 error_message=bad"))
    assert response.status_code == 400
    assert response.json["type"] == "error"
    assert response.json["error"]["type"] == "invalid_request_error"
    assert accounts.ledger(acct.id)[-1].kind == "topup"
    assert accounts.row(acct.id).reserved_units == 0
