"""The account's alert settings, in (PUT /v1/account/alerts) and out."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from silk.validation import StrictString, UnitsAsUsd, Usd

_EMAIL = validate.Email(error="must be an email address")
# The validator lets a quoted local part hold control characters; some (a vertical tab, a
# form feed) read as line breaks to Python's e-mail headers, so no message could carry it.
_NO_CONTROL = validate.Regexp(r"^[^\x00-\x1f\x7f]*\Z",
                              error="must not contain a control character")


class _Threshold(Usd):
    def _deserialize(self, value, attr, data, **kwargs):
        amount = super()._deserialize(value, attr, data, **kwargs)
        if amount < 0 or amount > 10**9:
            raise ValidationError("must be between 0 and 1000000000 US dollars")
        return amount


class AlertSettingsUpdate(Schema):
    """What an owner may set; a field left out stays, null clears it."""

    webhook_url = StrictString(allow_none=True, validate=validate.Length(max=500))
    email = StrictString(allow_none=True, validate=[validate.Length(max=254), _EMAIL,
                                                    _NO_CONTROL])
    balance_threshold = _Threshold(allow_none=True)


class AlertSettings(Schema):
    """The settings as the API shows them: never the webhook's secret."""

    object = fields.Constant("alert_settings")
    webhook_url = fields.String(attribute="alert_webhook_url", allow_none=True)
    email = fields.String(attribute="alert_email", allow_none=True)
    balance_threshold = UnitsAsUsd(attribute="alert_balance_units", allow_none=True)


update_schema = AlertSettingsUpdate()
settings_schema = AlertSettings()

SECRET_SHOWN_ONCE = ("Keep webhook_secret now: it is shown only once. Verify each delivery's "
                     "Silk-Signature header with it (see the README).")
