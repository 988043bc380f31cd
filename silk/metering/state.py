"""The account columns a reservation decides on, as either database's metering reads them."""

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
