"""Error bodies in the dialect of each upstream provider the gateway relays to.

The gateway must translate provider errors into its own error format and must never pass a
provider's raw message through, because those messages can carry secrets: the upstream URL,
a (masked) API key, internal request ids. The fake therefore deliberately puts such
secret-looking text into its messages, so gateway tests can assert none of it leaks. The shapes
follow what the real providers send:

* DeepSeek is OpenAI-like: ``param`` is ``null`` and ``code`` is a string or ``null``.
* Volcengine Ark uses PascalCase ``code``/``type`` strings and an empty-string ``param``.
* Xiaomi MiMo sends the HTTP status *as a string* in ``code``.
"""

from __future__ import annotations

from http import HTTPStatus

PROVIDERS = ("deepseek", "ark", "mimo", "compat")  # compat: in DeepSeek's error shape


def mask_key(key: str | None) -> str:
    """Mask a key the way OpenAI-style providers echo it back, e.g. ``sk-ds-ba**d``.

    Only the last character is hidden behind ``**``; that is still secret-looking enough for
    leak tests (and leaks most of the key, exactly like the real messages do).
    """
    if not key:
        return "<empty>"
    return f"{key[:-1][:8]}**{key[-1]}"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _deepseek(status: int, message: str | None, key: str | None, url: str, rid: str) -> dict:
    code: str | None = None
    if status == 401:
        type_ = "authentication_error"
        code = "invalid_api_key"
        default = (f"Incorrect API key provided: {mask_key(key)}. "
                   "You can find your API key at https://platform.deepseek.com/api_keys.")
    elif status == 402:
        # Verbatim: DeepSeek really sends this odd type/code pair for an empty balance.
        return {"error": {"message": "Insufficient Balance", "type": "unknown_error",
                          "param": None, "code": "invalid_request_error"}}
    elif status == 403:
        type_ = "permission_error"
        default = f"Key {mask_key(key)} is not allowed to access {url}"
    elif status == 429:
        type_ = "rate_limit_error"
        default = f"Rate limit reached for requests (key {mask_key(key)}, trace {rid})"
    elif status >= 500:
        type_ = "server_error"
        if status == 503:
            default = f"Server overloaded, please try again later. (upstream {url}, trace {rid})"
        else:
            default = f"Internal server error while handling {url} (trace {rid})"
    else:
        type_ = "invalid_request_error"
        default = f"{_reason(status)}: request to {url} rejected (trace {rid})"
    return {"error": {"message": message or default, "type": type_, "param": None,
                      "code": code}}


_ARK_CODES = {
    400: ("InvalidParameter", "BadRequest"),
    401: ("AuthenticationError", "Unauthorized"),
    403: ("AccessDenied", "Forbidden"),
    404: ("InvalidEndpointOrModel.NotFound", "NotFound"),
    429: ("RateLimitExceeded.EndpointRPMExceeded", "TooManyRequests"),
    500: ("InternalServiceError", "InternalServerError"),
    503: ("ServiceUnavailable", "ServiceUnavailable"),
}


def _ark(status: int, message: str | None, key: str | None, url: str, rid: str) -> dict:
    if status in _ARK_CODES:
        code, type_ = _ARK_CODES[status]
    elif status >= 500:
        code, type_ = _ARK_CODES[500]
    else:
        phrase = _reason(status).replace(" ", "")
        code, type_ = phrase, phrase
    if status == 401:
        default = (f"The API key or AK/SK in the request is missing or invalid "
                   f"(key {mask_key(key)})")
    elif status == 429:
        default = (f"The request has exceeded the RPM limit of endpoint ep-fake-{rid[-6:]} "
                   f"behind {url}")
    elif status == 400:
        default = "The request failed because it is missing one or multiple required parameters"
    elif status >= 500:
        default = f"The service encountered an unexpected internal error at {url}"
    else:
        default = f"{_reason(status)} at {url}"
    text = message or default
    return {"error": {"code": code, "message": f"{text}. (request id: {rid})", "param": "",
                      "type": type_}}


def _mimo(status: int, message: str | None, key: str | None, url: str, rid: str) -> dict:
    if status == 401:
        default = "Invalid API Key"
    elif status == 429:
        default = f"Too many requests for key {mask_key(key)}, please retry later"
    elif status >= 500:
        default = f"Internal server error: {url} failed (request {rid})"
    else:
        default = f"{_reason(status)}: {url}"
    if status == 429:
        type_ = "rate_limit_error"
    elif status >= 500:
        type_ = "server_error"
    else:
        type_ = "invalid_request_error"
    return {"error": {"code": str(status), "message": message or default, "param": "",
                      "type": type_}}


_BUILDERS = {"deepseek": _deepseek, "ark": _ark, "mimo": _mimo}


def error_body(provider: str | None, status: int, *, message: str | None = None,
               key: str | None = None, url: str = "", request_id: str = "") -> dict:
    """Return the JSON error document ``provider`` sends with HTTP ``status``.

    ``message`` overrides the default text (Ark still appends its ``(request id: ...)``).
    ``provider=None`` (an unknown path) falls back to the OpenAI-like DeepSeek shape.
    """
    build = _BUILDERS.get(provider or "deepseek", _deepseek)
    return build(status, message, key, url, request_id)
