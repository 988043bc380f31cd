"""Ledger reads and a credit that names its entry, built on metering.service.credit.

Every balance change still goes through `credit`; this module only adds what callers of it
need to show: the id of the entry just written, and an account's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.engine import Connection

from silk.metering.service import LEDGER, credit


@dataclass(frozen=True, slots=True)
class Entry:
    """A ledger entry just written: its id, the amount and the balance after it."""

    id: int
    account_id: int
    amount_units: int
    balance_after_units: int


def credit_entry(conn: Connection, account_id: int, amount_units: int, *, kind: str,
                 note: str = "", actor: str = "", request_id: str | None = None) -> Entry:
    """Credit (or debit) inside the caller's transaction and return the entry written."""
    balance = credit(conn, account_id, amount_units, kind=kind, note=note, actor=actor,
                     request_id=request_id)
    # credit() holds the account's row lock until commit, so no other entry for this
    # account can have been written since: the newest one is ours.
    entry_id = conn.execute(select(func.max(LEDGER.c.id))
                            .where(LEDGER.c.account_id == account_id)).scalar_one()
    return Entry(entry_id, account_id, amount_units, balance)


def history(conn: Connection, account_id: int, *, limit: int = 100,
            before_id: int | None = None) -> list[Row[Any]]:
    """An account's ledger entries, newest first, for statements and support."""
    query = select(LEDGER).where(LEDGER.c.account_id == account_id)
    if before_id is not None:
        query = query.where(LEDGER.c.id < before_id)
    return list(conn.execute(query.order_by(LEDGER.c.id.desc()).limit(limit)))
