"""One provider URL's HTTP/1.1 transport: urllib3 connects and pools, llhttp reads the answer.

Every call goes to one URL fixed by the operator, so the per-call work of `HTTPAdapter.send`
(URL, proxy and certificate handling), http.client's header objects and the email parser for
the response head is done once here, or not at all. urllib3 still opens, verifies (TLS as
requests configures it) and pools the connections; the request goes out as one write of
prepared bytes (head and body in one packet), and the answer is parsed by llhttp through
httptools, chunked or not. Callers still get a `requests.Response` and requests' exceptions.

This reaches below urllib3's public API (a connection's `_new_conn`, a pool's `_get_conn` and
`_put_conn`): silk.upstream.dependencies checks at start-up that those are still there.
"""

from __future__ import annotations

import datetime
import functools
import re
import socket
import ssl
import time
import zlib
from collections.abc import Callable

import httptools
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from silk.sockets import cooperative, readable_now
from silk.upstream import resolver
from silk.upstream.silence import Silence

_READ_SIZE = 65536
_BREAK = re.compile(r"[\r\n]")
_DRAIN_WAIT = 0.1  # seconds closing an answer may wait for bytes already on their way


class _ResolverAndPollMixin:
    """urllib3's connection, connecting through silk.upstream.resolver and polled cheaply.

    Before reusing a pooled connection urllib3 polls it with no wait; under gevent that poll
    would go through the event loop (a greenlet switch and a timer), so here it is the
    operating system's poll. A new connection takes the host's addresses from
    silk.upstream.resolver instead of a lookup of its own.
    """

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
        return self.sock is not None and not readable_now(self.sock)


@functools.cache
def _tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """One verifying TLS context per trust bundle, as urllib3 would make it for each connection."""
    context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_verify_locations(cafile=cafile, capath=capath)
    return context


class UpstreamHTTPConnection(_ResolverAndPollMixin, HTTPConnection):
    """urllib3's HTTP connection, resolved and polled as _ResolverAndPollMixin says."""


class UpstreamHTTPSConnection(_ResolverAndPollMixin, HTTPSConnection):
    """urllib3's HTTPS connection, resolved and polled as _ResolverAndPollMixin says."""


