"""Provider addresses are looked up once for a burst of connections, and again after a failure."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from silk.cache import ExpiringCache
from silk.upstream import resolver
from silk.upstream.transport import Transport


@pytest.fixture
def lookups(monkeypatch):
    """Count the real lookups the resolver makes, starting from an empty cache."""
    made: list[tuple[str, int]] = []
    real = socket.getaddrinfo

    def counted(host, port, *args, **kwargs):
        made.append((host, port))
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(resolver, "_answers", ExpiringCache(resolver.TTL))
    monkeypatch.setattr(resolver.socket, "getaddrinfo", counted)
    return made


def _body():
    return b'{"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]}'


def test_a_burst_of_new_connections_looks_the_host_up_once(upstream, lookups):
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=32)
    transport = Transport(adapter, upstream.base_url("deepseek") + "/chat/completions")
    headers = {"Authorization": "Bearer sk-ds-good", "Content-Type": "application/json"}

    def post(_):
        response = transport.post(_body(), headers, urllib3.Timeout(connect=5, read=5))
        response.raw.read()  # the connection is busy until its answer is read
        return response.status_code

    assert post(0) == 200  # the first connection looks the host up
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(post, range(16)))  # 15 more connections open meanwhile
    assert statuses == [200] * 16
    url = urllib3.util.parse_url(upstream.base_url("deepseek"))
    assert lookups == [(url.host, url.port)]


def test_a_host_that_refuses_is_looked_up_again(lookups):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = Transport(HTTPAdapter(max_retries=0), f"http://127.0.0.1:{port}/v1/chat")
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            transport.post(_body(), {}, urllib3.Timeout(connect=2, read=2))
    assert lookups == [("127.0.0.1", port)] * 2  # the failed answer was not kept
