"""The reasoning a provider sends in vLLM's and OpenRouter's `reasoning` field, not
DeepSeek's `reasoning_content`, reaches a Responses or Messages client as it reaches a chat
one: it is billed (counted as it arrives), so it must be delivered too.

The provider is one an operator adds: the fake's `compat`, an OpenAI-compatible server
that sends its reasoning in `delta.reasoning` (a JSON answer's `message.reasoning`).
"""

from __future__ import annotations

import pytest

from tests.chat.helpers import COMPAT_MODEL, compat_config, set_quota_left
from tests.messages.helpers import HEADERS, sse
from tests.responses.helpers import typed_events

MODEL = COMPAT_MODEL
THOUGHT = "t0 t1 t2 t3 t4"
ASK = "think first [[fake: reasoning_pieces=5 pieces=3]]"


@pytest.fixture
def app_config(monkeypatch, upstream):
    return compat_config(monkeypatch, upstream, reasoning_streamed=True)


def _billed_reasoning(accounts, acct) -> int:
    [record] = accounts.usage_records(acct.id)
    assert accounts.row(acct.id).reserved_units == 0 and accounts.audit() == []
    return record.reasoning_tokens


@pytest.mark.parametrize("stream", [True, False])
def test_a_responses_client_gets_the_reasoning_it_pays_for(app, client, accounts, upstream,
                                                           stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = client.post("/v1/responses", headers=acct.headers, buffered=True, json={
        "model": MODEL, "input": ASK, "stream": stream})
    assert response.status_code == 200, response.data
    final = typed_events(response.data)[-1]["response"] if stream else response.json
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 5
    assert _billed_reasoning(accounts, acct) == 5
    reasoning = [item for item in final["output"] if item["type"] == "reasoning"]
    assert [part["text"] for item in reasoning for part in item["summary"]] == [THOUGHT]
    [message] = [item for item in final["output"] if item["type"] == "message"]
    assert message["content"][0]["text"] == "w0 w1 w2"


@pytest.mark.parametrize("stream", [True, False])
def test_a_messages_client_gets_the_reasoning_it_pays_for(app, client, accounts, upstream,
                                                          stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = client.post("/v1/messages", headers={**acct.headers, **HEADERS}, buffered=True,
                           json={"model": MODEL, "max_tokens": 1000, "stream": stream,
                                 "messages": [{"role": "user", "content": ASK}]})
    assert response.status_code == 200, response.data
    if stream:
        events = sse(response.data)
        thinking = "".join(data["delta"]["thinking"] for name, data in events
                           if name == "content_block_delta"
                           and data["delta"]["type"] == "thinking_delta")
        text = "".join(data["delta"]["text"] for name, data in events
                       if name == "content_block_delta" and data["delta"]["type"] == "text_delta")
    else:
        blocks = response.json["content"]
        thinking = "".join(b["thinking"] for b in blocks if b["type"] == "thinking")
        text = "".join(b["text"] for b in blocks if b["type"] == "text")
    assert _billed_reasoning(accounts, acct) == 5
    assert (thinking, text) == (THOUGHT, "w0 w1 w2")


def test_a_provider_that_sends_both_fields_is_shown_its_reasoning_once(app, client,
                                                                       accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/responses", headers=acct.headers, buffered=True, json={
        "model": MODEL, "input": ASK.replace("]]", " reasoning_field=both]]"), "stream": True})
    final = typed_events(response.data)[-1]["response"]
    reasoning = [item for item in final["output"] if item["type"] == "reasoning"]
    assert [part["text"] for item in reasoning for part in item["summary"]] == [THOUGHT]
