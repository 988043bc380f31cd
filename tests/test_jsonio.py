"""The database's JSON columns: orjson's text, read back as the standard library wrote it."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from silk.jsonio import column_dumps, column_loads

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(_JSON)
def test_a_column_reads_back_what_either_library_wrote(value):
    assert column_loads(column_dumps(value)) == value
    assert column_loads(json.dumps(value)) == value  # rows written before orjson


def test_a_lone_surrogate_is_written_and_read_as_the_standard_library_does():
    """A command line's undecodable bytes reach Python as lone surrogates, which orjson
    refuses both ways."""
    models = ["deepseek-chat", "bad\udcff"]
    assert column_dumps(models) == json.dumps(models)
    assert column_loads(json.dumps(models)) == models


def test_money_leaves_as_a_number():
    assert column_loads(column_dumps({"cost": Decimal("0.000018774")})) == {"cost": 1.8774e-05}


@given(st.integers(0, 2**63 - 1))
def test_every_balance_leaves_as_its_exact_usd_number(units):
    """Nano-dollars past 2**53 (a balance or a report's total above $9,007,199.254740992)
    have more digits than a double holds: they must still leave exactly."""
    from silk.jsonio import dumps_bytes
    from silk.pricing import units_to_usd

    text = dumps_bytes({"balance": units_to_usd(units)})
    assert json.loads(text, parse_float=Decimal)["balance"] * 10**9 == units
