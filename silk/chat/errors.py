"""The chat surface's error envelope: OpenAI's {"error": {...}}, as JSON and as an SSE event.

Every error raised on a chat route is rendered here; another surface renders the same
errors in its own dialect's envelope.
"""

from __future__ import annotations

from flask import g

from silk.errors import SilkError, error_response


def render(err: SilkError):
    """The JSON response for an error raised before the answer started."""
    g.error_code = err.code
    return error_response(err.status, err.body(), err.headers)


def stream_error(message: str, code: str, kind: str = "api_error") -> dict:
    """The body of the one SSE error event sent when a stream fails after it started."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
