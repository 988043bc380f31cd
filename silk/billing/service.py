"""Usage and billing reports, computed from usage records of one calendar month (UTC).

The records are what settlement wrote, so a report is the sum of what each request was
charged: nothing here prices anything again. `requests` counts the requests served; those
that failed are counted apart (see SERVED).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import case, func, not_, select
from sqlalchemy.engine import Connection

from silk.account.models import Account
from silk.database import utcnow
from silk.errors import NotFound
from silk.metering import rules
from silk.metering.models import UsageRecord
from silk.metering.rules import PYTHON
from silk.pricing import Tier

USAGE = UsageRecord.__table__
ACCOUNTS = Account.__table__

# A request is served when it was billed tokens (free quota included): the provider answered
# and what was delivered was charged, however the answer ended (ok, cut, timed out, the
# client gone, an error mid-stream, or settled by the sweep). It failed when it was billed
# nothing: refused upstream, the gateway's error before an answer, or nothing delivered.
# Settlement writes no tokens exactly when it bills nothing (silk.metering.service.decide).
SERVED = USAGE.c.total_tokens > 0


def served_and_failed(served=SERVED, row_id=USAGE.c.id) -> tuple:
    """SQL counts of the served and the failed requests among the rows selected."""
    return (func.count(case((served, row_id))), func.count(case((not_(served), row_id))))


@dataclass(frozen=True, slots=True)
class Totals:
    """Requests, tokens and cost of one slice of a month (a model, a day, an account)."""

    key: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_units: int = 0
    failed_requests: int = 0  # not counted in `requests`


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A month's usage: the totals, by model and by day."""

    month: str
    totals: Totals
    by_model: list[Totals]
    by_day: list[Totals]


@dataclass(frozen=True, slots=True)
class Costs:
    """Money of a month: list price of charged tokens, the discount, what was charged."""

    subtotal_units: int
    discount_units: int
    total_units: int


@dataclass(frozen=True, slots=True)
class Quota:
    """The month's free tokens: the tier's allowance, what was used, what is left."""

    free: int
    used: int
    held: int = 0  # taken by open holds: counted in the current month only

    @property
    def remaining(self) -> int:
        """Free tokens left this month, never below zero: what metering would allow."""
        return rules.free_left(PYTHON, self.free, self.used, self.held)


@dataclass(frozen=True, slots=True)
class ModelBill:
    """One model's share of a month's bill: requests, tokens and money, in units."""

    model: str
    requests: int
    failed_requests: int
    total_tokens: int
    costs: Costs


@dataclass(frozen=True, slots=True)
class BillingReport:
    """The document's billing shape, in units; `models` sums to the top-level figures."""

    month: str
    tier: str
    usage: Totals
    costs: Costs
    quota: Quota
    balance_units: int
    models: list[ModelBill]


def _totals_columns():
    served, failed = served_and_failed()
    return (served, func.sum(USAGE.c.prompt_tokens), func.sum(USAGE.c.completion_tokens),
            func.sum(USAGE.c.total_tokens), func.sum(USAGE.c.cost_units), failed)


def _totals(key: str, row) -> Totals:
    # PostgreSQL sums BIGINTs as NUMERIC and every backend sums nothing as NULL.
    return Totals(str(key), *(int(value or 0) for value in row))


def _in_month(start: date, end: date, account_id: int | None = None):
    clauses = [USAGE.c.day >= start, USAGE.c.day < end]
    if account_id is not None:
        clauses.append(USAGE.c.account_id == account_id)
    return clauses


def balance_units(conn: Connection, account_id: int) -> int:
    """An account's balance in units, as the database holds it now."""
    return conn.execute(select(ACCOUNTS.c.balance_units)
                        .where(ACCOUNTS.c.id == account_id)).scalar_one()


