"""Cross-origin access to the API for browser-based clients, off unless SILK_CORS_ORIGINS
names the origins (or `*`); flask-cors writes the headers.

Only /v1/* is shared, never with credentials: a key travels in a header the page sets
itself, so another site can use the API only with a key it holds. The dashboard and the
registration page run on a session cookie and stay same-origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, request

# What a browser client reads from an answer: the request id, the cost, when to retry.
EXPOSED = ["x-request-id", "x-silk-cost", "retry-after", "x-should-retry"]
# What it may send: the key (either header), JSON, an idempotency key, and the headers the
# OpenAI SDKs add (x-stainless-*, openai-*).
ALLOWED = ["authorization", "x-api-key", "content-type", "idempotency-key", "accept",
           r"x-stainless-.*", r"openai-.*"]
MAX_AGE = 600  # seconds a browser may reuse a preflight's answer


def origins(spec: str) -> list[str]:
    """The origins of SILK_CORS_ORIGINS (a comma list, `*`, or empty for none)."""
    return [o.strip().rstrip("/") for o in spec.split(",") if o.strip()]


def same_host(origin: str, host: str) -> bool:
    """Whether an Origin header names the host `host` (host names only: behind a proxy the
    scheme and port may differ); one Python cannot split (`http://[`) names no host, nor
    does an opaque `null` (a sandboxed frame, a no-referrer page), whatever `host` is."""
    try:
        named = urlsplit(origin).hostname
        return named is not None and named == urlsplit("//" + host).hostname
    except ValueError:
        return False


def origin_problems(spec) -> list[str]:
    """What is wrong with SILK_CORS_ORIGINS, in the config's one-line style."""
    if not isinstance(spec, str):
        return [f"SILK_CORS_ORIGINS={spec!r} is not allowed: use a comma-separated list of "
                "origins such as https://app.example.com, or *"]
    for origin in origins(spec):
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc
                              or parts.path or parts.query):
            return [f"SILK_CORS_ORIGINS={spec!r} is not allowed: {origin!r} is not an origin; "
                    "use scheme://host[:port] (comma-separated), or *"]
    return []


def install(app: Flask) -> None:
    """Share /v1/* with the configured origins; answer their preflights before any guard."""
    allowed = origins(app.config.get("SILK_CORS_ORIGINS") or "")
    if not allowed:
        return
    from flask_cors import CORS

    CORS(app, resources={r"/v1/*": {"origins": "*" if "*" in allowed else allowed}},
         expose_headers=EXPOSED, allow_headers=ALLOWED, supports_credentials=False,
         max_age=MAX_AGE, send_wildcard="*" in allowed, vary_header=True)

    @app.before_request
    def _preflight():
        # A preflight carries no key: answer it here, before the admin guard or the
        # schema check could refuse it (flask-cors adds its headers on the way out).
        if (request.method == "OPTIONS" and request.path.startswith("/v1/")
                and "Access-Control-Request-Method" in request.headers):
            return app.make_default_options_response()
        return None
