"""Reasoning a client asks to hide: the provider is asked for it in full, so what it bills is
counted as it streams, and the gateway withholds it from the client as asked.

The provider is one an operator adds (`SILK_PROVIDERS`), an OpenAI-compatible server that
honours OpenRouter's, vLLM's, Groq's and SGLang's reasoning options as they do: the fake's
`compat`, whose kept-back reasoning still counts toward a cut.
"""

from __future__ import annotations

import pytest

from silk.pricing import Usage, quote
from tests.chat.helpers import COMPAT_MODEL, compat_config, messages, set_quota_left, sse_events

MODEL = COMPAT_MODEL
# The request fields by which such a server leaves the reasoning out of its answer.
HIDING = [{"reasoning": {"effort": "high", "exclude": True}}, {"include_reasoning": False},
          {"reasoning_format": "hidden"}]
# What the provider is sent instead: the same request, its reasoning shown (None: not sent,
# the server's default shows it).
SHOWN = [{"reasoning": {"effort": "high", "exclude": False}}, {"include_reasoning": None},
         {"reasoning_format": "parsed"}]


@pytest.fixture
def app_config(monkeypatch, upstream):
    return compat_config(monkeypatch, upstream)


def _post(client, acct, directive, stream=True, **extra):
    body = {"model": MODEL, "messages": messages("think first", directive), "stream": stream,
            **extra}
    headers = acct.headers if stream else {**acct.headers, "Accept": "application/json"}
    return client.post("/v1/chat/completions", headers=headers, json=body, buffered=stream)


def _price(app, usage: Usage) -> int:
    cat = app.extensions["silk.catalogue"]
    return quote(cat.model(MODEL).price, usage, cat.tiers["free"], 0).total


def _reasoning(events) -> list:
    return [delta[name] for event in events if isinstance(event, dict)
            for choice in event.get("choices") or ()
            for name in ("reasoning", "reasoning_content", "reasoning_details")
            if (delta := choice.get("delta") or {}).get(name) is not None]


def _content(events) -> str:
    return "".join(choice["delta"].get("content") or "" for event in events
                   if isinstance(event, dict) for choice in event.get("choices") or ())


@pytest.mark.parametrize(("hiding", "shown"), list(zip(HIDING, SHOWN, strict=True)))
def test_hidden_reasoning_is_asked_for_and_billed_when_the_stream_is_cut(
        app, client, accounts, upstream, hiding, shown):
    """Hidden, the reasoning came nowhere near the gateway: a stream cut after the model
    thought for twelve tokens billed none of them (the provider bills all twelve). The
    provider is asked to show it, the gateway counts it as it comes and the client gets
    none of it."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    # the role chunk, then twelve reasoning pieces; cut while the model thinks
    events = sse_events(_post(client, acct, "reasoning_pieces=200 pieces=5 cut_after=13",
                              **hiding).data)
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.estimated
    assert record.completion_tokens == 12  # "t0" .. " t11", a token each
    assert record.cost_units == _price(app, Usage(record.prompt_tokens, 12))
    sent = upstream.requests[-1].body
    assert {name: sent.get(name) for name in shown} == shown
    assert _reasoning(events) == []
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


@pytest.mark.parametrize("hiding", HIDING)
def test_hidden_reasoning_stays_hidden_from_a_whole_answer(app, client, accounts, upstream,
                                                           hiding):
    """What the client asked is kept: no reasoning in the stream nor in the JSON answer,
    the answer whole, the reasoning billed as the provider reports it."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    events = sse_events(_post(client, acct, "reasoning_pieces=20 pieces=5", **hiding,
                              stream_options={"include_usage": True}).data)
    assert events[-1] == "[DONE]"
    assert _reasoning(events) == [] and _content(events) == "w0 w1 w2 w3 w4"
    assert events[-2]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 20
    answer = _post(client, acct, "reasoning_pieces=20 pieces=5", stream=False, **hiding).json
    message = answer["choices"][0]["message"]
    assert message["content"] == "w0 w1 w2 w3 w4"
    assert not {"reasoning", "reasoning_content", "reasoning_details"} & message.keys()
    assert answer["usage"]["completion_tokens"] == 25
    first, second = accounts.usage_records(acct.id)
    assert first.completion_tokens == second.completion_tokens == 25
    assert not first.estimated and not second.estimated
    assert accounts.audit() == []