def usage_report(conn: Connection, account_id: int, month: str, start: date,
                 end: date, key_id: int | None = None) -> UsageReport:
    """One account's usage in the month starting `start` (end exclusive); one key's alone
    with `key_id`."""
    where = _in_month(start, end, account_id)
    if key_id is not None:
        where.append(USAGE.c.key_id == key_id)
    overall = conn.execute(select(*_totals_columns()).where(*where)).one()
    by_model = conn.execute(select(USAGE.c.model, *_totals_columns()).where(*where)
                            .group_by(USAGE.c.model).order_by(USAGE.c.model)).all()
    by_day = conn.execute(select(USAGE.c.day, *_totals_columns()).where(*where)
                          .group_by(USAGE.c.day).order_by(USAGE.c.day)).all()
    return UsageReport(
        month=month, totals=_totals(month, overall),
        by_model=[_totals(row[0], row[1:]) for row in by_model],
        by_day=[_totals(row[0].isoformat(), row[1:]) for row in by_day])


def billing_report(conn: Connection, account_id: int, tiers: Mapping[str, Tier], month: str,
                   start: date, end: date) -> BillingReport:
    """One account's bill for a month, in the document's shape (SPEC section 7)."""
    account = conn.execute(select(ACCOUNTS.c.tier, ACCOUNTS.c.balance_units,
                                  ACCOUNTS.c.quota_held)
                           .where(ACCOUNTS.c.id == account_id)).first()
    if account is None:
        raise NotFound("Account not found.")
    # One statement, so the models and the totals come from the same rows.
    rows = conn.execute(select(
        USAGE.c.model, *served_and_failed(), func.sum(USAGE.c.total_tokens),
        func.sum(USAGE.c.subtotal_units), func.sum(USAGE.c.discount_units),
        func.sum(USAGE.c.cost_units), func.sum(USAGE.c.free_tokens))
        .where(*_in_month(start, end, account_id))
        .group_by(USAGE.c.model).order_by(USAGE.c.model)).all()
    models = []
    free_used = 0
    for model, *figures in rows:
        requests, failed, tokens, subtotal, discount, total, free = (int(v or 0)
                                                                     for v in figures)
        models.append(ModelBill(str(model), requests, failed, tokens,
                                Costs(subtotal, discount, total)))
        free_used += free
    tier = tiers.get(account.tier)
    return BillingReport(
        month=month, tier=account.tier,
        usage=Totals(month, requests=sum(m.requests for m in models),
                     total_tokens=sum(m.total_tokens for m in models),
                     failed_requests=sum(m.failed_requests for m in models)),
        costs=Costs(*(sum(getattr(m.costs, name) for m in models)
                      for name in ("subtotal_units", "discount_units", "total_units"))),
        quota=Quota(free=tier.monthly_free_tokens if tier else 0, used=free_used,
                    held=rules.held_in(month, rules.month_of(utcnow()), account.quota_held)),
        balance_units=account.balance_units, models=models)


def accounts_report(conn: Connection, month: str, start: date, end: date,
                    account_id: int | None = None) -> tuple[list[Totals], list[Totals]]:
    """Every account's usage in a month, by account (keyed by email) and by model."""
    where = _in_month(start, end, account_id)
    by_account = conn.execute(
        select(ACCOUNTS.c.email, *_totals_columns()).join(ACCOUNTS,
                                                          ACCOUNTS.c.id == USAGE.c.account_id)
        .where(*where).group_by(ACCOUNTS.c.email).order_by(ACCOUNTS.c.email)).all()
    by_model = conn.execute(select(USAGE.c.model, *_totals_columns()).where(*where)
                            .group_by(USAGE.c.model).order_by(USAGE.c.model)).all()
    return ([_totals(row[0], row[1:]) for row in by_account],
            [_totals(row[0], row[1:]) for row in by_model])


def days_report(conn: Connection, start: date, end: date,
                account_id: int | None = None) -> list[Totals]:
    """Every account's usage in a month (or one account's) by UTC day, days with usage only."""
    rows = conn.execute(select(USAGE.c.day, *_totals_columns())
                        .where(*_in_month(start, end, account_id))
                        .group_by(USAGE.c.day).order_by(USAGE.c.day)).all()
    return [_totals(str(row[0])[:10], row[1:]) for row in rows]
