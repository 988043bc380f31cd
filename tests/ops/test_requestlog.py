"""One JSON log line per request, with ids, usage, cost and timings; never a key or prompt."""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal

import pytest
import requests
from werkzeug.serving import make_server

CHAT = "/v1/chat/completions"
PROMPT = "My secret plan is pineapple-42"


def _body(stream: bool, extra: str = "") -> dict:
    return {"model": "deepseek-chat", "stream": stream,
            "messages": [{"role": "user", "content": PROMPT + extra}]}


def _no_secrets(log_lines, key: str) -> None:
    text = "\n".join(log_lines.lines)
    assert key not in text and key[3:20] not in text
    assert "pineapple" not in text


def test_a_json_request_is_one_line_with_usage_cost_and_timings(client, accounts, log_lines):
    user = accounts.make(credit="5")
    response = client.post(f"{CHAT}?api_key={user.key}", json=_body(False))
    assert response.status_code == 200
    lines = [line for line in log_lines.requests() if line["path"] == CHAT]
    assert len(lines) == 1
    line = lines[0]
    usage = response.json["usage"]
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["status"] == 200 and line["method"] == "POST" and line["outcome"] == "ok"
    assert line["account"] == user.id and line["key_id"] == user.key_id
    assert line["model"] == "deepseek-chat" and line["provider"] == "deepseek"
    assert line["upstream_model"] == "deepseek-v4-flash" and line["stream"] is False
    assert line["prompt_tokens"] == usage["prompt_tokens"]
    assert line["completion_tokens"] == usage["completion_tokens"]
    assert line["total_tokens"] == usage["total_tokens"]
    assert Decimal(str(line["cost"])) == Decimal(str(usage["cost"]))
    assert line["ms"] > 0 and line["upstream_ms"] is not None and line["ip"] == "127.0.0.1"
    _no_secrets(log_lines, user.key)


def test_a_json_answer_reaches_the_client_before_its_line_is_written(app, accounts):
    """Behind a real WSGI server the line's write waits until the client has its answer:
    had the app written the line before answering, the client would have waited too."""
    user = accounts.make(credit="5")
    answered = threading.Event()
    waited: list[bool] = []

    class Gate(logging.Handler):
        def emit(self, record):
            waited.append(answered.wait(5))

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gate = Gate()
    logging.getLogger("silk.request").addHandler(gate)
    try:
        response = requests.post(f"http://127.0.0.1:{server.port}{CHAT}", headers=user.headers,
                                 json=_body(False), timeout=10)
        answered.set()
        deadline = time.monotonic() + 5
        while not waited and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        logging.getLogger("silk.request").removeHandler(gate)
        server.shutdown()
    assert response.status_code == 200 and response.json()["usage"]["total_tokens"] > 0
    assert waited == [True]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_static_file_is_logged_once(client, log_lines, method):
    """Werkzeug hands a file to the server without the close that logs a JSON answer."""
    response = client.open("/static/silk.css", method=method)
    assert response.status_code == 200
    lines = [line for line in log_lines.requests() if line["path"] == "/static/silk.css"]
    assert [(line["method"], line["status"]) for line in lines] == [(method, 200)]


def test_a_stream_is_logged_once_when_it_ends(client, accounts, log_lines):
    user = accounts.make(credit="5")
    response = client.post(CHAT, headers=user.headers, json=_body(True, " [[fake: pieces=5]]"))
    body = response.get_data()
    response.close()
    assert body.endswith(b"data: [DONE]\n\n")
    lines = [line for line in log_lines.requests() if line["path"] == CHAT]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["stream"] is True and line["outcome"] == "ok" and line["status"] == 200
    assert line["completion_tokens"] == 5
    assert line["ttft_ms"] is not None and line["ms"] >= line["ttft_ms"]
    _no_secrets(log_lines, user.key)


def test_a_stream_the_client_leaves_is_logged_as_client_closed(app, accounts, log_lines):
    user = accounts.make(credit="5")
    client = app.test_client()
    response = client.post(CHAT, headers=user.headers, buffered=False,
                           json=_body(True, " [[fake: pieces=50 chunk_delay=0.02]]"))
    chunks = iter(response.response)
    for _ in range(3):
        next(chunks)
    assert not [line for line in log_lines.requests() if line["path"] == CHAT]
    response.close()
    lines = [line for line in log_lines.requests() if line["path"] == CHAT]
    assert len(lines) == 1
    assert lines[0]["outcome"] == "client_closed" and lines[0]["completion_tokens"] > 0


def test_a_provider_that_did_not_answer_in_time_is_logged_as_a_timeout(app, client, accounts,
                                                                      log_lines):
    app.extensions["silk.upstreams"]["deepseek"].timeout = (1.0, 0.3)
    user = accounts.make(credit="5")
    response = client.post(CHAT, headers=user.headers,
                           json={**_body(False, " [[fake: hang]]"), "max_tokens": 2})
    assert response.status_code == 504
    [line] = [line for line in log_lines.requests() if line["path"] == CHAT]
    assert (line["status"], line["outcome"], line["error"]) == (504, "timeout",
                                                                "upstream_timeout")


def test_errors_are_logged_with_their_code_and_no_key(client, log_lines):
    bad = "sk-" + "b" * 48
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401
    (line,) = log_lines.requests()
    assert line["status"] == 401 and line["error"] == "invalid_api_key"
    assert line["account"] is None
    _no_secrets(log_lines, bad)


def test_probes_are_logged_at_debug(client, log_lines, caplog):
    client.get("/healthz")
    client.get("/readyz")
    client.get("/v1/pricing")
    levels = {r["path"]: r["level"] for r in log_lines.requests()}
    assert levels == {"/healthz": "debug", "/readyz": "debug", "/v1/pricing": "info"}
    assert logging.getLogger("silk").getEffectiveLevel() <= logging.DEBUG  # captured here


def test_log_lines_are_single_line_json(client, log_lines):
    client.post(CHAT, data=b"{not json", headers={"Authorization": "Bearer nope"})
    for raw in log_lines.lines:
        assert "\n" not in raw and raw.startswith("{") and raw.endswith("}")


def test_a_request_record_names_where_it_was_logged_and_honours_filters(client, log_lines):
    seen: list[logging.LogRecord] = []

    class Keep(logging.Filter):
        def filter(self, record):
            seen.append(record)
            return record.fields["path"] != "/v1/pricing"  # drop one line

    request_logger = logging.getLogger("silk.request")
    keep = Keep()
    request_logger.addFilter(keep)
    try:
        client.get("/v1/pricing")
        client.get("/v1/models")
    finally:
        request_logger.removeFilter(keep)
    assert [r.fields["path"] for r in seen] == ["/v1/pricing", "/v1/models"]
    assert {(r.module, r.funcName) for r in seen} == {("requestlog", "_emit")}
    assert all(r.lineno > 0 for r in seen)
    assert [r["path"] for r in log_lines.requests()] == ["/v1/models"]
