"""The metering statements' literals mean on the server exactly the values they were made of."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest

from silk.metering.literals import literal

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


def test_only_values_without_a_fast_form_are_handed_to_psycopg(conn):
    handed: list = []
    quote = _psycopg_quote(conn)

    def recording(value):
        handed.append(value)
        return quote(value)

    for value in [*STRINGS, 0, -5, True, None, datetime(2026, 1, 1), date(2026, 1, 1)]:
        literal(value, recording)
    assert handed == []
    for value in DEFERRED[:3] + DEFERRED[5:]:
        literal(value, recording)
    assert handed == DEFERRED[:3] + DEFERRED[5:]


def test_a_nul_is_refused_as_psycopg_refused_it(conn):
    """A provider's model name with a NUL fails that one statement, before anything is sent."""
    with pytest.raises(psycopg.DataError):
        literal("a\x00b", _psycopg_quote(conn))
