"""Metric hooks the request path calls; the Prometheus side lives behind these names."""

from __future__ import annotations


def stream_opened(model: str) -> None:
    """A stream to a client started."""


def stream_closed(model: str) -> None:
    """A stream to a client ended, however it ended."""


def upstream_answered(provider: str, model: str, seconds: float, status: int) -> None:
    """A provider answered (headers received, or failed) after `seconds`."""


def failover(provider: str, status: str) -> None:
    """A request moved to the provider's next key because of `status`."""


def settled(meter, outcome) -> None:
    """A request was settled: tokens, cost, time to first token, status."""
