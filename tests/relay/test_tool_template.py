"""A request that offers tools is billed the provider's instructions around them too: the
hold's prompt bound leaves room for them, so nothing the provider bills is written off."""

from __future__ import annotations

import json

import pytest

from tests.chat.helpers import expected_cost, set_quota_left, units
from tests.fakes.anthropic import prompt_tokens as anthropic_prompt_tokens
from tests.fakes.upstream import count_prompt_tokens
from tests.messages.conftest import native  # noqa: F401  (the native providers' fixture)
from tests.messages.helpers import HEADERS, request

# Anthropic documents a tool-use system prompt of 346 tokens (313 when a tool is forced);
# DeepSeek's chat template wraps tools in about 150.
TEMPLATE = 346
TOOL = {"type": "function", "function": {"name": "f"}}


def _billed_exactly(accounts, acct, prompt: int) -> None:
    [record] = accounts.usage_records(acct.id)
    assert (record.prompt_tokens, record.written_off_units) == (prompt, 0)
    assert record.cost_units == units(expected_cost("deepseek-chat", prompt,
                                                    record.completion_tokens))
    assert not record.estimated
    assert accounts.audit() == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_chat_tools_with_the_providers_template_fit_the_hold(app, client, accounts, upstream,
                                                             stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    messages = [{"role": "user", "content": "hi"}]
    prompt = count_prompt_tokens(messages) + TEMPLATE
    upstream.enqueue("deepseek", usage_json=json.dumps({"prompt_tokens": prompt}))
    response = client.post("/v1/chat/completions", headers=acct.headers, json={
        "model": "deepseek-chat", "stream": stream, "max_tokens": 50, "messages": messages,
        "tools": [TOOL]})
    response.get_data()
    assert response.status_code == 200
    _billed_exactly(accounts, acct, prompt)


def test_responses_tools_with_the_providers_template_fit_the_hold(app, client, accounts,
                                                                  upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    prompt = count_prompt_tokens([{"role": "user", "content": "hi"}]) + TEMPLATE
    upstream.enqueue("deepseek", usage_json=json.dumps({"prompt_tokens": prompt}))
    response = client.post("/v1/responses", headers=acct.headers, json={
        "model": "deepseek-chat", "input": "hi", "max_output_tokens": 50,
        "tools": [{"type": "function", "name": "f", "parameters": {}}]})
    assert response.status_code == 200, response.json
    _billed_exactly(accounts, acct, prompt)


def test_native_messages_tools_with_the_providers_template_fit_the_hold(
        native, app, client, accounts):  # noqa: F811
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("hi", max_tokens=50, tools=[{"name": "f", "input_schema": {}}])
    prompt = anthropic_prompt_tokens(body) + TEMPLATE
    native.enqueue("deepseek", usage_json=json.dumps({"input_tokens": prompt}))
    response = client.post("/v1/messages", headers={**acct.headers, **HEADERS}, json=body)
    assert response.status_code == 200, response.json
    _billed_exactly(accounts, acct, prompt)
