"""Metric hooks the request path calls; the Prometheus side lives behind these names.

Every hook is a few dictionary look-ups and an increment: nothing runs per stream chunk.
Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` (set by gunicorn.conf.py) makes each worker write
its values to a file there and `/metrics` sums the files, so the numbers are the server's,
not one worker's. Without it (the `flask` CLI, tests) the process's own registry is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

log = logging.getLogger("silk.metrics")

# Seconds; an upstream answers in tens of milliseconds to minutes (reasoning models).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_UNITS_PER_USD = Decimal(10**9)


class _Labelled:
    """A metric whose children are kept in a dict by label values.

    prometheus_client's `labels()` converts, validates and takes a lock on every call; the
    hot path asks for the same few children over and over, so each is looked up once.
    """

    __slots__ = ("metric", "_children")

    def __init__(self, metric):
        self.metric = metric
        self._children: dict[tuple, object] = {}

    def labels(self, *values: str):
        """The child for these label values (strings), made by prometheus_client once."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


@dataclass(frozen=True)
class _Metrics:
    requests: object
    errors: object
    duration: object
    upstream_latency: object
    ttft: object
    tokens: object
    cost: object
    written_off: object
    reasoning_unknown: object
    settled: object
    open_streams: object
    failovers: object
    below_cost: object
    route_failovers: object
    route_resting: object
    route_latency: object


_metrics: _Metrics | None = None
_settlement_listener: Callable[[object, object], None] | None = None


def multiprocess_dir() -> str | None:
    """The directory workers share their values through, when running under gunicorn."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _families() -> _Metrics:
    """The metric families, created on first use so that importing silk costs nothing."""
    global _metrics
    if _metrics is None:
        from prometheus_client import Counter, Gauge, Histogram

        made = dict(
            requests=Counter("silk_http_requests", "HTTP requests answered, by route, "
                             "model and status.", ("route", "model", "status")),
            errors=Counter("silk_http_errors", "HTTP error responses (status >= 400), by "
                           "route, model, status and error code.",
                           ("route", "model", "status", "code")),
            duration=Histogram("silk_http_request_duration_seconds", "Time to answer a "
                               "non-streaming request, by route.", ("route",),
                               buckets=DURATION_BUCKETS),
            upstream_latency=Histogram(
                "silk_upstream_latency_seconds", "Time until a provider answered (stream "
                "headers, or the whole body of a non-streaming call), by provider, model "
                "and status.", ("provider", "model", "status"), buckets=LATENCY_BUCKETS),
            ttft=Histogram("silk_time_to_first_token_seconds", "Time from calling the "
                           "provider to the first streamed token, by provider and model.",
                           ("provider", "model"), buckets=TTFT_BUCKETS),
            tokens=Counter("silk_tokens", "Tokens billed, by model and kind (prompt, "
                           "completion, reasoning, cache_hit).", ("model", "kind")),
            cost=Counter("silk_cost_usd", "USD charged to balances, by model.", ("model",)),
            written_off=Counter("silk_written_off_usd", "USD of usage not charged (beyond "
                                "what its hold or the balance could pay), by model.",
                                ("model",)),
            reasoning_unknown=Counter(
                "silk_written_off_unknown", "Requests settled without the provider's "
                "count on a provider that hides its reasoning (its stream ended before its "
                "usage): the reasoning it bills was not charged, at an amount nobody "
                "reported, by model and provider.", ("model", "provider")),
            settled=Counter("silk_requests_settled", "Chat requests settled, by model, "
                            "provider and outcome (ok, cut, client_closed, timeout, "
                            "upstream_error, revoked, error).", ("model", "provider", "outcome")),
            open_streams=Gauge("silk_open_streams", "Streams to clients open now, by model.",
                               ("model",), multiprocess_mode="livesum"),
            failovers=Counter("silk_upstream_failovers", "Requests moved to a provider's next "
                              "key, by provider and reason.", ("provider", "reason")),
            route_failovers=Counter("silk_route_failovers", "Requests moved on to a model's "
                                    "next route, by model, the route that failed and why.",
                                    ("model", "route", "reason")),
            route_resting=Gauge("silk_route_resting", "1 while a route rests after failing "
                                "(its breaker is open) in some worker, by route.", ("route",),
                                multiprocess_mode="max"),
            route_latency=Histogram("silk_route_latency_seconds", "Time until a route "
                                    "answered or failed (before the first byte), by route "
                                    "and result (ok, failed).", ("route", "result"),
                                    buckets=LATENCY_BUCKETS),
            below_cost=Gauge("silk_models_below_cost", "Catalogue models whose list price is "
                             "below their upstream price (1 each), by model.", ("model",),
                             multiprocess_mode="max"),
        )
        _metrics = _Metrics(**{name: _Labelled(metric) for name, metric in made.items()})
    return _metrics


def _guarded(hook):
    """Never let bookkeeping break a request: log and carry on."""

    def wrapper(*args, **kwargs):
        try:
            hook(*args, **kwargs)
        except Exception:  # noqa: BLE001 - metrics are best effort by design
            log.exception("metrics hook %s failed", hook.__name__)

    wrapper.__name__ = hook.__name__
    wrapper.__doc__ = hook.__doc__
    return wrapper


def report_settlements_to(listener: Callable[[object, object], None]) -> None:
    """Hand every settled request on to `listener(meter, outcome)` once it is counted (the
    request log keeps what the request used and cost for its line). There is one listener:
    these metrics are the process's, shared by every app in it, so the last one set wins."""
    global _settlement_listener
    _settlement_listener = listener


