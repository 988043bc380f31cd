"""The anthropic Python SDK against the real server: sync, async, streams, tools, errors."""

import asyncio
from decimal import Decimal

import anthropic
import pytest

from tests.chat.helpers import assert_charged_once, expected_cost, set_quota_left, units
from tests.fakes.upstream import tool_call_tokens
from tests.messages.helpers import chat_prompt_tokens

pytestmark = pytest.mark.slow

READ = {"name": "Read", "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                         "required": ["path"]}}


def _sdk(gateway, key, cls=anthropic.Anthropic):
    return cls(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)


def test_sdk_create_and_stream_exactly_billed(app, gateway, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    sdk = _sdk(gateway, acct.key)
    msgs = [{"role": "user", "content": "Hello SDK [[fake: pieces=9]]"}]
    message = sdk.messages.create(model="deepseek-chat", max_tokens=100, messages=msgs,
                                  system="Be brief.")
    assert message.content[0].text == " ".join(f"w{i}" for i in range(9))
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 9
    body = {"system": "Be brief.", "messages": msgs, "model": "x", "max_tokens": 1}
    cost = expected_cost("deepseek-chat", chat_prompt_tokens(body), 9)
    assert Decimal(str(message.usage.model_extra["cost"])) == cost
    with sdk.messages.stream(model="deepseek-chat", max_tokens=100, messages=msgs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " ".join(f"w{i}" for i in range(9))
    assert final.usage.output_tokens == 9
    assert final.usage.input_tokens == chat_prompt_tokens({**body, "system": None})
    records = accounts.usage_records(acct.id)
    assert [r.surface for r in records] == ["messages", "messages"]
    assert records[0].cost_units == units(cost)
    assert accounts.audit() == []


def test_sdk_tool_use_round_trip_thinking_and_images(gateway, accounts, upstream):
    acct = accounts.make(credit="5")
    sdk = _sdk(gateway, acct.key)
    msgs = [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "text", "text": "read it [[fake: tool_call=Read "
                                 "tool_args='{\"path\": \"a.txt\"}']]"}]}]
    with sdk.messages.stream(model="deepseek-reasoner", max_tokens=2000, messages=msgs,
                             tools=[READ], thinking={"type": "enabled",
                                                     "budget_tokens": 1024}) as stream:
        first = stream.get_final_message()
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].thinking == "Let me think ."
    call = first.content[1]
    assert call.name == "Read" and call.input == {"path": "a.txt"}
    assert first.stop_reason == "tool_use"
    msgs += [{"role": "assistant", "content": first.content},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                           "content": "contents of a.txt"}]}]
    second = sdk.messages.create(model="deepseek-reasoner", max_tokens=2000, messages=msgs,
                                 tools=[READ])
    assert second.content[-1].text == "Hello from the fake upstream ."
    sent = upstream.requests[-1].body["messages"]
    assert sent[0]["content"][0]["type"] == "image_url"
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "contents of a.txt"}
    assert accounts.audit() == []


def test_sdk_search_results_and_documents_reach_a_chat_model(gateway, accounts, upstream):
    """The SDK's own param types: a search result (in a tool's result too) and documents of
    text and of blocks go to a chat model as text under their title and source."""
    from anthropic.types import (
        DocumentBlockParam,
        SearchResultBlockParam,
        ToolResultBlockParam,
    )

    acct = accounts.make(credit="5")
    sdk = _sdk(gateway, acct.key)
    found = SearchResultBlockParam(type="search_result", source="https://kb.example/a",
                                   title="A", content=[{"type": "text", "text": "alpha"}],
                                   citations={"enabled": True})
    plain = DocumentBlockParam(type="document", title="notes", context="wiki", source={
        "type": "text", "media_type": "text/plain", "data": "beta"})
    blocks = DocumentBlockParam(type="document", source={"type": "content", "content": [
        {"type": "text", "text": "gamma"}]})
    result = ToolResultBlockParam(type="tool_result", tool_use_id="t1", content=[found])
    message = sdk.messages.create(model="deepseek-chat", max_tokens=100, messages=[
        {"role": "user", "content": [found, plain, blocks, {"type": "text", "text": "go"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read",
                                           "input": {}}]},
        {"role": "user", "content": [result]}], tools=[READ])
    assert message.content[-1].text == "Hello from the fake upstream ."
    sent = upstream.requests[-1].body["messages"]
    text = "A\nSource: https://kb.example/a\nalpha"
    assert sent[0] == {"role": "user", "content": "\n".join(
        [text, "notes\nwiki\nbeta", "gamma", "go"])}
    assert sent[-1] == {"role": "tool", "tool_call_id": "t1", "content": text}
    assert accounts.audit() == []


