"""Each provider's error dialect translated into ours, with upstream secrets scrubbed out."""

from __future__ import annotations

import re

import orjson

from silk.errors import (
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    SilkError,
    UpstreamError,
)

_URL = re.compile(r"https?://\S+|\b[\w.-]+\.(?:com|cn|net|io|ai)(?:/\S*)?", re.I)
_TRACE = re.compile(r"\s*\((?:[^()]*?\b(?:request[ _-]?id|trace|req[ _-]?id)\b[^()]*)\)"
                    r"|\b(?:request[ _-]?id|trace(?:[ _-]?id)?)\s*[:=]?\s*[\w-]+", re.I)
_SECRETISH = re.compile(r"\b(?:sk|ak|key|ark|mimo)[-_][\w*.-]{4,}|\b[A-Za-z0-9_-]{24,}\b", re.I)


def scrub(message: str, limit: int = 400) -> str:
    """Remove URLs, provider trace ids and anything shaped like a key from a message."""
    cleaned = _TRACE.sub("", message or "")
    cleaned = _SECRETISH.sub("[redacted]", _URL.sub("[upstream]", cleaned))
    return cleaned[:limit].strip() or "The provider rejected the request."


def parse_error(body: bytes) -> tuple[str, str]:
    """Return (message, code) from any provider's error body, tolerating garbage."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    error = data.get("error", data) if isinstance(data, dict) else {}
    if not isinstance(error, dict):
        return str(error), ""
    message = error.get("message") or error.get("msg") or ""
    # DeepSeek and MiMo put the machine code in `code`; Ark puts a word such as
    # "Unauthorized" in `type` and the precise code ("AuthenticationError") in `code`.
    code = error.get("code") or error.get("type") or ""
    return str(message), str(code)


def translate(status: int, body: bytes, retry_after: str | None = None) -> SilkError:
    """Map an upstream HTTP error to the client-facing error of the same meaning."""
    message, code = parse_error(body)
    if status in (400, 413, 422):
        return InvalidRequest(f"The provider rejected the request: {scrub(message)}",
                              code="upstream_invalid_request")
    if status in (401, 403):
        return UpstreamError("The provider refused the gateway's credentials; the operator "
                             "has been told.", code="upstream_auth_error")
    if status == 402:
        return ServiceUnavailable("The provider account behind this model is out of credit; "
                                  "try again later.", code="upstream_unavailable")
    if status == 404:
        return UpstreamError("The provider does not serve the configured model.",
                             code="upstream_model_not_found")
    if status == 429:
        wait = int(retry_after) if retry_after and retry_after.isdigit() else 1
        return RateLimited("The provider is rate limiting requests; retry shortly.",
                           retry_after=min(wait, 60), code="upstream_rate_limited")
    if status == 503:
        return ServiceUnavailable("The provider is temporarily unavailable.",
                                  code="upstream_unavailable")
    return UpstreamError(f"The provider failed (HTTP {status}).", code="upstream_error")


def stream_error_event(message: str, code: str, kind: str = "api_error") -> bytes:
    """The one SSE error event sent when a stream fails after it started."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None,
                                   "code": code}})
