"""One provider URL's HTTP transport: requests' pool and TLS settings, resolved once.

`HTTPAdapter.send` re-parses the URL, looks up the pool, checks proxies and certificates and
copies cookies on every call: work a fixed POST to a configured URL needs once. Here the
adapter picks the pool and its TLS settings at start-up, and each request goes straight to
that urllib3 pool, answering a `requests.Response` as before.
"""

from __future__ import annotations

import functools
import select
import socket

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
)

from silk.upstream import resolver


class _Lean:
    """urllib3's connection, minus costs it pays on every request or new connection.

    http.client writes the head and then the body: on a keep-alive connection with
    TCP_NODELAY that is two packets, two system calls and two wake-ups of the provider, so
    here they go in one write. And before reusing a pooled connection urllib3 polls it with
    no wait; under gevent that poll goes through the event loop (a greenlet switch and a
    timer), so here it is the operating system's poll. A new connection takes the host's
    addresses from silk.upstream.resolver instead of a lookup of its own.
    """

    _head: bytes | None = None
    _join_body = False

    def request(self, method, url, body=None, headers=None, **kwargs):
        self._join_body = isinstance(body, bytes) and bool(body) and not kwargs.get("chunked")
        try:
            super().request(method, url, body, headers, **kwargs)
        except BaseException:
            self._head = None
            raise
        finally:
            self._join_body = False
        if self._head is not None:  # no body followed the head after all
            head, self._head = self._head, None
            super().send(head)

    def send(self, data):
        if self._join_body:
            if self._head is None:
                self._head = data  # the head: hold it until the body comes
                return
            data, self._head, self._join_body = self._head + data, None, False
        super().send(data)

    def _new_conn(self) -> socket.socket:
        """urllib3's connect, with the host's addresses from silk.upstream.resolver."""
        try:
            sock = resolver.connect(self._dns_host, self.port, self.timeout,
                                    self.source_address, self.socket_options)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        return sock

    @property
    def is_connected(self) -> bool:
        """Open and quiet: a pooled connection with data or EOF waiting was dropped."""
        if self.sock is None:
            return False
        poller = _os_poll()()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)


@functools.cache
def _os_poll():
    """select.poll as the operating system gives it, even after gevent patched select."""
    try:
        from gevent.monkey import get_original
    except ImportError:
        return select.poll
    return get_original("select", "poll")


class LeanHTTPConnection(_Lean, HTTPConnection):
    """urllib3's HTTP connection, lean (see _Lean)."""


class LeanHTTPSConnection(_Lean, HTTPSConnection):
    """urllib3's HTTPS connection, lean (see _Lean)."""


class Transport:
    """POST bodies to one URL through the adapter's pool, with requests' settings."""

    def __init__(self, adapter: HTTPAdapter, url: str):
        self.adapter = adapter
        self.url = url
        # What HTTPAdapter.send works out per call, worked out once: the pool for the URL
        # (no proxy: the session does not trust the environment), certificate checking
        # as requests does it, and the path to request.
        probe = requests.Request("POST", url).prepare()
        self.pool = adapter.get_connection_with_tls_context(probe, verify=True)
        adapter.cert_verify(self.pool, url, True, None)
        self.pool.ConnectionCls = (LeanHTTPSConnection if self.pool.scheme == "https"
                                   else LeanHTTPConnection)
        self.path = adapter.request_url(probe, {})
        self.retries = adapter.max_retries

    def post(self, body: bytes, headers: dict, timeout: urllib3.Timeout) -> requests.Response:
        """Send the body; the answer's body is left unread, as with `stream=True`.

        Raises `requests.Timeout` or `requests.ConnectionError` as HTTPAdapter.send does.
        """
        try:
            raw = self.pool.urlopen(
                "POST", self.path, body=body, headers=headers, redirect=False,
                assert_same_host=False, preload_content=False, decode_content=False,
                retries=self.retries, timeout=timeout, chunked=False)
        except MaxRetryError as exc:
            reason = exc.reason
            if isinstance(reason, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
                    reason, NewConnectionError):
                raise requests.ConnectTimeout(exc) from exc
            raise requests.ConnectionError(exc) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.ReadTimeout(exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise requests.ConnectionError(exc) from exc
        response = requests.Response()
        response.status_code = raw.status
        response.headers = raw.headers  # case-insensitive already
        response.raw = raw
        response.reason = raw.reason
        response.url = self.url
        response.connection = self.adapter
        return response
