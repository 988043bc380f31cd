"""What the dashboard shows, read in one short session: balance, quota, daily usage, requests."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from silk.account.keys import hash_secret
from silk.account.models import Account, ApiKey
from silk.account.service import key_usable
from silk.billing.service import served_and_failed
from silk.billing.tiers import tiers
from silk.database import utcnow
from silk.errors import NotFound
from silk.extensions import db
from silk.metering import rules
from silk.metering.models import UsageRecord
from silk.metering.rules import PYTHON, month_of
from silk.metering.service import tier_of
from silk.pricing import units_to_usd

RECENT_REQUESTS = 25


@dataclass(frozen=True)
class Day:
    """One day of an account's usage."""

    day: date
    requests: int  # served
    tokens: int
    cost: Decimal


@dataclass(frozen=True)
class Budget:
    """One of a key's caps and what was spent against it."""

    period: str  # day, month, total
    cap: Decimal | None  # None: no cap
    spent: Decimal
    held: Decimal

    @property
    def percent(self) -> int:
        """Share of the cap spent or held, for the progress bar."""
        if self.cap is None:
            return 0
        if not self.cap:
            return 100
        return min(100, round(100 * (self.spent + self.held) / self.cap))


def budget(key: ApiKey) -> tuple[Budget, ...]:
    """A key's caps with its spend this UTC day, this month and in all (the API's figures)."""
    from silk.account.schemas import spend, spend_caps

    caps, spent = spend_caps(key), spend(key)
    return tuple(Budget(period, caps[period], spent[period], spent["held"])
                 for period in ("day", "month", "total"))


@dataclass(frozen=True)
class Overview:
    """The account page's facts."""

    email: str
    tier: str
    discount_percent: Decimal
    balance: Decimal
    reserved: Decimal
    available: Decimal
    month: str
    quota_free: int
    quota_used: int
    quota_remaining: int
    month_requests: int  # served, as the billing report counts them
    month_failed: int  # charged nothing, counted apart
    month_tokens: int
    month_cost: Decimal
    days: tuple[Day, ...]
    recent: tuple[UsageRecord, ...]
    member: bool = False  # a member key's view: its own usage, no account money
    budget: tuple[Budget, ...] = ()  # the signed-in key's caps and spend

    @property
    def quota_percent(self) -> int:
        """Share of the month's free tokens used, for the progress bar."""
        if not self.quota_free:
            return 100
        return min(100, round(100 * self.quota_used / self.quota_free))


def key_for_login(secret: str) -> ApiKey | None:
    """The usable key matching a secret typed into the sign-in form, or None."""
    secret = (secret or "").strip()
    if not secret or len(secret) > 256:
        return None
    key_hash = hash_secret(secret)
    key = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if key is None or not hmac.compare_digest(key.key_hash, key_hash):
        return None
    return key if key_usable(key) else None


def overview(account_id: int, *, days: int = 30, today: date | None = None,
             key_id: int | None = None, member: bool = False) -> Overview:
    """Read everything the overview page shows for one account: with `member`, the usage
    of key `key_id` alone; with `key_id`, that key's budget."""
    now = utcnow()
    today = today or now.date()
    month = month_of(now)
    account = db.session.get(Account, account_id)
    if account is None:
        raise NotFound("Account not found.")
    tier = tier_of(tiers(), account.tier)
    free = tier.monthly_free_tokens
    # What metering would allow now (silk.metering.rules), holds of any month included.
    used = rules.used_in(PYTHON, account.quota_month, account.quota_used, month)
    remaining = rules.free_left(PYTHON, free, used, account.quota_held)
    spendable = rules.spendable(PYTHON, account.balance_units, account.reserved_units)
    key = db.session.get(ApiKey, key_id) if key_id is not None else None
    start = today - timedelta(days=days - 1)
    mine = [UsageRecord.account_id == account_id]
    if member:
        mine.append(UsageRecord.key_id == key_id)
    rows = db.session.execute(
        select(UsageRecord.day, served_and_failed()[0], func.sum(UsageRecord.total_tokens),
               func.sum(UsageRecord.cost_units))
        .where(*mine, UsageRecord.day >= start)
        .group_by(UsageRecord.day)).all()
    by_day = {_as_date(r[0]): r for r in rows}
    series = tuple(_day(start + timedelta(days=i), by_day) for i in range(days))
    month_start = datetime(now.year, now.month, 1)
    totals = db.session.execute(
        select(*served_and_failed(), func.sum(UsageRecord.total_tokens),
               func.sum(UsageRecord.cost_units))
        .where(*mine, UsageRecord.created_at >= month_start)
    ).one()
    recent = tuple(db.session.scalars(
        select(UsageRecord).where(*mine)
        .order_by(UsageRecord.id.desc()).limit(RECENT_REQUESTS)))
    return Overview(
        email=account.email, tier=account.tier,
        discount_percent=_plain(tier.discount * 100),
        balance=units_to_usd(account.balance_units),
        reserved=units_to_usd(account.reserved_units),
        available=units_to_usd(max(0, spendable)),
        month=month, quota_free=free, quota_used=used, quota_remaining=remaining,
        month_requests=totals[0] or 0, month_failed=totals[1] or 0,
        month_tokens=int(totals[2] or 0), month_cost=units_to_usd(int(totals[3] or 0)),
        days=series, recent=recent, member=member,
        budget=budget(key) if key is not None else ())


def _plain(value: Decimal) -> Decimal:
    """10.00 -> 10 and 12.50 -> 12.5, never 1E+1."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral() else value


def _as_date(value) -> date:
    """SQLite may hand a day back as text; PostgreSQL as a date."""
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _day(day: date, by_day: dict) -> Day:
    row = by_day.get(day)
    if row is None:
        return Day(day, 0, 0, Decimal(0))
    return Day(day, row[1] or 0, int(row[2] or 0), units_to_usd(int(row[3] or 0)))
