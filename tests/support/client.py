"""Flask's test client, closing a finished answer as a WSGI server does once it is sent.

Werkzeug's client closes an answer only when the test closes it; gunicorn closes every one
after writing it, and the gateway counts and logs a JSON answer then. A stream stays open,
as a stream's test reads it piece by piece and may stop early.
"""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse


def _closed() -> None:
    """A server closes an answer once; closing it again does nothing."""


class ServerClient(FlaskClient):
    """A test client whose answers other than event streams are read and closed at once."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        if response.mimetype != "text/event-stream":
            response.make_sequence()
            response.close()
            response.close = _closed  # type: ignore[method-assign]  # a test may close again
        return response
