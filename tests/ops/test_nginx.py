"""The gateway behind a real nginx using deploy/nginx/silkgateway-proxy.conf.

Streams must arrive chunk by chunk (nginx's default buffering stays on; the gateway's
`X-Accel-Buffering: no` turns it off per stream), and neither a gunicorn reload (SIGHUP to
the master) nor `nginx -s reload` may cut a stream that is open.
"""

from __future__ import annotations

import os
import signal
import statistics
import time

import pytest
import requests

from tests.ops.helpers import content_of, timed_events
from tests.ops.nginx import Nginx, nginx_binary

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed "
                                 "(.ci/install-system-deps installs it)")]

DELAY = 0.2


@pytest.fixture
def nginx(sqlite_only, gateway, tmp_path):
    """nginx on a free loopback port in front of the test's gunicorn gateway."""
    with Nginx(tmp_path / "nginx", gateway.port) as running:
        yield running


def test_a_stream_through_nginx_arrives_chunk_by_chunk(nginx, accounts):
    user = accounts.make(credit="5")
    status, headers, events = timed_events(
        nginx.url, user.key, f"Count slowly [[fake: chunk_delay={DELAY} pieces=10]]")
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert "x-accel-buffering" not in headers  # nginx consumed it, as it should
    assert events[-1][1] == "[DONE]"
    pieces = content_of(events)
    assert "".join(text for _, text in pieces) == " ".join(f"w{i}" for i in range(10))
    gaps = [b[0] - a[0] for a, b in zip(pieces, pieces[1:], strict=False)]
    # Buffered, the pieces would land together; streamed, they keep the upstream's pace.
    assert min(gaps) > DELAY * 0.5, gaps
    assert statistics.median(gaps) == pytest.approx(DELAY, abs=0.08), gaps
    assert pieces[-1][0] - pieces[0][0] > DELAY * 9 * 0.8


def test_json_answers_and_errors_pass_through(nginx, accounts):
    user = accounts.make(credit="5")
    ok = requests.post(nginx.url + "/v1/chat/completions", headers=user.headers, timeout=30,
                       json={"model": "deepseek-chat", "stream": False,
                             "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] > 0
    assert ok.headers["x-request-id"] and ok.headers["x-silk-cost"]
    denied = requests.get(nginx.url + "/v1/models", timeout=10)
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"


def test_reloads_of_gunicorn_and_nginx_keep_open_streams(nginx, gateway, accounts):
    user = accounts.make(credit="5")
    old_workers = set(gateway.worker_pids())
    old_nginx = set(nginx.worker_pids())
    actions = {}

    def reload_mid_stream(index, payload):
        if index == 4:
            os.kill(gateway.process.pid, signal.SIGHUP)
            actions["hup"] = time.monotonic()
        elif index == 12:
            nginx.reload()
            actions["nginx"] = time.monotonic()
        elif index == 18:
            # New requests meanwhile go to the new workers through the new nginx workers.
            actions["fresh"] = requests.get(nginx.url + "/v1/models", headers=user.headers,
                                            timeout=10).status_code

    status, _, events = timed_events(
        nginx.url, user.key, f"Tell a long story [[fake: chunk_delay={DELAY} pieces=30]]",
        on_event=reload_mid_stream)
    assert status == 200
    assert {"hup", "nginx"} <= set(actions) and actions["fresh"] == 200
    pieces = content_of(events)
    assert "".join(text for _, text in pieces) == " ".join(f"w{i}" for i in range(30))
    assert events[-1][1] == "[DONE]"
    assert not any(isinstance(p, dict) and "error" in p for _, p in events)
    arrived_after_reloads = [at for at, _ in pieces if at > actions["nginx"]]
    assert len(arrived_after_reloads) >= 10  # the same stream went on, it was not replayed
    new_workers = set(gateway.worker_pids()) - old_workers
    assert len(new_workers) >= 2  # gunicorn did reload
    assert set(nginx.worker_pids()) - old_nginx  # and so did nginx
    # Their last stream done, the old workers of both go away by themselves.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (old_workers & set(gateway.worker_pids())
                                           or old_nginx & set(nginx.worker_pids())):
        time.sleep(0.2)
    assert not old_workers & set(gateway.worker_pids())
    assert not old_nginx & set(nginx.worker_pids())
    assert accounts.audit() == []


def test_the_dashboard_works_through_nginx(nginx, accounts):
    from tests.ops.helpers import csrf_from

    user = accounts.make(credit="3")
    browser = requests.Session()
    page = browser.get(nginx.url + "/dashboard/login", timeout=10)
    signed_in = browser.post(nginx.url + "/dashboard/login", timeout=10,
                             headers={"Origin": nginx.url},  # as a browser sends it
                             data={"api_key": user.key, "csrf_token": csrf_from(page.text)})
    assert signed_in.status_code == 200 and signed_in.url.endswith("/dashboard/")
    assert "$3.00" in signed_in.text
