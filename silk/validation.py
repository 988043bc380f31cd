"""Shared input handling: read a JSON body, load it with a schema, and typed fields for money.

Every view loads its input through `load`, so every bad input becomes the one 400 envelope
naming the field, whatever the endpoint.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TypeVar

import orjson
from flask import request
from marshmallow import Schema, ValidationError, fields, missing
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from silk.appctx import this_request
from silk.database import utcnow
from silk.errors import IncompleteBody, InvalidRequest, UnsupportedEncoding
from silk.pricing import units_to_usd

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
# The deepest nesting a JSON body may have. orjson reads 1,024 levels but writes only 254,
# so a deeper body would parse here and fail when relayed; no real request nests this deep.
MAX_JSON_DEPTH = 128
# The whole numbers orjson reads as integers; past them it reads a float. A number past
# them has 19 digits or more: a body is looked at again only if it has such a run, found by
# mapping each digit to 0 and each other byte to a space (3 ms a megabyte, where a regular
# expression took 20 to 70).
_INT_MIN, _UINT_MAX = -2**63, 2**64 - 1
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_RUN = b"0" * 19


def read_body(*, cache: bool = True) -> bytes:
    """The request body; 413 when a body sent without a length (chunked) exceeds the limit,
    400 `incomplete_body` when the client ended it early, 415 when it is encoded.

    Werkzeug stops reading such a body at MAX_CONTENT_LENGTH and returns what it read,
    which would then be refused as truncated JSON (400) instead of as too large. A body
    that ends before its Content-Length (the server's stream runs dry: the client
    half-closed) or before its last chunk is not the body the client announced.
    A body in a Content-Encoding other than identity is a 415: it would be read as the
    plain bytes it is not.
    """
    req = this_request()
    # The header read from the environ: one dict lookup, where `headers` builds its key.
    encoding = req.environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding[:40]!r} is not supported: "
                                  "send the request body uncompressed.")
    try:
        raw = req.get_data(cache=cache)
    except ClientDisconnected:  # the chunks stopped before the last one
        raise IncompleteBody("The request body ended before its last chunk.") from None
    if req.content_length is not None and len(raw) < req.content_length:
        raise IncompleteBody(f"The request body ended after {len(raw)} of the "
                             f"{req.content_length} bytes its Content-Length announced.")
    limit = req.max_content_length
    unbounded = limit is not None and req.content_length is None and len(raw) >= limit
    if unbounded and req.environ["wsgi.input"].read(1):  # the server's stream goes on
        raise RequestEntityTooLarge()
    return raw


def json_body() -> dict:
    """The request's JSON object; an empty body counts as `{}` so GET-like POSTs work."""
    raw = read_body()
    return json_object(raw) if raw.strip() else {}


