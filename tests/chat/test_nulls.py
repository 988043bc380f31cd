"""An explicit null for an optional chat field means "not given": accepted, never relayed."""

from decimal import Decimal

import pytest

from silk.chat.schemas import ChatRequestSchema, drop_nulls
from tests.chat.helpers import expected_cost, messages, prompt_tokens, set_quota_left

JSON = {"Accept": "application/json"}

# Every optional top-level field the schema types, and a few OpenAI fields it passes through.
OPTIONAL = sorted(set(ChatRequestSchema._declared_fields) - {"model", "messages"}) + [
    "logit_bias", "parallel_tool_calls", "metadata", "store", "service_tier", "functions",
    "function_call", "modalities", "prediction", "audio", "web_search_options"]


def test_the_list_covers_the_issue_and_every_declared_field():
    issue = {"temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "seed",
             "stream", "stream_options", "tools", "tool_choice", "response_format", "user",
             "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
             "reasoning_effort"}
    assert issue <= set(OPTIONAL)


def test_drop_nulls_keeps_required_fields_and_message_content():
    body = {"model": None, "messages": [
        {"role": "assistant", "content": None, "name": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": None}],
        "temperature": None, "stream_options": {"include_usage": None, "x": 1}}
    assert drop_nulls(body) == {"model": None, "messages": [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"}],
        "stream_options": {"x": 1}}


def test_every_optional_field_null_is_accepted_and_not_sent(app, client, accounts, upstream):
    acct = accounts.make(tier="free", credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("nulls everywhere")
    body = {"model": "deepseek-chat", "messages": [{**msgs[0], "name": None}],
            **{name: None for name in OPTIONAL}}
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json=body)
    assert response.status_code == 200, response.json
    sent = upstream.requests[-1].body
    assert not [name for name, value in sent.items() if value is None]
    # Only what the gateway itself sets: the stream flag, the limit, the route's thinking.
    assert set(OPTIONAL) & set(sent) == {"stream", "max_tokens", "thinking"}
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["stream"] is False and sent["max_tokens"] == 8192  # the model's limit
    assert sent["messages"] == msgs  # `name: null` taken out
    cost = expected_cost("deepseek-chat", prompt_tokens(msgs), 6)
    assert Decimal(response.headers["x-silk-cost"]) == cost


@pytest.mark.parametrize("name", OPTIONAL)
def test_each_null_field_alone(client, accounts, upstream, name):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": "mimo-v2.5", "messages": messages(), name: None})
    assert response.status_code == 200, response.json
    assert None not in upstream.requests[-1].body.values()


def test_null_include_usage_streams_without_a_usage_chunk(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers=acct.headers, json={
        "model": "deepseek-chat", "messages": messages(), "stream": True,
        "stream_options": {"include_usage": None}})
    assert response.status_code == 200
    assert b'"usage":{' not in response.data and response.data.endswith(b"data: [DONE]\n\n")
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("body,param", [
    ({"model": None, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "deepseek-chat", "messages": None}, "messages"),
    ({"model": "deepseek-chat", "messages": [{"role": None, "content": "x"}]},
     "messages[0].role"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": None}]},
     "messages[0].content"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
      "temperature": "hot"}, "temperature"),
])
def test_required_fields_stay_required(client, accounts, upstream, body, param):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json=body)
    assert response.status_code == 400
    assert response.json["error"]["param"] == param
    assert upstream.requests == []
