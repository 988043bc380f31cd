"""Tables as CSV for download: one header row, then the rows, money as exact USD."""

from __future__ import annotations

import csv
import io
from base64 import b64encode
from collections.abc import Iterable, Sequence
from decimal import Decimal

from flask import Response

# A text cell starting so is a formula to a spreadsheet; some of that text is a customer's
# (an account's email), and the operator opens these files.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """A value as a CSV cell shows it: a Decimal exact and in plain digits (10, not 1E+1),
    text that a spreadsheet would run as a formula quoted with ' so it stays text."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return f"{value:f}" if isinstance(value, Decimal) else value


def text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The CSV text of a table (values written with str(); Decimals stay exact)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(value) for value in row])
    return out.getvalue()


def download(filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Response:
    """A CSV attachment."""
    return Response(text(header, rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})


def data_url(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The CSV as a data: URL, for a download link of something that exists on this page only
    (codes shown once are never stored, so no later request could fetch them)."""
    return "data:text/csv;base64," + b64encode(text(header, rows).encode()).decode()
