"""The books check: every ledger sums to its balance, no balance below zero, holds add up;
and what was written off (used but never charged), which balanced books cannot show."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from silk.metering.service import ACCOUNTS, LEDGER, RESERVATIONS, USAGE


def audit(engine: Engine) -> list[str]:
    """Return one line per account whose books do not balance; empty when all is well."""
    with engine.connect() as conn:
        ledger = dict(conn.execute(
            select(LEDGER.c.account_id, func.sum(LEDGER.c.amount_units))
            .group_by(LEDGER.c.account_id)).all())
        held = dict(conn.execute(
            select(RESERVATIONS.c.account_id, func.sum(RESERVATIONS.c.hold_units))
            .where(RESERVATIONS.c.state == "open").group_by(RESERVATIONS.c.account_id)).all())
        last = {}
        for account_id, balance_after in conn.execute(
                select(LEDGER.c.account_id, LEDGER.c.balance_after_units)
                .where(LEDGER.c.id.in_(select(func.max(LEDGER.c.id))
                                       .group_by(LEDGER.c.account_id)))):
            last[account_id] = balance_after
        accounts = conn.execute(select(ACCOUNTS.c.id, ACCOUNTS.c.email, ACCOUNTS.c.balance_units,
                                       ACCOUNTS.c.reserved_units)).all()
    problems = []
    for account in accounts:
        total = int(ledger.get(account.id) or 0)
        where = f"account {account.id} ({account.email})"
        if total != account.balance_units:
            problems.append(f"{where}: ledger sums to {total} units, balance is "
                            f"{account.balance_units}")
        if account.id in last and last[account.id] != account.balance_units:
            problems.append(f"{where}: last ledger entry says {last[account.id]} units after it, "
                            f"balance is {account.balance_units}")
        if account.balance_units < 0:
            problems.append(f"{where}: balance is negative ({account.balance_units} units)")
        if int(held.get(account.id) or 0) != account.reserved_units:
            problems.append(f"{where}: open holds sum to {int(held.get(account.id) or 0)} units, "
                            f"reserved is {account.reserved_units}")
    return problems


def written_off(engine: Engine) -> list[tuple[int, str, int]]:
    """(account id, email, units) of every account with usage written off, most first."""
    total = func.sum(USAGE.c.written_off_units)
    with engine.connect() as conn:
        rows = conn.execute(
            select(ACCOUNTS.c.id, ACCOUNTS.c.email, total)
            .join(USAGE, USAGE.c.account_id == ACCOUNTS.c.id)
            .where(USAGE.c.written_off_units > 0)
            .group_by(ACCOUNTS.c.id, ACCOUNTS.c.email)
            .order_by(total.desc(), ACCOUNTS.c.id)).all()
    return [(account_id, email, int(units)) for account_id, email, units in rows]
