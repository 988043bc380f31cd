"""The account columns a reservation decides on, declared once for both stores."""

from __future__ import annotations

from typing import NamedTuple


class AccountState(NamedTuple):
    """An account's money, tier and free quota at one moment."""

    balance_units: int
    reserved_units: int
    tier: str
    quota_month: str
    quota_used: int
    quota_held: int
    disabled: bool


# The `accounts` columns of an AccountState, in its order: every statement that reads or
# returns the state selects these.
COLUMNS: tuple[str, ...] = AccountState._fields
SELECT = ", ".join(COLUMNS)
