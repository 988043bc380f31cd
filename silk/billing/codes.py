"""Redemption codes: an operator issues money as single-use codes, shown once, stored hashed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from silk.account.keys import generate_code, hash_secret
from silk.billing.models import RedemptionCode
from silk.database import utcnow
from silk.errors import InvalidRequest
from silk.extensions import db

CODE_PREFIX = "silk-rc"
MAX_BATCH = 1000
SHOWN = 14  # characters lists may show: the prefix and six of the secret's


@dataclass(frozen=True)
class IssuedCode:
    """A code just issued: the secret is in this object only, never in the database."""

    record: RedemptionCode
    code: str


def issue_codes(amount_units: int, *, count: int = 1, expires_at: datetime | None = None,
                note: str = "") -> list[IssuedCode]:
    """Issue `count` codes worth `amount_units` each (validate the amount before calling)."""
    if not 1 <= count <= MAX_BATCH:
        raise InvalidRequest(f"Invalid 'count': between 1 and {MAX_BATCH}.", param="count")
    if amount_units <= 0:
        raise InvalidRequest("Invalid 'amount': must be greater than 0.", param="amount")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("Invalid 'expires_at': must be in the future.", param="expires_at")
    issued = []
    for _ in range(count):
        code = generate_code(CODE_PREFIX)
        record = RedemptionCode(code_hash=hash_secret(code), prefix=code[:SHOWN],
                                amount_units=amount_units, note=note[:200], expires_at=expires_at,
                                created_at=utcnow())
        db.session.add(record)
        issued.append(IssuedCode(record, code))
    db.session.commit()
    return issued


def list_codes(*, state: str | None = None, limit: int = 100) -> list[RedemptionCode]:
    """Codes newest first, optionally only `unused`, `redeemed` or `expired` ones."""
    query = select(RedemptionCode).order_by(RedemptionCode.id.desc()).limit(limit)
    now = utcnow()
    if state == "redeemed":
        query = query.where(RedemptionCode.redeemed_at.is_not(None))
    elif state == "unused":
        query = query.where(RedemptionCode.redeemed_at.is_(None)).where(
            (RedemptionCode.expires_at.is_(None)) | (RedemptionCode.expires_at > now))
    elif state == "expired":
        query = query.where(RedemptionCode.redeemed_at.is_(None),
                            RedemptionCode.expires_at <= now)
    elif state is not None:
        raise InvalidRequest("Invalid 'state': unused, redeemed or expired.", param="state")
    return list(db.session.scalars(query))


def code_state(record: RedemptionCode) -> str:
    """unused, redeemed or expired, for lists."""
    if record.redeemed_at is not None:
        return "redeemed"
    if record.expires_at is not None and record.expires_at <= utcnow():
        return "expired"
    return "unused"
