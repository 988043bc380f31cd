"""OpenAI-compatible clients under gunicorn: nulls (openai SDK), no `stream` (Vercel AI SDK)."""

from decimal import Decimal

import httpx
import openai
import pytest

from tests.chat.helpers import expected_cost, prompt_tokens, set_quota_left, units
from tests.support.gateway import Gateway
from tests.support.npm import node_client_fixture, run_node

pytestmark = pytest.mark.slow

vercel_ai = node_client_fixture("vercel-ai")

NONE_ARGUMENTS = {
    "temperature": None, "top_p": None, "max_tokens": None, "max_completion_tokens": None,
    "n": None, "stop": None, "seed": None, "user": None, "logprobs": None,
    "top_logprobs": None, "presence_penalty": None, "frequency_penalty": None,
    "tools": None, "tool_choice": None, "response_format": None, "reasoning_effort": None,
    "stream_options": None, "parallel_tool_calls": None, "logit_bias": None, "metadata": None,
}


def test_openai_sdk_with_none_values(app, gateway, accounts, upstream):
    acct = accounts.make(tier="free", credit="1")
    set_quota_left(app, acct.id)
    sent: list[bytes] = []
    http = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.content)]})
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=acct.key, max_retries=0,
                        timeout=20, http_client=http)
    msgs = [{"role": "user", "content": "Hello SDK [[fake: pieces=4]]"}]
    completion = sdk.chat.completions.create(model="deepseek-chat", messages=msgs,
                                             **NONE_ARGUMENTS)
    # The SDK sends an explicit None as JSON null (only NOT_GIVEN is left out).
    assert all(f'"{name}":null'.encode() in sent[-1] for name in NONE_ARGUMENTS)
    assert completion.choices[0].message.content == "w0 w1 w2 w3"
    cost = expected_cost("deepseek-chat", prompt_tokens(msgs), 4)
    assert Decimal(str(completion.usage.model_extra["cost"])) == cost
    relayed = upstream.requests[-1].body
    assert None not in relayed.values() and not set(NONE_ARGUMENTS) & set(relayed) - {
        "max_tokens"}

    stream = sdk.chat.completions.create(model="deepseek-chat", messages=msgs, stream=True,
                                         **{**NONE_ARGUMENTS, "stream_options": None})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
        "w0 w1 w2 w3"
    assert sum(r.cost_units for r in accounts.usage_records(acct.id)) == units(cost) * 2
    assert accounts.audit() == []


def _vercel(folder, gateway, key, mode, prompt):
    return run_node(folder, "run.mjs", mode, gateway.url + "/v1", key, "deepseek-chat", prompt)


@pytest.mark.parametrize("setting", ["true", "false"])
def test_vercel_ai_sdk_generate_and_stream_text(app, accounts, upstream, database_url,
                                               gateway_env, tmp_path, vercel_ai, setting):
    acct = accounts.make(tier="free", credit="1")
    set_quota_left(app, acct.id)
    prompt = "Hello Vercel [[fake: pieces=5]]"
    cost = expected_cost("deepseek-chat", prompt_tokens([{"role": "user", "content": prompt}]),
                         5)
    env = {**gateway_env, "SILK_STREAM_DEFAULT": setting}
    with Gateway(database_url, env, workers=1, log_path=tmp_path / "gunicorn.log") as gateway:
        generated = _vercel(vercel_ai, gateway, acct.key, "generate", prompt)
        streamed = _vercel(vercel_ai, gateway, acct.key, "stream", prompt)

    # generateText sends no `stream` and no Accept (Node's fetch then sends `*/*`): the
    # setting decides.
    request = generated["sent"][0]
    assert "stream" not in request["body"] and "accept" not in request["headers"]
    if setting == "false":
        assert generated["ok"], generated
        assert generated["text"] == "w0 w1 w2 w3 w4"
        assert generated["usage"]["outputTokens"] == 5
    else:  # it is handed an event stream it cannot read: the README says to set false
        assert not generated["ok"] and "Invalid JSON response" in generated["error"]

    assert streamed["sent"][0]["body"]["stream"] is True
    assert streamed["ok"], streamed
    assert streamed["text"] == "w0 w1 w2 w3 w4"
    assert streamed["usage"]["outputTokens"] == 5

    # Both requests were answered upstream and charged exactly once, whatever the client read.
    records = accounts.usage_records(acct.id)
    assert [r.status for r in records] == ["ok", "ok"]
    assert [r.cost_units for r in records] == [units(cost)] * 2
    assert accounts.balance_units(acct.id) == units(Decimal(1) - 2 * cost)
    assert accounts.audit() == []
