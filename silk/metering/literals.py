"""PostgreSQL literals for the metering statements' values, without psycopg's type registry.

A PostgreSQL hold and charge travel as `EXECUTE name(literal, ...)`. psycopg's client-side
binding adapts each value through its registry of dumpers, which costs a worker 7 % of its
instructions per request; the values are a few plain Python types, and each has one literal
that means the same under every server setting. Anything else goes to psycopg's quoting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

Quote = Callable[[Any], str]  # psycopg's quoting, for every value the fast forms do not take


def literal(value: Any, quote: Quote) -> str:
    """`value` as a SQL literal: the statement's declared parameter type gives it its type.

    A string is quoted only if it is ASCII without a backslash or NUL: then doubling its
    quotes is the whole escape, whatever `standard_conforming_strings` says, and the
    literal is ASCII bytes that every client encoding reads as the same characters. Any
    other string, and any other type (subclasses included), is psycopg's to quote (a NUL
    fails there). A negative number starts with a space, so that no minus sign before it
    makes a `--` comment.
    """
    kind = type(value)
    if kind is str:
        text: str = value
        if text.isascii() and "\\" not in text and "\x00" not in text:
            return "'" + text.replace("'", "''") + "'"
    elif kind is int:
        return str(value) if value >= 0 else " " + str(value)
    elif value is None:
        return "NULL"
    elif kind is bool:
        return "true" if value else "false"
    elif kind is datetime:
        moment: datetime = value
        if moment.tzinfo is None:
            return "'" + moment.isoformat(" ") + "'"
    elif kind is date:
        day: date = value
        return "'" + day.isoformat() + "'"
    return quote(value)
