"""Effective tiers: the config's table overlaid by operator edits stored in the database."""

from __future__ import annotations

import time
from decimal import Decimal

from flask import current_app
from sqlalchemy import select

from silk.billing.models import TierRecord
from silk.catalog import catalogue
from silk.extensions import db
from silk.pricing import Tier

_TTL = 10.0  # seconds an operator's tier edit may take to reach every worker


def tiers() -> dict[str, Tier]:
    """Return every tier by name, from a short per-process cache."""
    cached = current_app.extensions.get("silk.tiers")
    if cached and cached[0] > time.monotonic():
        return cached[1]
    merged = dict(catalogue().tiers)
    for record in db.session.scalars(select(TierRecord)):
        merged[record.name] = Tier(record.name, Decimal(record.discount_bp) / 10_000,
                                   record.monthly_free_tokens)
    db.session.close()
    current_app.extensions["silk.tiers"] = (time.monotonic() + _TTL, merged)
    return merged


def forget_tiers() -> None:
    """Drop the cache after an edit in this process."""
    current_app.extensions.pop("silk.tiers", None)
