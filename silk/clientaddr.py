"""The client's address for abuse limits (sign-ups, failed keys), one definition for all."""

from __future__ import annotations

from silk.appctx import this_request


def client_address() -> str:
    """The client's IP address, as REMOTE_ADDR holds it."""
    # silk.ops.network's middleware has already replaced REMOTE_ADDR from X-Forwarded-For
    # when, and only when, the peer is a trusted proxy (nginx), so nothing is parsed twice.
    return this_request().remote_addr or "unknown"
