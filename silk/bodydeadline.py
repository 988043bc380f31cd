"""A deadline for the request body: a client that trickles it (or stops) cannot hold a greenlet.

gunicorn bounds the wait for a request's headers (its keep-alive timeout) but not for its
body: the app reads `wsgi.input` from the socket with no timeout. Every read of the body is
therefore made against one deadline, counted from when the request reached the app; past
it the request ends with a 408 and the rest of the body is not waited for.
"""

from __future__ import annotations

import contextlib
import socket
import time

from silk.errors import RequestTimeout
from silk.sockets import cooperative


class BodyDeadline:
    """WSGI middleware: every body read must finish within `seconds` of the request."""

    def __init__(self, app, seconds: float):
        self.app = app
        self.seconds = seconds

    def __call__(self, environ, start_response):
        stream = environ.get("wsgi.input")
        if self.seconds and stream is not None and _has_body(environ) and cooperative():
            environ["wsgi.input"] = _DeadlineInput(stream, time.monotonic() + self.seconds,
                                                   self.seconds, environ)
        return self.app(environ, start_response)


def _has_body(environ) -> bool:
    """Whether the request announced a body (a length, or chunks): only then can it stall."""
    return environ.get("CONTENT_LENGTH") not in (None, "", "0") or (
        "HTTP_TRANSFER_ENCODING" in environ)


class _DeadlineInput:
    """`wsgi.input` whose reads raise RequestTimeout once the deadline has passed."""

    def __init__(self, stream, deadline: float, seconds: float, environ: dict):
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
