"""The Messages surface's error envelope: Anthropic's {"type": "error", "error": {...}}.

Every error raised on a /v1/messages route is rendered here, and the app renders the errors
it raises itself on these paths (an unknown path, a wrong method, a body too large, a crash)
here too, so an Anthropic client always gets its own shape and its SDK's exception class.
"""

from __future__ import annotations

from flask import g

from silk.errors import SilkError, error_response

# Anthropic's error type for each HTTP status the gateway answers with.
TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
         403: "permission_error", 404: "not_found_error", 408: "timeout_error",
         409: "invalid_request_error", 413: "request_too_large",
         422: "invalid_request_error", 429: "rate_limit_error", 503: "overloaded_error",
         504: "timeout_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    """The Anthropic error type of an HTTP status (api_error for any other failure)."""
    return TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def envelope(kind: str, message: str) -> dict:
    """{"type": "error", "error": {"type", "message"}, "request_id"}."""
    return {"type": "error", "error": {"type": kind, "message": message},
            "request_id": g.get("request_id")}


def render(err: SilkError):
    """The JSON response for an error raised before the answer started."""
    g.error_code = err.code
    return error_response(err.status, envelope(error_type(err.status), err.message),
                          err.headers)


def stream_error(message: str, kind: str = "api_error") -> dict:
    """The data of the one `error` event sent when a stream fails after it started."""
    return {"type": "error", "error": {"type": kind, "message": message}}
