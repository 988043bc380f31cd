"""The chat surface's translation, both ways, as pure functions: no app, no database.

A request becomes the relay's Call; the relay's events become the bytes a client reads.
"""

from __future__ import annotations

import copy

import orjson
import pytest

from silk.catalog.catalogue import build_catalogue
from silk.chat.translate import encode_completion, encode_stream, to_call
from silk.defaults import MODELS, PROVIDERS, TIERS
from silk.errors import InvalidRequest
from silk.metering.meter import Bill
from silk.metering.service import Settlement
from silk.pricing import Cost, Usage
from silk.relay.events import Chunk, Comment, Completion, Done, Failed
from silk.relay.tokens import prompt_bound, prompt_estimate
from tests.chat.helpers import sse_events

CATALOGUE = build_catalogue({
    "SILK_PROVIDERS": PROVIDERS, "SILK_MODELS": MODELS, "SILK_TIERS": TIERS,
    "SILK_UPSTREAMS": {pid: {"base_url": "http://127.0.0.1:1", "keys": []}
                       for pid in PROVIDERS}})
MESSAGES = [{"role": "user", "content": "Hello there"}]
# 40 prompt and 20 completion tokens of deepseek-chat: 40 * 140 + 20 * 280 units.
SETTLED = Settlement(Cost(0, 60, 11_200, 0, 11_200), 11_200, 10**9 - 11_200)
BILLED = Bill(Usage(40, 20), estimated=False, as_reported=True, settlement=SETTLED)
# An estimate's cache and reasoning details, in OpenAI's fields and DeepSeek's: none of 30.
NO_DETAILS = {"prompt_tokens_details": {"cached_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0},
              "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 30}


def _call(request: dict, *, stream: bool, model: str = "deepseek-chat"):
    entry = CATALOGUE.model(model)
    return to_call(entry, CATALOGUE.provider_of(entry), request, stream=stream,
                   image_allowance=0)


def test_a_request_becomes_the_call_the_hold_is_sized_from():
    request = {"model": "deepseek-chat", "messages": MESSAGES, "max_completion_tokens": 100,
               "n": 2, "stream_options": {"include_usage": True, "extra": 1}, "top_p": 0.5}
    sent = copy.deepcopy(request)
    chat = _call(request, stream=True)
    assert request == sent  # the client's request is read, never changed
    body = orjson.loads(chat.call.body)
    model = CATALOGUE.model("deepseek-chat")
    provider = CATALOGUE.provider_of(model)
    assert body["model"] == model.upstream and body["top_p"] == 0.5
    assert {f: body.get(f) for f in ("max_tokens", "max_completion_tokens")
            if f in body} == {provider.limit_field: 100}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert chat.client_wants_usage is True and chat.call.stream is True
    assert chat.call.max_output == 100 * 2
    assert chat.call.prompt_bound == prompt_bound(body, 0)
    assert chat.call.prompt_estimate == prompt_estimate(body, chat.call.prompt_bound,
                                                        image_allowance=0)


def test_a_json_request_sends_no_stream_options_and_wants_no_usage_chunk():
    chat = _call({"model": "deepseek-chat", "messages": MESSAGES,
                  "stream_options": {"include_usage": True}}, stream=False)
    body = orjson.loads(chat.call.body)
    assert body["stream"] is False and "stream_options" not in body
    assert chat.client_wants_usage is False
    assert chat.call.max_output == CATALOGUE.model("deepseek-chat").max_output_tokens


def test_two_different_limits_are_a_400_naming_the_field():
    with pytest.raises(InvalidRequest) as raised:
        _call({"model": "deepseek-chat", "messages": MESSAGES, "max_tokens": 5,
               "max_completion_tokens": 6}, stream=False)
    assert raised.value.param == "max_tokens"


def _encode(events, *, wants_usage=True) -> bytes:
    return b"".join(encode_stream(events, client_wants_usage=wants_usage,
                                  model="deepseek-v4-flash", request_id="req-1"))


def test_chunks_pass_as_the_providers_bytes_and_usage_comes_once_with_the_cost():
    first = b'{"id":"c1","model":"m-up","choices":[{"delta":{"content":"hi"}}]}'
    odd = b'[1, 2]'  # not an object: passed as it came
    with_usage = {"id": "c1", "choices": [{"delta": {"content": "!"}}],
                  "usage": {"prompt_tokens": 40, "completion_tokens": 19}}
    usage_only = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 40,
                                                       "completion_tokens": 20}}
    raw = _encode([
        Comment(b"keep-alive"),
        Chunk(first, orjson.loads(first)),
        Chunk(odd, None),
        Chunk(orjson.dumps(with_usage), with_usage, True),
        Chunk(orjson.dumps(usage_only), usage_only, True),
        Done(BILLED)])
    assert raw.startswith(b": keep-alive\n\ndata: " + first + b"\n\ndata: [1, 2]\n\n")
    events = sse_events(raw)
    assert events[2] == {"id": "c1", "choices": [{"delta": {"content": "!"}}], "usage": None}
    assert events[3] == {"id": "c1", "choices": [], "usage": {
        "prompt_tokens": 40, "completion_tokens": 20, "cost": 1.12e-05}}  # a JSON number
    assert events[4] == "[DONE]" and len(events) == 5


