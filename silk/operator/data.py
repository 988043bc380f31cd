"""What the console's pages read: accounts with their money and holds, keys across accounts,
the month's usage by day, invite states. Reads only; money moves through silk/metering/."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from silk.account.models import Account, ApiKey, InviteCode
from silk.account.service import find_account, list_accounts
from silk.billing.tiers import stored_tiers
from silk.database import utcnow
from silk.errors import NotFound
from silk.extensions import db
from silk.metering import rules
from silk.metering.ledger import history
from silk.metering.models import Reservation, UsageRecord
from silk.metering.rules import PYTHON, month_of
from silk.metering.service import tier_of
from silk.validation import MOST_ID, whole_number

PAGE_SIZE = 25
RECENT_REQUESTS = 25
LEDGER_ROWS = 50


@dataclass(frozen=True)
class AccountPage:
    """One page of the accounts list and whether another follows."""

    rows: list[Account]
    page: int
    more: bool


@dataclass(frozen=True)
class AccountView:
    """An account's page: money, holds, tier and quota, keys, recent requests, ledger."""

    account: Account
    discount_percent: Any
    spendable_units: int
    quota_free: int
    quota_used: int
    quota_held: int
    quota_remaining: int
    holds: list[Reservation]
    keys: list[ApiKey]
    recent: list[UsageRecord]
    ledger: list[Any]


def search_accounts(query: str, page: int) -> AccountPage:
    """Accounts whose id is `query` or whose email contains it, PAGE_SIZE a page."""
    query = query.strip()
    if (number := whole_number(query, MOST_ID)) is not None:
        try:
            return AccountPage([find_account(number)], 1, False)
        except NotFound:
            pass  # a number may still be part of an email address
    found = list_accounts(email_contains=query or None, limit=PAGE_SIZE + 1,
                          offset=(page - 1) * PAGE_SIZE)
    return AccountPage(found[:PAGE_SIZE], page, len(found) > PAGE_SIZE)


def account_view(account_id: int) -> AccountView:
    """Everything an account's page shows, read in one session."""
    account = find_account(account_id)
    db.session.refresh(account)  # the balance as the database holds it now
    tier = tier_of(stored_tiers(), account.tier)
    month = month_of(utcnow())
    used = rules.used_in(PYTHON, account.quota_month, account.quota_used, month)
    holds = list(db.session.scalars(
        select(Reservation).where(Reservation.account_id == account_id,
                                  Reservation.state == "open").order_by(Reservation.id)))
    keys = list(db.session.scalars(select(ApiKey).where(ApiKey.account_id == account_id)
                                   .order_by(ApiKey.id.desc())))
    recent = list(db.session.scalars(
        select(UsageRecord).where(UsageRecord.account_id == account_id)
        .order_by(UsageRecord.id.desc()).limit(RECENT_REQUESTS)))
    ledger = history(db.session.connection(), account_id, limit=LEDGER_ROWS)
    return AccountView(
        account=account, discount_percent=(tier.discount * 100).normalize(),
        spendable_units=max(0, rules.spendable(PYTHON, account.balance_units,
                                               account.reserved_units)),
        quota_free=tier.monthly_free_tokens, quota_used=used, quota_held=account.quota_held,
        quota_remaining=rules.free_left(PYTHON, tier.monthly_free_tokens, used,
                                        account.quota_held),
        holds=holds, keys=keys, recent=recent, ledger=ledger)


def all_keys(account_query: str = "", limit: int = 200) -> list[tuple[ApiKey, str]]:
    """Keys newest first with their account's email; `account_query` narrows by email part
    or account id."""
    query = (select(ApiKey, Account.email).join(Account, Account.id == ApiKey.account_id)
             .order_by(ApiKey.id.desc()).limit(limit))
    account_query = account_query.strip().lower()
    if (number := whole_number(account_query, MOST_ID)) is not None:
        query = query.where(ApiKey.account_id == number)
    elif account_query:
        query = query.where(Account.email.contains(account_query, autoescape=True))
    return [(key, email) for key, email in db.session.execute(query)]


def open_hold_count() -> int:
    """Open holds across every account: requests in flight as the database sees them."""
    return int(db.session.scalar(select(func.count()).select_from(Reservation)
                                 .where(Reservation.state == "open")) or 0)


def invite_state(invite: InviteCode) -> str:
    """usable, used or expired, for lists."""
    if invite.uses_left <= 0:
        return "used"
    if invite.expires_at is not None and invite.expires_at <= utcnow():
        return "expired"
    return "usable"


def month_days(start: date, end: date) -> list[date]:
    """Every day of a month, for charts with a bar per day."""
    return [start + timedelta(days=i) for i in range((end - start).days)]
