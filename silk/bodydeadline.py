"""A deadline for the request body: a client that trickles it (or stops) cannot hold a greenlet.

gunicorn bounds the wait for a request's headers (its keep-alive timeout) but not for its
body: the app reads `wsgi.input` from the socket with no timeout. Every read of the body is
therefore made against one deadline, counted from when the request reached the app; past
it the request ends with a 408 and the rest of the body is not waited for.

A body whose framing is broken (gunicorn refuses a chunk size or a chunk's end while the app
reads) is the client's mistake too: it ends the request with a 400 in the surface's envelope,
whether or not a deadline applies, where the server's parse error would have been a 500.
"""

from __future__ import annotations

import contextlib
import socket
import time

from silk.errors import MalformedBody, RequestTimeout
from silk.sockets import cooperative


def _framing_errors() -> tuple[type[BaseException], ...]:
    """The errors the server raises from `wsgi.input` for a body framed wrongly."""
    try:
        from gunicorn.http.errors import ParseException  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - gunicorn serves the app in production
        return ()
    return (ParseException,)


_FRAMING_ERRORS = _framing_errors()


class BodyDeadline:
    """WSGI middleware: every body read must finish within `seconds` of the request (under a
    cooperative server), and a body framed wrongly is a 400."""

    def __init__(self, app, seconds: float):
        self.app = app
        self.seconds = seconds

    def __call__(self, environ, start_response):
        stream = environ.get("wsgi.input")
        if stream is not None and _has_body(environ):
            timed = bool(self.seconds) and cooperative()
            deadline = time.monotonic() + self.seconds if timed else None
            environ["wsgi.input"] = _DeadlineInput(stream, deadline, self.seconds, environ)
        return self.app(environ, start_response)


def _has_body(environ) -> bool:
    """Whether the request announced a body (a length, or chunks): only then can it stall."""
    return environ.get("CONTENT_LENGTH") not in (None, "", "0") or (
        "HTTP_TRANSFER_ENCODING" in environ)


class _DeadlineInput:
    """`wsgi.input` whose reads raise RequestTimeout once the deadline (if any) has passed,
    and MalformedBody when the server finds the body's framing broken."""

    def __init__(self, stream, deadline: float | None, seconds: float, environ: dict):
        self._stream = stream
        self._deadline = deadline
        self._seconds = seconds
        self._environ = environ

    def read(self, *args):
        return self._within(self._stream.read, *args)

    def readline(self, *args):
        return self._within(self._stream.readline, *args)

    def readlines(self, *args):
        return self._within(self._stream.readlines, *args)

    def __iter__(self):
        while line := self.readline():
            yield line

    def _within(self, read, *args):
        try:
            return self._timed(read, *args)
        except _FRAMING_ERRORS:  # gunicorn then closes the connection after the answer
            raise MalformedBody("The request body's chunked encoding is malformed.") from None

    def _timed(self, read, *args):
        if self._deadline is None:
            return read(*args)
        import gevent

        remaining = self._deadline - time.monotonic()
        timer = gevent.Timeout(max(remaining, 0.001))
        timer.start()
        try:
            return read(*args)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            self._stop_reading()
            raise RequestTimeout(
                f"The request body did not arrive within {self._seconds:g} s.") from None
        finally:
            timer.close()

    def _stop_reading(self) -> None:
        """End the connection's input, so the server does not wait for the rest either."""
        sock = self._environ.get("gunicorn.socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
