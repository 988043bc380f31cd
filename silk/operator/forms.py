"""The console's forms read into the admin API's own requests, checked by its schemas.

The key form is a table of fields (KEY_FIELDS): a key option the API gains (a spend cap, a
role, a concurrency limit) is one more entry here and, if it is a new kind, one more branch
in `_value`; the template draws whatever the table lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from silk.account.schemas import key_create_schema
from silk.errors import InvalidRequest
from silk.validation import load

_WHOLE = re.compile(r"[0-9]{1,12}")
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?")
_GROUPED = re.compile(r"[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?")  # 1,234.50: thousands


@dataclass(frozen=True)
class KeyField:
    """One option of a new key: the API's field name, its label, and how the form asks it."""

    name: str
    label: str
    kind: str  # text, whole, moment, models, choice or caps
    hint: str = ""
    choices: tuple[str, ...] = ()  # a choice's values; the periods of caps (one input each)


KEY_FIELDS: tuple[KeyField, ...] = (
    KeyField("name", "Name", "text", "what the key is for"),
    KeyField("models", "Models", "models", "none chosen: every model"),
    KeyField("rpm_limit", "Requests per minute", "whole", "empty: no limit"),
    KeyField("tpm_limit", "Tokens per minute", "whole", "empty: no limit"),
    KeyField("concurrency_limit", "Requests at once", "whole", "empty: no limit"),
    KeyField("expires_in_days", "Expires in (days)", "whole", "or an exact time below"),
    KeyField("expires_at", "Expires at (UTC)", "moment", "e.g. 2026-12-31T23:59"),
    KeyField("role", "Role", "choice", "empty: owner (manages keys); a member key uses the "
             "API and sees only itself", ("owner", "member")),
    KeyField("spend_caps", "Spend caps (USD)", "caps", "per UTC day, per UTC month, in "
             "total; empty: no cap", ("day", "month", "total")),
)


def _value(field: KeyField, form) -> object | None:
    """One field's value as the API's JSON would carry it, or None when left empty."""
    if field.kind == "models":
        return [m for m in form.getlist(field.name) if m] or None
    if field.kind == "caps":  # inputs spend_caps.day, ...: USD amounts the schema checks
        caps = {period: raw[:40] for period in field.choices
                if (raw := form.get(f"{field.name}.{period}", "").strip())}
        return caps or None
    raw = form.get(field.name, "").strip()
    if not raw:
        return None
    if field.kind == "whole":
        if not _WHOLE.fullmatch(raw):
            raise InvalidRequest(f"Invalid '{field.name}': must be a whole number.",
                                 param=field.name)
        return int(raw)
    if field.kind == "moment" and not _MOMENT.fullmatch(raw):
        raise InvalidRequest(f"Invalid '{field.name}': a date and time, e.g. "
                             "2026-12-31T23:59 (UTC).", param=field.name)
    if field.kind == "choice" and raw not in field.choices:
        raise InvalidRequest(f"Invalid '{field.name}': one of {', '.join(field.choices)}.",
                             param=field.name)
    return raw[:100] if field.kind == "text" else raw


def key_request(form) -> dict:
    """The key form as the body of POST /v1/admin/accounts/<id>/keys, loaded by its schema."""
    data = {}
    for field in KEY_FIELDS:
        value = _value(field, form)
        if value is not None:
            data[field.name] = value
    data.setdefault("name", "console")
    return load(key_create_schema, data)


def whole(form: Mapping, name: str, default: int | None = None) -> int | None:
    """A whole-number form field, or `default` when empty."""
    raw = str(form.get(name, "")).strip()
    if not raw:
        return default
    if not _WHOLE.fullmatch(raw):
        raise InvalidRequest(f"Invalid '{name}': must be a whole number.", param=name)
    return int(raw)


def amount(form: Mapping, name: str = "amount") -> Decimal:
    """A USD amount typed into a form (may be signed for an adjustment); a comma only as a
    thousands separator, since 1,50 means one and a half in much of the world."""
    raw = str(form.get(name, "")).strip().replace("$", "")
    grouped = "," in raw and _GROUPED.fullmatch(raw)
    try:
        value = Decimal(raw.replace(",", "") if grouped else raw)
    except InvalidOperation:
        raise InvalidRequest(f"Invalid '{name}': a USD amount such as 12.50.",
                             param=name) from None
    if not value.is_finite() or len(raw) > 40:
        raise InvalidRequest(f"Invalid '{name}': a USD amount such as 12.50.", param=name)
    return value


def moment(form: Mapping, name: str) -> str | None:
    """A UTC date-time typed into a form, as the API's ISO text, or None when empty."""
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    if not _MOMENT.fullmatch(raw):
        raise InvalidRequest(f"Invalid '{name}': a date and time, e.g. 2026-12-31T23:59 (UTC).",
                             param=name)
    return raw
