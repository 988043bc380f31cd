"""Request ids on every response and one JSON log line per request (never a key or prompt)."""

from __future__ import annotations

import logging
import time
import uuid

import orjson
from flask import Flask, g, request

log = logging.getLogger("silk.request")


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
    """Attach request-id and access-log hooks."""
    configure_logging()

    @app.before_request
    def _start():
        # Always our own id: usage records key on it, so a client must not choose it.
        g.request_id = new_request_id()
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        response.headers["x-request-id"] = g.get("request_id") or new_request_id()
        if not response.is_streamed:
            log_request(status=response.status_code)
        return response


def log_request(**fields) -> None:
    """Log the current request's line with extra fields (tokens, cost, timings...)."""
    started = g.get("started")
    entry = {
        "request_id": g.get("request_id"), "method": request.method, "path": request.path,
        "account": g.get("account_id"), "model": g.get("model"),
        "error": g.get("error_code"),
        "ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
    }
    entry.update(fields)
    log.info("request", extra={"fields": entry})
