"""Streaming: SSE relayed chunk by chunk, usage chunk handling, every way a stream can end."""

from decimal import Decimal

from tests.chat.helpers import (
    expected_cost,
    messages,
    prompt_tokens,
    set_quota_left,
    sse_events,
    units,
)


def _stream(client, acct, msgs, model="deepseek-chat", **extra):
    body = {"model": model, "messages": msgs, "stream": True, **extra}
    return client.post("/v1/chat/completions", headers=acct.headers, json=body, buffered=True)


def test_stream_is_default_and_ends_with_done(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers=acct.headers,
                           json={"model": "deepseek-chat", "messages": messages()})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = sse_events(response.data)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if e["choices"])
    assert text == "Hello from the fake upstream ."
    # The gateway asked for usage to bill, but the client did not: no usage chunk reaches it.
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(e.get("usage") is None for e in events[:-1])
    assert all(e["choices"] for e in events[:-1])


def test_omitted_stream_with_accept_json_gets_json(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions",
                           headers={**acct.headers, "Accept": "application/json"},
                           json={"model": "deepseek-chat", "messages": messages()})
    assert response.mimetype == "application/json"
    assert response.json["object"] == "chat.completion"
    assert upstream.requests[-1].body["stream"] is False


def test_usage_chunk_carries_cost_when_asked(app, client, accounts, upstream):
    acct = accounts.make(tier="team", credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("hello world", "pieces=12")
    response = _stream(client, acct, msgs, stream_options={"include_usage": True})
    events = sse_events(response.data)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["prompt_tokens"] == prompt_tokens(msgs) and usage["completion_tokens"] == 12
    cost = expected_cost("deepseek-chat", prompt_tokens(msgs), 12, tier="team")
    assert Decimal(str(usage["cost"])) == cost
    assert accounts.balance_units(acct.id) == units(Decimal(1) - cost)
    [record] = accounts.usage_records(acct.id)
    assert record.stream and record.status == "ok" and not record.estimated
    assert accounts.audit() == []


def test_reasoning_content_streams_through(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = _stream(client, acct, messages(), model="deepseek-reasoner", max_tokens=50)
    events = sse_events(response.data)
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or ""
                        for e in events[:-1] if e["choices"])
    assert reasoning == "Let me think ."
    assert events[0]["model"] == "deepseek-v4-flash"


def test_keepalive_comments_are_passed_on(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = _stream(client, acct, messages("x", "first_token_delay=0.3 keepalive_interval=0.05"))
    assert b": keep-alive\n\n" in response.data
    assert sse_events(response.data)[-1] == "[DONE]"


def test_cut_stream_bills_delivered_text_estimated_and_ends_with_error(app, client, accounts,
                                                                      upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("cut me", "pieces=30 cut_after=11")
    response = _stream(client, acct, msgs)
    events = sse_events(response.data)
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    delivered = [e for e in events[:-1] if e.get("choices")]
    assert len(delivered) == 11  # the role chunk and ten one-token pieces
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.completion_tokens == 10  # "w0", " w1" ... " w9": one token each
    # The prompt is estimated from its text: "cut me [[fake: pieces=30 cut_after=11]]"
    # is 5 words and 8 marks (more than its 39 characters / 4), plus 4 for the message.
    assert record.prompt_tokens == 17
    cost = expected_cost("deepseek-chat", 17, 10)
    assert record.cost_units == units(cost)
    ledger = accounts.ledger(acct.id)
    assert [(e.kind, e.amount_units) for e in ledger] == [("topup", 10**9),
                                                          ("charge", -units(cost))]
    assert ledger[-1].balance_after_units == 10**9 - units(cost)
    assert accounts.balance_units(acct.id) == units(Decimal(1)) - record.cost_units
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


def test_client_disconnect_closes_upstream_and_bills_what_was_delivered(app, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    client = app.test_client()
    response = client.post("/v1/chat/completions", headers=acct.headers, buffered=False, json={
        "model": "deepseek-chat", "stream": True,
        "messages": messages("long", "pieces=200 chunk_delay=0.02")})
    chunks = iter(response.response)
    received = b""
    while received.count(b"data: ") < 5:
        received += next(chunks)
    response.close()  # the client goes away mid-stream
    disconnects = upstream.wait_for(lambda: upstream.disconnects, timeout=5)
    assert disconnects[0].chunks_sent < 200
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and record.estimated
    assert 4 <= record.completion_tokens < 200  # what reached the client, not what was asked
    assert record.cost_units == units(expected_cost("deepseek-chat", record.prompt_tokens,
                                                    record.completion_tokens))
    ledger = accounts.ledger(acct.id)
    assert [(e.kind, e.amount_units) for e in ledger] == [("topup", 10**9),
                                                          ("charge", -record.cost_units)]
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


def test_upstream_silence_times_out_mid_stream(app, client, accounts, upstream):
    app.extensions["silk.upstreams"]["deepseek"].timeout = (2.0, 0.5)
    acct = accounts.make(credit="1")
    response = _stream(client, acct, messages("slow", "pieces=10 chunk_delay=2"))
    events = sse_events(response.data)
    assert events[-1]["error"]["code"] == "upstream_timeout"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "timeout"
    assert accounts.audit() == []


def test_upstream_without_usage_is_estimated_and_client_still_gets_usage(app, client, accounts,
                                                                         upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _stream(client, acct, messages("x", "no_usage=1 pieces=8"),
                       stream_options={"include_usage": True})
    events = sse_events(response.data)
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    assert usage["estimated"] is True and usage["cost"] > 0
    [record] = accounts.usage_records(acct.id)
    assert record.estimated and record.status == "ok"
    assert record.cost_units == units(Decimal(str(usage["cost"])))
    assert accounts.audit() == []


def test_stream_closed_before_its_first_chunk_still_settles(app, accounts, upstream):
    """A WSGI server may close a response it never iterated; the hold must not linger."""
    acct = accounts.make(credit="1")
    response = app.test_client().post("/v1/chat/completions", headers=acct.headers,
                                      buffered=False, json={"model": "deepseek-chat",
                                                            "stream": True,
                                                            "messages": messages()})
    assert response.status_code == 200
    response.close()
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and record.cost_units == 0
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []
