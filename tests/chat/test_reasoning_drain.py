"""A provider that bills reasoning it never streams (OpenAI's o-series, Gemini's OpenAI API):
its final usage is the only count of it, so a client that leaves mid-stream does not close
the upstream; the gateway reads on to that usage and bills it.

DeepSeek is configured here as such a provider (`reasoning_streamed: false`) and the fake
is told to hide its reasoning (`hide_reasoning`): forty reasoning tokens billed upstream,
none of them in the stream.
"""

from __future__ import annotations

import time

import pytest

from silk.defaults import MODELS, PROVIDERS
from silk.pricing import Usage, quote
from tests.chat.helpers import messages, set_quota_left, sse_events
from tests.ops.helpers import sample

HIDING = "hide_reasoning reasoning_pieces=40"


def _providers(streamed: bool) -> dict:
    return {**PROVIDERS, "deepseek": {**PROVIDERS["deepseek"], "reasoning_streamed": streamed}}


HIDDEN = {"SILK_PROVIDERS": _providers(False)}


@pytest.fixture
def app_config(request):
    """DeepSeek as a provider that hides its reasoning, unless a test gives its own."""
    return dict(getattr(request, "param", HIDDEN))


def _price(app, usage: Usage) -> int:
    cat = app.extensions["silk.catalogue"]
    return quote(cat.model("deepseek-reasoner").price, usage, cat.tiers["free"], 0).total


def _leave_after(app, acct, directive: str, events: int = 5):
    """Stream deepseek-reasoner, read `events` data events, then leave as a client does
    (the server closes the response)."""
    response = app.test_client().post(
        "/v1/chat/completions", headers=acct.headers, buffered=False,
        json={"model": "deepseek-reasoner", "stream": True, "max_tokens": 400,
              "messages": messages("think", directive)})
    assert response.status_code == 200
    chunks = iter(response.response)
    received = b""
    while received.count(b"data: ") < events:
        received += next(chunks)
    response.close()
    return received


def _unknown(client) -> float:
    text = client.get("/metrics").text
    return sample(text, "silk_written_off_unknown_total", model="deepseek-reasoner",
                  provider="deepseek") or 0.0


def test_a_client_that_leaves_pays_the_providers_final_usage(app, client, accounts, upstream):
    """Billed from what was delivered, the forty reasoning tokens the provider bills were
    written off unseen; the upstream is read to its usage and the client pays its count."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    before = _unknown(client)
    received = _leave_after(app, acct, f"{HIDING} pieces=30 chunk_delay=0.01")
    assert b"reasoning" not in received
    assert upstream.disconnects == []  # read to its end, not closed
    assert upstream.requests[-1].outcome == "ok"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and not record.estimated
    assert (record.completion_tokens, record.reasoning_tokens) == (70, 40)
    assert record.cost_units == _price(app, Usage(record.prompt_tokens, 70))
    assert record.written_off_units == 0
    assert accounts.row(acct.id).reserved_units == 0 and accounts.audit() == []
    assert _unknown(client) == before


@pytest.mark.parametrize("app_config", [{"SILK_PROVIDERS": _providers(True)}],
                         indirect=True)
def test_a_provider_that_streams_its_reasoning_is_closed_when_the_client_leaves(
        app, accounts, upstream):
    """Where the reasoning streams, the delivered text counts it: the upstream is closed at
    once, as before, and the client pays what reached it."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    _leave_after(app, acct, "reasoning_pieces=40 pieces=300 chunk_delay=0.01")
    [gone] = upstream.wait_for(lambda: upstream.disconnects, timeout=5)
    assert gone.chunks_sent < 300
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and record.estimated
    assert record.completion_tokens < 300
    assert accounts.audit() == []


@pytest.mark.parametrize("app_config", [{**HIDDEN, "SILK_MODELS": {
    **MODELS, "deepseek-reasoner": {**MODELS["deepseek-reasoner"], "thinking": False}}}],
    indirect=True)
def test_a_model_that_cannot_think_is_not_read_on(app, accounts, upstream):
    """A model marked `thinking: false` has no hidden reasoning to wait for."""
    acct = accounts.make(credit="1")
    _leave_after(app, acct, "pieces=300 chunk_delay=0.01")
    upstream.wait_for(lambda: upstream.disconnects, timeout=5)
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and record.estimated


