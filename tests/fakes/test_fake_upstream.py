"""Tests of the fake upstream itself, over real HTTP with plain ``requests``.

Gateway tests trust the fake's dialects, token counts and faults; these tests are what make that
trust reasonable.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .upstream import (
    DEFAULT_REASONING,
    DEFAULT_REPLY,
    FakeUpstream,
    count_prompt_tokens,
    expected_usage,
    parse_directives,
    reply_pieces,
    tool_call_tokens,
)

PROVIDERS = ("deepseek", "ark", "mimo")
GOOD = {"deepseek": "sk-ds-good", "ark": "ark-good", "mimo": "mimo-good",
        "compat": "compat-good"}
MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello please"}]


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()
    fake.clear()
    yield
    fake.reset()


def post(fake, provider, body, *, key=None, stream=False, timeout=10, session=None, **kw):
    key = GOOD[provider] if key is None else key
    return (session or requests).post(
        fake.chat_url(provider), json=body, headers={"Authorization": f"Bearer {key}"},
        stream=stream, timeout=timeout, **kw)


def body(content="Say hello please", **extra):
    return {"model": "up-model", "messages": [{"role": "user", "content": content}], **extra}


def read_sse(resp):
    """Return (events, comments, done, error) reading until the stream ends or breaks."""
    events, comments, done, error = [], [], False, None
    try:
        for line in resp.iter_lines():
            if not line:
                continue
            text = line.decode()
            if text.startswith(":"):
                comments.append(text)
            elif text == "data: [DONE]":
                done = True
            else:
                assert text.startswith("data: "), text
                events.append(json.loads(text[6:]))
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
        error = exc
    return events, comments, done, error


# ----------------------------------------------------------------- successful answers


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_stream_completion(fake, provider):
    resp = post(fake, provider, {"model": "up-model", "messages": MESSAGES})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    doc = resp.json()
    assert doc["object"] == "chat.completion"
    assert doc["model"] == "up-model"
    assert doc["id"] and isinstance(doc["created"], int)
    assert doc["choices"] == [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": DEFAULT_REPLY}}]
    assert doc["usage"] == expected_usage(provider, MESSAGES)
    assert doc["usage"]["prompt_tokens"] == (3 + 4) + (3 + 4)
    assert doc["usage"]["completion_tokens"] == 6
    if provider == "deepseek":
        assert doc["usage"]["prompt_cache_miss_tokens"] == 14
    else:
        assert "prompt_cache_hit_tokens" not in doc["usage"]
    record = fake.requests[-1]
    assert (record.provider, record.key, record.model) == (provider, GOOD[provider], "up-model")
    assert record.status == 200 and record.outcome == "ok"
    assert record.headers["content-type"] == "application/json"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_with_usage(fake, provider):
    resp = post(fake, provider, body(stream=True, stream_options={"include_usage": True}),
                stream=True)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    events, comments, done, error = read_sse(resp)
    assert done and error is None and comments == []
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "up-model"
               for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [e["choices"][0]["delta"]["content"] for e in events[1:-2]]
    assert pieces == reply_pieces(DEFAULT_REPLY) and "".join(pieces) == DEFAULT_REPLY
    assert events[-2]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert all(e["usage"] is None for e in events[:-1])
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == expected_usage(provider, body()["messages"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_without_usage_option_sends_no_usage(fake, provider):
    events, _, done, _ = read_sse(post(fake, provider, body(stream=True), stream=True))
    assert done
    assert all("usage" not in e for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_reasoning_when_thinking_enabled(fake):
    resp = post(fake, "deepseek", body(thinking={"type": "enabled"}))
    doc = resp.json()
    assert doc["choices"][0]["message"]["reasoning_content"] == DEFAULT_REASONING
    assert doc["usage"]["completion_tokens"] == 6 + 4
    assert doc["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    assert doc["usage"] == expected_usage("deepseek", body()["messages"],
                                          reasoning=DEFAULT_REASONING)


def test_reasoning_stream_and_model_name_rule(fake):
    b = {"model": "deepseek-reasoner", "messages": body()["messages"], "stream": True,
         "stream_options": {"include_usage": True}}
    events, _, done, _ = read_sse(post(fake, "deepseek", b, stream=True))
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    reasoning = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    assert reasoning == reply_pieces(DEFAULT_REASONING)
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all("reasoning_content" not in d for d in deltas[first_content:])
    assert events[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4
    # An explicit "disabled" wins over the model name.
    b.update(stream=False, thinking={"type": "disabled"})
    doc = post(fake, "deepseek", b).json()
    assert "reasoning_content" not in doc["choices"][0]["message"]


def test_reasoning_effort_and_auto_think_unless_disabled(fake):
    for extra, thinks in (({"reasoning_effort": "high"}, True),
                          ({"reasoning_effort": "minimal"}, False),
                          ({"thinking": {"type": "auto"}}, True),
                          ({"thinking": {"type": "disabled"}, "reasoning_effort": "high"}, False)):
        doc = post(fake, "ark", body(**extra)).json()
        assert ("reasoning_content" in doc["choices"][0]["message"]) is thinks, extra


@pytest.mark.parametrize("provider, limits, produced", [
    # DeepSeek obeys max_tokens for reasoning and answer; max_completion_tokens is not read.
    ("deepseek", {"max_tokens": 5}, (4, 1)),
    ("deepseek", {"max_completion_tokens": 5}, (4, 10)),
    ("deepseek", {"max_tokens": 3}, (3, 0)),
    # Ark: max_completion_tokens bounds both (max_tokens is then ignored); max_tokens alone
    # bounds the answer, never the reasoning.
    ("ark", {"max_completion_tokens": 5}, (4, 1)),
    ("ark", {"max_completion_tokens": 5, "max_tokens": 100}, (4, 1)),
    ("ark", {"max_tokens": 1}, (4, 1)),
    # MiMo obeys max_completion_tokens for both; max_tokens is not read.
    ("mimo", {"max_completion_tokens": 6}, (4, 2)),
    ("mimo", {"max_tokens": 1}, (4, 10)),
])
@pytest.mark.parametrize("stream", [False, True])
def test_each_provider_obeys_its_own_limit_field(fake, provider, limits, produced, stream):
    b = body("[[fake: pieces=10 reasoning_pieces=4]]", thinking={"type": "enabled"},
             stream=stream, stream_options={"include_usage": True}, **limits)
    if stream:
        events, _, done, _ = read_sse(post(fake, provider, b, stream=True))
        assert done
        deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
        reasoning = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
        content = "".join(d.get("content") or "" for d in deltas)
        finish = [e for e in events if e["choices"]][-1]["choices"][0]["finish_reason"]
        usage = events[-1]["usage"]
    else:
        doc = post(fake, provider, b).json()
        reasoning = reply_pieces(doc["choices"][0]["message"].get("reasoning_content", ""))
        content, finish = doc["choices"][0]["message"]["content"], doc["choices"][0][
            "finish_reason"]
        usage = doc["usage"]
    assert (len(reasoning), len(content.split())) == produced
    assert usage["completion_tokens"] == sum(produced)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == produced[0]
    assert finish == ("stop" if produced == (4, 10) else "length")


def test_ark_chunk_include_usage_puts_running_usage_in_every_chunk(fake):
    b = body("[[fake: pieces=3]]", stream=True,
             stream_options={"include_usage": True, "chunk_include_usage": True})
    prompt = count_prompt_tokens(b["messages"])
    events, _, done, _ = read_sse(post(fake, "ark", b, stream=True))
    assert done
    assert [e["usage"]["completion_tokens"] for e in events] == [0, 1, 2, 3, 3, 3]
    assert all(e["usage"]["prompt_tokens"] == prompt for e in events)
    assert events[-1]["choices"] == []
    # Without include_usage: the running usage still, and no usage-only chunk at the end.
    b["stream_options"] = {"chunk_include_usage": True}
    events, _, _, _ = read_sse(post(fake, "ark", b, stream=True))
    assert [e["usage"]["completion_tokens"] for e in events] == [0, 1, 2, 3, 3]
    # Other providers do not know the option.
    events, _, _, _ = read_sse(post(fake, "deepseek", b, stream=True))
    assert all("usage" not in e for e in events)


def test_repeat_usage_sends_the_usage_chunk_again(fake):
    b = body("[[fake: repeat_usage=2]]", stream=True, stream_options={"include_usage": True})
    events, _, done, _ = read_sse(post(fake, "deepseek", b, stream=True))
    assert done
    usage_chunks = [e for e in events if not e["choices"]]
    assert len(usage_chunks) == 3 and all(e["usage"] == usage_chunks[0]["usage"]
                                          for e in usage_chunks)


def test_last_usage_json_changes_the_last_usage_chunk_alone(fake):
    b = body("""[[fake: repeat_usage=1 last_usage_json='{"completion_tokens": 0}']]""",
             stream=True, stream_options={"include_usage": True})
    events, _, done, _ = read_sse(post(fake, "deepseek", b, stream=True))
    assert done
    first, last = [e["usage"] for e in events if not e["choices"]]
    assert first["completion_tokens"] > 0 and last == {**first, "completion_tokens": 0}


def test_finish_json_is_merged_into_the_finishing_choice(fake):
    directive = """[[fake: finish_reason=stop finish_json='{"matched_stop": "END"}']]"""
    doc = post(fake, "deepseek", body(directive)).json()
    assert doc["choices"][0]["matched_stop"] == "END"
    events, _, done, _ = read_sse(post(fake, "deepseek", body(directive, stream=True),
                                       stream=True))
    assert done
    [finishing] = [e["choices"][0] for e in events if e["choices"][0]["finish_reason"]]
    assert finishing["matched_stop"] == "END"
    assert all("matched_stop" not in e["choices"][0] for e in events
               if not e["choices"][0]["finish_reason"])


def test_prompt_token_rule_counts_parts_and_directives(fake):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "two words"},
                                     {"type": "image_url", "image_url": {"url": "x"}},
                                     {"type": "text", "text": "three more words"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": "go [[fake: cache_hit=3]]"},
    ]
    # "go", "[[fake:", "cache_hit=3]]": the directive is counted like any other words.
    assert count_prompt_tokens(messages) == (5 + 4) + 4 + (3 + 4)
    doc = post(fake, "deepseek", {"model": "m", "messages": messages}).json()
    assert doc["usage"]["prompt_tokens"] == 20
    assert doc["usage"]["prompt_cache_hit_tokens"] == 3
    assert doc["usage"]["prompt_cache_miss_tokens"] == 17
    assert doc["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}


def test_reply_and_pieces_options(fake):
    doc = post(fake, "ark", body('[[fake: reply="Hi  there, friend"]]')).json()
    assert doc["choices"][0]["message"]["content"] == "Hi there, friend"
    assert doc["usage"]["completion_tokens"] == 3
    fake.behave(pieces=4)
    doc = post(fake, "mimo", body()).json()
    assert doc["choices"][0]["message"]["content"] == "w0 w1 w2 w3"
    assert doc["usage"]["completion_tokens"] == 4


def test_tool_call_option_answers_with_one_call(fake):
    args = '{"cmd":"echo hi"}'
    directive = f"[[fake: tool_call=shell tool_args='{args}']]"
    doc = post(fake, "deepseek", body(directive)).json()
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "shell", "arguments": args}
    assert doc["usage"]["completion_tokens"] == tool_call_tokens(args) == 1 + 5
    events, _, done, _ = read_sse(post(fake, "deepseek", body(
        directive, stream=True, stream_options={"include_usage": True}), stream=True))
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"] == call["id"] or calls[0]["id"].startswith("call_")
    assert calls[0]["function"] == {"name": "shell", "arguments": ""}
    assert "".join(c["function"]["arguments"] for c in calls) == args
    assert events[-1]["usage"]["completion_tokens"] == tool_call_tokens(args) and done


@pytest.mark.parametrize("order", ["sequential", "interleaved", "rounds"])
def test_tool_calls_option_answers_with_several_calls_in_order(fake, order):
    calls = [{"name": "a", "arguments": '{"x": "12345678"}'}, {"name": "b", "arguments": "{}"},
             {"name": "c", "arguments": '{"y": 1}'}]
    fake.enqueue("deepseek", tool_calls=json.dumps(calls), tool_stream=order)
    doc = post(fake, "deepseek", body()).json()
    message = doc["choices"][0]["message"]
    assert [c["function"] for c in message["tool_calls"]] == calls
    assert doc["usage"]["completion_tokens"] == sum(tool_call_tokens(c["arguments"])
                                                    for c in calls)
    fake.enqueue("deepseek", tool_calls=calls, tool_stream=order)
    events, _, done, _ = read_sse(post(fake, "deepseek", body(stream=True), stream=True))
    deltas = [d for e in events for d in e["choices"][0]["delta"].get("tool_calls", ())]
    assert done and all(len(e["choices"][0]["delta"].get("tool_calls", ())) <= 1
                        for e in events)
    indexes = [d["index"] for d in deltas]
    starts = [d["index"] for d in deltas if "id" in d]
    assert starts == [0, 1, 2]
    for index, call in enumerate(calls):
        mine = [d for d in deltas if d["index"] == index]
        assert mine[0]["function"] == {"name": call["name"], "arguments": ""}
        assert "".join(d["function"]["arguments"] for d in mine) == call["arguments"]
    if order == "sequential":
        assert indexes == sorted(indexes)
    else:  # every call starts, with its first piece, before any call's second piece
        assert indexes[:6] == [0, 0, 1, 1, 2, 2]
        rest = indexes[6:]
        assert rest == ([0, 0, 0, 0, 2] if order == "interleaved" else [0, 2, 0, 0, 0])
    with pytest.raises(ValueError):
        fake.behave(tool_stream="sideways")


def test_constructor_defaults_and_keys():
    with FakeUpstream(keys={"ark": ["a1", "a2"]}, reply="One two", cache_hit=2) as other:
        assert other.base_url("deepseek") == f"http://127.0.0.1:{other.port}/deepseek"
        assert other.base_url("ark") == f"http://127.0.0.1:{other.port}/ark/api/v3"
        assert other.base_url("mimo") == f"http://127.0.0.1:{other.port}/mimo/v1"
        assert post(other, "ark", body(), key="a2").json()["usage"]["prompt_tokens_details"] \
            == {"cached_tokens": 2}
        assert post(other, "ark", body(), key="ark-good").status_code == 401
        doc = post(other, "deepseek", body()).json()
        assert doc["choices"][0]["message"]["content"] == "One two"
        other.keys["deepseek"].append("rotated")
        assert post(other, "deepseek", body(), key="rotated").status_code == 200


def test_mimo_accepts_api_key_header(fake):
    resp = requests.post(fake.chat_url("mimo"), json=body(), headers={"api-key": "mimo-good"},
                         timeout=5)
    assert resp.status_code == 200


def test_keep_alive_reuses_connection(fake):
    with requests.Session() as session:
        for _ in range(3):
            assert post(fake, "deepseek", body(), session=session).status_code == 200
        read_sse(post(fake, "deepseek", body(stream=True), stream=True, session=session))
        assert post(fake, "deepseek", body(), session=session).status_code == 200
    assert len({r.peer for r in fake.requests}) == 1


def test_openai_sdk_can_talk_to_it(fake):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=fake.base_url("deepseek"), api_key="sk-ds-good",
                           max_retries=0)
    stream = client.chat.completions.create(model="up-model", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_REPLY
    assert chunks[-1].usage.total_tokens == 14 + 6


# ----------------------------------------------------------------- dialect errors


def test_bad_key_dialects(fake):
    ds = post(fake, "deepseek", body(), key="sk-ds-bad")
    assert ds.status_code == 401
    assert ds.json() == {"error": {
        "message": "Incorrect API key provided: sk-ds-ba**d. You can find your API key at "
                   "https://platform.deepseek.com/api_keys.",
        "type": "authentication_error", "param": None, "code": "invalid_api_key"}}
    ark = post(fake, "ark", body(), key="ark-bad").json()["error"]
    assert (ark["code"], ark["type"], ark["param"]) == ("AuthenticationError", "Unauthorized", "")
    assert "The API key" in ark["message"] and "(request id: fakereq-" in ark["message"]
    mimo = post(fake, "mimo", body(), key="nope")
    assert mimo.status_code == 401
    assert mimo.json() == {"error": {"code": "401", "message": "Invalid API Key", "param": "",
                                     "type": "invalid_request_error"}}
    missing = requests.post(fake.chat_url("deepseek"), json=body(), timeout=5)
    assert missing.status_code == 401
    assert [r.outcome for r in fake.requests] == ["error"] * 4


@pytest.mark.parametrize("status", [400, 402, 403, 429, 500, 503])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_status_faults_in_dialect(fake, provider, status):
    resp = post(fake, provider, body(f"hi [[fake: status={status}]]"))
    assert resp.status_code == status
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if provider == "deepseek":
        assert err["param"] is None
        expected_type = {400: "invalid_request_error", 402: "unknown_error",
                         403: "permission_error", 429: "rate_limit_error"}
        assert err["type"] == expected_type.get(status, "server_error")
        if status == 402:
            assert err == {"message": "Insufficient Balance", "type": "unknown_error",
                           "param": None, "code": "invalid_request_error"}
    elif provider == "ark":
        assert err["param"] == ""
        pairs = {400: ("InvalidParameter", "BadRequest"),
                 429: ("RateLimitExceeded.EndpointRPMExceeded", "TooManyRequests"),
                 500: ("InternalServiceError", "InternalServerError")}
        if status in pairs:
            assert (err["code"], err["type"]) == pairs[status]
        assert "(request id: " in err["message"]
    else:
        assert err["code"] == str(status) and err["param"] == ""
    assert resp.headers.get("Retry-After") == ("1" if status == 429 else None)
    if status >= 500:  # server errors name the upstream URL: leak bait for gateway tests
        assert f"127.0.0.1:{fake.port}" in err["message"]


def test_invalid_bodies_are_400(fake):
    headers = {"Authorization": "Bearer sk-ds-good", "Content-Type": "application/json"}
    resp = requests.post(fake.chat_url("deepseek"), data=b"{nope", headers=headers, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    resp = post(fake, "ark", {"model": "m"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "InvalidParameter"
    resp = post(fake, "mimo", {"messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "400"


def test_unknown_directive_option_is_loud(fake):
    resp = post(fake, "deepseek", body("[[fake: sattus=500]]"))
    assert resp.status_code == 400
    assert "sattus" in resp.json()["error"]["message"]
    with pytest.raises(ValueError):
        fake.behave(colour="red")
    with pytest.raises(ValueError):
        parse_directives("[[fake: delay=soon]]")


def test_unknown_path_is_404(fake):
    resp = requests.post(fake.url + "/openai/v1/chat/completions", json=body(), timeout=5)
    assert resp.status_code == 404
    assert requests.get(fake.url + "/_fake/health", timeout=5).json() == {"status": "ok"}


def test_leak_markers(fake):
    markers = fake.leak_markers()
    assert f"127.0.0.1:{fake.port}" in markers and "sk-ds-good" in markers
    assert "sk-ds-go**d" in markers


# ----------------------------------------------------------------- option layers


def test_queues_behaviour_and_directive_precedence(fake):
    fake.enqueue("deepseek", status=429, times=2)
    fake.enqueue(key="sk-ds-good", status=503)
    assert fake.pending("deepseek") == 2 and fake.pending(key="sk-ds-good") == 1
    codes = [post(fake, "deepseek", body()).status_code for _ in range(4)]
    assert codes == [503, 429, 429, 200]
    assert post(fake, "ark", body()).status_code == 200  # other providers untouched

    fake.behave(status=500)
    fake.enqueue("mimo", status=402)
    assert post(fake, "mimo", body()).status_code == 402
    assert post(fake, "mimo", body()).status_code == 500
    assert post(fake, "mimo", body("[[fake: status=200]]")).status_code == 200
    fake.reset()
    assert post(fake, "mimo", body()).status_code == 200


def test_directive_only_read_from_last_message(fake):
    messages = [{"role": "user", "content": "[[fake: status=500]]"},
                {"role": "user", "content": [{"type": "text", "text": "[[fake: status=418]]"}]}]
    assert post(fake, "ark", {"model": "m", "messages": messages}).status_code == 418
    assert fake.requests[-1].options["status"] == 418


# ----------------------------------------------------------------- timing faults


def test_delay_before_headers(fake):
    start = time.monotonic()
    resp = post(fake, "ark", body("[[fake: delay=0.3]]"))
    assert resp.status_code == 200 and time.monotonic() - start >= 0.3


def test_first_token_delay_sends_deepseek_keepalives(fake):
    resp = post(fake, "deepseek", body("[[fake: first_token_delay=0.6 keepalive_interval=0.05]]",
                                       stream=True), stream=True)
    start = time.monotonic()
    events, comments, done, _ = read_sse(resp)
    assert time.monotonic() - start >= 0.55
    assert done and len(events) == 8
    # One every 0.05 s, 11 at most; fewer if the fake's thread is kept from running on a
    # loaded machine (its deadline passes meanwhile), but several.
    assert 3 <= len(comments) <= 12 and set(comments) == {": keep-alive"}


def test_first_token_delay_without_keepalive_for_others(fake):
    resp = post(fake, "ark", body("[[fake: first_token_delay=0.2]]", stream=True), stream=True)
    events, comments, done, _ = read_sse(resp)
    assert done and comments == [] and events


def test_first_token_delay_non_stream_deepseek_pads_with_blank_lines(fake):
    resp = post(fake, "deepseek", body("[[fake: first_token_delay=0.2]]"))
    assert resp.text.startswith("\n") and resp.json()["choices"][0]["message"]["content"]


def test_chunk_delay(fake):
    start = time.monotonic()
    resp = post(fake, "mimo", body("[[fake: chunk_delay=0.03 pieces=5]]", stream=True),
                stream=True)
    events, _, done, _ = read_sse(resp)
    assert done and len(events) == 7  # role + 5 pieces + finish
    assert time.monotonic() - start >= 6 * 0.03


# ----------------------------------------------------------------- broken answers


@pytest.mark.parametrize("rst", [False, True])
def test_cut_stream_after_n_events(fake, rst):
    resp = post(fake, "deepseek", body(f"[[fake: cut_after=3 rst={int(rst)}]]", stream=True),
                stream=True)
    events, _, done, error = read_sse(resp)
    assert len(events) == 3 and not done
    assert error is not None
    record = fake.requests[-1]
    assert record.outcome == "cut" and fake.disconnects == []


def test_cut_after_larger_than_stream_still_omits_done(fake):
    events, _, done, error = read_sse(post(fake, "ark", body("[[fake: cut_after=99]]",
                                                             stream=True), stream=True))
    assert len(events) == 8 and not done and error is not None


def test_cut_non_stream_truncates_body(fake):
    with pytest.raises(requests.exceptions.RequestException):
        post(fake, "mimo", body("[[fake: cut_after=1]]"))
    assert fake.requests[-1].outcome == "cut"


def test_hang_until_client_gives_up(fake):
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(fake, "ark", body("[[fake: hang=1]]"), timeout=0.3)
    gone = fake.wait_for(lambda: fake.disconnects, timeout=2)
    assert gone[0].phase == "hang" and gone[0].provider == "ark" and gone[0].chunks_sent == 0


def test_stop_releases_hung_requests():
    other = FakeUpstream().start()
    outcome = {}

    def call():
        try:
            post(other, "deepseek", body("[[fake: hang]]"), timeout=10)
        except requests.exceptions.RequestException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    other.wait_for(lambda: other.requests)
    start = time.monotonic()
    other.stop()
    thread.join(5)
    assert "error" in outcome and time.monotonic() - start < 2
    assert other.disconnects == []


@pytest.mark.parametrize("stream", [False, True])
def test_garbage(fake, stream):
    resp = post(fake, "deepseek", body("[[fake: garbage=1]]", stream=stream), stream=stream)
    assert resp.status_code == 200
    if stream:
        lines = [line for line in resp.iter_lines() if line]
        with pytest.raises(ValueError):
            json.loads(lines[0].decode()[6:])
        assert any(not line.startswith(b"data:") for line in lines)
    else:
        with pytest.raises(ValueError):
            resp.json()


def test_no_usage(fake):
    doc = post(fake, "deepseek", body("[[fake: no_usage=1]]")).json()
    assert "usage" not in doc
    events, _, done, _ = read_sse(post(fake, "deepseek", body(
        "[[fake: no_usage=1]]", stream=True, stream_options={"include_usage": True}),
        stream=True))
    assert done and all("usage" not in e for e in events)


# ----------------------------------------------------------------- disconnects & connectivity


def test_client_abandoning_stream_is_recorded(fake):
    resp = post(fake, "mimo", body("[[fake: pieces=50 chunk_delay=0.05]]", stream=True),
                stream=True)
    seen = 0
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            seen += 1
            if seen == 3:
                break
    resp.close()
    gone = fake.wait_for(lambda: fake.disconnects, timeout=3)[0]
    assert gone.provider == "mimo" and gone.stream and gone.phase == "stream"
    assert 3 <= gone.chunks_sent <= 5
    assert fake.requests[-1].outcome == "client_gone"


def test_client_leaving_during_first_token_delay(fake):
    resp = post(fake, "deepseek", body("[[fake: first_token_delay=5]]", stream=True),
                stream=True)
    resp.close()
    gone = fake.wait_for(lambda: fake.disconnects, timeout=3)[0]
    assert gone.phase == "first_token" and gone.chunks_sent == 0


def test_refuse_and_accept_on_same_port():
    with FakeUpstream() as other:
        port = other.port
        with requests.Session() as session:
            assert post(other, "ark", body(), session=session).status_code == 200
            other.refuse()
            assert not other.listening
            with pytest.raises(requests.exceptions.ConnectionError):
                post(other, "ark", body(), session=session)
            with pytest.raises(ConnectionRefusedError), socket.create_connection(
                    ("127.0.0.1", port), timeout=1):
                pass
            other.accept()
            assert other.port == port
            assert post(other, "ark", body(), session=session).status_code == 200


def test_two_hundred_concurrent_streams(fake):
    fake.behave(first_token_delay=0.5, chunk_delay=0.01, pieces=5)

    def one(i):
        resp = post(fake, PROVIDERS[i % 3], body(f"stream {i}", stream=True), stream=True,
                    timeout=20)
        events, _, done, error = read_sse(resp)
        return done and error is None and len(events) == 7

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(one, range(200)))
    elapsed = time.monotonic() - start
    assert all(results)
    assert len(fake.requests) == 200
    # One after another they would take 110 s, ten at a time 11 s; all at once about one,
    # or several on a loaded machine.
    assert elapsed < 10, f"streams were not served concurrently ({elapsed:.1f}s)"


# ----------------------------------------------------------------- an operator's provider


@pytest.mark.parametrize(("extra", "shown"), [
    ({}, ["t0", " t1", " t2"]),
    ({"reasoning": {"exclude": True}}, []), ({"include_reasoning": False}, []),
    ({"reasoning_format": "hidden"}, []), ({"stream_reasoning": False}, ["t0 t1 t2"])])
def test_compat_keeps_the_reasoning_back_as_asked_and_bills_it(fake, extra, shown):
    """OpenRouter's, vLLM's, Groq's and SGLang's options: the reasoning is left out or sent
    whole at its end, and billed all the same."""
    ask = body("think [[fake: reasoning_pieces=3 pieces=2]]", model="up-reasoner",
               stream=True, stream_options={"include_usage": True}, **extra)
    events, _, done, _ = read_sse(post(fake, "compat", ask, stream=True))
    assert done
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert [d["reasoning"] for d in deltas if "reasoning" in d] == shown
    assert "".join(d.get("content") or "" for d in deltas) == "w0 w1"
    assert events[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    message = post(fake, "compat", {**ask, "stream": False}).json()["choices"][0]["message"]
    assert message.get("reasoning") == ("t0 t1 t2" if shown else None)


def test_compat_counts_reasoning_kept_back_toward_a_cut(fake):
    """A cut comes after the same generation whether the reasoning was sent or not."""
    ask = body("think [[fake: reasoning_pieces=9 pieces=2 cut_after=4]]", model="up-reasoner",
               stream=True, reasoning={"exclude": True})
    events, _, done, _ = read_sse(post(fake, "compat", ask, stream=True))
    assert not done
    assert len(events) == 1  # the role chunk; three reasoning pieces made, kept back


@pytest.mark.parametrize(("extra", "thought"), [
    ({"thinking": {"type": "enabled", "budget_tokens": 3}}, 3),
    ({"thinking": {"type": "enabled"}, "thinking_budget": 2}, 2),
    ({"thinking": {"type": "enabled"}, "thinking_token_budget": 4}, 4),
    ({"thinking": {"type": "enabled"}, "chat_template_kwargs": {"thinking_budget": 1}}, 1),
    ({"thinking": {"type": "enabled", "budget_tokens": -1}}, 9),
    ({"thinking": {"type": "enabled", "budget_tokens": 3}, "reasoning": {"max_tokens": 5}}, 5),
    ({"thinking": {"type": "enabled", "budget_tokens": 3}, "reasoning": {"effort": "high"}}, 9),
    ({"thinking": {"type": "enabled", "budget_tokens": 3}, "reasoning": {"enabled": True}}, 9),
    ({"thinking": {"type": "enabled", "budget_tokens": 3}, "reasoning_effort": "high"}, 9),
    ({"thinking": {"type": "enabled", "budget_tokens": 3}, "reasoning_effort": "none"}, 3),
])
def test_compat_sizes_the_thinking_as_openrouter_does(fake, extra, thought):
    """OpenRouter's `reasoning.max_tokens` or an effort over any other budget key."""
    ask = body("think [[fake: reasoning_pieces=9 pieces=2]]", **extra)
    usage = post(fake, "compat", ask).json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == thought
    assert usage["completion_tokens"] == thought + 2
