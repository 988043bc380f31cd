"""Account input and output schemas: registration and keys in; accounts and keys out."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from silk.database import utcnow
from silk.metering import rules
from silk.pricing import units_to_usd, usd_to_units
from silk.validation import StoredString, StrictInteger, StrictString, UnitsAsUsd, Usd, UtcDateTime

_RATE = validate.Range(min=1, max=2**31 - 1)  # a rate limit; what an INTEGER column holds
MOST_CAP_USD = 10**9  # a cap above a billion dollars is a typo; it must also fit a BIGINT of units


class SpendCapsSchema(Schema):
    """`spend_caps`: USD per UTC day, per UTC month and in total; null is no cap."""

    day = Usd(allow_none=True, validate=validate.Range(0, MOST_CAP_USD))
    month = Usd(allow_none=True, validate=validate.Range(0, MOST_CAP_USD))
    total = Usd(allow_none=True, validate=validate.Range(0, MOST_CAP_USD))

    @post_load
    def _units(self, data, **kwargs):
        return {period: None if usd is None else usd_to_units(usd)
                for period, usd in data.items()}

_EMAIL = validate.Email(error="must be an email address")


class RegisterSchema(Schema):
    """POST /v1/register and the /register/ form."""

    email = StrictString(required=True, validate=[validate.Length(max=254), _EMAIL])
    invite_code = StoredString(validate=validate.Length(max=100))


class KeyCreateSchema(Schema):
    """POST /v1/keys: every limit a key can carry."""

    name = StoredString(load_default="default", validate=validate.Length(min=1, max=100))
    expires_at = UtcDateTime()
    expires_in_days = StrictInteger(validate=validate.Range(1, 3650))
    models = fields.List(StoredString(validate=validate.Length(min=1, max=128)),
                         validate=validate.Length(min=1, max=100))
    rpm_limit = StrictInteger(validate=_RATE)
    tpm_limit = StrictInteger(validate=_RATE)
    spend_caps = fields.Nested(SpendCapsSchema)
    role = StrictString(validate=validate.OneOf(["owner", "member"]))
    concurrency_limit = StrictInteger(validate=_RATE)

    @validates_schema
    def _expiry(self, data, **kwargs):
        if "expires_at" in data and "expires_in_days" in data:
            raise ValidationError("send expires_at or expires_in_days, not both", "expires_at")
        if "expires_at" in data and data["expires_at"] <= utcnow():
            raise ValidationError("must be in the future", "expires_at")


class KeyUpdateSchema(Schema):
    """PATCH /v1/keys/<id>: a new name, spend caps or rate limits (null removes one, absent
    keeps it)."""

    name = StoredString(validate=validate.Length(min=1, max=100))
    spend_caps = fields.Nested(SpendCapsSchema)
    rpm_limit = StrictInteger(allow_none=True, validate=_RATE)
    tpm_limit = StrictInteger(allow_none=True, validate=_RATE)
    concurrency_limit = StrictInteger(allow_none=True, validate=_RATE)


def key_status(key) -> str:
    """active, revoked or expired."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


class KeySchema(Schema):
    """An API key as lists show it: never the secret, only its prefix."""

    id = fields.Integer()
    object = fields.Constant("api_key")
    name = fields.String()
    prefix = fields.String()
    status = fields.Function(key_status)
    models = fields.List(fields.String(), attribute="allowed_models", allow_none=True)
    rpm_limit = fields.Integer(allow_none=True)
    tpm_limit = fields.Integer(allow_none=True)
    role = fields.String()
    spend_caps = fields.Function(lambda key: spend_caps(key))
    spend = fields.Function(lambda key: spend(key))
    concurrency_limit = fields.Integer(allow_none=True)
    created_at = UtcDateTime()
    expires_at = UtcDateTime()
    last_used_at = UtcDateTime()
    revoked_at = UtcDateTime()


def spend_caps(key) -> dict:
    """A key's caps in USD (null: no cap)."""
    return {period: None if units is None else _usd(units) for period, units in
            (("day", key.cap_day_units), ("month", key.cap_month_units),
             ("total", key.cap_total_units))}


def spend(key) -> dict:
    """What a key spent this UTC day, this UTC month and in all, and holds for requests
    running now (the caps count those too), in USD."""
    now = utcnow()
    return {"day": _usd(rules.spent_in(rules.PYTHON, key.spent_day or "",
                                       key.spent_day_units or 0, rules.day_of(now))),
            "month": _usd(rules.spent_in(rules.PYTHON, key.spent_month or "",
                                         key.spent_month_units or 0, rules.month_of(now))),
            "total": _usd(key.spent_total_units or 0), "held": _usd(key.held_units or 0)}


def _usd(units: int):
    return units_to_usd(units)


class AccountSchema(Schema):
    """An account as its owner and operators see it."""

    id = fields.Integer()
    object = fields.Constant("account")
    email = fields.String()
    tier = fields.String()
    is_admin = fields.Boolean()
    disabled = fields.Boolean()
    balance = UnitsAsUsd(attribute="balance_units")
    reserved = UnitsAsUsd(attribute="reserved_units")
    currency = fields.Constant("USD")
    created_at = UtcDateTime()


register_schema = RegisterSchema()
key_create_schema = KeyCreateSchema()
key_update_schema = KeyUpdateSchema()
key_schema = KeySchema()
account_schema = AccountSchema()

SHOWN_ONCE = "Store this key now: it is shown once and cannot be recovered."


def new_key_body(key) -> dict:
    """A key just made (`silk.account.service.NewKey`), with its secret: the one time
    anyone sees it, whether the owner or an operator made it."""
    return {**key_schema.dump(key.record), "key": key.secret, "message": SHOWN_ONCE}