def test_a_stream_cut_before_its_usage_bills_what_was_delivered_and_counts_the_rest(
        app, client, accounts, upstream):
    """The provider's count never came: the client pays the delivered text (the hold's
    bound is no count of the reasoning, which may have been none), and the request is
    counted as written off at an unknown amount, not lost without a trace."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    before = _unknown(client)
    # the role chunk, forty hidden reasoning pieces, then four of the answer's: cut
    events = sse_events(app.test_client().post(
        "/v1/chat/completions", headers=acct.headers, buffered=True,
        json={"model": "deepseek-reasoner", "stream": True, "max_tokens": 400,
              "messages": messages("think", f"{HIDING} pieces=30 cut_after=45")}).data)
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.completion_tokens == 4
    assert record.cost_units == _price(app, Usage(record.prompt_tokens, 4))
    assert accounts.audit() == []
    assert _unknown(client) == before + 1


def test_a_left_stream_cut_before_its_usage_still_settles_what_was_delivered(
        app, client, accounts, upstream):
    """Read on after the client left, the provider cut before its usage: the client still
    pays what reached it, once, the hold is released, and the unknown is counted."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    before = _unknown(client)
    _leave_after(app, acct, f"{HIDING} pieces=30 chunk_delay=0.01 cut_after=60")
    assert upstream.disconnects == []
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and record.estimated
    assert 3 <= record.completion_tokens < 19  # what was delivered, not what came after
    assert record.cost_units == _price(app, Usage(record.prompt_tokens,
                                                  record.completion_tokens))
    assert accounts.row(acct.id).reserved_units == 0 and accounts.audit() == []
    assert _unknown(client) == before + 1


def test_a_left_stream_gone_silent_ends_at_the_read_timeout(app, accounts, upstream):
    """Reading on is bounded by the stream's read timeout: a provider that falls silent
    is given up on, and what was delivered is billed."""
    # 1.5 s: the provider's events before its silence come 0.01 s apart, and the test
    # process (the fake provider's too) may pause that long on a loaded machine.
    app.extensions["silk.upstreams"]["deepseek"].timeout = (2.0, 1.5)
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    _leave_after(app, acct, f"{HIDING} pieces=30 chunk_delay=0.01 stall_after=20")
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and record.estimated
    assert accounts.row(acct.id).reserved_units == 0 and accounts.audit() == []


def test_a_client_that_leaves_before_any_output_pays_the_providers_final_usage(
        app, client, accounts, upstream):
    """On such a provider no output yet is no measure of what was made: the model may have
    thought for a long while, billed upstream, before its first visible token. A client that
    leaves then is read on too and pays the provider's count; released whole, it would have
    cost the operator forty reasoning tokens for nothing."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    _leave_after(app, acct, f"{HIDING} pieces=30 first_token_delay=0.3", events=0)
    assert upstream.disconnects == []
    [record] = accounts.usage_records(acct.id)
    assert record.status == "client_closed" and not record.estimated
    assert (record.completion_tokens, record.reasoning_tokens) == (70, 40)
    assert record.cost_units == _price(app, Usage(record.prompt_tokens, 70))
    assert accounts.row(acct.id).reserved_units == 0 and accounts.audit() == []


def test_a_client_that_left_before_any_output_counts_a_cut_before_the_usage(
        app, client, accounts, upstream):
    """Left before any output and read on, the provider cut before its count: the client
    pays the prompt at its estimate (it left once the provider had taken it), no output,
    and the reasoning the provider billed is unknown and is counted as written off, as it
    is when something was delivered."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    before = _unknown(client)
    _leave_after(app, acct, f"{HIDING} pieces=30 first_token_delay=0.3 cut_after=20",
                 events=0)
    assert upstream.disconnects == []  # read on, not closed
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.completion_tokens) == ("client_closed", 0)
    assert record.estimated and record.prompt_tokens > 0 and record.cost_units > 0
    assert accounts.row(acct.id).reserved_units == 0 and accounts.audit() == []
    assert _unknown(client) == before + 1


def _think(app, spare: dict, directive: str):
    """Stream deepseek-reasoner with the `spare` key; the answer as the test client has it."""
    response = app.test_client().post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {spare['key']}"},
        buffered=False,
        json={"model": "deepseek-reasoner", "stream": True, "max_tokens": 400,
              "messages": messages("think", directive)})
    assert response.status_code == 200
    return response


def _spare_key(client, owner) -> dict:
    """A second key of `owner`'s account, made (and later revoked) by the owner itself."""
    return client.post("/v1/keys", json={"name": "thinking"}, headers=owner.headers).json


