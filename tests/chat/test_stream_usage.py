"""Stream usage: settled once at the end from the largest usage seen, told to the client once.

Also what a broken stream tells its client it paid, and the prompt estimate a stream cut
before the provider's usage is billed from.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from silk.pricing import Usage, quote, usd_to_units
from tests.chat.helpers import messages, prompt_tokens, set_quota_left, sse_events
from tests.support.images import IMAGE_URL, data_url, patch_tokens


def _stream(client, acct, model, msgs, **extra):
    body = {"model": model, "messages": msgs, "stream": True, **extra}
    return client.post("/v1/chat/completions", headers=acct.headers, json=body, buffered=True)


def _price(app, model: str, usage: Usage) -> int:
    cat = app.extensions["silk.catalogue"]
    return quote(cat.model(model).price, usage, cat.tiers["free"], 0).total


def _usage_chunks(events) -> list[dict]:
    return [e for e in events if isinstance(e, dict) and e.get("usage")]


@pytest.mark.parametrize("options", [{"include_usage": True, "chunk_include_usage": True},
                                     {"chunk_include_usage": True}])
def test_ark_running_usage_is_settled_at_the_end(app, client, accounts, upstream, options):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("a long answer", "pieces=40")
    events = sse_events(_stream(client, acct, "doubao-seed-2.0-pro", msgs,
                                stream_options=options).data)
    assert events[-1] == "[DONE]"
    cost = _price(app, "doubao-seed-2.0-pro", Usage(prompt_tokens(msgs), 40))
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.completion_tokens, record.estimated) == ("ok", 40, False)
    assert record.cost_units == cost and record.written_off_units == 0
    assert [(e.kind, e.amount_units) for e in accounts.ledger(acct.id)] == [
        ("topup", 10**9), ("charge", -cost)]
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}
    usage_chunks = _usage_chunks(events)
    if options.get("include_usage"):
        assert usage_chunks == [events[-2]] and events[-2]["choices"] == []
        usage = events[-2]["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt_tokens(msgs), 40)
        assert usd_to_units(Decimal(str(usage["cost"]))) == cost
    else:
        assert usage_chunks == []
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if e.get("choices"))
    assert text == " ".join(f"w{i}" for i in range(40))
    assert accounts.audit() == []


def test_repeated_usage_chunk_reaches_the_client_once(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("again", "pieces=7 repeat_usage=2")
    events = sse_events(_stream(client, acct, "deepseek-chat", msgs,
                                stream_options={"include_usage": True}).data)
    assert events[-1] == "[DONE]"
    [chunk] = _usage_chunks(events)
    assert chunk is events[-2]
    cost = _price(app, "deepseek-chat", Usage(prompt_tokens(msgs), 7))
    assert usd_to_units(Decimal(str(chunk["usage"]["cost"]))) == cost
    # The provider's own fields reach the client untouched.
    assert chunk["usage"]["prompt_cache_miss_tokens"] == prompt_tokens(msgs)
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == cost
    assert accounts.audit() == []


def test_cut_stream_error_event_states_the_charge(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    events = sse_events(_stream(client, acct, "deepseek-chat",
                                messages("cut me", "pieces=30 cut_after=11")).data)
    last = events[-1]
    assert last["error"]["code"] == "upstream_stream_cut"
    [record] = accounts.usage_records(acct.id)
    [charge] = [e for e in accounts.ledger(acct.id) if e.kind == "charge"]
    assert record.estimated and charge.amount_units == -record.cost_units != 0
    usage = last["usage"]
    assert usage["estimated"] is True
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (record.prompt_tokens,
                                                                    record.completion_tokens)
    cost = Decimal(str(usage["cost"]))
    assert usd_to_units(cost) == record.cost_units
    assert f"${cost:f}" in last["error"]["message"]
    assert accounts.audit() == []


def test_cut_before_anything_was_delivered_says_nothing_was_charged(app, client, accounts,
                                                                   upstream):
    acct = accounts.make(credit="1")
    events = sse_events(_stream(client, acct, "deepseek-chat",
                                messages("x", "pieces=5 cut_after=0")).data)
    [last] = events
    assert last["error"]["message"].endswith("Nothing was charged.")
    assert last["usage"]["cost"] == 0
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == 0 and accounts.ledger(acct.id)[-1].kind == "topup"
    assert accounts.audit() == []


def test_cut_after_usage_states_the_providers_count(app, client, accounts, upstream):
    """Usage arrived, then the stream broke before [DONE]: billed from the provider's count."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("nearly", "pieces=5 cut_after=8")  # role, 5 pieces, finish, usage
    events = sse_events(_stream(client, acct, "deepseek-chat", msgs,
                                stream_options={"include_usage": True}).data)
    last = events[-1]
    assert last["error"]["code"] == "upstream_stream_cut"
    assert _usage_chunks(events) == [last]  # no usage chunk besides the error's
    cost = _price(app, "deepseek-chat", Usage(prompt_tokens(msgs), 5))
    assert usd_to_units(Decimal(str(last["usage"]["cost"]))) == cost
    assert "estimated" not in last["usage"]
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == cost and not record.estimated and record.status == "cut"
    assert accounts.audit() == []