def json_object(raw: bytes) -> dict:
    """Decode a JSON object, or raise the 400 that says what is wrong with the body."""
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error):  # past the 1,024 levels orjson reads
            raise InvalidRequest(f"The request body nests JSON deeper than {MAX_JSON_DEPTH} "
                                 "levels.", code="nesting_too_deep") from None
        raise InvalidRequest(f"The request body is not valid JSON: {_why(raw, error)}."
                             ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    # Each container adds a bracket, so a body with fewer brackets cannot be too deep.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and nests_deeper(body, MAX_JSON_DEPTH):
        path = _deep_path(body)
        raise InvalidRequest(f"Invalid '{path}': JSON nested deeper than {MAX_JSON_DEPTH} "
                             "levels.", param=path, code="nesting_too_deep")
    if len(raw) >= len(_LONG_RUN) and _LONG_RUN in raw.translate(_DIGITS_AS_ZEROS):
        _refuse_wide_integers(raw)
    return body


class _Wide(int):
    """A whole number orjson would have read as a float: past 64 bits."""


def _wide_or_int(text: str) -> int:
    value = int(text)
    return _Wide(value) if not _INT_MIN <= value <= _UINT_MAX else value


def _refuse_wide_integers(raw: bytes) -> None:
    """Refuse a body with a whole number past 64 bits, naming where it is.

    orjson reads whole numbers in [-2**63, 2**64 - 1] exactly and silently reads one beyond
    as a double, which would reach the provider as a number the client did not write (a
    seed of 123456789012345678901234567890 as 1.2345678901234568e+29); no provider reads
    such a number, so it is a 400. Only a body with a long run of digits can hold one: it
    is read again by the standard library, which hands over each integer's own text.
    """
    try:
        body = json.loads(raw, parse_int=_wide_or_int)
    except (ValueError, RecursionError):  # orjson read it; the standard library may not
        return
    stack: list[tuple[object, str]] = [(body, "")]
    while stack:
        node, path = stack.pop()
        if type(node) is _Wide:
            raise InvalidRequest(
                f"Invalid '{path}': the integer {_shown(node)} does not fit in 64 bits "
                f"(from {_INT_MIN} to {_UINT_MAX}); no provider reads it.", param=path,
                code="integer_too_large")
        items = (node.items() if isinstance(node, dict)
                 else enumerate(node) if isinstance(node, list) else ())
        for key, child in reversed(list(items)):
            step = f"[{key}]" if isinstance(key, int) else (f".{key}" if path else key)
            stack.append((child, path + step))


def _shown(number: int) -> str:
    """A long number shortened for a message."""
    text = str(number)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _why(raw: bytes, error: orjson.JSONDecodeError) -> str:
    """What is wrong with a body orjson refused, and where: bytes that are not UTF-8 by
    their offset (orjson names them a surrogate at the start), the rest as orjson says."""
    try:
        raw.decode()
    except UnicodeDecodeError as bad:
        return f"it is not UTF-8 text (byte {bad.start} is {raw[bad.start]:#04x})"
    return f"{error.msg} at line {error.lineno} column {error.colno}"


def nests_deeper(body: dict | list, limit: int) -> bool:
    """Whether decoded JSON nests deeper than `limit` levels.

    One level at a time (a loop: no recursion limit), each gathered by a comprehension: a
    coding agent's conversation has thousands of containers, and a stack of (node, depth)
    pairs cost twice as much to walk.
    """
    level = [body]
    for _ in range(limit):
        level = [child for node in level
                 for child in (node.values() if type(node) is dict else node)
                 if type(child) is dict or type(child) is list]
        if not level:
            return False
    return True


def _deep_path(body: dict) -> str:
    """The path of the first container below MAX_JSON_DEPTH, e.g. `tools[0].function...`."""
    stack: list[tuple[object, int, str]] = [(body, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, dict | list):
                step = f"[{key}]" if isinstance(key, int) else (f".{key}" if path else key)
                stack.append((child, depth + 1, path + step))
    return ""


S = TypeVar("S", bound=Schema)


def needed_fields(schema: type[Schema]) -> frozenset[str]:
    """Fields that act even when absent: required ones, and those with a default."""
    return frozenset(name for name, field in schema._declared_fields.items()
                     if field.required or field.load_default is not missing)


def present_fields(schema: type[S]) -> Callable[[dict], S]:
    """`schema_for(body)`: the schema limited to the fields `body` has (and the needed ones),
    which loads it exactly as the full one.

    marshmallow runs every declared field on every load, present or not, and a field that
    is absent, not required and without a default does nothing; so leaving it out changes
    nothing, and every field the body has is still validated. The variants, one per set of
    fields present, are kept in a bounded cache.
    """
    names = tuple(schema._declared_fields)
    needed = needed_fields(schema)

    @lru_cache(maxsize=128)
    def variant(present: frozenset[str]) -> S:
        return schema(only=[name for name in names if name in present or name in needed])

    def schema_for(body: dict) -> S:
        return variant(frozenset(body.keys() & names))

    return schema_for


def load(schema: Schema, data) -> dict:
    """Validate `data` with `schema`; a failure is a 400 naming the first bad field."""
    try:
        return schema.load(data)
    except ValidationError as err:
        raise invalid(err.messages) from None


def invalid(messages) -> InvalidRequest:
    """The 400 for marshmallow-shaped error messages, naming the first bad field."""
    param, message = first_error(messages) if isinstance(messages, dict) else (
        None, str(messages))
    return InvalidRequest(f"Invalid '{param}': {message}.", param=param)


def parse_month(value: str | None, today: date | None = None) -> tuple[str, date, date]:
    """Parse `YYYY-MM` (default: this UTC month) into (label, first day, first day after)."""
    if value is None or value == "":
        today = today or utcnow().date()
        year, month = today.year, today.month
    else:
        match = _MONTH.fullmatch(value)
        year, month = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        # The month after 9999-12 is past the last date Python (and the report) can hold.
        if not 1 <= month <= 12 or not (1970, 1) <= (year, month) <= (9999, 11):
            raise InvalidRequest("Invalid 'month': expected YYYY-MM from 1970-01 to 9999-11, "
                                 f"got {value[:20]!r}.", param="month", code="invalid_month")
    start = date(year, month, 1)
    end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return f"{year:04d}-{month:02d}", start, end


class Usd(fields.Field):
    """A USD amount sent as a JSON number or a decimal string; loads as an exact Decimal."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError("must be a number of US dollars")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("must be a finite number")
        try:
            # str() of a float is its shortest repr, so 25.1 stays 25.1, not 25.0999...
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValidationError("must be a number of US dollars") from None
        if not amount.is_finite():
            raise ValidationError("must be a finite number")
        return amount


class UnitsAsUsd(fields.Field):
    """Dump integer money units as a USD Decimal (shown as a JSON number)."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else units_to_usd(int(value))


class UtcDateTime(fields.Field):
    """A UTC moment: loads ISO 8601 (naive means UTC) and dumps ISO 8601 with a `Z`."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("must be an ISO 8601 date-time string")
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError("must be an ISO 8601 date-time string") from None
        if moment.tzinfo is not None:
            try:
                moment = moment.astimezone(UTC).replace(tzinfo=None)
            except OverflowError:  # 9999-12-31T23:00-01:00 is past the last UTC date
                raise ValidationError("must be a date-time from year 1 to 9999 in UTC"
                                      ) from None
        return moment

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.isoformat(timespec="seconds") + "Z"


MOST_ID = 2**31 - 1  # ids are INTEGER columns, and PostgreSQL's hold no more


def whole_number(text: str, most: int) -> int | None:
    """`text` as an int when it is the digits 0-9 alone and at most `most`, else None.

    Not `text.isdigit()` then `int(text)`: isdigit() is true for '²' or '①', which int()
    refuses, and int() refuses a string of more than 4,300 digits.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(most)):
        return None
    value = int(text)
    return value if value <= most else None


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; anything else is a 400 naming it."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = whole_number(raw, high)
    if value is None or value < low:
        raise InvalidRequest(f"Invalid '{name}': a whole number from {low} to {high}.",
                             param=name)
    return value


class StrictNumber(fields.Field):
    """A JSON number (not a string, not a boolean, not NaN)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("must be a finite number")
        return value


class StrictInteger(fields.Field):
    """A JSON integer."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be an integer")
        return value


