"""Shared input handling: read a JSON body, load it with a schema, and typed fields for money.

Every view loads its input through `load`, so every bad input becomes the one 400 envelope
naming the field, whatever the endpoint.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

import orjson
from flask import request
from marshmallow import Schema, ValidationError, fields

from silk.chat.schemas import first_error
from silk.errors import InvalidRequest
from silk.pricing import units_to_usd

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


def json_body() -> dict:
    """The request's JSON object; an empty body counts as `{}` so GET-like POSTs work."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def load(schema: Schema, data) -> dict:
    """Validate `data` with `schema`; a failure is a 400 naming the first bad field."""
    try:
        return schema.load(data)
    except ValidationError as err:
        param, message = first_error(err.messages) if isinstance(err.messages, dict) else (
            None, str(err.messages))
        raise InvalidRequest(f"Invalid '{param}': {message}.", param=param) from None


def parse_month(value: str | None, today: date | None = None) -> tuple[str, date, date]:
    """Parse `YYYY-MM` (default: this UTC month) into (label, first day, first day after)."""
    if value is None or value == "":
        today = today or datetime.now(UTC).date()
        year, month = today.year, today.month
    else:
        match = _MONTH.fullmatch(value)
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
            raise InvalidRequest(f"Invalid 'month': expected YYYY-MM, got {value[:20]!r}.",
                                 param="month", code="invalid_month")
        year, month = int(match.group(1)), int(match.group(2))
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
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.isoformat(timespec="seconds") + "Z"


class StrictInt(fields.Field):
    """A JSON integer (not a float, string or boolean)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be an integer")
        return value


class StrictStr(fields.Field):
    """A JSON string."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("must be a string")
        return value


class StrictBool(fields.Field):
    """A JSON boolean."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; anything else is a 400 naming it."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"Invalid '{name}': a whole number from {low} to {high}.",
                             param=name)
    return int(raw)
