"""One error hierarchy and one OpenAI-style JSON envelope for every failure the API returns."""

from __future__ import annotations

import contextlib
import logging

from flask import Flask, current_app, g, jsonify, request
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("silk.errors")


class SilkError(Exception):
    """An error a client may see: HTTP status, OpenAI `type` and `code`, safe message."""

    status = 500
    type = "api_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        """The envelope: {"error": {"message", "type", "param", "code"}}."""
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


class InvalidRequest(SilkError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class MalformedBody(InvalidRequest):
    """The request body's HTTP framing is broken (a bad chunk size, a chunk without its CRLF)."""

    code = "malformed_body"


class IncompleteBody(InvalidRequest):
    """The request body ended before its Content-Length (or its last chunk) arrived."""

    code = "incomplete_body"


class AuthenticationFailed(SilkError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class InsufficientBalance(SilkError):
    status, type, code = 402, "insufficient_quota", "insufficient_quota"

    def __init__(self, message: str, **kw):
        super().__init__(message, **kw)
        self.headers.setdefault("x-should-retry", "false")


class KeyBudgetExceeded(InsufficientBalance):
    """A key's spend cap (day, month or total) cannot cover the request's worst case."""

    code = "key_budget_exceeded"


class PermissionDenied(SilkError):
    status, type, code = 403, "permission_error", "permission_denied"


class NotFound(SilkError):
    status, type, code = 404, "invalid_request_error", "not_found"


class RequestTimeout(SilkError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class Conflict(SilkError):
    status, type, code = 409, "invalid_request_error", "conflict"


class Unprocessable(SilkError):
    status, type, code = 422, "invalid_request_error", "unprocessable"


class PayloadTooLarge(SilkError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class UnsupportedEncoding(SilkError):
    """The body came in a Content-Encoding (gzip, br...) the gateway does not decode."""

    status, type, code = 415, "invalid_request_error", "unsupported_content_encoding"


class RateLimited(SilkError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1, **kw):
        super().__init__(message, **kw)
        self.headers.setdefault("retry-after", str(max(1, int(retry_after))))


class UpstreamError(SilkError):
    status, type, code = 502, "api_error", "upstream_error"


class ServiceUnavailable(SilkError):
    status, type, code = 503, "api_error", "service_unavailable"


class UpstreamTimeout(SilkError):
    status, type, code = 504, "api_error", "upstream_timeout"


_HTTP_TYPES = {400: ("invalid_request_error", "invalid_request"),
               401: ("authentication_error", "invalid_api_key"), 403: ("permission_error", None),
               404: ("invalid_request_error", "not_found"),
               405: ("invalid_request_error", "method_not_allowed"),
               413: ("invalid_request_error", "payload_too_large"),
               429: ("rate_limit_error", "rate_limit_exceeded")}


def error_response(status: int, body: dict, headers: dict[str, str] | None = None):
    """Build the JSON response for an error envelope."""
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def database_unavailable(err: BaseException) -> bool:
    """True for a database error that means "down or unreachable", not "bad statement"."""
    if isinstance(err, SQLAlchemyTimeoutError | OperationalError | InterfaceError):
        return True
    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


def value_out_of_range(err: BaseException) -> bool:
    """True when the database refused a value itself (an id or number past 64 bits...).

    Such a value came from the request (a path id, a limit) and no row can hold it, so it
    is the client's mistake, not a fault of the gateway.
    """
    if isinstance(err, DataError):
        return True
    return isinstance(err, OverflowError) and "SQLite INTEGER" in str(err)


def _error(status: int, kind: str, code: str | None, message: str) -> SilkError:
    """A SilkError of any status, for a failure the app raised itself."""
    err = SilkError(message, code=code)
    err.status, err.type = status, kind
    return err


def register_error_handlers(app: Flask) -> None:
    """Answer every failure with the one envelope; never show an exception's text.

    A surface with its own envelope registers its renderer for its path prefix in
    `app.extensions["silk.error_envelopes"]`; errors on those paths are rendered by it
    (a renderer answering None leaves that error to the API's envelope).
    """

    @app.errorhandler(SilkError)
    def _silk(err: SilkError):
        for prefix, render in current_app.extensions.get("silk.error_envelopes", {}).items():
            if request.path.startswith(prefix) and (answer := render(err)) is not None:
                return answer
        g.error_code = err.code
        return error_response(err.status, err.body(), err.headers)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        status = err.code or 500
        kind, code = _HTTP_TYPES.get(status, ("invalid_request_error" if status < 500
                                               else "api_error", None))
        message = {404: "Unknown path.", 405: "Method not allowed for this path.",
                   413: "Request body too large."}.get(status, err.description or err.name)
        return _silk(_error(status, kind, code, message))

    @app.errorhandler(DBAPIError)
    @app.errorhandler(SQLAlchemyTimeoutError)
    @app.errorhandler(OverflowError)
    def _database(err: Exception):
        # A database that is restarting or out of connections is an outage, not a bug:
        # answer a retryable 503. A value no column can hold is a 400. Anything else
        # (a constraint, a bad statement) is a bug and stays a 500.
        if value_out_of_range(err):
            answer = InvalidRequest("A number or text in the request is out of range.",
                                    code="value_out_of_range")
        elif database_unavailable(err):
            log.warning("database unavailable", extra={"fields": {
                "request_id": g.get("request_id"), "error": type(err).__name__}})
            answer = ServiceUnavailable("The service is briefly unavailable; retry shortly.",
                                        code="database_unavailable", headers={"retry-after": "1"})
        else:
            return _unexpected(err)
        from silk.extensions import db

        with contextlib.suppress(Exception):  # the connection may be gone already
            db.session.rollback()
        return _silk(answer)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        from silk.extensions import db

        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        try:
            db.session.rollback()
        except Exception:  # noqa: BLE001 - the session may be unusable; answering matters more
            log.warning("rollback after unhandled error failed")
        return _silk(_error(500, "api_error", "internal_error", "Internal error."))
