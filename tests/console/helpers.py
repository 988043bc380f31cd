"""Reading the console's CSV and the admin API for comparisons."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path


def csv_rows(text: str) -> tuple[list[str], list[list[str]], list[str]]:
    """A console CSV as (header, rows, total row)."""
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[-1][0] == "total"
    return rows[0], rows[1:-1], rows[-1]


def money(value) -> Decimal:
    """An amount from JSON or CSV as an exact Decimal."""
    return Decimal(str(value))


def downloaded(download) -> str:
    """The text of a file the browser downloaded."""
    return Path(download.value.path()).read_text()


def csv_of(download) -> list[list[str]]:
    """A downloaded CSV's rows, header included."""
    return list(csv.reader(io.StringIO(downloaded(download))))
