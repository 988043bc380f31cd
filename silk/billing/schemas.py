"""Billing input and output schemas: top-up in; usage, billing and tier reports out."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from silk.billing.codes import code_state
from silk.validation import StoredString, StrictInteger, UnitsAsUsd, Usd, UtcDateTime


class TopupSchema(Schema):
    """POST /v1/topup: an amount (USD) or a redemption code; `account` is for admin keys."""

    amount = Usd()
    code = StoredString(validate=validate.Length(min=1, max=100))
    account = fields.Raw()
    note = StoredString(validate=validate.Length(max=200))

    @validates_schema
    def _account(self, data, **kwargs):
        ref = data.get("account")
        if ref is None:
            return
        if isinstance(ref, bool) or not isinstance(ref, int | str) or not str(ref).strip():
            raise ValidationError("must be an account id or email address", "account")


class TotalsSchema(Schema):
    """One slice of a month's usage."""

    requests = fields.Integer()
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()
    cost = UnitsAsUsd(attribute="cost_units")
    failed_requests = fields.Integer()


class ModelTotalsSchema(TotalsSchema):
    """Usage of one model."""

    model = fields.String(attribute="key")


class DayTotalsSchema(TotalsSchema):
    """Usage of one UTC day."""

    date = fields.String(attribute="key")


class UsageReportSchema(Schema):
    """GET /v1/usage."""

    object = fields.Constant("usage")
    month = fields.String()
    currency = fields.Constant("USD")
    requests = fields.Integer(attribute="totals.requests")
    failed_requests = fields.Integer(attribute="totals.failed_requests")
    prompt_tokens = fields.Integer(attribute="totals.prompt_tokens")
    completion_tokens = fields.Integer(attribute="totals.completion_tokens")
    total_tokens = fields.Integer(attribute="totals.total_tokens")
    cost = UnitsAsUsd(attribute="totals.cost_units")
    by_model = fields.List(fields.Nested(ModelTotalsSchema))
    by_day = fields.List(fields.Nested(DayTotalsSchema))


class _BillingUsageSchema(Schema):
    requests = fields.Integer()
    total_tokens = fields.Integer(data_key="totalTokens")
    failed_requests = fields.Integer(data_key="failedRequests")


class _CostsSchema(Schema):
    subtotal = UnitsAsUsd(attribute="subtotal_units")
    discount = UnitsAsUsd(attribute="discount_units")
    total = UnitsAsUsd(attribute="total_units")


class _QuotaSchema(Schema):
    free = fields.Integer()
    used = fields.Integer()
    remaining = fields.Integer()


class _ModelBillSchema(Schema):
    model = fields.String()
    requests = fields.Integer()
    failed_requests = fields.Integer(data_key="failedRequests")
    tokens = fields.Integer(attribute="total_tokens")
    subtotal = UnitsAsUsd(attribute="costs.subtotal_units")
    discount = UnitsAsUsd(attribute="costs.discount_units")
    total = UnitsAsUsd(attribute="costs.total_units")


class BillingSchema(Schema):
    """GET /v1/billing: the document's shape, with the model breakdown it describes."""

    month = fields.String()
    tier = fields.String()
    usage = fields.Nested(_BillingUsageSchema)
    costs = fields.Nested(_CostsSchema)
    quota = fields.Nested(_QuotaSchema)
    balance = UnitsAsUsd(attribute="balance_units")
    models = fields.List(fields.Nested(_ModelBillSchema))


class AccountUsageSchema(TotalsSchema):
    """Usage of one account (operator report)."""

    account = fields.String(attribute="key")


class MarginSchema(Schema):
    """One slice of the margin report: revenue, upstream cost and margin in USD."""

    key = fields.String()
    requests = fields.Integer()
    revenue = UnitsAsUsd(attribute="revenue_units")
    upstream_cost = UnitsAsUsd(attribute="upstream_cost_units")
    margin = UnitsAsUsd(attribute="margin_units")


class TierSchema(Schema):
    """A tier as operators and /v1/pricing show it."""

    name = fields.String()
    discount_percent = fields.Method("_percent")
    monthly_free_tokens = fields.Integer()

    def _percent(self, tier):
        return (tier.discount * 100).normalize()


class TierInputSchema(Schema):
    """PUT /v1/admin/tiers/<name>."""

    discount_percent = Usd(required=True, validate=validate.Range(0, 100))
    monthly_free_tokens = StrictInteger(required=True, validate=validate.Range(min=0))


class CodeIssueSchema(Schema):
    """POST /v1/admin/redemption-codes."""

    amount = Usd(required=True)
    count = StrictInteger(load_default=1)
    expires_at = UtcDateTime()
    note = StoredString(load_default="", validate=validate.Length(max=200))


class CodeSchema(Schema):
    """A redemption code in a list (never the secret)."""

    id = fields.Integer()
    prefix = fields.String()
    amount = UnitsAsUsd(attribute="amount_units")
    state = fields.Function(code_state)
    note = fields.String()
    created_at = UtcDateTime()
    expires_at = UtcDateTime()
    redeemed_at = UtcDateTime()
    redeemed_by = fields.Integer(allow_none=True)


topup_schema = TopupSchema()
usage_report_schema = UsageReportSchema()
billing_schema = BillingSchema()
account_usage_schema = AccountUsageSchema()
model_totals_schema = ModelTotalsSchema()
day_totals_schema = DayTotalsSchema()
margin_schema = MarginSchema()
tier_schema = TierSchema()
tier_input_schema = TierInputSchema()
code_issue_schema = CodeIssueSchema()
code_schema = CodeSchema()
