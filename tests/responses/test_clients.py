"""The openai SDK's Responses client against the real server (gunicorn), metered exactly."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import openai
import pytest
from pydantic import BaseModel

from tests.chat.helpers import assert_charged_once, expected_cost, set_quota_left, units
from tests.fakes.upstream import count_prompt_tokens, tool_call_tokens

pytestmark = pytest.mark.slow

SHELL = {"type": "function", "name": "shell", "description": "Run a shell command.",
         "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                        "required": ["cmd"]}}


def _sdk(gateway, key, cls=openai.OpenAI):
    return cls(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_sync_create_retrieve_delete_tool_loop_and_json_schema(app, gateway, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    sdk = _sdk(gateway, acct.key)
    response = sdk.responses.create(model="deepseek-chat", input="Hello SDK",
                                    instructions="Be kind.", metadata={"run": "1"})
    assert response.status == "completed"
    assert response.output_text == "Hello from the fake upstream ."
    prompt = count_prompt_tokens([{"content": "Be kind."}, {"content": "Hello SDK"}])
    assert response.usage.input_tokens == prompt and response.usage.output_tokens == 6
    cost = expected_cost("deepseek-chat", prompt, 6)
    assert Decimal(str(response.usage.model_extra["cost"])) == cost
    assert accounts.balance_units(acct.id) == 10**9 - units(cost)
    kept = sdk.responses.retrieve(response.id)
    assert kept.id == response.id and kept.output_text == response.output_text
    assert kept.metadata == {"run": "1"} and kept.instructions == "Be kind."
    items = sdk.responses.input_items.list(response.id)
    assert [item.content[0].text for item in items.data] == ["Hello SDK"]
    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    _function_calling_loop(sdk, accounts, acct, upstream)
    _json_schema_is_parsed(sdk, upstream)
    assert accounts.audit() == []


def test_async_stream_create_and_stream_helper(app, gateway, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)

    async def run():
        sdk = _sdk(gateway, acct.key, openai.AsyncOpenAI)
        stream = await sdk.responses.create(model="deepseek-chat", stream=True,
                                            input="stream [[fake: pieces=20 chunk_delay=0.01]]")
        deltas, final = [], None
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
        return deltas, final

    deltas, final = asyncio.run(run())
    assert "".join(deltas) == " ".join(f"w{i}" for i in range(20))
    assert final.usage.output_tokens == 20
    cost = expected_cost("deepseek-chat", final.usage.input_tokens, 20)
    assert Decimal(str(final.usage.model_extra["cost"])) == cost
    assert accounts.balance_units(acct.id) == 10**9 - units(cost)

    async def create():
        return await _sdk(gateway, acct.key, openai.AsyncOpenAI).responses.create(
            model="mimo-v2.5", input="hi")

    assert asyncio.run(create()).output_text == "Hello from the fake upstream ."
    with _sdk(gateway, acct.key).responses.stream(model="deepseek-chat", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello from the fake upstream ."
    # A failure after the stream began reaches the SDK as response.failed.
    kinds = [event.type for event in _sdk(gateway, acct.key).responses.create(
        model="deepseek-chat", stream=True, input="x [[fake: pieces=10 cut_after=4]]")]
    assert kinds[-1] == "response.failed"
    assert accounts.audit() == []


def test_stream_helper_with_interleaved_tool_calls_gets_each_call_whole(app, gateway, accounts,
                                                                        upstream):
    """A chat stream that sends a call's arguments after the next call started: the SDK's
    stream helper sees each call whole, in its own item, and the request is charged once."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    calls = [{"name": "shell", "arguments": '{"cmd": "grep -c error /var/log/syslog"}'},
             {"name": "shell", "arguments": '{"cmd": "tail -n 5 /var/log/syslog"}'}]
    upstream.enqueue("deepseek", tool_calls=calls, tool_stream="rounds")
    done = []
    with _sdk(gateway, acct.key).responses.stream(model="deepseek-chat", tools=[SHELL],
                                                  input="look at the log") as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.done":
                done.append(event.arguments)
        final = stream.get_final_response()
    assert done == [call["arguments"] for call in calls]
    assert [(item.type, json.loads(item.arguments)) for item in final.output] == [
        ("function_call", {"cmd": "grep -c error /var/log/syslog"}),
        ("function_call", {"cmd": "tail -n 5 /var/log/syslog"})]
    assert len({item.call_id for item in final.output}) == 2
    output = sum(tool_call_tokens(call["arguments"]) for call in calls)
    assert final.usage.output_tokens == output
    assert_charged_once(accounts, acct.id, output)


def _function_calling_loop(sdk, accounts, acct, upstream):
    first = sdk.responses.create(
        model="deepseek-chat", tools=[SHELL],
        input="""List files [[fake: tool_call=shell tool_args='{"cmd":"ls"}']]""")
    [call] = first.output
    assert call.type == "function_call" and call.name == "shell"
    assert json.loads(call.arguments) == {"cmd": "ls"}
    second = sdk.responses.create(
        model="deepseek-chat", tools=[SHELL], previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "a.txt"}])
    assert second.output_text == "Hello from the fake upstream ."
    sent = upstream.requests[-1].body["messages"]
    assert sent[0]["content"].startswith("List files")  # carried from the first response
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "a.txt"}
    # The hold covered the carried prompt too: billed exactly what the fake counted.
    record = accounts.usage_records(acct.id)[-1]
    assert record.prompt_tokens == count_prompt_tokens(sent)


class City(BaseModel):
    city: str


def _json_schema_is_parsed(sdk, upstream):
    parsed = sdk.responses.parse(model="deepseek-chat", text_format=City,
                                 input="""Where? [[fake: reply='{"city":"Paris"}']]""")
    assert parsed.output_parsed == City(city="Paris")
    sent = upstream.requests[-1].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"
    assert sent["json_schema"]["schema"]["properties"]["city"]["type"] == "string"

