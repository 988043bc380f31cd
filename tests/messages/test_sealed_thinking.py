"""Thinking a native provider bills but sends sealed: a signature or a redacted block.

Anthropic returns the full thinking encrypted in a thinking block's signature (sent just
before the block ends), and a redacted_thinking block's data is thinking encrypted whole;
the provider bills every token of it whether the client sees its text (summarised, omitted)
or not. A stream cut before the provider's usage came is billed from what was delivered,
so a sealed thinking counts by its size: the bytes its base64 holds, at four bytes a token,
as text is estimated (the fake seals the thinking as base64 of its text).
"""

import pytest

from tests.chat.helpers import set_quota_left
from tests.fakes.anthropic import sealed
from tests.fakes.upstream import pieces_reply
from tests.messages.helpers import HEADERS, request, sse

THINKING = pieces_reply(200, "t")  # 200 pieces: the fake bills 200 output tokens for it
SEALED = len(sealed(THINKING)) * 3 // 16  # 889 bytes of thinking: 222 tokens estimated


def _post(client, acct, body, **kw):
    return client.post("/v1/messages", headers={**acct.headers, **HEADERS}, json=body, **kw)


def _thinking(directive: str, **extra) -> dict:
    return request("think", f"reasoning_pieces=200 {directive}", model="mimo-v2.5",
                   thinking={"type": "enabled", "budget_tokens": 500}, **extra)


@pytest.mark.parametrize("display, events_before_cut", [("omitted", 5), ("redacted", 4)])
def test_a_stream_cut_after_sealed_thinking_bills_it(native, app, client, accounts, display,
                                                     events_before_cut):
    """Cut once the thinking block ended (message_start, ping, the block, its signature if
    any, its stop), before any text and the provider's usage: its size is billed, not 0."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = _thinking(f"thinking_display={display} cut_after={events_before_cut}",
                     stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[-1][0] == "error"
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert [block["type"] for block in starts] == [
        "redacted_thinking" if display == "redacted" else "thinking"]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.completion_tokens == SEALED
    assert 200 <= SEALED <= 1500  # about what the provider bills; within the hold
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.mark.parametrize("display", ["omitted", "redacted"])
def test_a_json_answer_without_usage_bills_its_sealed_thinking(native, app, client, accounts,
                                                               display):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = _thinking(f"thinking_display={display} pieces=5 no_usage")
    response = _post(client, acct, body)
    assert response.status_code == 200
    [record] = accounts.usage_records(acct.id)
    assert record.status == "ok" and record.estimated
    assert record.completion_tokens == SEALED + 5
    assert response.json["usage"]["output_tokens"] == SEALED + 5
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_a_signature_does_not_add_to_thinking_delivered_as_text(native, app, client,
                                                                accounts):
    """A thinking streamed whole and then signed is billed once: the larger of its text's
    estimate and its signature's, not their sum."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = _thinking("cut_after=206", stream=True)  # start, ping, block, 200 pieces, sig, stop
    events = sse(_post(client, acct, body, buffered=True).data)
    assert events[-1][0] == "error"
    [record] = accounts.usage_records(acct.id)
    # "t0".."t9" and " t10".." t99" a token each, " t100".." t199" two (five characters)
    assert record.completion_tokens == 100 + 2 * 100 > SEALED
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_thinking_asked_omitted_is_sent_summarized_and_billed_as_it_streams(
        native, app, client, accounts):
    """A signature comes only once the thinking ended: with its text omitted, a stream cut
    while the model thinks (the client hangs up after a minute of silence) billed none of
    the thinking the provider did. The provider is asked for the thinking's text instead
    (display summarized), which is counted as it arrives; the client gets thinking blocks,
    as it would from a provider that has no display option."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    body = request("think", "reasoning_pieces=200 cut_after=13", model="mimo-v2.5",
                   thinking={"type": "enabled", "budget_tokens": 500, "display": "omitted"},
                   stream=True)
    events = sse(_post(client, acct, body, buffered=True).data)
    assert native.requests[-1].body["thinking"] == {
        "type": "enabled", "budget_tokens": 500, "display": "summarized"}
    assert events[-1][0] == "error"
    [record] = accounts.usage_records(acct.id)
    assert record.completion_tokens == 10  # start, ping, the block and "t0".."t9"
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def test_native_body_shows_the_thinking():
    from silk.catalog.catalogue import Model, Provider
    from silk.messages.translate import native_body
    from silk.pricing import Price

    model = Model(id="m", provider="p", upstream="u", price=Price(1, 1), max_output_tokens=9000)
    covers = Provider(id="p", name="P", base_url="http://x", keys=(),
                      limit_covers_reasoning=True)
    for display in ("omitted", "summarized", "anything"):
        sent, _ = native_body(request(thinking={"type": "adaptive", "display": display}),
                              model, covers, stream=True)
        assert sent["thinking"] == {"type": "adaptive", "display": "summarized"}
    sent, _ = native_body(request(max_tokens=9000, thinking={
        "type": "enabled", "budget_tokens": 9000, "display": "omitted"}), model, covers,
        stream=True)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8999,
                                "display": "summarized"}
    sent, _ = native_body(request(thinking={"type": "enabled", "budget_tokens": 50}),
                          model, covers, stream=True)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 50}  # none asked, none sent
