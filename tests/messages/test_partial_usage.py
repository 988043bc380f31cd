"""A native stream cut after message_start: the provider's input counts came and are billed.

message_start carries the provider's count of the prompt (input, cache reads and writes);
only the output is unknown when the stream breaks before message_delta. The prompt the
provider read is then billed as it counted it, not the gateway's guess: a guess that reads
long as short (a digit string, text the estimate undercounts) would let a client that cuts
the stream pay for less prompt than the provider billed, and one with cache reads would be
billed those at the full input price.
"""

from decimal import Decimal

import pytest

from tests.chat.helpers import expected_cost, set_quota_left, units
from tests.messages.helpers import HEADERS, native_prompt_tokens, request, sse
from tests.support.images import IMAGE_URL, data_url, patch_tokens


def _post(client, acct, body, **kw):
    return client.post("/v1/messages", headers={**acct.headers, **HEADERS}, json=body, **kw)


@pytest.fixture
def cache_priced(app_config):
    from silk.defaults import MODELS

    app_config["SILK_MODELS"] = {
        **MODELS, "deepseek-chat": {**MODELS["deepseek-chat"], "cache_hit": "0.014"}}


def test_cut_stream_bills_the_input_the_provider_counted(native, app, client, accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    # 400 digits: the gateway guesses 100 tokens, the provider counts 400 (one per digit).
    body = request("1234567890" * 40, "pieces=20 cut_after=8 "
                   "usage_json='{\"input_tokens\": 400}'", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 400
    name, data = events[-1]
    assert name == "error" and "Charged $" in data["error"]["message"]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.completion_tokens == 5  # the five text pieces delivered
    assert record.prompt_tokens == 400  # the provider's count, not the gateway's guess
    assert record.cost_units == units(Decimal(str(data["usage"]["cost"])))
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_cut_stream_bills_cache_reads_at_the_cache_price(cache_priced, native, app, client,
                                                         accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("a b c d e f g h", "pieces=20 cut_after=8 cache_hit=8", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[0][1]["message"]["usage"]["cache_read_input_tokens"] == 8
    assert events[-1][0] == "error"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.cache_hit_tokens == 8
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_client_gone_after_message_start_bills_the_input_counted(native, app, client,
                                                                 accounts):
    """A client that leaves once the answer began pays for the prompt the provider read."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("1234567890" * 40, "pieces=20 chunk_delay=0.05 "
                   "usage_json='{\"input_tokens\": 400}'", stream=True)
    response = _post(client, acct, body)
    stream = response.response
    received = b""
    for piece in stream:
        received += piece
        if received.count(b"text_delta") >= 3:
            break
    response.close()
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed"
    assert record.prompt_tokens == 400
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_an_answer_without_an_output_count_is_billed_for_its_delivery(native, app, client,
                                                                     accounts, stream):
    """message_start's output_tokens (1, before anything was written) is no count of the
    answer: a message_delta (or a Message) without one bills the output delivered,
    estimated, with the input the provider counted."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("x", "pieces=20 usage_json='{\"output_tokens\": null}'", stream=stream)
    response = _post(client, acct, body, buffered=True)
    assert response.status_code == 200
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and record.estimated
    assert record.completion_tokens == 20  # "w0".."w19": one token each, as estimated
    assert record.prompt_tokens == native_prompt_tokens(body)
    usage = sse(response.data)[-2][1]["usage"] if stream else response.json["usage"]
    assert usage["output_tokens"] == 20 and usage["estimated"] is True
    assert record.cost_units == units(Decimal(str(usage["cost"])))
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.mark.parametrize("where", ["block", "message"])
def test_a_reply_carried_in_a_start_event_counts_as_delivered(native, app, client, accounts,
                                                              where):
    """Text a provider puts in content_block_start or message_start (Anthropic sends it in
    deltas) reaches the client all the same: a stream cut after it bills it, estimated."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    events_before_cut = 3 if where == "block" else 1  # message_start, ping, the block's start
    body = request("x", f"pieces=20 text_in_start={where} cut_after={events_before_cut}",
                   stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    carried = (events[0][1]["message"]["content"] if where == "message"
               else [data["content_block"] for name, data in events
                     if name == "content_block_start"])
    assert carried and carried[0]["text"].startswith("w0")  # the client got the reply
    assert events[-1][0] == "error"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.completion_tokens == 20  # "w0".."w19", as estimated
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_an_answer_without_an_input_count_bills_the_prompt_estimated(native, app, client,
                                                                     accounts, stream):
    """A null (or absent) input_tokens is no count of the prompt, not a count of zero: the
    prompt is billed at the gateway's estimate, as chat bills a missing prompt_tokens."""
    from silk.messages.translate import to_chat_body
    from silk.relay.tokens import prompt_estimate

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("one two three four five six seven eight",
                   "pieces=5 usage_json='{\"input_tokens\": null}'", stream=stream)
    response = _post(client, acct, body, buffered=True)
    assert response.status_code == 200
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and record.estimated
    allowance = app.config["SILK_IMAGE_TOKEN_ALLOWANCE"]
    assert record.prompt_tokens == prompt_estimate(to_chat_body(body),
                                                   image_allowance=allowance) > 0
    assert record.completion_tokens == 5
    usage = sse(response.data)[-2][1]["usage"] if stream else response.json["usage"]
    assert usage["input_tokens"] == record.prompt_tokens and usage["estimated"] is True
    assert record.cost_units == units(Decimal(str(usage["cost"]))) > 0
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.mark.parametrize("events_before_cut", [1, 2, 3], ids=["start", "ping", "block"])
def test_cut_before_the_first_delta_bills_the_input_counted(native, app, client, accounts,
                                                            events_before_cut):
    """message_start (then ping, an empty block's start) reached the client: the answer
    began and the provider counted its prompt, so a stream cut before any text bills that
    prompt, as a chat stream cut after its first chunk bills the prompt's estimate."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("1234567890" * 40, f"pieces=20 cut_after={events_before_cut} "
                   "usage_json='{\"input_tokens\": 400}'", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert (record.prompt_tokens, record.completion_tokens) == (400, 0)
    cost = expected_cost("deepseek-chat", 400, 0)
    assert record.cost_units == units(cost) == units(Decimal(str(events[-1][1]["usage"]["cost"])))
    assert "(400 input and 0 output tokens)" in events[-1][1]["error"]["message"]
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_client_gone_right_after_message_start_bills_the_input_counted(native, app, client,
                                                                       accounts):
    """A client that leaves as soon as message_start arrives pays for the prompt the
    provider read, not nothing."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("1234567890" * 40, "pieces=20 chunk_delay=0.2 "
                   "usage_json='{\"input_tokens\": 400}'", stream=True)
    response = _post(client, acct, body)
    received = b""
    for piece in response.response:
        received += piece
        if b"message_start" in received:
            break
    assert b"content_block" not in received
    response.close()
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed"
    assert (record.prompt_tokens, record.completion_tokens) == (400, 0)
    assert record.cost_units == units(expected_cost("deepseek-chat", 400, 0))
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_a_lower_input_count_in_message_delta_does_not_lower_the_bill(native, app, client,
                                                                      accounts):
    """message_delta's counts are cumulative: an input count below message_start's (0, as
    some Anthropic-compatible servers write there) is no count of the prompt read, which
    the provider bills as message_start counted it."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("1234567890" * 40, "pieces=20 usage_json='{\"input_tokens\": 400}' "
                   "delta_usage_json='{\"input_tokens\": 0}'", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 400
    name, delta = events[-2]
    assert name == "message_delta"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and not record.estimated
    assert (record.prompt_tokens, record.completion_tokens) == (400, 20)
    cost = expected_cost("deepseek-chat", 400, 20)
    assert record.cost_units == units(cost)
    assert Decimal(str(delta["usage"]["cost"])) == cost
    # The client is shown the counts billed beside the cost, not the delta's 0.
    assert (delta["usage"]["input_tokens"], delta["usage"]["output_tokens"]) == (400, 20)
    assert accounts.balance_units(acct.id) == units(Decimal(1) - cost)
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_a_prompt_counted_again_with_another_split_is_billed_once(native, app, client,
                                                                   accounts):
    """message_start counts the prompt as cache reads, message_delta as fresh input: the
    same 400 tokens split two ways, billed once as the later split, not 400 of each."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("1234567890" * 40, "pieces=20 usage_json='{\"input_tokens\": 0, "
                   "\"cache_read_input_tokens\": 400}' delta_usage_json='{\"input_tokens\": "
                   "400, \"cache_read_input_tokens\": 0}'", stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[0][1]["message"]["usage"]["cache_read_input_tokens"] == 400
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and not record.estimated
    assert (record.prompt_tokens, record.cache_hit_tokens, record.completion_tokens) == (
        400, 0, 20)
    assert record.cost_units == units(expected_cost("deepseek-chat", 400, 20))
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.fixture(params=["native", "translated"])
def way(request):
    """A provider with an Anthropic endpoint, or one spoken to in chat completions."""
    if request.param == "native":
        request.getfixturevalue("native")
    return request.param


@pytest.mark.parametrize("image", ["png", "https"])
def test_a_cut_stream_bills_an_image_as_the_provider_does(way, app, client, accounts, image):
    """An image block is billed from its pixels (base64 in the request) or at the allowance
    (by URL) when the stream is cut before any count of the prompt came."""
    if image == "png":
        source = {"type": "base64", "media_type": "image/png",
                  "data": data_url(2048, 2048).partition(",")[2]}
        tokens = patch_tokens(2048, 2048)
    else:
        source = {"type": "url", "url": IMAGE_URL}
        tokens = app.config["SILK_IMAGE_TOKEN_ALLOWANCE"]
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    # Natively, message_start counts no input; translated, the chat stream has no usage yet.
    directive = "pieces=20 cut_after=4 usage_json='{\"input_tokens\": null}'"
    text = {"type": "text", "text": f"describe it [[fake: {directive}]]"}
    for blocks in ([text], [text, {"type": "image", "source": source}]):
        body = {**request(), "stream": True, "messages": [{"role": "user", "content": blocks}]}
        events = sse(_post(client, acct, body, buffered=True).data)
        assert events[-1][0] == "error"
    plain, pictured = accounts.usage_records(acct.id)
    assert plain.estimated and pictured.estimated and pictured.status == "cut"
    assert pictured.prompt_tokens - plain.prompt_tokens == tokens
    cost = expected_cost("deepseek-chat", pictured.prompt_tokens, pictured.completion_tokens)
    assert pictured.cost_units == units(cost)
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0
