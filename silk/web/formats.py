"""How the dashboard writes money, counts and times for people."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from silk.pricing import units_to_usd


def usd(value) -> str:
    """USD for people: cents for sums, every significant digit for a tiny request."""
    amount = Decimal(value or 0)
    if amount == amount.quantize(Decimal("0.01")) or abs(amount) >= 100:
        return f"${amount:,.2f}"
    text = f"{amount:,.9f}".rstrip("0")
    return "$" + (text if len(text.split(".")[1]) >= 2 else f"{amount:,.2f}")


def usd_short(value) -> str:
    """USD in whole cents, never rounded up (a balance must not look larger than it is)."""
    amount = Decimal(value or 0)
    if 0 < amount < Decimal("0.01"):
        return "< $0.01"
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_DOWN):,.2f}"


def units(value) -> str:
    """Stored money units as USD for people."""
    return usd(units_to_usd(int(value or 0)))


def axis_usd(value: float) -> str:
    """USD for a chart axis: short, and exact enough to tell the gridlines apart."""
    if value == 0:
        return "$0"
    if value >= 0.1:
        return f"${value:,.2f}"
    return "$" + f"{value:.9f}".rstrip("0").rstrip(".")


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
