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


class KeyState(NamedTuple):
    """A key's spend caps (None: no cap) and its counters at one moment."""

    cap_day_units: int | None
    cap_month_units: int | None
    cap_total_units: int | None
    held_units: int
    spent_day: str
    spent_day_units: int
    spent_month: str
    spent_month_units: int
    spent_total_units: int

    @property
    def capped(self) -> bool:
        """True when the key has any cap."""
        return not (self.cap_day_units is None and self.cap_month_units is None
                    and self.cap_total_units is None)


# The `api_keys` columns of a KeyState, in its order.
KEY_COLUMNS: tuple[str, ...] = KeyState._fields
KEY_SELECT = ", ".join(KEY_COLUMNS)
