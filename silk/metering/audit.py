"""The books check: every ledger sums to its balance, no balance below zero, holds add up,
every key's budget counters match its usage records and open holds; and what was written
off (used but never charged), which balanced books cannot show."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from silk.metering.service import ACCOUNTS, LEDGER, RESERVATIONS, USAGE
from silk.metering.store import API_KEYS


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
        problems = _keys(conn)
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


def _keys(conn: Connection) -> list[str]:
    """One line per key whose budget counters differ from its records and open holds."""
    held = dict(conn.execute(
        select(RESERVATIONS.c.key_id, func.sum(RESERVATIONS.c.hold_units))
        .where(RESERVATIONS.c.state == "open", RESERVATIONS.c.key_id.is_not(None))
        .group_by(RESERVATIONS.c.key_id)).all())
    spent: defaultdict[int, dict[str, int]] = defaultdict(dict)
    for key_id, day, units in conn.execute(
            select(USAGE.c.key_id, USAGE.c.day, func.sum(USAGE.c.cost_units))
            .where(USAGE.c.key_id.is_not(None)).group_by(USAGE.c.key_id, USAGE.c.day)):
        spent[key_id][str(day)[:10]] = int(units or 0)
    problems = []
    for key in conn.execute(select(API_KEYS)).all():
        days = spent.get(key.id, {})
        expected = {
            "held": int(held.get(key.id) or 0),
            f"spent on {key.spent_day or 'its day'}": days.get(key.spent_day, 0),
            f"spent in {key.spent_month or 'its month'}": sum(
                units for day, units in days.items() if day[:7] == key.spent_month),
            "spent in all": sum(days.values())}
        counted = (key.held_units, key.spent_day_units, key.spent_month_units,
                   key.spent_total_units)
        for (what, should), have in zip(expected.items(), counted, strict=True):
            if should != have:
                problems.append(f"key {key.id} (account {key.account_id}): {what} is "
                                f"{have} units, its records say {should}")
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
