"""Fast JSON in and out with orjson; Decimal money leaves as a plain JSON number."""

import json
from decimal import Decimal

import orjson
from flask.json.provider import JSONProvider

_DOUBLE_DIGITS = 15  # significant digits a double carries through its shortest repr


def _default(value):
    if isinstance(value, Decimal):
        # A double shows up to 15 digits exactly: nine decimals of money up to $999,999; past
        # that (a balance or a report's total in the millions) the digits leave as they are.
        if len(value.as_tuple().digits) <= _DOUBLE_DIGITS:
            return float(value)
        return orjson.Fragment(f"{value:f}")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _float_default(value):
    """The standard library's fallback, which writes no raw digits: a Decimal as a float."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps_bytes(obj) -> bytes:
    """Serialise to compact JSON bytes."""
    return orjson.dumps(obj, default=_default)


def dumps_text(obj) -> str:
    """Serialise to compact JSON text (the database's JSON columns take it so)."""
    return orjson.dumps(obj, default=_default).decode()


def column_dumps(obj) -> str:
    """JSON text for a database column: orjson's, or the standard library's for what orjson
    refuses (a lone surrogate, which a command line's undecodable bytes become)."""
    try:
        return dumps_text(obj)
    except TypeError:
        return json.dumps(obj, default=_float_default)


def column_loads(text: str | bytes):
    """A database column's JSON: orjson reads what the standard library wrote, but for a
    lone surrogate's escape, which only the standard library reads."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def whole_object(text: str) -> bool:
    """Whether text is a whole JSON object: no further text but whitespace keeps it JSON."""
    if not text.rstrip().endswith("}"):
        return False
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


class OrjsonProvider(JSONProvider):
    """Flask JSON provider backed by orjson."""

    def dumps(self, obj, **kwargs) -> str:
        return dumps_text(obj)

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps_bytes(obj), mimetype="application/json")
