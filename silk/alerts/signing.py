"""Webhook signatures: HMAC-SHA256 over "{timestamp}.{body}", as `t=...,v1=...`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "Silk-Signature"
TOLERANCE = 300  # seconds a receiver should accept a signature's timestamp off its clock


def new_secret() -> str:
    """A webhook signing secret (shown to its owner once)."""
    return "whsec_" + secrets.token_hex(24)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The Silk-Signature header value for `body` sent at `timestamp` (now by default)."""
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None,
           tolerance: int = TOLERANCE) -> bool:
    """Whether `header` signs `body` with `secret` within `tolerance` seconds of `now`."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body,
                        hashlib.sha256).hexdigest()
    # bytes: compare_digest raises TypeError on a str with non-ASCII characters
    return hmac.compare_digest(expected.encode(), parts.get("v1", "").encode())
