"""Bad input and upstream failures: the right status, one envelope, nothing charged, no leaks."""

import io
import json

import pytest

from tests.chat.helpers import messages

JSON = {"Accept": "application/json"}


def _post(client, acct, body, **headers):
    return client.post("/v1/chat/completions", headers={**acct.headers, **JSON, **headers},
                       data=body if isinstance(body, (bytes, str)) else json.dumps(body),
                       content_type="application/json")


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "deepseek-chat"}, "messages"),
    ({"model": "deepseek-chat", "messages": []}, "messages"),
    ({"model": "deepseek-chat", "messages": "hi"}, "messages"),
    ({"model": "deepseek-chat", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": 5}]},
     "messages[0].content"),
    ({"model": "deepseek-chat", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
      "temperature": 2.5}, "temperature"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
      "temperature": "0.5"}, "temperature"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
      "max_tokens": 0}, "max_tokens"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
      "max_tokens": 1.5}, "max_tokens"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
      "max_tokens": 100000}, "max_tokens"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
      "stream": "yes"}, "stream"),
    ({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}],
      "n": True}, "n"),
    ({"model": 42, "messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_bad_bodies_are_400_naming_the_field(client, accounts, upstream, body, param):
    acct = accounts.make(credit="1")
    response = _post(client, acct, body)
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}
    assert upstream.requests == []
    assert accounts.usage_records(acct.id) == []


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1,2]", b"null", b"\xff\xfe"])
def test_unparseable_bodies_are_400(client, accounts, upstream, raw):
    acct = accounts.make(credit="1")
    response = _post(client, acct, raw)
    assert response.status_code == 400
    assert response.json["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404(client, accounts):
    acct = accounts.make(credit="1")
    response = _post(client, acct, {"model": "gpt-9", "messages": messages()})
    assert response.status_code == 404
    assert response.json["error"]["code"] == "model_not_found"


def test_model_outside_the_keys_list_is_403(app, client, accounts, upstream):
    from silk.account.service import create_key

    acct = accounts.make(credit="1")
    with app.app_context():
        key = create_key(acct.id, name="mimo only", allowed_models=["mimo-v2.5"])
    headers = {"Authorization": f"Bearer {key.secret}", **JSON}
    response = client.post("/v1/chat/completions", headers=headers,
                           json={"model": "deepseek-chat", "messages": messages()})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "model_not_allowed"
    ok = client.post("/v1/chat/completions", headers=headers,
                     json={"model": "mimo-v2.5", "messages": messages()})
    assert ok.status_code == 200
    listed = client.get("/v1/models", headers=headers).json["data"]
    assert [m["id"] for m in listed] == ["mimo-v2.5"]


def test_body_over_the_limit_is_413(app, client, accounts):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    acct = accounts.make(credit="1")
    response = _post(client, acct, {"model": "deepseek-chat",
                                    "messages": messages("x" * 5000)})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("size,status", [(5000, 413), (900, 200)])
def test_a_body_without_a_length_is_measured_as_it_is_read(app, client, accounts, upstream,
                                                          size, status):
    # A chunked body carries no Content-Length: the server marks its stream as ending on
    # its own (wsgi.input_terminated), and only reading it tells how long it is.
    app.config["MAX_CONTENT_LENGTH"] = 1000
    acct = accounts.make(credit="1")
    body = json.dumps({"model": "deepseek-chat", "max_tokens": 5,
                       "messages": messages("x" * (size - 100))}).encode()
    response = client.post("/v1/chat/completions", input_stream=io.BytesIO(body),
                           headers={**acct.headers, **JSON, "Content-Type": "application/json",
                                    "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.request.content_length is None
    assert response.status_code == status, response.get_data()
    if status == 413:
        assert response.json["error"]["code"] == "payload_too_large"
        assert upstream.requests == []
    else:
        assert len(upstream.requests) == 1


def _assert_no_leak(upstream, response):
    text = response.get_data(as_text=True)
    for marker in upstream.leak_markers():
        assert marker not in text, marker


@pytest.mark.parametrize("provider_model,status,expected_status,code", [
    ("deepseek-chat", 400, 400, "upstream_invalid_request"),
    ("ark-code-latest", 400, 400, "upstream_invalid_request"),
    ("mimo-v2.5", 400, 400, "upstream_invalid_request"),
    ("ark-code-latest", 500, 502, "upstream_error"),
    ("mimo-v2.5", 503, 503, "upstream_unavailable"),
    ("ark-code-latest", 401, 502, "upstream_auth_error"),
    ("mimo-v2.5", 429, 429, "upstream_rate_limited"),
    ("deepseek-chat", 402, 503, "upstream_unavailable"),
])
def test_upstream_errors_are_translated_refunded_and_scrubbed(client, accounts, upstream,
                                                              provider_model, status,
                                                              expected_status, code):
    acct = accounts.make(credit="1")
    response = _post(client, acct, {"model": provider_model,
                                    "messages": messages("x", f"status={status}")})
    assert response.status_code == expected_status, response.json
    assert response.json["error"]["code"] == code
    assert set(response.json["error"]) == {"message", "type", "param", "code"}
    _assert_no_leak(upstream, response)
    [record] = accounts.usage_records(acct.id)
    assert record.status == "upstream_error" and record.cost_units == 0
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.balance_units(acct.id) == 10**9
    assert accounts.audit() == []


# A provider message carrying one of each kind of secret the gateway must not pass on.
_LEAKY = ("max_tokens must be <= 8192; dial tcp 10.0.3.7:8080 and [fd00::12]:9000 via "
          "pg-0.db.svc.cluster.local and redis:6379 failed for Authorization: Bearer ab12 "
          "(key sk-q1) on endpoint ep-20240611183015-x7k2p of account 2100123456")
_LEAKED = ["10.0.3.7", "8080", "fd00", "9000", "pg-0", "cluster.local", "redis", "6379",
           "ab12", "sk-q1", "ep-2024", "x7k2p", "2100123456"]


def _assert_scrubbed(message: str) -> None:
    for secret in _LEAKED:
        assert secret not in message, (secret, message)
    assert "max_tokens must be <= 8192" in message


@pytest.mark.parametrize("model", ["deepseek-chat", "ark-code-latest", "mimo-v2.5"])
def test_a_rejection_passed_to_the_client_is_scrubbed(client, accounts, upstream, model):
    acct = accounts.make(credit="1")
    upstream.behave(status=400, error_message=_LEAKY)
    response = _post(client, acct, {"model": model, "messages": messages()})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "upstream_invalid_request"
    _assert_scrubbed(response.json["error"]["message"])
    _assert_no_leak(upstream, response)
    assert accounts.audit() == []


def test_an_error_reported_mid_stream_is_scrubbed(client, accounts, upstream):
    from tests.chat.helpers import sse_events

    acct = accounts.make(credit="1")
    upstream.behave(stream_error=_LEAKY)
    response = client.post("/v1/chat/completions", headers=acct.headers, buffered=True,
                           json={"model": "ark-code-latest", "stream": True,
                                 "messages": messages()})
    assert response.status_code == 200
    error = sse_events(response.data)[-1]["error"]
    assert "mid-stream" in error["message"]
    _assert_scrubbed(error["message"])
    _assert_no_leak(upstream, response)
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


def test_stream_request_upstream_error_before_first_byte_is_plain_json(client, accounts,
                                                                      upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers=acct.headers, json={
        "model": "ark-code-latest", "stream": True, "messages": messages("x", "status=400")})
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    _assert_no_leak(upstream, response)


def test_garbage_from_upstream_is_502_and_free(client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = _post(client, acct, {"model": "deepseek-chat",
                                    "messages": messages("x", "garbage=1")})
    assert response.status_code == 502
    assert accounts.balance_units(acct.id) == 10**9
    assert accounts.audit() == []


def test_upstream_hang_is_504(app, client, accounts, upstream):
    app.extensions["silk.upstreams"]["mimo"].timeout = (1.0, 0.5)
    acct = accounts.make(credit="1")
    # 5 tokens may take 0.5 s more than the read timeout (SILK_UPSTREAM_MIN_TOKENS_PER_SECOND)
    response = _post(client, acct, {"model": "mimo-v2.5", "max_tokens": 5,
                                    "messages": messages("x", "hang=1")})
    assert response.status_code == 504
    assert response.json["error"]["code"] == "upstream_timeout"
    assert accounts.audit() == []


def test_unknown_path_is_404_envelope(client):
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"]


def test_odd_shapes_from_the_provider_never_fail_the_request():
    """A provider's malformed usage or choices are billed by estimate, never a 500."""
    from silk.relay.tokens import delivered_tokens, usage_from

    assert usage_from({"prompt_tokens": "many", "completion_tokens": 3}) is None
    assert usage_from({"prompt_tokens": -4, "completion_tokens": 3}) is None
    assert usage_from({"prompt_tokens": 4, "completion_tokens": 3,
                       "prompt_tokens_details": "x"})[0].prompt_tokens == 4
    chunks = ({"choices": 5}, {"choices": ["x", {"delta": "y"}]},
              {"choices": [{"delta": {"content": 7, "tool_calls": {"a": 1}}}]},
              {"choices": [{"delta": {"content": "four char"}}]})
    # A content of 7 reaches a client as it came: 1 token, its JSON text.
    assert sum(delivered_tokens(chunk) for chunk in chunks) == 4


def test_a_streamed_legacy_function_call_and_refusal_count_as_delivered():
    """The deprecated `functions` API streams its call in `delta.function_call`, and a
    refusal comes in `delta.refusal`: both reach the client, so a stream cut before the usage
    bills them like tool calls and content."""
    from silk.relay.tokens import delivered_tokens

    legacy = [{"choices": [{"delta": {"function_call": {"name": "lookup", "arguments": ""}}}]},
              {"choices": [{"delta": {"function_call": {"arguments": '{"city": '}}}]},
              {"choices": [{"delta": {"function_call": {"arguments": '"Paris"}'}}}]}]
    modern = [{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": part}]}}]}
              for part in ({"name": "lookup", "arguments": ""}, {"arguments": '{"city": '},
                           {"arguments": '"Paris"}'})]
    assert sum(map(delivered_tokens, legacy)) == sum(map(delivered_tokens, modern)) > 2
    refusal = {"choices": [{"delta": {"refusal": "I can't help with that."}}]}
    content = {"choices": [{"delta": {"content": "I can't help with that."}}]}
    assert delivered_tokens(refusal) == delivered_tokens(content) > 0


@pytest.mark.parametrize("tools,param", [
    # MiMo runs web_search itself: per call, and the pages it reads are prompt tokens.
    ([{"type": "web_search", "max_keyword": 50, "force_search": True, "limit": 50}],
     "tools[0].type"),
    ([{"type": "function", "function": {"name": "f"}}, {"type": "web_search"}],
     "tools[1].type"),
    ([{"function": {"name": "f"}}], "tools[0].type"),
    (["web_search"], "tools[0]"),
])
def test_a_providers_builtin_tool_is_400_and_never_sent(client, accounts, upstream, tools,
                                                         param):
    """Only function tools are relayed: a built-in tool bills outside any hold."""
    acct = accounts.make(credit="1")
    before = accounts.balance_units(acct.id)
    response = _post(client, acct, {"model": "mimo-v2.5", "messages": messages(),
                                    "tools": tools})
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert upstream.requests == []
    assert accounts.usage_records(acct.id) == []
    assert accounts.balance_units(acct.id) == before


@pytest.mark.parametrize("part,param", [
    # MiMo and Ark read a video by URL: its frames are prompt tokens the request's bytes
    # do not bound (a 300 MB file, two frames a second), nor do an inline video's.
    ({"type": "video_url", "video_url": {"url": "https://example.com/long.mp4"}, "fps": 2},
     "type"),
    ({"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, "type"),
    ({"type": "file", "file": {"file_id": "file-1"}}, "type"),
    ({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}, "type"),
    ({"type": "input_audio", "input_audio": {"data": "https://example.com/hour.wav"}},
     "input_audio.data"),
    ({"type": "input_audio", "input_audio": {"data": 5}}, "input_audio.data"),
    ({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
     "type"),
])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_part_no_hold_can_bound_is_400_and_never_sent(client, accounts, upstream, part,
                                                        param, stream):
    """Media whose tokens the request does not hold are refused: never billed past a hold."""
    acct = accounts.make(credit="1")
    before = accounts.balance_units(acct.id)
    body = {"model": "mimo-v2.5", "stream": stream, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "describe"}, part]}]}
    response = _post(client, acct, body)
    assert response.status_code == 400, response.get_data()[:300]
    error = response.json["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == f"messages[2].content[1].{param}"
    assert upstream.requests == []
    assert accounts.usage_records(acct.id) == []
    assert accounts.balance_units(acct.id) == before
