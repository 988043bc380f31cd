"""Admin input and output schemas: accounts, rate limits, credits, invites and the ledger."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from silk.validation import (
    StoredString,
    StrictBool,
    StrictInteger,
    StrictString,
    UnitsAsUsd,
    Usd,
    UtcDateTime,
)

_TIER = validate.Length(min=1, max=32)
_LIMIT = validate.Range(min=1, max=2**31 - 1)  # what an INTEGER column holds


class AccountCreateSchema(Schema):
    """POST /v1/admin/accounts."""

    email = StrictString(required=True, validate=[validate.Length(max=254),
                                               validate.Email(error="must be an email address")])
    tier = StrictString(validate=_TIER)
    credit = Usd()
    admin = StrictBool(load_default=False)


class AccountPatchSchema(Schema):
    """PATCH /v1/admin/accounts/<id>: a new tier, or disable/enable."""

    tier = StrictString(validate=_TIER)
    disabled = StrictBool()


class LimitsPatchSchema(Schema):
    """PATCH /v1/admin/accounts/<id>/limits: the account's (or, with `model`, the account's
    on that model) rate limits; a field sent as null clears it, one left out is kept."""

    model = StoredString(validate=validate.Length(min=1, max=128))
    rpm_limit = StrictInteger(allow_none=True, validate=_LIMIT)
    tpm_limit = StrictInteger(allow_none=True, validate=_LIMIT)
    concurrency_limit = StrictInteger(allow_none=True, validate=_LIMIT)


class AccountLimitSchema(Schema):
    """The rate limits set for an account (model null) or an account on one model."""

    object = fields.Constant("account_limits")
    model = fields.Function(lambda row: row.model or None)
    rpm_limit = fields.Integer(allow_none=True)
    tpm_limit = fields.Integer(allow_none=True)
    concurrency_limit = fields.Integer(allow_none=True)
    updated_at = UtcDateTime()


class CreditSchema(Schema):
    """POST /v1/admin/accounts/<id>/credits: a top-up, refund or (signed) adjustment."""

    amount = Usd(required=True)
    kind = StrictString(load_default="topup")
    note = StoredString(load_default="", validate=validate.Length(max=200))


class InviteIssueSchema(Schema):
    """POST /v1/admin/invite-codes."""

    count = StrictInteger(load_default=1)
    uses = StrictInteger(load_default=1)
    tier = StrictString(validate=_TIER)
    expires_at = UtcDateTime()
    note = StoredString(load_default="", validate=validate.Length(max=200))


class InviteSchema(Schema):
    """An invite code in a list (never the code itself)."""

    id = fields.Integer()
    prefix = fields.String()
    uses_left = fields.Integer()
    tier = fields.String(allow_none=True)
    note = fields.String()
    created_at = UtcDateTime()
    expires_at = UtcDateTime()


class LedgerEntrySchema(Schema):
    """One ledger entry: the change and the balance after it."""

    id = fields.Integer()
    kind = fields.String()
    amount = UnitsAsUsd(attribute="amount_units")
    balance_after = UnitsAsUsd(attribute="balance_after_units")
    request_id = fields.String(allow_none=True)
    note = fields.String()
    actor = fields.String()
    created_at = UtcDateTime()


account_create_schema = AccountCreateSchema()
account_patch_schema = AccountPatchSchema()
credit_schema = CreditSchema()
limits_patch_schema = LimitsPatchSchema()
account_limit_schema = AccountLimitSchema()
invite_issue_schema = InviteIssueSchema()
invite_schema = InviteSchema()
ledger_entry_schema = LedgerEntrySchema()
