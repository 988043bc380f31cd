"""Helpers shared by the `flask silk` commands: USD arguments and clean failures."""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from typing import NoReturn

import click
from flask import current_app

from silk.errors import SilkError
from silk.pricing import units_to_usd


def parse_usd(value: str) -> Decimal:
    """A USD amount as an exact Decimal, or a usage error naming the value."""
    try:
        amount = Decimal(value.strip().lstrip("$"))
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a USD amount") from None
    if not amount.is_finite():
        raise click.BadParameter(f"{value!r} is not a USD amount")
    return amount


def topup_max() -> Decimal:
    """The most one top-up may add (SILK_TOPUP_MAX)."""
    return Decimal(str(current_app.config["SILK_TOPUP_MAX"]))


def fail(err: SilkError) -> NoReturn:
    """Print the error's message, the same one the API would show, and exit 1."""
    click.echo(f"error: {err.message}", err=True)
    sys.exit(1)


def when(moment) -> str:
    """A UTC moment for a table cell."""
    return f"{moment:%Y-%m-%d %H:%M}Z" if moment else "-"


def usd(units: int) -> str:
    """Units as `$12.5` for people (never exponent notation such as `$3E+1`)."""
    return f"${units_to_usd(units):f}"


def percent(fraction: Decimal) -> str:
    """A discount fraction as `10%`."""
    return f"{(fraction * 100).normalize():f}%"