def test_a_key_revoked_while_the_model_thinks_still_pays_the_providers_final_usage(
        app, client, accounts, upstream):
    """An account's own key, revoked by its owner while the model thinks unseen, ends the
    stream as revoked; ended at once, the delivered text alone would be billed and the
    forty reasoning tokens the provider bills written off: revoking a key of one's own
    would be a way out of paying for the thinking that leaving is not. Such a stream sends
    nothing more, is read to the provider's usage, and ends with the failure event
    charging the provider's count."""
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    spare = _spare_key(client, owner)
    response = _think(app, spare, f"{HIDING} pieces=30 chunk_delay=0.03")
    chunks = iter(response.response)
    received = next(chunks)  # the role chunk: the model thinks now, for 40 x 0.03 s
    assert client.delete(f"/v1/keys/{spare['id']}", headers=owner.headers).status_code == 200
    for piece in chunks:
        received += piece
    response.close()
    events = sse_events(received)
    last = events[-1]
    assert last["error"]["code"] == "key_revoked"
    texts = [(c.get("delta") or {}).get("content") or ""
             for e in events[:-1] for c in e.get("choices") or ()]
    assert "".join(texts) == ""  # nothing of the answer reached a revoked key
    [record] = accounts.usage_records(owner.id)
    assert record.status == "revoked" and not record.estimated
    assert (record.completion_tokens, record.reasoning_tokens) == (70, 40)
    assert record.cost_units == _price(app, Usage(record.prompt_tokens, 70))
    assert last["usage"]["completion_tokens"] == 70
    # the count is of the whole answer, most of which the client never saw
    assert "for the provider's count of its answer (" in last["error"]["message"]
    assert accounts.row(owner.id).reserved_units == 0 and accounts.audit() == []


def test_a_key_revoked_while_a_left_stream_is_read_on_still_pays_the_providers_final_usage(
        app, client, accounts, upstream):
    """The client left and the stream is read on to the provider's usage; its key revoked
    meanwhile does not end that reading early (which would bill only what was delivered)."""
    import threading

    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    spare = _spare_key(client, owner)
    response = _think(app, spare, f"{HIDING} pieces=30 chunk_delay=0.03")
    next(iter(response.response))  # the role chunk; the model thinks for 40 x 0.03 s
    revoked = threading.Event()

    def revoke() -> None:
        time.sleep(0.2)  # while the left stream is read on (it takes 2 s)
        deleted = app.test_client().delete(f"/v1/keys/{spare['id']}", headers=owner.headers)
        assert deleted.status_code == 200
        revoked.set()

    thread = threading.Thread(target=revoke)
    thread.start()
    response.close()  # reads the upstream on to its end
    thread.join(timeout=10)
    assert revoked.is_set()
    assert upstream.disconnects == [] and upstream.requests[-1].outcome == "ok"
    [record] = accounts.usage_records(owner.id)
    assert record.status == "client_closed" and not record.estimated
    assert (record.completion_tokens, record.reasoning_tokens) == (70, 40)
    assert record.cost_units == _price(app, Usage(record.prompt_tokens, 70))
    assert accounts.row(owner.id).reserved_units == 0 and accounts.audit() == []


def test_a_key_revoked_while_the_relay_waits_for_the_model_sends_none_of_its_answer(
        app, client, accounts, upstream):
    """Revoked while the relay is blocked in its read (the model thinks unseen, the
    provider sends nothing): that read's answer text is the first thing after the
    revocation, and it reached the revoked key before its mark was looked at. The mark
    is looked at again once the read returns, so nothing of the answer goes out; the
    stream is read on and charged the provider's count as before."""
    import threading

    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    spare = _spare_key(client, owner)
    response = _think(app, spare, "hide_reasoning reasoning_pieces=100 pieces=30 "
                                  "chunk_delay=0.03")
    chunks = iter(response.response)
    received = [next(chunks)]  # the role chunk: the model thinks now, for 100 x 0.03 s
    pulling = threading.Event()

    def pull() -> None:  # as a server does: the relay reads on at once, blocked meanwhile
        pulling.set()
        received.extend(chunks)

    puller = threading.Thread(target=pull)
    puller.start()
    pulling.wait(5)
    time.sleep(0.5)  # the relay is in its read now (the thinking lasts 3 s)
    assert client.delete(f"/v1/keys/{spare['id']}", headers=owner.headers).status_code == 200
    puller.join(timeout=30)
    response.close()
    events = sse_events(b"".join(received))
    assert events[-1]["error"]["code"] == "key_revoked"
    texts = [(c.get("delta") or {}).get("content") or ""
             for e in events[:-1] for c in e.get("choices") or ()]
    assert "".join(texts) == ""  # nothing of the answer reached a revoked key
    [record] = accounts.usage_records(owner.id)
    assert record.status == "revoked" and not record.estimated
    assert (record.completion_tokens, record.reasoning_tokens) == (130, 100)
    assert events[-1]["usage"]["completion_tokens"] == 130
    assert accounts.row(owner.id).reserved_units == 0 and accounts.audit() == []
