"""The native path: a provider's own Anthropic endpoint, relayed event by event, metered."""

import json
from decimal import Decimal

import pytest

from tests.chat.helpers import expected_cost, set_quota_left, strict_sse, units
from tests.fakes.anthropic import prompt_tokens
from tests.messages.helpers import HEADERS, request, sse


def _post(client, acct, body, **kw):
    return client.post("/v1/messages", headers={**acct.headers, **HEADERS}, json=body, **kw)


def test_request_goes_as_it_came_with_the_route_applied(native, client, accounts):
    acct = accounts.make(credit="1")
    body = request("hi", system=[{"type": "text", "text": "sys", "cache_control": {
        "type": "ephemeral"}}], metadata={"user_id": "u"}, top_k=3)
    response = _post(client, acct, body)
    assert response.status_code == 200, response.json
    sent = native.requests[-1]
    assert sent.path == "/deepseek/anthropic/v1/messages"
    assert sent.headers["x-api-key"] == sent.key
    assert sent.headers["authorization"] == f"Bearer {sent.key}"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {**body, "model": "deepseek-v4-flash", "stream": False,
                         "thinking": {"type": "disabled"}}
    assert response.json["content"] == [{"type": "text",
                                         "text": "Hello from the fake upstream ."}]


def test_what_the_catalogue_cannot_price_is_not_sent(native, client, accounts):
    acct = accounts.make(credit="1")
    body = request("hi", tools=[
        {"name": "Read", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
        mcp_servers=[{"type": "url", "url": "https://mcp.example", "name": "x"}],
        container="c", service_tier="auto", speed="fast")
    assert _post(client, acct, body).status_code == 200
    sent = native.requests[-1].body
    assert [t["name"] for t in sent["tools"]] == ["Read"]
    assert not {"mcp_servers", "container", "service_tier", "speed"} & set(sent)


def test_chat_output_bounds_are_not_sent(native, client, accounts):
    """The provider gets one output limit, the max_tokens held: not chat completions'
    max_completion_tokens or n, which its own chat dialect obeys and no Messages field is."""
    acct = accounts.make(credit="1")
    body = request("hi", max_completion_tokens=100_000, n=8)
    assert _post(client, acct, body).status_code == 200
    sent = native.requests[-1].body
    assert sent["max_tokens"] == 1000
    assert not {"max_completion_tokens", "n"} & set(sent)
    assert accounts.audit() == []


def test_json_answer_is_billed_from_anthropic_counts(native, app, client, accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("one two", "pieces=12", system="be short")
    response = _post(client, acct, body)
    cost = expected_cost("deepseek-chat", prompt_tokens(body), 12)
    assert Decimal(response.headers["x-silk-cost"]) == cost
    usage = response.json["usage"]
    assert usage["input_tokens"] == prompt_tokens(body) and usage["output_tokens"] == 12
    assert Decimal(str(usage["cost"])) == cost
    [record] = accounts.usage_records(acct.id)
    assert record.surface == "messages" and record.cost_units == units(cost)
    assert accounts.audit() == []


def test_stream_is_relayed_and_its_final_delta_carries_the_cost(native, app, client,
                                                                 accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("go", "pieces=7 cache_hit=3", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("message_delta") == 1
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "w0 w1 w2 w3 w4 w5 w6"
    usage = events[-2][1]["usage"]
    assert usage["output_tokens"] == 7
    prompt = prompt_tokens(body)
    cost = expected_cost("deepseek-chat", prompt, 7)  # no cache price: hits at input price
    assert Decimal(str(usage["cost"])) == cost
    [record] = accounts.usage_records(acct.id)
    assert record.prompt_tokens == prompt and record.cache_hit_tokens == 3
    assert record.completion_tokens == 7 and record.cost_units == units(cost)


def test_thinking_budget_is_held_on_top_of_max_tokens(native, client, accounts):
    acct = accounts.make(credit="5")
    body = request("think", "reasoning_pieces=3", model="deepseek-reasoner",
                   thinking={"type": "enabled", "budget_tokens": 500}, stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    kinds = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert kinds == ["thinking", "text"]
    assert native.requests[-1].body["max_tokens"] == 1000
    # deepseek-reasoner's route enables thinking (the operator's word): no budget sent.
    assert native.requests[-1].body["thinking"] == {"type": "enabled"}


def test_native_bound_holds_the_budget(native):
    from silk.catalog.catalogue import Model, Provider
    from silk.messages.translate import native_body
    from silk.pricing import Price

    model = Model(id="m", provider="p", upstream="u", price=Price(1, 1), max_output_tokens=9000)
    covers = Provider(id="p", name="P", base_url="http://x", keys=(),
                      limit_covers_reasoning=True)
    body = request(thinking={"type": "enabled", "budget_tokens": 700})
    assert native_body(body, model, covers, stream=True)[1] == 1700
    assert native_body(request(thinking={"type": "adaptive"}), model, covers,
                       stream=True)[1] == 1000
    loose = Provider(id="p", name="P", base_url="http://x", keys=())
    sent, bound = native_body(request(thinking={"type": "adaptive"}), model, loose, stream=True)
    assert sent["thinking"] == {"type": "disabled"} and bound == 1000
    # Claude Code sizes max_tokens and the budget for a Claude model: the limit lowered to
    # the model's maximum takes the budget under it, as Anthropic requires.
    sent, bound = native_body(request(max_tokens=9000, thinking={
        "type": "enabled", "budget_tokens": 31999}), model, covers, stream=True)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8999}
    assert bound == 9000 + 8999
    sent, bound = native_body(request(max_tokens=1, thinking={
        "type": "enabled", "budget_tokens": 1}), model, covers, stream=True)
    assert sent["thinking"] == {"type": "disabled"} and bound == 1
    budgeted = Model(id="m", provider="p", upstream="u", price=Price(1, 1),
                     max_output_tokens=9000, reasoning_budget=300)
    sent, bound = native_body(request(), budgeted, loose, stream=False)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 300} and bound == 1300


def test_cut_stream_bills_the_delivery_once(native, app, client, accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    events = sse(_post(client, acct, request("x", "pieces=20 cut_after=8", stream=True),
                       buffered=True).data)
    name, data = events[-1]
    assert name == "error" and "Charged $" in data["error"]["message"]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.cost_units == units(Decimal(str(data["usage"]["cost"])))
    assert record.completion_tokens == 5  # the five text pieces delivered
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_stream_error_event_ends_the_stream(native, client, accounts):
    acct = accounts.make(credit="1")
    events = sse(_post(client, acct, request("x", "stream_error=overloaded", stream=True),
                       buffered=True).data)
    assert events[-1][0] == "error"
    assert "overloaded" in events[-1][1]["error"]["message"]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "upstream_error"
    assert accounts.audit() == []


def test_usage_lying_above_the_hold_is_capped_at_it(native, app, client, accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("x", "usage_json='{\"output_tokens\": 999999}'", stream=True)
    body["max_tokens"] = 50
    events = sse(_post(client, acct, body, buffered=True).data)
    usage = events[-2][1]["usage"]
    [record] = accounts.usage_records(acct.id)
    assert record.completion_tokens == 50 == usage["output_tokens"]
    assert accounts.audit() == []


def test_upstream_error_is_in_anthropic_shape_and_free(native, client, accounts):
    acct = accounts.make(credit="1")
    native.enqueue("deepseek", status=529, times=2)
    response = _post(client, acct, request())
    assert response.status_code == 502
    assert response.json["type"] == "error"
    assert [e.kind for e in accounts.ledger(acct.id)] == ["topup"]
    bad = _post(client, acct, request("x", "status=400 error_message='max_tokens: too big'"))
    assert bad.status_code == 400 and "max_tokens: too big" in bad.json["error"]["message"]


def test_documents_the_gateway_cannot_bound_are_left_out(native, client, accounts):
    """A PDF, or a document fetched by URL or file id, could make the provider read more
    than the hold covers: a note stands in for it; a plain-text document goes as it came."""
    from silk.messages.translate import OMITTED

    acct = accounts.make(credit="1")
    text_doc = {"type": "document", "title": "notes",
                "source": {"type": "text", "media_type": "text/plain", "data": "a b c"}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": "JVBERi0xLjQ="}}
    body = request("read these")
    body["messages"] = [
        {"role": "user", "content": [
            text_doc, pdf, {"type": "document", "source": {"type": "url",
                                                           "url": "https://example.com/x.pdf"}},
            {"type": "text", "text": "read these"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read",
                                           "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "document", "source": {"type": "file", "file_id": "file_1"}}]},
            {"type": "container_upload", "file_id": "file_2"}, {"type": "text", "text": "ok"}]}]
    response = _post(client, acct, body)
    assert response.status_code == 200, response.json
    sent = native.requests[-1].body["messages"]
    note = {"type": "text", "text": OMITTED.format(kind="document")}
    assert sent[0]["content"] == [text_doc, note, note, body["messages"][0]["content"][3]]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": [note]},
        {"type": "text", "text": OMITTED.format(kind="container_upload")},
        {"type": "text", "text": "ok"}]
    assert "JVBERi0" not in str(native.requests[-1].body)


@pytest.fixture
def cache_priced(app_config):
    """deepseek-chat with a cache-hit price, as DeepSeek lists one."""
    from silk.defaults import MODELS

    app_config["SILK_MODELS"] = {
        **MODELS, "deepseek-chat": {**MODELS["deepseek-chat"], "cache_hit": "0.014"}}


def test_cache_reads_are_priced_at_the_cache_price(cache_priced, native, app, client,
                                                   accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("a b c d e f g h", "pieces=6 cache_hit=8")
    response = _post(client, acct, body)
    prompt = prompt_tokens(body)
    cost = (Decimal(prompt - 8) * Decimal("0.14") + 8 * Decimal("0.014")
            + 6 * Decimal("0.28")) / 10**6
    assert Decimal(response.headers["x-silk-cost"]) == cost
    [record] = accounts.usage_records(acct.id)
    assert record.cache_hit_tokens == 8 and record.cost_units == units(cost)
    assert accounts.audit() == []


@pytest.mark.parametrize("lie", [
    '{"input_tokens": 999999}', '{"cache_read_input_tokens": 999999}',
    '{"cache_creation_input_tokens": 999999}'])
def test_input_counts_lying_above_the_hold_are_capped(cache_priced, native, app, client,
                                                      accounts, lie):
    """Whichever input field lies, the charge stays inside the hold and the ledger agrees."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("x", f"pieces=3 usage_json='{lie}'", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[-1][0] == "message_stop"
    [record] = accounts.usage_records(acct.id)
    from silk.messages.translate import native_prompt_bound

    bound = native_prompt_bound(body, app.config["SILK_IMAGE_TOKEN_ALLOWANCE"])
    assert record.prompt_tokens <= bound and record.cache_hit_tokens <= record.prompt_tokens
    told = events[-2][1]["usage"]
    assert record.cost_units == units(Decimal(str(told["cost"])))
    split = [told["input_tokens"], told["cache_read_input_tokens"],
             told["cache_creation_input_tokens"]]
    assert min(split) >= 0 and sum(split) == record.prompt_tokens  # the capped split told
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.fixture
def short_read_timeout(app_config):
    """A provider silent for half a second counts as hung."""
    app_config["SILK_UPSTREAM_READ_TIMEOUT"] = 0.5


def test_provider_falling_silent_mid_stream_bills_the_delivery_once(
        short_read_timeout, native, app, client, accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("x", "pieces=20 stall_after=7", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    name, data = events[-1]
    assert name == "error" and "Charged $" in data["error"]["message"]
    [record] = accounts.usage_records(acct.id)
    assert record.completion_tokens == 4  # the pieces before the silence
    assert record.cost_units == units(Decimal(str(data["usage"]["cost"])))
    assert record.status == "timeout" and record.estimated
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_every_field_a_provider_may_read_counts_in_the_prompt_bound():
    """A field beside system, messages and tools (output_config's format schema, which
    Anthropic renders into the prompt) is sent, so it is bounded too; what is left out is
    not."""
    from silk.catalog.catalogue import Model, Provider
    from silk.messages.translate import to_call
    from silk.pricing import Price

    model = Model(id="m", provider="p", upstream="u", price=Price(1, 1), max_output_tokens=9000)
    native = Provider(id="p", name="P", base_url="http://x", keys=(),
                      anthropic_base_url="http://x/anthropic", limit_covers_reasoning=True)
    schema = {"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(300)}}
    plain = to_call(model, native, request(), stream=False, image_allowance=10)
    shaped = to_call(model, native, request(output_config={"format": {
        "type": "json_schema", "schema": schema}}), stream=False, image_allowance=10)
    assert shaped.prompt_bound - plain.prompt_bound > len(json.dumps(schema, separators=",:"))
    unpriced = to_call(model, native, request(mcp_servers=[{"url": "x" * 5000}]),
                       stream=False, image_allowance=10)
    assert unpriced.prompt_bound == plain.prompt_bound


def test_documents_of_blocks_go_native_and_search_results_count_in_the_estimate(
        native, app, client, accounts):
    """A document made of text and image blocks holds all the provider reads: it goes as
    it came (it was left out), each of its images held at the allowance; a search result's
    text is in the estimate a cut stream is billed at (count_tokens too): the estimate read
    the translated body, which dropped search results."""
    from silk.catalog.catalogue import Model, Provider
    from silk.messages.translate import to_call
    from silk.pricing import Price

    acct = accounts.make(credit="1")
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/p.png"}}
    slides = {"type": "document", "title": "slides", "source": {"type": "content", "content": [
        {"type": "text", "text": "page one"}, image, image, image]}}
    found = {"type": "search_result", "source": "https://kb.example", "title": "kb",
             "content": [{"type": "text", "text": " ".join(f"fact{i}" for i in range(200))}]}
    body = request(messages=[{"role": "user", "content": [
        slides, found, {"type": "text", "text": "go"}]}])
    response = _post(client, acct, body)
    assert response.status_code == 200, response.json
    assert native.requests[-1].body["messages"][0]["content"] == body["messages"][0]["content"]
    counted = client.post("/v1/messages/count_tokens", headers={**acct.headers, **HEADERS},
                          json={k: v for k, v in body.items() if k != "max_tokens"})
    assert counted.json["input_tokens"] > 200

    model = Model(id="m", provider="p", upstream="u", price=Price(1, 1), max_output_tokens=9000)
    provider = Provider(id="p", name="P", base_url="http://x", keys=(),
                        anthropic_base_url="http://x/anthropic", limit_covers_reasoning=True)
    call = to_call(model, provider, body, stream=True, image_allowance=1000)
    assert call.prompt_bound > 3 * 1000 + len(json.dumps(body["messages"]))
    assert call.prompt_estimate > 200
    assert accounts.audit() == []


def test_fields_that_reach_beyond_the_request_are_not_sent(native, app, client, accounts):
    """A conversation the provider holds (`thread`), another model when the asked one
    declines (`fallbacks`), a compaction (whose tokens Anthropic leaves out of `usage`) and
    any field the gateway does not know could be billed beyond what the hold bounds: only
    Anthropic's request fields whose cost the hold covers are sent; context_management keeps
    the edits that only clear context."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    clear = {"type": "clear_thinking_20251015", "keep": "all"}
    body = request("go", "pieces=4", system="s", temperature=0.5, top_p=0.9, top_k=3,
                   metadata={"user_id": "u"}, stop_sequences=["x"],
                   tools=[{"name": "Read", "input_schema": {"type": "object"}}],
                   tool_choice={"type": "auto"}, output_config={"effort": "high"},
                   cache_control={"type": "ephemeral"},
                   context_management={"edits": [clear, {"type": "compact_20260112"}]},
                   thread={"type": "continue", "previous_message_id": "msg_1"},
                   fallbacks=[{"model": "deepseek-v4-pro"}], compaction={"type": "x"},
                   fallback_credit_token="t", billing_policy={"bill_to": "self"},
                   user_profile_id="p", workspace_id="w", diagnostics={}, next_year={"a": 1})
    response = _post(client, acct, body)
    assert response.status_code == 200, response.json
    sent = native.requests[-1].body
    assert set(sent) == {"model", "max_tokens", "messages", "system", "stream", "temperature",
                         "top_p", "top_k", "metadata", "stop_sequences", "tools",
                         "tool_choice", "output_config", "cache_control",
                         "context_management", "thinking"}
    assert sent["context_management"] == {"edits": [clear]}
    cost = expected_cost("deepseek-chat", prompt_tokens(body), 4)
    assert Decimal(response.headers["x-silk-cost"]) == cost
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == units(cost)
    assert accounts.audit() == []


def test_media_inside_blocks_the_gateway_does_not_read_is_left_out(native, app, client,
                                                                    accounts):
    """A PDF in a web fetch's result (or images, or a file, deep in any block of a type the
    gateway does not read) is read by a provider that knows the block, beyond the bytes the
    hold counts (a PDF's pages as images, a block held as one image however many it holds):
    a note stands in for the block. A block with only text inside goes as it came."""
    from silk.messages.translate import OMITTED

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": "JVBERi0xLjQ="}}
    fetched = {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_1", "content": {
        "type": "web_fetch_result", "url": "https://example.com/x.pdf", "content": pdf}}
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/i.png"}}
    pictures = {"type": "gallery_20270101", "items": [{"content": [image] * 20}]}
    filed = {"type": "bundle", "parts": [{"kind": "f", "file_id": "file_1"}]}
    found = {"type": "search_result", "source": "https://example.com", "title": "t",
             "content": [{"type": "text", "text": "found it"}]}
    body = request("go", "pieces=3")
    body["messages"] = [{"role": "user", "content": [
        fetched, pictures, filed, found, {"type": "text", "text": body["messages"][0][
            "content"]}]}]
    response = _post(client, acct, body)
    assert response.status_code == 200, response.json
    sent = native.requests[-1].body["messages"][0]["content"]
    assert sent[:4] == [{"type": "text", "text": OMITTED.format(kind=kind)} for kind in (
        "web_fetch_tool_result", "gallery_20270101", "bundle")] + [found]
    assert "JVBERi0" not in str(native.requests[-1].body)
    cost = expected_cost("deepseek-chat", prompt_tokens(native.requests[-1].body), 3)
    assert Decimal(response.headers["x-silk-cost"]) == cost
    assert accounts.audit() == []


@pytest.mark.parametrize("written", [0, 40], ids=["no-write", "cache-write"])
@pytest.mark.parametrize("stream", [False, True], ids=["capped", "cut"])
def test_counts_billed_other_than_the_providers_are_told_in_anthropics_fields(
        native, app, client, accounts, stream, written):
    """A capped answer, or a cut stream billed from its estimate, tells the counts billed
    with the cache reads and writes the provider counted, in the fields its own usage has.
    A cache write is billed as input (the catalogue has no price for it), so the input told
    and the writes told add up to what was billed as input beside the reads."""
    import anthropic

    from silk.pricing import units_to_usd

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    extra = {"cache_creation_input_tokens": written}
    if not stream:
        extra["output_tokens"] = 3000000000
    directive = (f"pieces=5 cache_hit=3 usage_json='{json.dumps(extra)}'"
                 + (" cut_after=5" if stream else ""))
    body = request("what it costs", directive, stream=stream)
    response = _post(client, acct, body, buffered=True)
    assert response.status_code == 200, response.data
    [record] = accounts.usage_records(acct.id)
    assert record.estimated is stream and record.cache_hit_tokens == 3
    assert record.prompt_tokens == prompt_tokens(body) + written
    if stream:
        [usage] = [data["usage"] for name, data in sse(response.data) if name == "error"]
    else:
        assert record.completion_tokens == 1000  # the request's max_tokens
        usage = response.json["usage"]
    told = {"input_tokens": record.prompt_tokens - 3 - written,
            "output_tokens": record.completion_tokens, "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": written,
            "cost": float(units_to_usd(record.cost_units))}
    assert usage == ({**told, "estimated": True} if stream else told)
    assert anthropic.types.Usage.model_validate(usage).cache_read_input_tokens == 3
    assert accounts.audit() == []


def test_a_stream_billed_as_reported_shows_the_providers_cache_writes(
        native, app, client, accounts):
    """Counts billed unchanged: the provider's own events, its cache writes as it counted
    them in message_start, billed as input."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("what it costs", "pieces=5 cache_hit=3 "
                   "usage_json='{\"cache_creation_input_tokens\": 40}'", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    [usage] = [data["message"]["usage"] for name, data in events if name == "message_start"]
    [record] = accounts.usage_records(acct.id)
    assert not record.estimated and record.prompt_tokens == prompt_tokens(body) + 40
    assert (usage["input_tokens"], usage["cache_read_input_tokens"],
            usage["cache_creation_input_tokens"]) == (prompt_tokens(body) - 3, 3, 40)
    assert record.cost_units == units(expected_cost("deepseek-chat", record.prompt_tokens, 5))
    assert accounts.audit() == []


def test_an_event_the_provider_writes_over_several_data_lines_reaches_the_client_whole(
        native, app, client, accounts):
    """SSE lets a provider split one event's data over several `data:` lines (the reader
    joins them with newlines); relayed as one `data:` line holding those newlines, the
    client read only the first line of each event's JSON."""
    acct = accounts.make(credit="1")
    body = request("hi", "multiline_data", stream=True)
    response = _post(client, acct, body, buffered=True)
    assert response.status_code == 200
    events = [(name, json.loads(data)) for name, data in strict_sse(response.data)]
    assert [name for name, _ in events][:2] == ["message_start", "ping"]
    assert all(name == data["type"] for name, data in events)
    text = "".join(data["delta"]["text"] for name, data in events
                   if name == "content_block_delta")
    assert text == "Hello from the fake upstream ."
    assert events[-1][0] == "message_stop"
    assert accounts.row(acct.id).reserved_units == 0 and accounts.audit() == []
