"""The alerts a change of balance writes, in its own transaction, into the alert outbox.

A settlement that takes an account's balance under its alert threshold, or its free
tokens used this month up to the tier's quota, inserts one row into `alert_outbox` in
the statement (PostgreSQL) or transaction (SQLite) that charges it; whether it crossed
is the threshold rule of silk.metering.rules. So does a key's spend reaching 80, 90 or
100 % of one of its caps (`key_spend`, rules.cap_reached), per day, month and in total.
Event ids come from the cause (the reservation; the account and month; the key, the
period, the cap and the share), so a cause written twice is one event. A removal of
money (`credit` with a negative amount) that crosses the threshold writes one too.
Delivery is silk.alerts', never the request's.
"""

from __future__ import annotations

import json
import weakref
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from silk.metering import rules
from silk.metering.rules import POSTGRES, SQLITE

BALANCE_LOW = "balance_low"
QUOTA_USED_UP = "quota_used_up"
KEY_SPEND = "key_spend"

_floors: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()


def configure(engine: Engine, floor_units: int) -> None:
    """The operator's balance threshold for accounts that set none (0: no alert)."""
    _floors[engine] = max(int(floor_units), 0)


def floor(engine: Engine) -> int:
    """The operator's balance threshold on this database, in units."""
    return _floors.get(engine, 0)


_COLUMNS = ("event_id, kind, account_id, payload, state, attempts, next_attempt_at, "
            "last_error, created_at")

# SQLite: run right after the settlement's UPDATE of the account, in its transaction, so
# the row holds the values after it; before = after + charge (balance), after - free
# (tokens used: the settlement added `free` to this month's counter).
_SQLITE_THRESHOLD = "COALESCE(alert_balance_units, :alert_floor)"
SQLITE_ALERTS = f"""
INSERT OR IGNORE INTO alert_outbox ({_COLUMNS})
SELECT '{BALANCE_LOW}:' || :reservation, '{BALANCE_LOW}', id,
       json_object('balance_units', balance_units, 'threshold_units', {_SQLITE_THRESHOLD},
                   'reservation_id', :reservation),
       'pending', 0, :now, '', :now
FROM accounts WHERE id = :account AND {rules.fell_below(
    SQLITE, "(balance_units + :charge)", "balance_units", _SQLITE_THRESHOLD)}
UNION ALL
SELECT '{QUOTA_USED_UP}:' || id || ':' || :month, '{QUOTA_USED_UP}', id,
       json_object('month', :month, 'quota_tokens', :tier_quota, 'used_tokens', quota_used),
       'pending', 0, :now, '', :now
FROM accounts WHERE id = :account AND :tier_quota > 0 AND {rules.reached(
    SQLITE, "(quota_used - :free)", "quota_used", ":tier_quota")}
"""


# A key's spend alerts, over `source` (the key's row after its counters took `charge` for
# the day `budget_day` and the month `budget_month`). A counter that now counts that
# period counted `charge` less before (a new period starts from the charge, so it counted
# 0 of it); one left on a later period (a late settlement) did not change.
_KEY_PERIODS = (  # (period, the period it counts or None, its spend, its cap, its value)
    ("day", "spent_day", "spent_day_units", "cap_day_units", "budget_day"),
    ("month", "spent_month", "spent_month_units", "cap_month_units", "budget_month"),
    ("total", None, "spent_total_units", "cap_total_units", None),
)


def key_spend_alerts(o: rules.Sql, source: str, payload: str, which: str = "TRUE") -> str:
    """The SELECTs (joined by UNION ALL) of the outbox rows a settlement's `charge` to the
    key in `source` (the rows `which` picks) writes: a row per cap and share it crossed;
    none for a key without caps. `payload` makes JSON text of its "{}" (a list of names and
    values) in the database's way.

    One SELECT per period, its shares a joined VALUES list (`s.column1`): PostgreSQL builds
    every branch of the settlement's statement afresh each time it runs it, and a branch per
    period and share would be nine to build for alerts most settlements never write."""
    charge = o.param("charge")
    percent = "s.column1"
    shares = ", ".join(f"({share})" for share in rules.CAP_ALERT_PERCENTS)
    selects = []
    for period, counts, spent, cap, value in _KEY_PERIODS:
        period_value = f"CAST({o.param(value) if value else 'k.' + cap} AS TEXT)"
        # The cap is in the id: a cap changed within its day or month alerts again at its
        # own shares (the total's period value is the cap itself).
        named = f"{period_value} || ':' || CAST(k.{cap} AS TEXT)" if value else period_value
        in_period = f" AND k.{counts} = {o.param(value)}" if counts and value else ""
        crossed = rules.cap_reached(o, f"(k.{spent} - {charge})", f"k.{spent}", f"k.{cap}",
                                    percent)
        selects.append(
            # ':' apart from the words: a colon before a name would read as a parameter
            f"SELECT '{KEY_SPEND}:' || CAST(k.id AS TEXT) || ':' || '{period}' || ':' || "
            f"{named} || ':' || CAST({percent} AS TEXT), '{KEY_SPEND}', k.account_id, "
            f"{payload.format(_fields(period, period_value, percent, cap, spent))}, "
            f"'pending', 0, {o.param('now')}, '', {o.param('now')} "
            f"FROM {source} CROSS JOIN (VALUES {shares}) AS s "
            f"WHERE {which} AND k.{cap} IS NOT NULL{in_period} AND {crossed}")
    return "\nUNION ALL\n".join(selects)