def test_reasoning_held_until_it_ends_is_counted_as_it_comes(app, client, accounts, upstream):
    """SGLang's stream_reasoning false holds the reasoning back and sends it whole once it
    ends: a stream cut while the model thought billed none of it. The provider is asked to
    stream it; the gateway counts it as it comes and holds it back from the client itself,
    which gets it in one piece once the reasoning ends, or, if the stream is cut before,
    just before the error event: it was billed, and a cut stream had dropped it (twelve
    tokens charged, none delivered)."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    events = sse_events(_post(client, acct, "reasoning_pieces=200 pieces=5 cut_after=13",
                              stream_reasoning=False).data)
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.completion_tokens == 12
    assert "stream_reasoning" not in upstream.requests[-1].body
    held = " ".join(f"t{n}" for n in range(12))
    assert _reasoning(events) == [held] and _reasoning(events[-2:-1]) == [held]
    assert events[-2]["id"] == events[0]["id"] and events[-2]["model"] == events[0]["model"]
    assert events[-1]["usage"]["completion_tokens"] == 12
    events = sse_events(_post(client, acct, "reasoning_pieces=5 pieces=3",
                              stream_reasoning=False).data)
    assert events[-1] == "[DONE]"
    assert _reasoning(events) == ["t0 t1 t2 t3 t4"] and _content(events) == "w0 w1 w2"
    deltas = [event["choices"][0]["delta"] for event in events[1:-1] if event["choices"]]
    assert "reasoning" in deltas[0] and deltas[0].get("content") == "w0"  # together, in order
    assert accounts.audit() == []


@pytest.mark.parametrize("exclude", [None, 0], ids=["null", "0"])
def test_a_reasoning_object_that_does_not_exclude_shows_the_reasoning(
        app, client, accounts, upstream, exclude):
    """`reasoning.exclude` null (wrapper code sends an unset field as null; a top-level
    null is dropped, a nested one is not) or 0 is no exclusion: the provider shows the
    reasoning it bills, but the gateway took either for a request to hide it, and the
    client paid for reasoning it had asked to see and never got."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    asked = {"reasoning": {"effort": "high", "exclude": exclude}}
    events = sse_events(_post(client, acct, "reasoning_pieces=5 pieces=3", **asked).data)
    assert events[-1] == "[DONE]"
    assert _reasoning(events) == ["t0", " t1", " t2", " t3", " t4"]
    answer = _post(client, acct, "reasoning_pieces=5 pieces=3", stream=False, **asked).json
    assert answer["choices"][0]["message"]["reasoning"] == "t0 t1 t2 t3 t4"
    streamed, whole = accounts.usage_records(acct.id)
    assert streamed.completion_tokens == whole.completion_tokens == 8
    assert accounts.audit() == []


@pytest.mark.parametrize("asked", [
    {"reasoning": {"effort": "high", "exclude": True}}, {"include_reasoning": True},
    {"reasoning_format": "hidden"}, {"enable_thinking": True}, {"thinking_budget": 1024}],
    ids=["reasoning", "include_reasoning", "reasoning_format", "enable_thinking",
         "thinking_budget"])
def test_a_reasoning_switch_is_not_billed_as_prompt_on_a_cut_stream(app, client, accounts,
                                                                    upstream, asked):
    """A switch that says how the model thinks or shows its thinking is not text the model
    reads, as `thinking` and `reasoning_effort` are not: a stream cut before its usage
    billed each as prompt (its JSON, a dozen tokens for `reasoning`), beside the prompt."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    for extra in ({}, asked):
        events = sse_events(_post(client, acct, "reasoning_pieces=200 pieces=5 cut_after=3",
                                  **extra).data)
        assert events[-1]["error"]["code"] == "upstream_stream_cut"
    plain, switched = accounts.usage_records(acct.id)
    assert plain.estimated and switched.estimated
    assert switched.prompt_tokens == plain.prompt_tokens
    assert switched.cost_units == plain.cost_units
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0


def _scored(events) -> list:
    return [entry["token"] for event in events if isinstance(event, dict)
            for choice in event.get("choices") or ()
            for entry in (choice.get("logprobs") or {}).get("content") or ()]


@pytest.mark.parametrize("hiding", [*HIDING, {"stream_reasoning": False}],
                         ids=["exclude", "include_reasoning", "reasoning_format", "held"])
def test_the_log_probabilities_of_withheld_reasoning_are_withheld(app, client, accounts,
                                                                  upstream, hiding):
    """A provider that scores each token it streams (vLLM) scores the reasoning too, and a
    JSON answer's logprobs cover the reasoning then the reply: the gateway took the
    reasoning out and passed its log probabilities, token by token (five reasoning tokens
    of eight), to a client that had asked not to see it. Reasoning held until it ends comes
    without them, as SGLang sends it; a JSON answer then shows the reasoning, scored."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    events = sse_events(_post(client, acct, "reasoning_pieces=5 pieces=3", **hiding,
                              logprobs=True).data)
    assert events[-1] == "[DONE]"
    assert _scored(events) == ["w0", " w1", " w2"]
    assert not any(choice.get("logprobs") for event in events if isinstance(event, dict)
                   for choice in event.get("choices") or ()
                   if not (choice.get("delta") or {}).get("content"))
    answer = _post(client, acct, "reasoning_pieces=5 pieces=3", stream=False, **hiding,
                   logprobs=True).json
    shown = ["t0", " t1", " t2", " t3", " t4"] if "stream_reasoning" in hiding else []
    assert [entry["token"] for entry in answer["choices"][0]["logprobs"]["content"]] == [
        *shown, "w0", " w1", " w2"]
    assert accounts.audit() == []


def test_shown_reasoning_keeps_its_log_probabilities(app, client, accounts, upstream):
    """A client that sees the reasoning gets every token's log probability, as sent."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    events = sse_events(_post(client, acct, "reasoning_pieces=2 pieces=2", logprobs=True).data)
    assert _scored(events) == ["t0", " t1", "w0", " w1"]
    answer = _post(client, acct, "reasoning_pieces=2 pieces=2", stream=False,
                   logprobs=True).json
    assert [entry["token"] for entry in answer["choices"][0]["logprobs"]["content"]] == [
        "t0", " t1", "w0", " w1"]
