"""The alerts a change of balance writes, in its own transaction, into the alert outbox.

A settlement that takes an account's balance under its alert threshold, or its free
tokens used this month up to the tier's quota, inserts one row into `alert_outbox` in
the statement (PostgreSQL) or transaction (SQLite) that charges it; whether it crossed
is the threshold rule of silk.metering.rules. Event ids come from the cause (the
reservation; the account and month), so a cause written twice is one event. A removal of
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

# PostgreSQL: one CTE of the settlement statement, over `charged` (the account after the
# UPDATE) and the account's alert threshold (a column the settlement does not change).
_PG_THRESHOLD = "COALESCE(settings.alert_balance_units, %(alert_floor)s)"
POSTGRES_ALERTS_CTE = f"""alerted AS (
    INSERT INTO alert_outbox ({_COLUMNS})
    SELECT '{BALANCE_LOW}:' || CAST(%(reservation)s AS TEXT), '{BALANCE_LOW}', charged.id,
           json_build_object('balance_units', charged.balance_units,
                             'threshold_units', {_PG_THRESHOLD},
                             'reservation_id', %(reservation)s)::text,
           'pending', 0, %(now)s, '', %(now)s
    FROM charged JOIN accounts AS settings ON settings.id = charged.id
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
