"""Effective tiers: the config's table overlaid by operator edits stored in the database."""

from __future__ import annotations

import re
from decimal import Decimal

from flask import current_app
from sqlalchemy import select

from silk import invalidation
from silk.appctx import this_app
from silk.billing.models import TierRecord
from silk.cache import ExpiringCache
from silk.catalog import catalogue
from silk.database import utcnow
from silk.errors import InvalidRequest
from silk.extensions import db
from silk.pricing import Tier

_TTL = 10.0  # seconds a tier edit may take to reach other workers without Redis
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def tiers() -> dict[str, Tier]:
    """Return every tier by name, from a short per-process cache."""
    extensions = this_app().extensions
    cache = extensions.get("silk.tiers")
    if cache is None:
        cache = extensions["silk.tiers"] = ExpiringCache(_TTL)
    return cache.fetch("tiers", _load)


def _read() -> dict[str, Tier]:
    merged = dict(catalogue().tiers)
    for record in db.session.scalars(select(TierRecord)):
        merged[record.name] = Tier(record.name, Decimal(record.discount_bp) / 10_000,
                                   record.monthly_free_tokens)
    return merged


def _load(_key: str) -> dict[str, Tier]:
    merged = _read()
    db.session.close()
    return merged


def stored_tiers() -> dict[str, Tier]:
    """Every tier as the database holds it now, past any worker's cache (for operators,
    who expect to read back what they just saved)."""
    return _read()


def forget_tiers() -> None:
    """Drop this process's cache."""
    cache = current_app.extensions.get("silk.tiers")
    if cache is not None:
        cache.clear()


def save_tier(name: str, discount_percent: Decimal, monthly_free_tokens: int) -> Tier:
    """Create or change a tier; stored in the database, it overrides the config's."""
    name = name.strip()
    if not _NAME.match(name):
        raise InvalidRequest("Invalid 'name': 1-32 letters, digits, '-' or '_'.", param="name")
    if not 0 <= discount_percent <= 100:
        raise InvalidRequest("Invalid 'discount_percent': between 0 and 100.",
                             param="discount_percent")
    basis_points = discount_percent * 100
    if basis_points != basis_points.to_integral_value():
        raise InvalidRequest("Invalid 'discount_percent': at most 2 decimal places.",
                             param="discount_percent")
    if monthly_free_tokens < 0:
        raise InvalidRequest("Invalid 'monthly_free_tokens': must be 0 or more.",
                             param="monthly_free_tokens")
    record = db.session.get(TierRecord, name)
    if record is None:
        record = TierRecord(name=name)
        db.session.add(record)
    record.discount_bp = int(basis_points)
    record.monthly_free_tokens = monthly_free_tokens
    record.updated_at = utcnow()
    db.session.commit()
    invalidation.tiers_changed()  # here at once, and with Redis in every worker
    return tiers()[name]
