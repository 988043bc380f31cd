"""The metering statements' literals mean on the server exactly the values they were made of."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import IntEnum, StrEnum

import psycopg
import pytest

from silk.metering.literals import literal
from silk.metering.postgres import Statement

TYPES = ("varchar", "integer", "bigint", "boolean", "timestamp", "date")
STRINGS = ["", "deepseek-chat", "it's", "''", "a'); DROP TABLE accounts; --", "--", "/* x",
           "$1", "%s", "E'x'", "\t\n\r", "~" * 300]
DEFERRED = ["back\\slash", "\\'", "naïve", "模型", "a\x00b", Decimal("1.5"),
            datetime(2026, 12, 6, 5, 1, 2, tzinfo=UTC)]


@pytest.fixture
def conn(backend, database_url):
    if backend != "postgres":
        pytest.skip("PostgreSQL's literals; SQLite binds its values")
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True, prepare_threshold=None) as connection:
        yield connection


def _psycopg_quote(conn):
    cursor = psycopg.ClientCursor(conn)
    return lambda value: cursor.mogrify("%s", (value,))


def _through_execute(conn, values: list) -> tuple:
    """Run the values through PREPARE/EXECUTE as the metering channel does."""
    conn.execute("DEALLOCATE ALL")
    conn.execute(f"PREPARE t ({', '.join(TYPES)}) AS SELECT $1, $2, $3, $4, $5, $6")
    bound = ", ".join(literal(value, _psycopg_quote(conn)) for value in values)
    row = conn.execute(f"EXECUTE t ({bound})").fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_every_plain_value_comes_back_unchanged(conn, conforming):
    """Under either string setting; a quote left undoubled fails on the DROP TABLE string."""
    conn.execute(f"SET standard_conforming_strings = {conforming}")
    numbers = [0, -1, 7, 2**31 - 1, -(2**31)]
    bigs = [0, -1, 2**63 - 1, -(2**63)]
    moments = [datetime(2026, 12, 6, 5, 1, 2), datetime(2026, 12, 6, 5, 1, 2, 345),
               datetime(1999, 12, 31, 23, 59, 59, 999999)]
    for index, text in enumerate(STRINGS):
        row = (text, numbers[index % len(numbers)], bigs[index % len(bigs)], index % 2 == 0,
               moments[index % len(moments)], date(2026, 2, 28))
        assert _through_execute(conn, list(row)) == row
    assert _through_execute(conn, [None] * len(TYPES)) == (None,) * len(TYPES)


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_strings_the_fast_form_cannot_carry_go_to_psycopg_and_mean_the_same(conn, conforming):
    conn.execute(f"SET standard_conforming_strings = {conforming}")
    for text in DEFERRED[:4]:
        assert _through_execute(conn, [text, 1, 1, True, None, None])[0] == text


class Surface(StrEnum):
    CHAT = "chat"


class Status(IntEnum):
    OK = 200


def test_only_values_without_a_fast_form_are_handed_to_psycopg(conn):
    """By exact type: a subclass of str or int (an enum) keeps psycopg's own adaptation."""
    handed: list = []
    quote = _psycopg_quote(conn)

    def recording(value):
        handed.append(value)
        return quote(value)

    for value in [*STRINGS, 0, -5, True, None, datetime(2026, 1, 1), date(2026, 1, 1)]:
        literal(value, recording)
    assert handed == []
    others = [*DEFERRED[:3], *DEFERRED[5:], Surface.CHAT, Status.OK, 1.5]
    for value in others:
        literal(value, recording)
    assert handed == others


def test_a_decimal_goes_through_psycopg_and_keeps_its_value(conn):
    assert _through_execute(conn, ["x", Decimal("7"), Decimal("-12"), False, None, None]
                            )[1:3] == (7, -12)


def test_a_negative_number_after_a_minus_sign_is_not_a_comment(conn):
    (value,) = conn.execute(f"SELECT 10-{literal(-1, _psycopg_quote(conn))}").fetchone()
    assert value == 11


def test_bind_puts_each_value_in_the_place_prepare_declared(conn):
    """Named values in any order, one repeated: EXECUTE's arguments follow PREPARE's."""
    statement = Statement("silk_literals_t", "SELECT %(hold)s - %(charge)s, %(model)s, "
                          "%(hold)s, %(now)s")
    conn.execute("DEALLOCATE ALL")
    conn.execute(statement.prepare)
    now = datetime(2026, 12, 6, 7, 0, 0, 1)
    bound = statement.bind({"model": "it's", "charge": -5, "now": now, "hold": 300,
                            "unused": "x"}, _psycopg_quote(conn))
    assert conn.execute(bound).fetchone() == (305, "it's", 300, now)


def test_a_nul_is_refused_as_psycopg_refuses_it(conn):
    """A string with a NUL fails its own statement before anything is sent."""
    with pytest.raises(psycopg.DataError):
        literal("a\x00b", _psycopg_quote(conn))