@_guarded
def http_request(route: str, model: str, status: int, code: str | None,
                 seconds: float | None) -> None:
    """An HTTP response left the app (streams count when their headers go out)."""
    families = _families()
    families.requests.labels(route, model, str(status)).inc()
    if status >= 400:
        families.errors.labels(route, model, str(status), code or "").inc()
    if seconds is not None:
        families.duration.labels(route).observe(seconds)


@_guarded
def stream_opened(model: str) -> None:
    """A stream to a client started."""
    _families().open_streams.labels(model).inc()


@_guarded
def stream_closed(model: str) -> None:
    """A stream to a client ended, however it ended."""
    _families().open_streams.labels(model).dec()


@_guarded
def upstream_answered(provider: str, model: str, seconds: float, status: int) -> None:
    """A provider answered (headers received, or failed) after `seconds`."""
    _families().upstream_latency.labels(provider, model, str(status)).observe(seconds)


@_guarded
def failover(provider: str, status: str) -> None:
    """A request moved to the provider's next key because of `status`."""
    _families().failovers.labels(provider, str(status)).inc()


@_guarded
def route_failover(model: str, route: str, reason: str) -> None:
    """A request moved on from `route` to its model's next route because of `reason`."""
    _families().route_failovers.labels(model, route, str(reason)).inc()


@_guarded
def route_answered(route: str, seconds: float, ok: bool) -> None:
    """A route answered (ok) or failed before its first byte after `seconds`."""
    _families().route_latency.labels(route, "ok" if ok else "failed").observe(seconds)


@_guarded
def route_state(route: str, resting: bool) -> None:
    """A route's breaker opened (resting) or closed."""
    _families().route_resting.labels(route).set(1 if resting else 0)


@_guarded
def models_below_cost(models: list[str]) -> None:
    """These models are sold below their upstream price (set at start-up)."""
    families = _families()
    for model in models:
        families.below_cost.labels(model).set(1)


@_guarded
def written_off(model: str, units: int) -> None:
    """A settlement was written that could not charge `units` of what was used."""
    _families().written_off.labels(model).inc(float(Decimal(units) / _UNITS_PER_USD))


@_guarded
def settled(meter, outcome) -> None:
    """A request was settled: tokens, cost, time to first token, status; then the listener."""
    families = _families()
    model = meter.hold.model
    provider = outcome.provider or meter.provider
    families.settled.labels(model, provider, outcome.status).inc()
    if meter.reasoning_unknown:
        families.reasoning_unknown.labels(model, provider).inc()
    usage = meter.billed
    if usage is not None and outcome.billable:
        cached = usage.cache_hit_tokens
        for kind, count in (("prompt", usage.prompt_tokens),
                            ("completion", usage.completion_tokens),
                            ("reasoning", outcome.reasoning_tokens), ("cache_hit", cached)):
            if count:
                families.tokens.labels(model, kind).inc(count)
    if meter.settlement is not None and meter.settlement.charged_units:
        charged = Decimal(meter.settlement.charged_units) / _UNITS_PER_USD
        families.cost.labels(model).inc(float(charged))
    if outcome.stream and outcome.ttft_ms is not None:
        families.ttft.labels(provider, model).observe(outcome.ttft_ms / 1000)
    if not outcome.stream and outcome.status == "ok" and outcome.latency_ms is not None:
        # A non-streaming call is observed here, once its body is in; failures were
        # observed by upstream_answered when the provider's error came back.
        families.upstream_latency.labels(provider, model, "200").observe(
            outcome.latency_ms / 1000)
    if _settlement_listener is not None:
        _settlement_listener(meter, outcome)


def _registry():
    """The server's registry: every worker's files under gunicorn, else this process's."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    _families()  # the metric families appear (with HELP) before the first request
    directory = multiprocess_dir()
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry


def snapshot() -> dict[str, object]:
    """The server's API counters now, for the operator's console: requests and error
    responses under /v1/ since start (by status), and the streams open now. Rates are the
    reader's to take from two snapshots."""
    requests = errors = 0
    streams = 0.0
    by_status: dict[str, int] = {}
    for family in _registry().collect():
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if sample.name == "silk_http_requests_total" and route.startswith("/v1/"):
                requests += int(sample.value)
            elif sample.name == "silk_http_errors_total" and route.startswith("/v1/"):
                errors += int(sample.value)
                status = sample.labels.get("status", "")
                by_status[status] = by_status.get(status, 0) + int(sample.value)
            elif sample.name == "silk_open_streams":
                streams += sample.value
    return {"requests": requests, "errors": errors, "errors_by_status": by_status,
            "open_streams": max(0, round(streams))}


def render(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition for the whole server (every worker), in the format the scraper asks."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(_registry()), content_type