BASH = {"name": "Bash", "description": "Run a command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}


def test_sdk_stream_of_interleaved_tool_calls_accumulates_each_input(app, gateway, accounts,
                                                                     upstream):
    """A chat stream that sends a call's arguments after the next call started: the SDK's
    accumulator rebuilds every call's whole input, and the request is charged once."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    calls = [{"name": "Read", "arguments": '{"path": "/var/log/syslog"}'},
             {"name": "Bash", "arguments": '{"command": "grep -c error /var/log/syslog"}'}]
    upstream.enqueue("deepseek", tool_calls=calls, tool_stream="rounds")
    msgs = [{"role": "user", "content": "count the errors"}]
    with _sdk(gateway, acct.key).messages.stream(model="deepseek-chat", max_tokens=200,
                                                 messages=msgs, tools=[READ, BASH]) as stream:
        final = stream.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content] == [
        ("tool_use", "Read", {"path": "/var/log/syslog"}),
        ("tool_use", "Bash", {"command": "grep -c error /var/log/syslog"})]
    assert final.stop_reason == "tool_use"
    output = sum(tool_call_tokens(call["arguments"]) for call in calls)
    assert final.usage.output_tokens == output
    assert_charged_once(accounts, acct.id, output)


def test_sdk_native_path(native_gateway, gateway, accounts):
    acct = accounts.make(credit="1")
    sdk = _sdk(gateway, acct.key)
    msgs = [{"role": "user", "content": "hi [[fake: pieces=4]]"}]
    with sdk.messages.stream(model="mimo-v2.5", max_tokens=50, messages=msgs) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "w0 w1 w2 w3"
    assert native_gateway.requests[-1].path == "/mimo/anthropic/v1/messages"
    assert final.usage.output_tokens == 4
    assert accounts.audit() == []


def test_sdk_async(gateway, accounts, upstream):
    acct = accounts.make(credit="1")

    async def run():
        sdk = _sdk(gateway, acct.key, anthropic.AsyncAnthropic)
        message = await sdk.messages.create(model="deepseek-chat", max_tokens=50,
                                            messages=[{"role": "user", "content": "hi"}])
        texts = []
        async with sdk.messages.stream(model="deepseek-chat", max_tokens=50, messages=[
                {"role": "user", "content": "hi"}]) as stream:
            async for text in stream.text_stream:
                texts.append(text)
        counted = await sdk.messages.count_tokens(model="deepseek-chat", messages=[
            {"role": "user", "content": "hi there"}])
        return message, "".join(texts), counted

    message, text, counted = asyncio.run(run())
    assert message.content[0].text == text == "Hello from the fake upstream ."
    assert counted.input_tokens > 0
    assert accounts.audit() == []


def test_sdk_raises_on_mid_stream_error(gateway, accounts, upstream):
    acct = accounts.make(credit="1")
    sdk = _sdk(gateway, acct.key)
    with pytest.raises(anthropic.APIStatusError) as err, sdk.messages.stream(
            model="deepseek-chat", max_tokens=50, messages=[
                {"role": "user", "content": "x [[fake: pieces=10 cut_after=4]]"}]) as stream:
        for _ in stream:
            pass
    assert "Charged $" in str(err.value)
    assert accounts.audit() == []


def test_sdk_reads_a_stop_sequence_and_an_interrupted_answer(gateway, accounts, upstream):
    """The SDK's Message carries the stop sequence a provider named; a stream the provider
    interrupted (DeepSeek's insufficient_system_resource) raises an overloaded_error after
    the text it delivered, a JSON answer says max_tokens."""
    acct = accounts.make(credit="1")
    sdk = _sdk(gateway, acct.key)
    named = [{"role": "user", "content": "x [[fake: pieces=3 finish_json='{\"matched_stop\": "
                                         "\"END\"}']]"}]
    message = sdk.messages.create(model="deepseek-chat", max_tokens=50, messages=named,
                                  stop_sequences=["END"])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
    with sdk.messages.stream(model="deepseek-chat", max_tokens=50, messages=named,
                             stop_sequences=["END"]) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "END")
    busy = [{"role": "user", "content": "x [[fake: pieces=3 "
                                        "finish_reason=insufficient_system_resource]]"}]
    text = []
    with pytest.raises(anthropic.APIStatusError) as err, sdk.messages.stream(
            model="deepseek-chat", max_tokens=50, messages=busy) as stream:
        for piece in stream.text_stream:
            text.append(piece)
    assert "".join(text) == "w0 w1 w2"
    assert err.value.body["error"]["type"] == "overloaded_error"
    assert "Charged $" in str(err.value)
    message = sdk.messages.create(model="deepseek-chat", max_tokens=50, messages=busy)
    assert message.stop_reason == "max_tokens" and message.content[0].text == "w0 w1 w2"
    assert accounts.audit() == []


def test_sdk_error_classes(app, gateway, accounts, upstream):
    from silk.account.service import create_key

    acct = accounts.make(credit="1")
    msgs = [{"role": "user", "content": "x"}]
    ok = _sdk(gateway, acct.key)
    with pytest.raises(anthropic.BadRequestError):
        ok.messages.create(model="deepseek-chat", max_tokens=0, messages=msgs)
    with pytest.raises(anthropic.AuthenticationError):
        _sdk(gateway, "sk-wrong").messages.create(model="deepseek-chat", max_tokens=5,
                                                  messages=msgs)
    broke = accounts.make(credit="0")
    set_quota_left(app, broke.id)
    with pytest.raises(anthropic.PaymentRequiredError):
        _sdk(gateway, broke.key).messages.create(model="deepseek-chat", max_tokens=5,
                                                 messages=msgs)
    with app.app_context():
        limited = create_key(acct.id, name="l", allowed_models=["mimo-v2.5"], rpm_limit=1)
    with pytest.raises(anthropic.PermissionDeniedError):
        _sdk(gateway, limited.secret).messages.create(model="deepseek-chat", max_tokens=5,
                                                      messages=msgs)
    with pytest.raises(anthropic.RateLimitError) as limited_err:
        for _ in range(3):  # two workers, each counting: one of them sees two
            _sdk(gateway, limited.secret).messages.create(model="mimo-v2.5", max_tokens=5,
                                                          messages=msgs)
    assert int(limited_err.value.response.headers["retry-after"]) >= 1
    with pytest.raises(anthropic.NotFoundError):
        ok.messages.create(model="claude-none", max_tokens=5, messages=msgs)
    with pytest.raises(anthropic.ContentTooLargeError):
        ok.messages.create(model="deepseek-chat", max_tokens=5, messages=[
            {"role": "user", "content": "x " * (2_200_000)}])
    upstream.enqueue("deepseek", status=503, times=2)
    with pytest.raises(anthropic.ServiceUnavailableError) as unavailable:
        ok.messages.create(model="deepseek-chat", max_tokens=5, messages=msgs)
    assert unavailable.value.body["error"]["type"] == "overloaded_error"
    upstream.enqueue("deepseek", status=500, times=2)
    with pytest.raises(anthropic.InternalServerError):
        ok.messages.create(model="deepseek-chat", max_tokens=5, messages=msgs)
    assert accounts.audit() == []
