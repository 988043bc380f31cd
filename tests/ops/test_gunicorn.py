"""Metrics and reloads under real gunicorn: numbers for the whole server, not one worker."""

from __future__ import annotations

import glob
import os
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import requests

from tests.ops.helpers import content_of, sample, timed_events
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"


def scrape(url: str) -> str:
    response = requests.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def chat_once(url: str, headers: dict, text: str) -> int:
    with requests.Session() as session:  # one connection each, so both workers get some
        return session.post(url + CHAT, headers=headers, timeout=30, json={
            "model": "deepseek-chat", "stream": False,
            "messages": [{"role": "user", "content": text}]}).status_code


def open_stream(url: str, headers: dict, pieces: int, delay: float):
    """Start a stream and return the response once its first event has arrived."""
    response = requests.post(url + CHAT, headers=headers, stream=True, timeout=30, json={
        "model": "deepseek-chat", "stream": True, "messages": [{"role": "user", "content":
                                                                f"go [[fake: pieces={pieces} "
                                                                f"chunk_delay={delay}]]"}]})
    lines = response.iter_lines()
    next(line for line in lines if line.startswith(b"data:"))
    return response, lines


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def test_counters_add_up_across_workers(sqlite_only, gateway, accounts):
    user = accounts.make(credit="5")
    text = "Spread me around [[fake: delay=0.3]]"
    pids = {str(pid) for pid in gateway.worker_pids()}
    sent, served = 0, set()
    while len(served) < 2 and sent < 72:  # until both workers have answered some
        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(lambda _: chat_once(gateway.url, user.headers, text),
                                     range(24)))
        assert statuses == [200] * 24
        sent += 24
        served = {name.rsplit("_", 1)[1].split(".")[0]
                  for name in os.listdir(_prom_dir(gateway)) if name.startswith("counter_")}
    assert served == pids
    for _ in range(6):  # each scrape lands on some worker and sees them all
        text_ = scrape(gateway.url)
        assert sample(text_, "silk_http_requests_total", route=CHAT, status="200") == sent
        assert sample(text_, "silk_requests_settled_total", outcome="ok") == sent
        assert sample(text_, "silk_upstream_latency_seconds_count", status="200") == sent


def _prom_dir(gateway) -> str:
    """The metrics directory gunicorn.conf.py made for this gateway (it holds our pids)."""
    pids = {str(pid) for pid in gateway.worker_pids()}

    def find():
        for path in glob.glob(os.path.join(tempfile.gettempdir(), "silk-metrics-*")):
            try:
                names = os.listdir(path)
            except FileNotFoundError:
                continue
            if any(name.rsplit("_", 1)[-1].split(".")[0] in pids for name in names):
                return path
        return None

    found = wait_for(find, 5)
    assert found, "no metrics directory holds this gateway's workers"
    return found


def test_open_streams_and_dead_workers(sqlite_only, gateway, accounts):
    user = accounts.make(credit="5")
    assert chat_once(gateway.url, user.headers, "warm up") == 200
    streams = [open_stream(gateway.url, user.headers, pieces=200, delay=0.1) for _ in range(3)]
    assert sample(scrape(gateway.url), "silk_open_streams") == 3
    for pid in gateway.worker_pids():  # the streams' workers die without a word
        os.kill(pid, signal.SIGKILL)
    for response, _ in streams:
        response.close()
    # child_exit marks them dead: their live gauges go, their counters stay.
    assert wait_for(lambda: _scrape_or_none(gateway.url))
    text = wait_for(lambda: (t := _scrape_or_none(gateway.url)) and
                    sample(t, "silk_open_streams") == 0 and t)
    assert sample(text, "silk_open_streams") == 0
    assert sample(text, "silk_http_requests_total", route=CHAT, status="200") == 4


def _scrape_or_none(url: str) -> str | None:
    try:
        return scrape(url)
    except (requests.RequestException, AssertionError):
        return None


def test_sighup_reload_keeps_streams_and_counters(sqlite_only, gateway, accounts, tmp_path):
    user = accounts.make(credit="5")
    assert chat_once(gateway.url, user.headers, "before the reload") == 200
    old = set(gateway.worker_pids())

    def hup(index, _payload):
        if index == 3:
            os.kill(gateway.process.pid, signal.SIGHUP)

    status, headers, events = timed_events(gateway.url, user.key,
                                           "long one [[fake: pieces=20 chunk_delay=0.15]]",
                                           on_event=hup)
    assert status == 200 and events[-1][1] == "[DONE]"
    assert len(content_of(events)) == 20
    # The old worker writes the stream's one log line as it closes the stream.
    def stream_lines():
        return [orjson.loads(line) for line in (tmp_path / "gunicorn.log").read_text()
                .splitlines() if headers["x-request-id"] in line]

    lines = wait_for(stream_lines, 5)
    assert len(lines) == 1
    assert lines[0]["outcome"] == "ok" and lines[0]["completion_tokens"] == 20
    assert lines[0]["stream"] is True and lines[0]["ms"] > 20 * 150 * 0.8
    assert wait_for(lambda: not old & set(gateway.worker_pids()))  # drained, then gone
    text = scrape(gateway.url)
    assert sample(text, "silk_http_requests_total", route=CHAT, status="200") == 2
    assert sample(text, "silk_requests_settled_total", outcome="ok") == 2
    assert sample(text, "silk_open_streams") == 0


