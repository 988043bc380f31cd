"""/metrics in one process: who may read it, and what the request path counts."""

from __future__ import annotations

import pytest

from tests.ops.helpers import sample

CHAT = "/v1/chat/completions"
FAMILIES = ("silk_http_requests", "silk_http_errors", "silk_http_request_duration_seconds",
            "silk_upstream_latency_seconds", "silk_time_to_first_token_seconds", "silk_tokens",
            "silk_cost_usd", "silk_written_off_usd", "silk_requests_settled", "silk_open_streams",
            "silk_upstream_failovers")


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


def chat(client, key: str, *, stream: bool, text: str = "Count my tokens please"):
    response = client.post(CHAT, headers={"Authorization": f"Bearer {key}"},
                           json={"model": "deepseek-chat", "stream": stream,
                                 "messages": [{"role": "user", "content": text}]})
    body = response.get_data()  # a stream runs to its end here
    response.close()
    return response, body


def test_metrics_need_no_key_and_list_every_family(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for family in FAMILIES:
        assert f"# HELP {family}" in response.text


@pytest.mark.parametrize("peer, forwarded, allowed", [
    ("127.0.0.1", None, True),
    ("10.2.3.4", None, True),
    ("192.168.1.20", None, True),
    ("203.0.113.9", None, False),
    ("127.0.0.1", "203.0.113.9", False),     # a public client behind nginx
    ("127.0.0.1", "10.9.8.7", True),         # a private client behind nginx
    ("203.0.113.9", "127.0.0.1", False),     # a forged header from an untrusted peer
    ("::1", None, True),
])
def test_metrics_are_served_only_to_allowed_addresses(client, peer, forwarded, allowed):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    response = client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": peer})
    assert response.status_code == (200 if allowed else 403)
    if not allowed:
        assert response.json["error"]["code"] == "metrics_not_allowed"


def test_the_allow_list_comes_from_the_environment(app, monkeypatch):
    monkeypatch.setenv("SILK_METRICS_ALLOW", "203.0.113.0/24")
    app.extensions.pop("silk.metrics_allow", None)
    client = app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 200
    assert client.get("/metrics").status_code == 403  # loopback is no longer listed


def test_a_json_request_counts_route_status_tokens_cost_and_latency(client, accounts):
    user = accounts.make(credit="5")
    before = scrape(client)
    response, _ = chat(client, user.key, stream=False)
    assert response.status_code == 200
    usage = response.json["usage"]
    after = scrape(client)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("silk_http_requests_total", route=CHAT, model="deepseek-chat",
                 status="200") == 1
    assert delta("silk_tokens_total", model="deepseek-chat", kind="prompt") == \
        usage["prompt_tokens"]
    assert delta("silk_tokens_total", model="deepseek-chat", kind="completion") == \
        usage["completion_tokens"]
    assert delta("silk_cost_usd_total", model="deepseek-chat") == pytest.approx(
        float(usage["cost"]))
    assert delta("silk_upstream_latency_seconds_count", provider="deepseek",
                 model="deepseek-chat", status="200") == 1
    assert delta("silk_requests_settled_total", model="deepseek-chat", outcome="ok") == 1
    assert delta("silk_http_request_duration_seconds_count", route=CHAT) == 1


def test_a_stream_counts_time_to_first_token_and_closes_its_gauge(client, accounts):
    user = accounts.make(credit="5")
    before = scrape(client)
    response, body = chat(client, user.key, stream=True)
    assert response.status_code == 200 and body.endswith(b"data: [DONE]\n\n")
    after = scrape(client)
    assert sample(after, "silk_time_to_first_token_seconds_count", model="deepseek-chat") - \
        sample(before, "silk_time_to_first_token_seconds_count", model="deepseek-chat") == 1
    assert sample(after, "silk_open_streams", model="deepseek-chat") == 0
    assert sample(after, "silk_requests_settled_total", model="deepseek-chat", outcome="ok") - \
        sample(before, "silk_requests_settled_total", model="deepseek-chat", outcome="ok") == 1


def test_an_open_stream_shows_in_the_gauge(app, accounts):
    user = accounts.make(credit="5")
    client = app.test_client()
    response = client.post(CHAT, headers=user.headers, buffered=False,
                           json={"model": "deepseek-chat", "stream": True, "messages": [
                               {"role": "user", "content": "hi [[fake: chunk_delay=0.05]]"}]})
    chunks = iter(response.response)
    next(chunks)  # the stream has started
    assert sample(scrape(app.test_client()), "silk_open_streams", model="deepseek-chat") == 1
    response.close()  # the client goes away
    assert sample(scrape(app.test_client()), "silk_open_streams", model="deepseek-chat") == 0


def test_errors_and_failovers_are_counted(client, accounts, upstream):
    user = accounts.make(credit="5")
    before = scrape(client)
    assert client.get("/v1/models").status_code == 401
    upstream.enqueue(key="sk-ds-good", status=429)
    upstream.enqueue(key="sk-ds-second", status=429)
    response, _ = chat(client, user.key, stream=False)
    after = scrape(client)
    assert sample(after, "silk_http_errors_total", route="/v1/models", status="401") - \
        sample(before, "silk_http_errors_total", route="/v1/models", status="401") == 1
    assert sample(after, "silk_upstream_failovers_total", provider="deepseek") - \
        sample(before, "silk_upstream_failovers_total", provider="deepseek") >= 1
    if response.status_code != 200:  # both keys refused: the error is counted too
        assert sample(after, "silk_http_errors_total", route=CHAT) - \
            sample(before, "silk_http_errors_total", route=CHAT) == 1


def test_unknown_paths_share_one_route_label(client):
    client.get("/no/such/path/123")
    client.get("/another/unknown")
    text = scrape(client)
    assert "/no/such/path" not in text
    assert sample(text, "silk_http_requests_total", route="unmatched", status="404") >= 2