class StrictBool(fields.Field):
    """A JSON boolean."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class StrictString(fields.Field):
    """A JSON string."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("must be a string")
        return value


class StoredString(StrictString):
    """A JSON string the gateway keeps or looks up in its database: with no NUL character,
    which PostgreSQL's text cannot hold (SQLite's can), so both databases answer alike."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in value:
            raise ValidationError("must not contain a NUL character (\\u0000)")
        return value


class OneOf(fields.Field):
    """A value of one of several JSON types."""

    def __init__(self, *types, **kwargs):
        super().__init__(**kwargs)
        self.types = types

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) and bool not in self.types:
            raise ValidationError("has the wrong type")
        if not isinstance(value, self.types):
            names = " or ".join(_TYPE_NAMES[t] for t in self.types)
            raise ValidationError(f"must be {names}")
        return value


class Vouched(fields.List):
    """A list of objects of a nested schema, each first offered to `quick`.

    `quick(item)` is a plain check of the common shape: it returns what the schema would
    load from an item it vouches for, or None. The list is loaded by the schema (which also
    says what is wrong) unless `quick` vouches for every item. marshmallow's nested load
    costs about 20 us an item, and a coding agent's conversation has hundreds of turns.
    """

    def __init__(self, schema: type[Schema], quick: Callable[[object], dict | None],
                 **kwargs):
        super().__init__(fields.Nested(schema), **kwargs)
        self.quick = quick

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is list:
            loaded = []
            for item in value:
                vouched = self.quick(item)
                if vouched is None:
                    break
                loaded.append(vouched)
            else:
                return loaded
        return super()._deserialize(value, attr, data, **kwargs)


_TYPE_NAMES = {str: "a string", list: "an array", dict: "an object", type(None): "null",
               int: "an integer", float: "a number", bool: "a boolean"}


def first_error(messages: dict, prefix: str = "") -> tuple[str, str]:
    """Flatten marshmallow's nested error dict to (param path, message) of the first error."""
    key, value = next(iter(messages.items()))
    if key == "_schema" and prefix:  # a nested object's own error (it is not an object)
        path = prefix
    elif isinstance(key, int):
        path = f"{prefix}[{key}]"
    else:
        path = f"{prefix}.{key}" if prefix else str(key)
    if isinstance(value, dict):
        return first_error(value, path)
    text = value[0] if isinstance(value, list) and value else str(value)
    return path, text.rstrip(".")