def test_cut_stream_prompt_estimate_counts_tools_and_tool_calls(app, client, accounts, upstream):
    """A prompt carried in tool schemas and call arguments is estimated, not ignored."""
    acct = accounts.make(credit="10")
    set_quota_left(app, acct.id)
    words = 3000
    prose = " ".join(f"clause{i} of the contract" for i in range(words // 4))
    arguments = '{"text": "' + prose + '"}'
    msgs = [
        {"role": "user", "content": "summarise"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "fetch_contract", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        {"role": "user", "content": "go on [[fake: pieces=30 cut_after=6]]"},
    ]
    tools = [{"type": "function", "function": {
        "name": f"tool_{i}", "description": prose,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
        for i in range(3)]
    events = sse_events(_stream(client, acct, "deepseek-chat", msgs, tools=tools).data)
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    [record] = accounts.usage_records(acct.id)
    assert record.estimated
    # Four copies of the prose (about `words` words each) went upstream; at about a token
    # a word, the estimate is within a factor of two of that.
    real = 4 * words
    assert real / 2 <= record.prompt_tokens <= real * 2, record.prompt_tokens
    assert record.cost_units == _price(app, "deepseek-chat",
                                       Usage(record.prompt_tokens, record.completion_tokens))
    assert accounts.audit() == []


@pytest.mark.parametrize("directive", ["early_usage no_usage", "early_usage cut_after=8"],
                         ids=["done", "cut"])
def test_output_after_the_providers_last_count_is_billed(app, client, accounts, upstream,
                                                         directive):
    """A usage chunk that came before the answer (the prompt alone) does not cover what was
    delivered after it: that output is billed from its estimate on top of the count."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    # role, early usage, 5 pieces, finish (and no final usage either way)
    msgs = messages("counted first", f"pieces=5 {directive}")
    _stream(client, acct, "deepseek-chat", msgs, stream_options={"include_usage": True})
    [record] = accounts.usage_records(acct.id)
    assert (record.prompt_tokens, record.completion_tokens) == (prompt_tokens(msgs), 5)
    assert record.estimated
    cost = _price(app, "deepseek-chat", Usage(prompt_tokens(msgs), 5))
    assert record.cost_units == cost
    assert [(e.kind, e.amount_units) for e in accounts.ledger(acct.id)] == [
        ("topup", 10**9), ("charge", -cost)]
    assert accounts.audit() == []


@pytest.mark.parametrize("directive", ["cut_after=42", "no_usage"], ids=["cut", "done"])
def test_a_count_repeated_unchanged_does_not_cover_what_came_after_it(app, client, accounts,
                                                                      upstream, directive):
    """A provider that repeats its prompt-only count (completion 0) after every piece has
    counted none of them: the pieces are billed from their estimate, however the stream
    ends (cut before its final usage, or done without one)."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    # role, early usage, 20 x (piece, the early usage again), then the cut
    msgs = messages("counted stale", f"pieces=20 early_usage stale_usage {directive}")
    _stream(client, acct, "deepseek-chat", msgs, stream_options={"include_usage": True})
    [record] = accounts.usage_records(acct.id)
    assert (record.prompt_tokens, record.completion_tokens) == (prompt_tokens(msgs), 20)
    assert record.estimated
    cost = _price(app, "deepseek-chat", Usage(prompt_tokens(msgs), 20))
    assert record.cost_units == cost
    assert accounts.audit() == []


def test_a_final_count_after_an_early_one_is_billed_as_reported(app, client, accounts,
                                                                upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("counted twice", "pieces=5 early_usage")
    events = sse_events(_stream(client, acct, "deepseek-chat", msgs,
                                stream_options={"include_usage": True}).data)
    assert events[-1] == "[DONE]"
    cost = _price(app, "deepseek-chat", Usage(prompt_tokens(msgs), 5))
    [chunk] = _usage_chunks(events)
    assert usd_to_units(Decimal(str(chunk["usage"]["cost"]))) == cost
    assert "estimated" not in chunk["usage"]
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == cost and not record.estimated
    assert accounts.audit() == []


@pytest.mark.parametrize("surface", ["chat", "messages"])
@pytest.mark.parametrize("odd", ["infinite_logprobs", "lone_surrogates"])
def test_events_only_a_lenient_parser_reads_are_counted(app, client, accounts, upstream,
                                                        surface, odd):
    """A provider that writes a logprob as -Infinity (JSON orjson refuses) still delivers
    the text of those events: a stream that ends without usage bills it from its estimate,
    as it does the same text without the odd field."""
    from tests.messages.helpers import HEADERS, content_blocks, request, sse

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    directive = f"pieces=5 {odd} no_usage"
    if surface == "chat":
        msgs = messages("odd numbers", directive)
        raw = _stream(client, acct, "deepseek-chat", msgs, logprobs=True,
                      stream_options={"include_usage": True}).data
        # The client gets the events as they came.
        assert raw.count(b"-Infinity" if odd == "infinite_logprobs" else b"\\ud83d") == 5
    else:
        body = request("odd numbers", directive, stream=True)
        raw = client.post("/v1/messages", headers={**acct.headers, **HEADERS}, json=body,
                          buffered=True).data
        [block] = content_blocks(sse(raw))
        assert block["text"] == "w0 w1 w2 w3 w4"
    [record] = accounts.usage_records(acct.id)
    # No count came: the prompt is the gateway's estimate, the output the text delivered.
    assert (record.completion_tokens, record.estimated) == (5, True)
    assert record.cost_units == _price(app, "deepseek-chat",
                                       Usage(record.prompt_tokens, 5))
    assert accounts.audit() == []


@pytest.mark.parametrize("image,tokens", [(data_url(2048, 2048), patch_tokens(2048, 2048)),
                                          (data_url(300, 200, "JPEG"), patch_tokens(300, 200)),
                                          (IMAGE_URL, "allowance")],
                         ids=["png-2048", "jpeg-300x200", "https"])
def test_cut_stream_bills_an_image_as_the_provider_does(app, client, accounts, upstream,
                                                        image, tokens):
    """A client that cuts a stream before the provider's usage cannot pay less for an image
    than the provider bills: one held in the request is estimated from its pixels, one by
    URL (whose size the gateway cannot know) at the allowance its hold took."""
    if tokens == "allowance":
        tokens = app.config["SILK_IMAGE_TOKEN_ALLOWANCE"]
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    text = {"type": "text", "text": "describe it [[fake: pieces=30 cut_after=3]]"}
    for parts in ([text], [text, {"type": "image_url", "image_url": {"url": image}}]):
        events = sse_events(_stream(client, acct, "doubao-seed-2.0-pro",
                                    [{"role": "user", "content": parts}]).data)
        assert events[-1]["error"]["code"] == "upstream_stream_cut"
    plain, pictured = accounts.usage_records(acct.id)
    assert plain.estimated and pictured.estimated
    assert pictured.prompt_tokens - plain.prompt_tokens == tokens
    assert pictured.completion_tokens == plain.completion_tokens == 2
    cost = _price(app, "doubao-seed-2.0-pro", Usage(pictured.prompt_tokens, 2))
    assert pictured.cost_units == cost
    assert [e.amount_units for e in accounts.ledger(acct.id) if e.kind == "charge"][-1] == -cost


@pytest.mark.parametrize("field", ["reasoning", "both"])
def test_reasoning_streamed_as_reasoning_is_billed_once_when_cut(app, client, accounts,
                                                                 upstream, field):
    """A server that streams its thinking in `delta.reasoning` (vLLM's and OpenRouter's
    name) delivers it as surely as one using `reasoning_content`: a stream cut before the
    usage bills it. One that sends the same text in both fields bills it once."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    # role, 20 reasoning chunks, 5 reply pieces; cut before the finish and the usage
    msgs = messages("think first", f"reasoning_pieces=20 pieces=5 reasoning_field={field} "
                                   "cut_after=26")
    events = sse_events(_stream(client, acct, "deepseek-reasoner", msgs,
                                stream_options={"include_usage": True}).data)
    assert events[1]["choices"][0]["delta"]["reasoning"] == "t0"
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.completion_tokens == 25
    assert record.cost_units == _price(app, "deepseek-reasoner",
                                       Usage(record.prompt_tokens, 25))
    assert accounts.audit() == []
