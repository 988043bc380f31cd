"""The operator's rate limits for an account and for an account on one model: read, set,
clear. A change reaches every worker as an account change (silk.invalidation)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from silk import invalidation
from silk.account.models import Account, AccountLimit
from silk.errors import Conflict, InvalidRequest, NotFound
from silk.extensions import db

FIELDS = ("rpm_limit", "tpm_limit", "concurrency_limit")
# Each level's operator defaults, by field: what applies where no limit is set.
DEFAULTS = {
    "key": dict(zip(FIELDS, ("SILK_DEFAULT_RPM", "SILK_DEFAULT_TPM",
                             "SILK_DEFAULT_CONCURRENCY"), strict=True)),
    "account": dict(zip(FIELDS, ("SILK_ACCOUNT_RPM", "SILK_ACCOUNT_TPM",
                                 "SILK_ACCOUNT_CONCURRENCY"), strict=True)),
    "account_model": dict(zip(FIELDS, ("SILK_ACCOUNT_MODEL_RPM", "SILK_ACCOUNT_MODEL_TPM",
                                       "SILK_ACCOUNT_MODEL_CONCURRENCY"), strict=True)),
}


def _account(account_id: int) -> Account:
    account = db.session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.", param="account", code="account_not_found")
    return account


def list_limits(account_id: int) -> list[AccountLimit]:
    """The account's limits: the whole account's first, then each model's by name."""
    _account(account_id)
    return list(db.session.scalars(select(AccountLimit).where(
        AccountLimit.account_id == account_id).order_by(AccountLimit.model)))


def set_limits(account_id: int, changes: Mapping, *, model: str | None = None,
               known_models: Mapping | None = None) -> AccountLimit | None:
    """Set the limits in `changes` (a field to None clears it) for the account, or for the
    account on `model`; the other fields keep their value. Returns the limits now in force
    there, None when none is left (the operator's defaults apply)."""
    _account(account_id)
    if model is not None and known_models is not None and model not in known_models:
        raise InvalidRequest(f"Invalid 'model': unknown model '{model}'.", param="model",
                             code="model_not_found")
    for field, value in changes.items():
        if field not in FIELDS:
            raise InvalidRequest(f"Unknown limit '{field}'.", param=field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise InvalidRequest(f"Invalid '{field}': a whole number of at least 1, or null.",
                                 param=field)
    name = model or ""
    row = db.session.scalar(select(AccountLimit).where(
        AccountLimit.account_id == account_id, AccountLimit.model == name))
    if row is None:
        row = AccountLimit(account_id=account_id, model=name)
        db.session.add(row)
    for field in FIELDS:
        if field in changes:
            setattr(row, field, changes[field])
    kept: AccountLimit | None = row
    if all(getattr(row, field) is None for field in FIELDS):
        if row.id is not None:
            db.session.delete(row)
        else:
            db.session.expunge(row)
        kept = None
    try:
        db.session.commit()
    except IntegrityError:  # another change made the same row first
        db.session.rollback()
        raise Conflict("These limits were changed at the same moment; send the change "
                       "again.", param="model", code="limits_changed") from None
    invalidation.account_changed(account_id)  # keys cache their account's limits
    return kept


def defaults(config: Mapping) -> dict:
    """The operator's defaults for each level, by field (None: no limit)."""
    return {level: {field: config.get(name) for field, name in names.items()}
            for level, names in DEFAULTS.items()}
