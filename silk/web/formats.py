"""How the dashboard writes money, counts and times for people."""

from __future__ import annotations

from decimal import Decimal

from silk.pricing import units_to_usd


def usd(value) -> str:
    """The one way the pages write money: never rounded into a different amount. At least
    the cents, and every digit below a cent the amount has (money is exact to 10^-9 USD,
    so nine decimals show any amount exactly): $42.749884656, $0.0000042, $10.50."""
    amount = value if isinstance(value, Decimal) else Decimal(str(value or 0))
    whole, _, fraction = f"{amount:,.9f}".partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def units(value) -> str:
    """Stored money units as USD for people."""
    return usd(units_to_usd(int(value or 0)))


def count(value) -> str:
    """A whole number with thousands separators."""
    return f"{int(value or 0):,}"


def axis_count(value: float) -> str:
    """A count for a chart axis: 12.5k, 3M."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if value >= 10_000:
        return f"{value / 1000:.3g}k"
    return f"{value:,.0f}" if value == int(value) else f"{value:.2g}"


def when(moment) -> str:
    """A stored UTC time, to the minute."""
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "—"