def test_metrics_directory_is_made_then_removed(sqlite_only, app, database_url, gateway_env,
                                                tmp_path):
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "silk-metrics-*")))
    with Gateway(database_url, gateway_env, workers=1) as gateway:
        requests.get(gateway.url + "/healthz", timeout=5)
        made = _prom_dir(gateway)
        assert made not in before
    assert not os.path.exists(made)


def test_an_operators_directory_is_cleared_on_start_and_kept(sqlite_only, app, database_url,
                                                             gateway_env, tmp_path):
    directory = tmp_path / "prom"
    directory.mkdir()
    stale = directory / "counter_999999.db"
    stale.write_bytes(b"stale")
    env = {**gateway_env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with Gateway(database_url, env, workers=1) as gateway:
        assert not stale.exists()
        assert "silk_http_requests_total" in scrape(gateway.url)
    assert directory.exists()


def test_a_control_socket_only_at_a_path_of_its_own(sqlite_only, app, database_url, gateway_env,
                                                    tmp_path):
    """gunicorn >= 25.1 would open one at the same per-user path for every instance."""
    import gunicorn

    if gunicorn.version_info < (25, 1):
        pytest.skip("this gunicorn has no control socket")
    home = tmp_path / "home"
    home.mkdir()
    env = {**gateway_env, "HOME": str(home), "XDG_RUNTIME_DIR": ""}
    with Gateway(database_url, env, workers=1) as gateway:
        requests.get(gateway.url + "/healthz", timeout=5)
        assert not (home / ".gunicorn").exists()
    own = tmp_path / "ctl.sock"
    with Gateway(database_url, {**env, "SILK_CONTROL_SOCKET": str(own)}, workers=1):
        assert wait_for(lambda: own.is_socket())
        assert not (home / ".gunicorn").exists()


def test_the_date_header_is_the_time_of_the_answer(sqlite_only, app, database_url, gateway_env):
    """Workers format the Date header once a second (gunicorn.conf.py): it must still be the
    current second's, and move on with the clock."""
    from email.utils import parsedate_to_datetime

    with Gateway(database_url, gateway_env, workers=1) as gateway, requests.Session() as s:
        seen = []
        for _ in range(2):
            before = int(time.time())
            date = s.get(gateway.url + "/healthz", timeout=5).headers["Date"]
            after = int(time.time())
            stamp = int(parsedate_to_datetime(date).timestamp())
            assert before <= stamp <= after, (date, before, after)
            seen.append(stamp)
            time.sleep(1.1)
        assert seen[1] > seen[0]


def test_a_graceful_timeout_too_short_for_a_json_answer_is_warned_of(sqlite_only, app,
                                                                    database_url, gateway_env,
                                                                    tmp_path):
    """Stopped with this timeout, a worker waiting for a JSON answer would be killed first."""
    log = tmp_path / "gunicorn.log"
    env = {**gateway_env, "SILK_GRACEFUL_TIMEOUT": "5", "SILK_UPSTREAM_READ_TIMEOUT": "30",
           "SILK_UPSTREAM_MAX_ANSWER_WAIT": "120"}
    with Gateway(database_url, env, workers=1, log_path=log):
        pass
    text = log.read_text()
    assert "SILK_GRACEFUL_TIMEOUT (--graceful-timeout) is 5 s, below the longest JSON " \
           "answer's 180 s" in text, text
    with Gateway(database_url, {**env, "SILK_GRACEFUL_TIMEOUT": "180"}, workers=1,
                 log_path=log):
        pass
    assert "SILK_GRACEFUL_TIMEOUT" not in log.read_text()


def _over_unix(path, method: str, target: str, headers: dict, body: dict | None = None) -> int:
    """One request to gunicorn's unix socket, as nginx sends it there; its status."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(str(path))

    connection = UnixConnection("localhost")
    data = orjson.dumps(body) if body is not None else None
    connection.request(method, target, body=data,
                       headers={**headers, "Content-Type": "application/json"})
    status = connection.getresponse().status
    connection.close()
    return status


def test_behind_a_unix_socket_each_client_is_limited_by_its_own_address(
        sqlite_only, app, database_url, gateway_env, tmp_path):
    """nginx on the same host may proxy to `bind = unix:...`: the peer has no address, and is
    as local as loopback, so its X-Forwarded-For names the client. Read as no address, every
    client shared one failed-key and sign-up count: one guesser locked everyone out."""
    from tests.reliability.helpers import fresh_window

    path = tmp_path / "silk.sock"
    env = {**gateway_env, "SILK_AUTH_FAILURES_PER_MINUTE": "3", "SILK_REGISTRATION": "open",
           "SILK_REGISTRATION_PER_HOUR": "1"}
    guess = {"Authorization": "Bearer sk-wrong-but-plausible-key"}
    attacker, bystander = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.4"}
    with Gateway(database_url, env, workers=1, extra_args=("-b", f"unix:{path}")):
        fresh_window(10)
        guesses = [_over_unix(path, "GET", "/v1/balance", {**attacker, **guess})
                   for _ in range(4)]
        other = _over_unix(path, "GET", "/v1/balance", {**bystander, **guess})
        fresh_window(5, window=3600)
        signups = [_over_unix(path, "POST", "/v1/register", who, {"email": f"u{i}@example.com"})
                   for i, who in enumerate((attacker, attacker, bystander))]
    assert guesses == [401, 401, 401, 429]
    assert other == 401  # its own first failure, not the guesser's block
    assert signups == [201, 429, 201]