class Transport:
    """POST bodies to one URL over urllib3's pool for it, with requests' settings."""

    def __init__(self, adapter: HTTPAdapter, url: str, *, verify: bool | str = True):
        """`verify`: as requests takes it (True: certifi's bundle; a path: that bundle)."""
        self.adapter = adapter
        self.url = url
        # What HTTPAdapter.send works out per call, worked out once: the pool for the URL
        # (no proxy: destinations come only from configuration), certificate checking
        # as requests does it, and the request line and Host header.
        probe = requests.Request("POST", url).prepare()
        self.pool = adapter.get_connection_with_tls_context(probe, verify=verify)
        adapter.cert_verify(self.pool, url, verify, None)
        self.pool.ConnectionCls = (UpstreamHTTPSConnection if self.pool.scheme == "https"
                                   else UpstreamHTTPConnection)
        if self.pool.scheme == "https" and verify:
            # The same trust, loaded once: given only the bundle's path, urllib3 would build
            # a context and parse the whole certificate bundle for every new connection,
            # which a burst of streams opening at once pays many times over.
            self.pool.conn_kw["ssl_context"] = _tls_context(self.pool.ca_certs,
                                                            self.pool.ca_cert_dir)
            self.pool.ca_certs = self.pool.ca_cert_dir = None
        parsed = urllib3.util.parse_url(url)
        host = parsed.host or ""
        if parsed.port and parsed.port != {"http": 80, "https": 443}.get(parsed.scheme):
            host = f"{host}:{parsed.port}"
        path = adapter.request_url(probe, {})
        self._request_line = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"

    def head(self, headers: dict[str, str], length: int) -> bytes:
        """The request line and headers as they go on the wire, the body's length included."""
        # One search over all names and values; which header is bad is looked for only then.
        if _BREAK.search("".join(headers) + "".join(headers.values())):
            for name, value in headers.items():
                if _BREAK.search(name) or _BREAK.search(value):
                    raise requests.exceptions.InvalidHeader(f"Invalid header {name!r}")
        lines = [self._request_line]
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        if "Content-Length" not in headers:
            lines.append(f"Content-Length: {length}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def post(self, body: bytes, headers: dict[str, str], timeout: urllib3.Timeout,
             first_byte: float | None = None) -> requests.Response:
        """Send the body and read the answer's head; its body is read as the caller asks.

        `first_byte`: the body must begin within this many seconds of the call (the connect
        included); until it does, each wait lasts what is left of them, not the read timeout
        (sending the request, at most the read timeout too): a provider may send an answer
        only once it is complete. Raises `requests.Timeout` or `requests.ConnectionError` as
        HTTPAdapter.send does.
        """
        until = None if first_byte is None else time.monotonic() + first_byte
        message = self.head(headers, len(body)) + body
        conn = self._connection(timeout)
        read_timeout = timeout.read_timeout
        silence = Silence(read_timeout) if read_timeout and cooperative() else None
        waits = None
        if read_timeout and until is not None:
            waits = (until, read_timeout)
        answer = AnswerReader(self.pool, conn, silence, waits)
        answer.begin(message)
        return UpstreamResponse(answer, self.url, self.adapter)

    def _connection(self, timeout: urllib3.Timeout) -> HTTPConnection:
        """A pooled connection if one is open and quiet, else a new one; its reads time out.

        In a gevent worker the socket itself has no timeout: the answer's `Silence` bounds
        each wait instead.
        """
        try:
            conn = self.pool._get_conn()
            if conn.sock is None:
                conn.timeout = timeout.connect_timeout
                try:
                    conn.connect()
                except BaseException:
                    conn.close()
                    self.pool._put_conn(None)
                    raise
            conn.sock.settimeout(None if cooperative() else timeout.read_timeout)
        except (ConnectTimeoutError, NewConnectionError) as exc:
            if isinstance(exc, NewConnectionError):
                raise requests.ConnectionError(exc) from exc
            raise requests.ConnectTimeout(exc) from exc
        except TimeoutError as exc:  # the TLS handshake stalled: nothing was sent yet
            raise requests.ConnectTimeout(exc) from exc
        except (ssl.SSLError, urllib3.exceptions.SSLError) as exc:
            raise requests.exceptions.SSLError(exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise requests.ConnectionError(exc) from exc
        return conn


_UNSET = object()


class UpstreamResponse(requests.Response):
    """requests' Response for an answer being read, with the parts nobody reads made lazily.

    `requests.Response()` builds a cookie jar for every answer and callers here never read
    cookies (building it cost a tenth of the upstream call); the text encoding is worked
    out from the headers only if `text` is asked for.
    """

    def __init__(self, answer: AnswerReader, url: str, adapter: HTTPAdapter):
        # Response.__init__ would build the jar: its attributes are set here instead.
        self._content = False
        self._content_consumed = False
        self._next = None
        self.status_code = answer.status
        self.headers = CaseInsensitiveDict(answer.headers)
        self.raw = answer
        self.url = url
        self.history = []
        self.reason = answer.reason
        self.elapsed = datetime.timedelta(0)
        self.request = None  # type: ignore[assignment]
        self.connection = adapter
        self._cookies: object = _UNSET
        self._encoding: object = _UNSET

    @property  # type: ignore[override]
    def cookies(self) -> requests.cookies.RequestsCookieJar:
        """The answer's cookies, as requests gives them (made on first use)."""
        if self._cookies is _UNSET:
            jar = requests.cookies.RequestsCookieJar()
            self._cookies = jar
        return self._cookies  # type: ignore[return-value]

    @cookies.setter
    def cookies(self, jar) -> None:
        self._cookies = jar

    @property  # type: ignore[override]
    def encoding(self) -> str | None:
        """The text encoding the answer's Content-Type names, as requests works it out."""
        if self._encoding is _UNSET:
            self._encoding = requests.utils.get_encoding_from_headers(self.headers)
        return self._encoding  # type: ignore[return-value]

    @encoding.setter
    def encoding(self, value: str | None) -> None:
        self._encoding = value


def _mapped(exc: BaseException) -> BaseException:
    """requests' form of a failure while talking over an open connection."""
    if isinstance(exc, requests.RequestException):
        return exc
    if isinstance(exc, TimeoutError):
        return requests.ReadTimeout(f"The provider sent nothing for too long: {exc}")
    if isinstance(exc, ssl.SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, (OSError, httptools.HttpParserError)):
        return requests.ConnectionError(f"The provider's answer broke off: {exc!r}")
    return exc


class SilentAfterRequest(requests.ReadTimeout):
    """The provider took the whole request, then its answer did not begin in time: it may
    be generating it (and billing it), so the request must not be sent again elsewhere."""


class _ClosedMidAnswer(OSError):
    """The provider closed the connection before its answer was complete."""


class AnswerReader:
    """The provider's answer as it arrives: the head parsed at once, the body on demand.

    It stands where requests keeps urllib3's response (`Response.raw`): `read`, `read1` and
    `close`. The connection goes back to the pool once the answer has been read to its end,
    or, at close, if the rest of it is already waiting; otherwise it is closed.
    """

    def __init__(self, pool: urllib3.HTTPConnectionPool, conn: HTTPConnection,
                 silence: Silence | None = None,
                 first_byte: tuple[float, float] | None = None):
        """`silence` bounds each wait for the socket when the socket has no timeout;
        `first_byte` is (the time.monotonic() by which the body must begin, the read timeout
        that bounds each wait again once it has)."""
        self._pool = pool
        self._conn: HTTPConnection | None = conn
        self._silence = silence
        self._first_byte = first_byte  # until the body begins
        self._parser = httptools.HttpResponseParser(self)
        self._pending: list[bytes] = []
        self._inflate = None
        self._framed = False  # the body's end is marked (length or chunks), not the hang-up
        self._messages = 0
        self._interim = False
        self._reusable = False
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.head_done = False
        self.complete = False
        self.sent = False  # the whole request went out

    # llhttp's callbacks, through httptools
    def on_message_begin(self) -> None:
        self._messages += 1
        self.headers, self.reason = [], ""
        self._framed, self._inflate = False, None

    def on_status(self, reason: bytes) -> None:
        self.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status < 200:
            self._interim = True  # 100 Continue and the like: the answer comes after it
            return
        self.head_done = True
        for name, value in self.headers:
            lowered = name.lower()
            if lowered in ("content-length", "transfer-encoding"):
                self._framed = True
            elif lowered == "content-encoding" and value.strip().lower() in ("gzip", "deflate"):
                # identity is asked for; a provider that compresses anyway is still read
                self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)

    def on_body(self, data: bytes) -> None:
        if self._inflate:
            data = self._inflate.decompress(data)  # nothing yet while the header arrives
        if data:
            self._pending.append(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._messages -= 1  # the connection stays as clean as before it
        else:
            if self._inflate and (rest := self._inflate.flush()):
                self._pending.append(rest)
            self.complete = True
            self._reusable = self._parser.should_keep_alive()  # only known at this point

    # reading
    def _fill(self) -> None:
        """Read what the socket has (waiting for it) and parse it."""
        if self._conn is None:
            data = b""
        elif self._silence is None:
            data = self._conn.sock.recv(_READ_SIZE)
        else:
            data = self._silence.wait(self._conn.sock.recv, _READ_SIZE)
        if not data:
            if self.head_done and not self._framed and self._conn is not None:
                self.complete = True  # a body that ends with the connection
                self.discard()
                return
            raise _ClosedMidAnswer("The provider closed the connection mid-answer.")
        self._parser.feed_data(data)
        if self._first_byte is not None and self._pending:
            self._bound(self._first_byte[1])  # the body began: each silence is the usual
            self._first_byte = None

    def _bound(self, seconds: float) -> None:
        """Bound each wait from now on by `seconds` (called between waits)."""
        if self._silence is not None:
            self._silence.limit(seconds)
        elif self._conn is not None:
            self._conn.sock.settimeout(seconds)

    def _bound_by_first_byte(self, first_byte: tuple[float, float]) -> None:
        """Bound the next wait by what is left until the body must begin (sending the
        request, by the read timeout too)."""
        until, read_timeout = first_byte
        left = max(until - time.monotonic(), 0.001)
        self._bound(left if self.sent else min(left, read_timeout))

    def _send_and_read_until(self, message: bytes | None, done: Callable[[], bool]) -> None:
        """Send `message` if any, then read until `done()`; a failure drops the connection
        and is raised as requests' exception."""
        try:
            if message is not None:
                if self._first_byte is not None:
                    self._bound_by_first_byte(self._first_byte)
                if self._silence is None:
                    self._conn.sock.sendall(message)
                else:
                    self._silence.wait(self._conn.sock.sendall, message)
                self.sent = True
            while not done():
                if self._first_byte is not None:
                    self._bound_by_first_byte(self._first_byte)
                self._fill()
        except BaseException as exc:
            self.discard()
            mapped = _mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def begin(self, message: bytes) -> None:
        """Send the request and read the answer's status line and headers (1xx skipped).

        A read timeout once the whole request went out is a `SilentAfterRequest`.
        """
        try:
            self._send_and_read_until(message, lambda: self.head_done)
        except requests.ReadTimeout as exc:
            if not self.sent:
                raise
            raise SilentAfterRequest(*exc.args) from exc

    def read1(self, amount: int = -1) -> bytes:
        """The next body bytes as they come (at least one unless the body ended)."""
        self._send_and_read_until(None, lambda: bool(self._pending) or self.complete)
        if self.complete:
            self._finish()
        data = b"".join(self._pending)
        self._pending.clear()
        return data

    def read(self, amount: int | None = None, **_kwargs) -> bytes:
        """Up to `amount` body bytes (all of them if None), waiting for them."""
        parts: list[bytes] = []
        size = 0
        while amount is None or size < amount:
            chunk = self.read1()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        data = b"".join(parts)
        if amount is not None and len(data) > amount:
            self._pending.insert(0, data[amount:])
            data = data[:amount]
        return data

    def _finish(self) -> None:
        """The answer is read: the connection is reusable unless it was told otherwise."""
        conn, self._conn = self._conn, None
        if self._silence is not None:
            self._silence.stop()
        if conn is None:
            return
        if self._messages == 1 and self._reusable:
            self._pool._put_conn(conn)
        else:
            conn.close()
            self._pool._put_conn(None)

    def discard(self) -> None:
        """Close the connection: its state is unknown or it carries the rest of an answer."""
        conn, self._conn = self._conn, None
        if self._silence is not None:
            self._silence.stop()
        if conn is not None:
            conn.close()
            self._pool._put_conn(None)

    def close(self) -> None:
        """Done with the answer: keep the connection if the rest of it is already here."""
        if self._conn is None:
            return
        try:
            self._conn.sock.settimeout(_DRAIN_WAIT)  # the rest of a TLS record, no more
            while not self.complete and readable_now(self._conn.sock):
                self._fill()
        except (OSError, httptools.HttpParserError):
            self.discard()
            return
        if self.complete:
            self._pending.clear()
            self._finish()
        else:
            self.discard()

    release_conn = close  # requests calls it after reading the whole body

    @property
    def closed(self) -> bool:
        """Whether the answer holds no connection any more."""
        return self._conn is None