def _fields(period: str, period_value: str, percent: str, cap: str, spent: str) -> str:
    """A key_spend event's payload, as the names and values of a JSON object."""
    return (f"'key_id', k.id, 'period', '{period}', 'period_value', {period_value}, "
            f"'percent', {percent}, 'cap_units', k.{cap}, 'spent_units', k.{spent}")


# SQLite: run after the key's counters took the settlement, in its transaction, only for a
# key with caps (the key's UPDATE says whether it has).
SQLITE_KEY_ALERTS = (f"INSERT OR IGNORE INTO alert_outbox ({_COLUMNS})\n"
                     + key_spend_alerts(SQLITE, "api_keys AS k", "json_object({})",
                                        "k.id = :key"))
# PostgreSQL, in a transaction of SQLAlchemy's (a correction of a swept hold).
POSTGRES_KEY_ALERTS = (f"INSERT INTO alert_outbox ({_COLUMNS})\n"
                       + key_spend_alerts(POSTGRES.for_sqlalchemy(), "api_keys AS k",
                                          "json_build_object({})::text", "k.id = :key")
                       + "\nON CONFLICT (event_id) DO NOTHING")

# PostgreSQL: one CTE of the settlement statement, over `charged` (the account after the
# UPDATE, with its alert threshold) and `keyed` (the key after its UPDATE; no row without
# a key).
_PG_THRESHOLD = "COALESCE(charged.alert_balance_units, %(alert_floor)s)"
POSTGRES_ALERTS_CTE = f"""alerted AS (
    INSERT INTO alert_outbox ({_COLUMNS})
    SELECT '{BALANCE_LOW}:' || CAST(%(reservation)s AS TEXT), '{BALANCE_LOW}', charged.id,
           json_build_object('balance_units', charged.balance_units,
                             'threshold_units', {_PG_THRESHOLD},
                             'reservation_id', %(reservation)s)::text,
           'pending', 0, %(now)s, '', %(now)s
    FROM charged
    WHERE {rules.fell_below(POSTGRES, "(charged.balance_units + %(charge)s)",
                            "charged.balance_units", _PG_THRESHOLD)}
    UNION ALL
    SELECT '{QUOTA_USED_UP}:' || CAST(charged.id AS TEXT) || ':' || %(month)s,
           '{QUOTA_USED_UP}', charged.id,
           json_build_object('month', %(month)s, 'quota_tokens', %(tier_quota)s,
                             'used_tokens', charged.quota_used)::text,
           'pending', 0, %(now)s, '', %(now)s
    FROM charged
    WHERE %(tier_quota)s > 0 AND {rules.reached(
        POSTGRES, "(charged.quota_used - %(free)s)", "charged.quota_used", "%(tier_quota)s")}
    UNION ALL
    {key_spend_alerts(POSTGRES, "keyed AS k", "json_build_object({})::text")}
    ON CONFLICT (event_id) DO NOTHING
)"""


_CREDIT_ALERT = text(f"INSERT INTO alert_outbox ({_COLUMNS}) VALUES (:event_id, "
                     f"'{BALANCE_LOW}', :account, :payload, 'pending', 0, :now, '', :now)")


def balance_low_after_credit(conn: Connection, account_id: int, entry_id: int,
                             balance: int, threshold: int, now: datetime) -> None:
    """The alert of a removal of money (an adjustment, a refund taken back) that took the
    balance under its threshold, in the removal's transaction; named by its ledger entry."""
    conn.execute(_CREDIT_ALERT, {
        "event_id": f"{BALANCE_LOW}:ledger:{entry_id}", "account": account_id, "now": now,
        "payload": json.dumps({"balance_units": balance, "threshold_units": threshold,
                               "ledger_entry_id": entry_id})})
