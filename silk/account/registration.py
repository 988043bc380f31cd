"""Self-service registration (open, invite-code or closed) and the invite codes behind it.

An invite's use is claimed by a guarded UPDATE in the same transaction that creates the
account, so a code with one use left admits exactly one of any number of concurrent sign-ups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import or_, select, update

from silk.account.keys import generate_code, hash_secret
from silk.account.models import Account, InviteCode
from silk.account.service import NewKey, create_account
from silk.clientaddr import client_address
from silk.database import utcnow
from silk.errors import InvalidRequest, PermissionDenied, RateLimited
from silk.extensions import db

INVITES = InviteCode.__table__
INVITE_PREFIX = "silk-inv"
SHOWN = 15  # characters lists may show: the prefix and six of the secret's
MODES = ("open", "invite", "closed")
_HOUR = 3600


@dataclass(frozen=True)
class IssuedInvite:
    """An invite just issued: the code is in this object only, never in the database."""

    record: InviteCode
    code: str


def check_rate(limiter, address: str, per_hour: int) -> None:
    """Count a sign-up attempt from `address`; 429 past the operator's hourly limit."""
    if per_hour <= 0:
        return
    if limiter.hit(f"register:{address}", per_hour, _HOUR) > per_hour:
        raise RateLimited("Too many registrations from this address; try again later.",
                          retry_after=_HOUR - int(utcnow().timestamp()) % _HOUR,
                          code="registration_rate_limited")


def throttle_signups() -> None:
    """Count a sign-up attempt (API or web page) against the client's address; a closed
    registration is refused first, uncounted: it creates nothing a limit must slow."""
    config = current_app.config
    refuse_if_closed(config["SILK_REGISTRATION"])
    check_rate(current_app.extensions["silk.limiter"], client_address(),
               config["SILK_REGISTRATION_PER_HOUR"])


def refuse_if_closed(mode: str) -> None:
    """403 `registration_closed` when the operator closed registration."""
    if mode == "closed":
        raise PermissionDenied("Registration is closed; ask the operator for an account.",
                               code="registration_closed")


def register(email: str, invite_code: str | None, *, mode: str, default_tier: str,
             known_tiers: Mapping) -> tuple[Account, NewKey]:
    """Create a free-tier account (or the invite's tier) and its first key."""
    refuse_if_closed(mode)
    tier = default_tier
    try:
        if mode == "invite":
            if not invite_code:
                raise InvalidRequest("An invite code is required to register here.",
                                     param="invite_code", code="invite_required")
            tier = _claim_invite(invite_code) or default_tier
        return create_account(email, tier=tier, known_tiers=known_tiers, actor="register")
    except BaseException:
        db.session.rollback()  # hand back an unused invite with the failed sign-up
        raise


def _claim_invite(code: str) -> str | None:
    now = utcnow()
    row = db.session.execute(
        update(INVITES)
        .where(INVITES.c.code_hash == hash_secret(code.strip()), INVITES.c.uses_left > 0,
               or_(INVITES.c.expires_at.is_(None), INVITES.c.expires_at > now))
        .values(uses_left=INVITES.c.uses_left - 1)
        .returning(INVITES.c.tier)
    ).first()
    if row is None:
        raise InvalidRequest("This invite code is not valid, used up or expired.",
                             param="invite_code", code="invalid_invite")
    return row.tier


def issue_invites(*, count: int = 1, uses: int = 1, tier: str | None = None,
                  expires_at: datetime | None = None, note: str = "",
                  known_tiers: Mapping = ()) -> list[IssuedInvite]:
    """Issue `count` invite codes, each good for `uses` sign-ups (on `tier`, if given)."""
    if not 1 <= count <= 1000:
        raise InvalidRequest("Invalid 'count': between 1 and 1000.", param="count")
    if not 1 <= uses <= 100_000:
        raise InvalidRequest("Invalid 'uses': between 1 and 100000.", param="uses")
    if tier is not None and tier not in known_tiers:
        raise InvalidRequest(f"Unknown tier '{tier}'.", param="tier", code="unknown_tier")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("Invalid 'expires_at': must be in the future.", param="expires_at")
    issued = []
    for _ in range(count):
        code = generate_code(INVITE_PREFIX)
        record = InviteCode(code_hash=hash_secret(code), prefix=code[:SHOWN], uses_left=uses,
                            tier=tier, note=note[:200], expires_at=expires_at,
                            created_at=utcnow())
        db.session.add(record)
        issued.append(IssuedInvite(record, code))
    db.session.commit()
    return issued


def list_invites(limit: int = 100) -> list[InviteCode]:
    """Invite codes newest first (prefix and uses left; never the code)."""
    return list(db.session.scalars(select(InviteCode).order_by(InviteCode.id.desc())
                                   .limit(limit)))
