"""Account input and output schemas: registration and keys in; accounts and keys out."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from silk.database import utcnow
from silk.validation import StrictInteger, StrictString, UnitsAsUsd, UtcDateTime

_EMAIL = validate.Email(error="must be an email address")


class RegisterSchema(Schema):
    """POST /v1/register and the /register/ form."""

    email = StrictString(required=True, validate=[validate.Length(max=254), _EMAIL])
    invite_code = StrictString(validate=validate.Length(max=100))


class KeyCreateSchema(Schema):
    """POST /v1/keys: every limit a key can carry."""

    name = StrictString(load_default="default", validate=validate.Length(min=1, max=100))
    expires_at = UtcDateTime()
    expires_in_days = StrictInteger(validate=validate.Range(1, 3650))
    models = fields.List(StrictString(validate=validate.Length(min=1, max=128)),
                         validate=validate.Length(min=1, max=100))
    rpm_limit = StrictInteger(validate=validate.Range(min=1))
    tpm_limit = StrictInteger(validate=validate.Range(min=1))
    concurrency_limit = StrictInteger(validate=validate.Range(min=1))

    @validates_schema
    def _expiry(self, data, **kwargs):
        if "expires_at" in data and "expires_in_days" in data:
            raise ValidationError("send expires_at or expires_in_days, not both", "expires_at")
        if "expires_at" in data and data["expires_at"] <= utcnow():
            raise ValidationError("must be in the future", "expires_at")


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
    concurrency_limit = fields.Integer(allow_none=True)
    created_at = UtcDateTime()
    expires_at = UtcDateTime()
    last_used_at = UtcDateTime()
    revoked_at = UtcDateTime()


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
key_schema = KeySchema()
account_schema = AccountSchema()

SHOWN_ONCE = "Store this key now: it is shown once and cannot be recovered."


def new_key_body(key) -> dict:
    """A key just made (`silk.account.service.NewKey`), with its secret: the one time
    anyone sees it, whether the owner or an operator made it."""
    return {**key_schema.dump(key.record), "key": key.secret, "message": SHOWN_ONCE}
