"""POST /v1/messages, translated to chat completions: answers, streams, exact metering."""

from decimal import Decimal

from tests.chat.helpers import expected_cost, set_quota_left, units
from tests.messages.helpers import HEADERS, chat_prompt_tokens, request, sse


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