def test_no_usage_chunk_unless_asked_and_ours_when_the_provider_sent_none():
    chunk = b'{"choices":[{"delta":{"content":"hi"}}]}'
    events = [Chunk(chunk, orjson.loads(chunk)), Done(BILLED)]
    assert sse_events(_encode(events, wants_usage=False)) == [orjson.loads(chunk), "[DONE]"]
    estimated = Bill(Usage(30, 2), estimated=True, as_reported=False, settlement=None)
    ours = sse_events(_encode([Chunk(chunk, orjson.loads(chunk)), Done(estimated)]))[1]
    assert ours["id"] == "chatcmpl-req-1" and ours["model"] == "deepseek-v4-flash"
    assert ours["usage"] == {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32,
                             **NO_DETAILS, "estimated": True, "cost": 0}


def test_a_failed_stream_ends_with_one_error_event_stating_the_charge():
    failed = Failed("cut", "The provider ended the stream early.", "upstream_stream_cut",
                    BILLED)
    [event] = sse_events(_encode([failed]))
    assert event["error"]["code"] == "upstream_stream_cut"
    assert event["error"]["message"] == (
        "The provider ended the stream early. Charged $0.0000112 for the provider's count "
        "of its answer (40 prompt and 20 completion tokens).")
    nothing = Bill(None, estimated=False, as_reported=False, settlement=None)
    [event] = sse_events(_encode([Failed("timeout", "Too slow.", "upstream_timeout",
                                         nothing)]))
    assert event["error"]["message"] == "Too slow. Nothing was charged."
    assert event["usage"]["cost"] == 0


def test_a_json_answer_carries_the_providers_usage_or_the_estimate_with_the_cost():
    answer = {"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 20}}
    data = encode_completion(Completion(answer, True, BILLED))
    assert data["usage"] == {"prompt_tokens": 40, "completion_tokens": 20,
                             "cost": SETTLED.cost_usd}
    estimated = Bill(Usage(30, 2), estimated=True, as_reported=False, settlement=None)
    data = encode_completion(Completion({"choices": []}, False, estimated))
    assert data["usage"] == {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32,
                             **NO_DETAILS, "estimated": True, "cost": 0}


def test_a_failure_to_encode_is_reported_so_the_relay_settles_it_as_an_error():
    reported = []
    broken = Chunk(None, None)  # no bytes to frame: encoding raises
    with pytest.raises(TypeError):
        list(encode_stream([broken], client_wants_usage=False, model="m", request_id="r",
                           on_error=lambda: reported.append("error")))
    assert reported == ["error"]
