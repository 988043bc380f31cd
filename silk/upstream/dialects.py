"""Each provider's error dialect translated into ours, with upstream secrets scrubbed out."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

import orjson

from silk.errors import (
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    SilkError,
    UpstreamError,
)

_TRACE = re.compile(r"\s*\((?:[^()]*?\b(?:request[ _-]?id|trace|req[ _-]?id)\b[^()]*)\)"
                    r"|\b(?:request[ _-]?id|trace(?:[ _-]?id)?)\s*[:=]?\s*[\w-]+", re.I)
# Credentials, with the header or scheme that introduces them: the scheme word stays.
_CREDENTIAL = re.compile(r"\b((?:proxy-)?authorization|(?:x-)?api[-_ ]?key)(\s*[:=]\s*)"
                         r"(?:(?:bearer|basic|token)\s+)?[^\s,;]+"
                         r"|\b(bearer|basic)(\s+)[^\s,;]+", re.I)
# Host-name patterns start only where a run of name characters starts (the lookbehind) and
# take each label whole (possessive), so a long run that is no host costs one pass, not one
# pass per position: a provider's message may echo what a client sent.
_URL = re.compile(r"(?<![\w+.-])[a-z][a-z0-9+.-]*+://\S+"
                  r"|(?<![\w.-])[\w-]++(?:\.[\w-]++)*?\.(?:com|cn|net|org|io|ai|dev|cloud)\b"
                  r"(?:\.[\w-]++)*+(?:[:/]\S*)?", re.I)
# Names only a private network resolves, e.g. pg-0.db.svc.cluster.local or gpu7.corp.
_INTERNAL_HOST = re.compile(r"(?<![\w.-])[\w-]++(?:\.[\w-]++)*?\.(?:internal|local|"
                            r"localdomain|svc|lan|corp|intranet|home\.arpa)\b(?:\.[\w-]++)*+(?::\d+)?",
                            re.I)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?!\w|\.\d)")
# Bracketed with an optional port, or bare with a `::` or at least five groups (a clock
# time such as 12:30:45 has neither).
_IPV6 = re.compile(r"\[(?=[0-9a-f.]*+:)[0-9a-f:.%\w]*+\](?::\d{1,5})?"
                   r"|(?<![\w:.])(?=[0-9a-f:.]*::|(?:[0-9a-f]{1,4}:){4})"
                   r"(?:[0-9a-f]{0,4}:){2,7}(?:[0-9a-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
                   r"(?:%[\w.]+)?(?![\w:])", re.I)
# host:port, for a host name of any shape (an underscore marks a field name, not a host).
_HOST_PORT = re.compile(r"(?<![\w.:-])(?=[a-z0-9.-]*[a-z])[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?"
                        r":\d{1,5}(?!\w|[.:]\d)", re.I)
_SECRETISH = re.compile(r"\b(?:sk|ak)[-_][\w*.-]+|\b(?:key|ark|mimo)[-_][\w*.-]{4,}"
                        r"|\b[A-Za-z0-9_-]{24,}\b", re.I)
# Ark endpoint (and bot) ids: ep-20240611123456-abcde.
_ENDPOINT = re.compile(r"\b(?:ep|bot)-[A-Za-z0-9][\w-]*")
# Account numbers and user ids; a count of tokens, characters or bytes is the useful part
# of a limit message and stays.
_LONG_NUMBER = re.compile(r"(?<!\w)(?<!\d\.)\d{6,}(?!\w|\.\d)"
                          r"(?!\s*(?:tokens?|characters?|chars|bytes|words|messages|images|ms|"
                          r"seconds)\b)", re.I)


def scrub(message: str, limit: int = 400) -> str:
    """Remove what a provider's message may reveal of its systems or of anyone's secrets.

    URLs, addresses and internal host names, credentials, provider trace and endpoint ids,
    and account numbers are replaced; words and small numbers (`max_tokens must be <=
    8192`) stay, so the client still learns what was wrong with its request.
    """
    cleaned = _TRACE.sub("", _first(message or "", limit * 4))
    cleaned = _CREDENTIAL.sub(_credential, cleaned)
    cleaned = _URL.sub("[upstream]", cleaned)
    cleaned = _INTERNAL_HOST.sub("[host]", cleaned)
    cleaned = _IPV6.sub("[address]", _IPV4.sub("[address]", cleaned))
    cleaned = _HOST_PORT.sub("[host]", cleaned)
    cleaned = _ENDPOINT.sub("[endpoint]", cleaned)
    cleaned = _SECRETISH.sub("[redacted]", cleaned)
    cleaned = _LONG_NUMBER.sub("[number]", cleaned)
    return cleaned[:limit].strip() or "The provider rejected the request."


def _first(message: str, size: int) -> str:
    """The start of a long message, cut where a word ends: a secret cut in two would no
    longer look like one."""
    if len(message) <= size:
        return message
    cut = message[:size]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else ""


def _credential(match: re.Match) -> str:
    if match.group(1):
        return f"{match.group(1)}{match.group(2)}[redacted]"
    return f"{match.group(3)}{match.group(4)}[redacted]"


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


def retry_after_seconds(value: str | None) -> int | None:
    """A provider's Retry-After in whole seconds: delay-seconds as given, an HTTP date
    (RFC 9110 allows either) as the seconds until it, 0 once it has passed. None when it is
    neither: a fraction, a negative, '²' (str.isdigit() is true for it, int() refuses it)."""
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return int(value) if len(value) <= 9 else None
    return _seconds_until(value)


def _seconds_until(http_date: str) -> int | None:
    """Whole seconds from now (wall clock, as the date is) until an HTTP date, never below
    0; None when it is no date. A date without a zone ('-0000') is read as UTC."""
    try:
        when = parsedate_to_datetime(http_date)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0, math.ceil(when.timestamp() - time.time()))
    except (TypeError, ValueError, OverflowError):
        return None


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
        wait = retry_after_seconds(retry_after) or 1
        return RateLimited("The provider is rate limiting requests; retry shortly.",
                           retry_after=min(wait, 60), code="upstream_rate_limited")
    if status == 503:
        return ServiceUnavailable("The provider is temporarily unavailable.",
                                  code="upstream_unavailable")
    return UpstreamError(f"The provider failed (HTTP {status}).", code="upstream_error")
