"""Request ids on every response and one JSON log line per request (never a key or prompt).

Both are logged when the WSGI server closes the answer: a JSON one once it has been sent,
so the client does not wait for the line, and a stream when it ends, however it ended, so
its line carries what the request used and cost.
Only ids, the path without its query string, counts, money and timings are logged: a key
can ride in `?api_key=`, and a prompt lives only in the body, so neither can reach a line.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from decimal import Decimal

import orjson
from flask import Flask

from silk import inflight
from silk.appctx import this_g, this_request
from silk.ops import metrics

log = logging.getLogger("silk.request")

# Endpoints that load balancers and Prometheus poll; their successes are logged at DEBUG.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_UNITS_PER_USD = Decimal(10**9)
_MAX_PENDING = 10_000
_settled: dict[str, dict] = {}  # request id -> settlement fields, until its line is logged


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: int = logging.INFO) -> None:
    """Send the gateway's logs to stderr as JSON lines (gunicorn's handler stays its own)."""
    root = logging.getLogger("silk")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def new_request_id() -> str:
    """Return a fresh request id."""
    return uuid.uuid4().hex


def install_request_hooks(app: Flask) -> None:
    """Attach request-id, metrics and access-log hooks; see the real client behind nginx."""
    from silk.ops.network import install_trusted_proxies

    configure_logging()
    install_trusted_proxies(app)

    @app.before_request
    def _start():
        # Always our own id: usage records key on it, so a client must not choose it.
        ctx = this_g()
        ctx.request_id = new_request_id()
        ctx.started = time.perf_counter()
        inflight.started()
        ctx.silk_counted = True

    @app.teardown_request
    def _done(_error=None):
        # A stream stays counted until the server closes it (see _finish).
        if this_g().pop("silk_counted", False):
            inflight.ended()

    @app.after_request
    def _finish(response):
        # The request and `g` are resolved once here, not at every attribute.
        req = this_request()
        ctx = this_g()
        response.headers["x-request-id"] = ctx.get("request_id") or new_request_id()
        if ctx.get("silk_route"):  # the model's route that served the answer
            response.headers["x-silk-provider"] = ctx.silk_route
        fields = _fields(req, ctx, {"status": response.status_code})
        route = req.url_rule.rule if req.url_rule else "unmatched"
        if response.is_streamed and response.mimetype == "text/event-stream":
            metrics.http_request(route, fields["model"] or "", response.status_code,
                                 fields["error"], None)
            started = ctx.get("started")
            counted = ctx.pop("silk_counted", False)
            response.call_on_close(lambda: _log_stream_end(fields, started, counted))
        elif response.direct_passthrough:
            # A file the server sends itself: Werkzeug hands it over without the close that
            # runs the response's callbacks, so its line is written now.
            _log_answer(route, fields)
        else:
            # Counted and logged once the server has sent the answer and closes it (a WSGI
            # server always does): the client does not wait for the line's write.
            response.call_on_close(lambda: _log_answer(route, fields))
        return response


def request_fields(**extra) -> dict:
    """The current request's log fields (ids, route, account, model, timing)."""
    return _fields(this_request(), this_g(), extra)


def _fields(req, ctx, extra: dict) -> dict:
    started = ctx.get("started")
    entry = {
        "request_id": ctx.get("request_id"), "method": req.method, "path": req.path,
        "status": None, "account": ctx.get("account_id"), "model": ctx.get("model"),
        "error": ctx.get("error_code"), "ip": req.remote_addr,
        "ms": round((time.perf_counter() - started) * 1000, 2) if started else 0.0,
    }
    entry.update(extra)
    return entry


def log_request(**fields) -> None:
    """Log the current request's line now, with extra fields."""
    _emit(request_fields(**fields))


def remember_settlement(meter, outcome) -> None:
    """Keep what a settled request used and cost until its log line is written."""
    hold = meter.hold
    usage = meter.billed if outcome.billable else None
    settlement = meter.settlement
    fields = {
        "account": hold.account_id, "key_id": hold.key_id, "model": hold.model,
        "provider": outcome.provider, "upstream_model": outcome.upstream_model or None,
        "stream": outcome.stream, "outcome": outcome.status,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "reasoning_tokens": outcome.reasoning_tokens if usage else 0,
        "cache_hit_tokens": usage.cache_hit_tokens if usage else 0,
        "total_tokens": usage.total_tokens if usage else 0,
        "cost": float(Decimal(settlement.charged_units) / _UNITS_PER_USD) if settlement else 0.0,
        "estimated": outcome.estimated,
        "upstream_ms": outcome.latency_ms, "ttft_ms": outcome.ttft_ms,
    }
    if meter.reasoning_unknown:  # the provider's hidden reasoning was not charged
        fields["reasoning_unknown"] = True
    if len(_settled) >= _MAX_PENDING:  # lines that were never written must not pile up
        _settled.clear()
    _settled[hold.request_id] = fields


def _log_answer(route: str, fields: dict) -> None:
    """Count and write a JSON answer's line; `ms` is the time until it left the app."""
    metrics.http_request(route, fields["model"] or "", fields["status"], fields["error"],
                         fields["ms"] / 1000)
    _emit(fields)


def _log_stream_end(fields: dict, started: float | None, counted: bool) -> None:
    """Write a stream's line once the server has closed it; `ms` spans the whole stream."""
    if counted:
        inflight.ended()
    if started is not None:
        fields["ms"] = round((time.perf_counter() - started) * 1000, 2)
    _emit(fields)


def _emit(fields: dict) -> None:
    settlement = _settled.pop(fields.get("request_id"), None) if fields.get("request_id") else None
    if settlement:
        fields.update(settlement)
    level = logging.DEBUG if fields.get("path") in PROBES and (fields.get("status") or 0) < 400 \
        else logging.INFO
    if log.isEnabledFor(level):
        # The record made directly: Logger.log walks the stack to find its caller, about a
        # quarter of the line's cost, for a file and line that the JSON line never shows.
        log.handle(log.makeRecord(log.name, level, __file__, sys._getframe().f_lineno,
                                  "request", (), None, func="_emit", extra={"fields": fields}))
