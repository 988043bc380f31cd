"""A refusal (OpenAI's `refusal` field, content null, as a provider with structured outputs
sends it) is output the provider bills and the gateway charges, so every surface delivers
it: a chat client gets the chunks as sent, a Responses client OpenAI's refusal part and its
events, a translated Messages client a text block. The fake sends its reply there with the
`refusal` option.
"""

from __future__ import annotations

import pytest

from tests.chat.helpers import (
    assert_charged_once,
    expected_cost,
    messages,
    set_quota_left,
    sse_events,
)
from tests.fakes.upstream import count_prompt_tokens
from tests.messages.helpers import HEADERS, sse
from tests.responses.helpers import output_items, post, typed_events

ASK = "say no [[fake: refusal pieces=3]]"
REFUSED = "w0 w1 w2"


def _charged(accounts, acct, sent: list[dict]) -> None:
    assert_charged_once(accounts, acct.id, 3,
                        expected_cost("deepseek-chat", count_prompt_tokens(sent), 3))


@pytest.mark.parametrize("stream", [True, False])
def test_a_chat_client_gets_the_refusal_as_the_provider_sent_it(app, client, accounts,
                                                                upstream, stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = client.post("/v1/chat/completions", headers=acct.headers,
                           buffered=True, json={"model": "deepseek-chat", "stream": stream,
                                                "messages": messages(ASK)})
    assert response.status_code == 200, response.data
    if stream:
        refused = "".join(chunk["choices"][0]["delta"].get("refusal") or ""
                          for chunk in sse_events(response.data)
                          if isinstance(chunk, dict) and chunk.get("choices"))
    else:
        refused = response.json["choices"][0]["message"]["refusal"]
    assert refused == REFUSED
    _charged(accounts, acct, upstream.requests[-1].body["messages"])


@pytest.mark.parametrize("stream", [True, False])
def test_a_responses_client_gets_the_refusal_it_pays_for(app, client, accounts, upstream,
                                                         stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = post(client, acct, {"model": "deepseek-chat", "input": ASK, "stream": stream,
                                   "store": False})
    assert response.status_code == 200, response.data
    if stream:
        events = typed_events(response.data)
        [item] = output_items(events)
        assert (item["type"], item["refusal"], item["deltas"]) == ("message", REFUSED, 3)
        [done] = [e for e in events if e["type"] == "response.refusal.done"]
        assert (done["refusal"], done["item_id"], done["content_index"]) == (
            REFUSED, item["id"], 0)
        assert item["done"]["content"] == [{"type": "refusal", "refusal": REFUSED}]
        final = events[-1]["response"]
    else:
        final = response.json
    [message] = final["output"]
    assert message["content"] == [{"type": "refusal", "refusal": REFUSED}]
    assert final["usage"]["output_tokens"] == 3
    _charged(accounts, acct, upstream.requests[-1].body["messages"])


def test_a_stored_refusal_is_carried_into_the_next_turn(client, accounts, upstream):
    acct = accounts.make(credit="1")
    first = post(client, acct, {"model": "deepseek-chat", "input": ASK}).json
    second = post(client, acct, {"model": "deepseek-chat", "input": "why?",
                                 "previous_response_id": first["id"]})
    assert second.status_code == 200, second.json
    sent = upstream.requests[-1].body["messages"]
    assert sent[1] == {"role": "assistant", "content": REFUSED}
    assert accounts.audit() == []


@pytest.mark.parametrize("stream", [True, False])
def test_a_messages_client_gets_the_refusal_as_text(app, client, accounts, upstream,
                                                    stream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = client.post("/v1/messages", headers={**acct.headers, **HEADERS}, buffered=True,
                           json={"model": "deepseek-chat", "max_tokens": 100, "stream": stream,
                                 "messages": [{"role": "user", "content": ASK}]})
    assert response.status_code == 200, response.data
    if stream:
        text = "".join(data["delta"]["text"] for name, data in sse(response.data)
                       if name == "content_block_delta" and data["delta"]["type"] == "text_delta")
    else:
        text = "".join(b["text"] for b in response.json["content"] if b["type"] == "text")
    assert text == REFUSED
    _charged(accounts, acct, upstream.requests[-1].body["messages"])
