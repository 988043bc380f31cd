"""Accounts and keys: create, list, revoke. Money moves only through metering.credit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from silk import invalidation
from silk.account.keys import display_prefix, generate_key, hash_secret
from silk.account.models import Account, ApiKey
from silk.database import utcnow
from silk.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from silk.extensions import db
from silk.metering.service import credit
from silk.pricing import units_to_usd
from silk.validation import MOST_ID, whole_number


@dataclass(frozen=True)
class NewKey:
    """A key just made: the secret is shown this once and never stored."""

    record: ApiKey
    secret: str


def create_account(email: str, *, tier: str, known_tiers, credit_units: int = 0,
                   is_admin: bool = False, actor: str = "cli") -> tuple[Account, NewKey]:
    """Create an account with its first key, crediting it through the ledger."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise InvalidRequest("A valid email address is required.", param="email")
    if tier not in known_tiers:
        raise InvalidRequest(f"Unknown tier '{tier}'.", param="tier")
    if credit_units < 0:
        raise InvalidRequest("Credit must not be negative.", param="credit")
    if db.session.scalar(select(Account.id).where(Account.email == email)) is not None:
        raise Conflict(f"An account for {email} already exists.", param="email")
    account = Account(email=email, tier=tier, is_admin=is_admin, balance_units=0,
                      reserved_units=0, quota_used=0, quota_held=0, quota_month="")
    db.session.add(account)
    try:
        db.session.flush()
    except IntegrityError:
        # Two sign-ups with one email raced past the check above; the unique index decides.
        db.session.rollback()
        raise Conflict(f"An account for {email} already exists.", param="email") from None
    key = _new_key(account.id, name="default")
    if credit_units:
        credit(db.session.connection(), account.id, credit_units, kind="topup",
               note="initial credit", actor=actor)
    db.session.commit()
    if credit_units:
        db.session.refresh(account)  # the credit changed the row behind the ORM's back
    return account, key


def _new_key(account_id: int, *, name: str, expires_at: datetime | None = None,
             allowed_models: list[str] | None = None, rpm_limit: int | None = None,
             tpm_limit: int | None = None, role: str = "owner",
             cap_day_units: int | None = None, cap_month_units: int | None = None,
             cap_total_units: int | None = None,
             concurrency_limit: int | None = None) -> NewKey:
    secret = generate_key()
    record = ApiKey(account_id=account_id, key_hash=hash_secret(secret),
                    prefix=display_prefix(secret), name=name[:100], expires_at=expires_at,
                    allowed_models=allowed_models or None, rpm_limit=rpm_limit,
                    tpm_limit=tpm_limit, role=role, cap_day_units=cap_day_units,
                    cap_month_units=cap_month_units, cap_total_units=cap_total_units,
                    held_units=0, spent_day="", spent_day_units=0, spent_month="",
                    spent_month_units=0, spent_total_units=0,
                    concurrency_limit=concurrency_limit)
    db.session.add(record)
    db.session.flush()
    return NewKey(record, secret)


def create_key(account_id: int, **options) -> NewKey:
    """Make another key for an account."""
    if db.session.get(Account, account_id) is None:
        raise NotFound("Account not found.")
    key = _new_key(account_id, **options)
    db.session.commit()
    return key


def list_keys(account_id: int | None = None) -> list[ApiKey]:
    """Keys of one account (or all), newest first."""
    query = select(ApiKey).order_by(ApiKey.id.desc())
    if account_id is not None:
        query = query.where(ApiKey.account_id == account_id)
    return list(db.session.scalars(query))


def revoke_key(key_id: int, account_id: int | None = None) -> ApiKey:
    """Revoke a key (of `account_id`, when given); revoking twice is harmless."""
    key = db.session.get(ApiKey, key_id)
    if key is None or (account_id is not None and key.account_id != account_id):
        raise NotFound("API key not found.", param="id", code="key_not_found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        db.session.commit()
    invalidation.key_changed(key.key_hash)
    return key


def find_account(ref: str | int) -> Account:
    """Find an account by id or email (digits past any id are nobody's address either)."""
    number = ref if isinstance(ref, int) else whole_number(str(ref), MOST_ID)
    if number is not None:
        account = db.session.get(Account, number)
    elif "\x00" in str(ref):  # no address holds one, and PostgreSQL's text refuses it
        account = None
    else:
        account = db.session.scalar(
            select(Account).where(Account.email == str(ref).strip().lower()))
    if account is None:
        raise NotFound(f"No account {ref}.", param="account", code="account_not_found")
    return account


def list_accounts(*, email_contains: str | None = None, limit: int = 100,
                  offset: int = 0) -> list[Account]:
    """Accounts in id order, optionally those whose email contains a string."""
    if email_contains and "\x00" in email_contains:
        # No address holds a NUL; PostgreSQL refuses one, SQLite's LIKE stops at it.
        return []
    query = select(Account).order_by(Account.id).limit(limit).offset(offset)
    if email_contains:
        query = query.where(Account.email.contains(email_contains.strip().lower(),
                                                   autoescape=True))
    return list(db.session.scalars(query))


# Ends the sessions signed in with the keys it is narrowed to (see ApiKey.session_epoch).
_NEXT_SESSION_EPOCH = update(ApiKey).values(session_epoch=ApiKey.session_epoch + 1)


def update_account(account_id: int, *, known_tiers, tier: str | None = None,
                   disabled: bool | None = None) -> Account:
    """Change an account's tier (applies from its next request) or disable/enable it."""
    account = db.session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.", param="account", code="account_not_found")
    if tier is not None:
        if tier not in known_tiers:
            raise InvalidRequest(f"Unknown tier '{tier}'; known: {', '.join(sorted(known_tiers))}.",
                                 param="tier", code="unknown_tier")
        account.tier = tier
    if disabled is not None:
        account.disabled = disabled
    if disabled:  # its sessions end for good, not only while it stays disabled
        db.session.execute(_NEXT_SESSION_EPOCH.where(ApiKey.account_id == account_id))
    db.session.commit()
    invalidation.account_changed(account_id)
    return account


def end_sessions(key_id: int) -> None:
    """End every dashboard and console session signed in with the key (a sign-out), so
    that a copy of the session's cookie is refused too."""
    db.session.execute(_NEXT_SESSION_EPOCH.where(ApiKey.id == key_id))
    db.session.commit()


CAPS = ("cap_day_units", "cap_month_units", "cap_total_units")
# The limits a key may narrow but never widen: None is no limit, the widest of all.
_NARROWING = ("expires_at", "rpm_limit", "tpm_limit", "concurrency_limit", *CAPS)


@dataclass(frozen=True)
class Scope:
    """What a key may do: its models, rates, lifetime and spend caps (None: no limit)."""

    allowed_models: frozenset[str] | None
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: datetime | None
    cap_day_units: int | None = None
    cap_month_units: int | None = None
    cap_total_units: int | None = None
    concurrency_limit: int | None = None

    @classmethod
    def of(cls, key: ApiKey) -> Scope:
        """The scope of a stored key."""
        models = key.allowed_models
        return cls(frozenset(models) if models else None, key.rpm_limit, key.tpm_limit,
                   key.expires_at, key.cap_day_units, key.cap_month_units, key.cap_total_units,
                   key.concurrency_limit)

    def exceeded_by(self, other: Scope) -> str | None:
        """The first field in which `other` is wider than this scope, else None."""
        if self.allowed_models is not None and (
                other.allowed_models is None or not other.allowed_models <= self.allowed_models):
            return "models"
        for field in _NARROWING:
            own, theirs = getattr(self, field), getattr(other, field)
            if own is not None and (theirs is None or theirs > own):
                return field
        return None


UNLIMITED = Scope(None, None, None, None)  # what no key can be wider than


def admin_limit(key: ApiKey) -> str | None:
    """The first limit of an admin account's owner key (its API name, e.g. `rpm_limit`), or
    None: an admin key may make any key, so only a key no key is wider than holds that
    power, or a key with limits would make a wider key than itself."""
    limit = Scope.of(key).exceeded_by(UNLIMITED)
    return None if limit is None else api_name(limit)


def key_usable(key: ApiKey | None) -> bool:
    """True while a key is neither revoked nor expired and its account is enabled."""
    if key is None or key.revoked_at is not None:
        return False
    if key.expires_at is not None and key.expires_at <= utcnow():
        return False
    account = db.session.get(Account, key.account_id)
    return account is not None and not account.disabled


def session_key(key_id: int, account_id: int, session_epoch: object) -> ApiKey | None:
    """Key `key_id` of a dashboard session if it belongs to `account_id`, is usable and its
    sessions were not ended since the session began (at `session_epoch`), else None."""
    key = db.session.get(ApiKey, key_id)
    if key is None or key.account_id != account_id or not key_usable(key):
        return None
    return key if session_epoch == key.session_epoch else None


def acting_key(key_id: int, account_id: int) -> ApiKey:
    """The key a caller acts with, read now (not from the key cache): 401 once it is revoked,
    expired or its account disabled, however recently it was checked."""
    key = db.session.get(ApiKey, key_id)
    if key is not None:
        db.session.refresh(key)  # what the database says now, not the session's copy
    if key is None or key.account_id != account_id or not key_usable(key):
        raise AuthenticationFailed("This API key is no longer valid (revoked, expired or "
                                   "its account disabled).")
    return key


def owner_key(key_id: int, account_id: int) -> ApiKey:
    """The caller's key, read now, if it is an owner key; 403 (`owner_key_required`) for a
    member key, which may not manage keys."""
    key = acting_key(key_id, account_id)
    if key.role != "owner":
        raise PermissionDenied("A member key may not manage the account's keys; use an "
                               "owner key.", code="owner_key_required")
    return key


def create_key_as(key_id: int, account_id: int, data: Mapping,
                  known_models: Mapping) -> NewKey:
    """Make a key for the caller's account, never wider than the caller's key (API, dashboard);
    only an owner key without spend caps may."""
    creator = owner_key(key_id, account_id)
    capped = [field for field in CAPS if getattr(creator, field) is not None]
    if capped:
        # A key counts its own spend from zero: a key made by a capped key would be that
        # budget over again, and the caps would bound nothing.
        raise PermissionDenied(
            "A key with a spend cap may not create keys: a new key counts its own spend from "
            "zero, so it would add to what this key may spend. Ask an owner key without "
            "caps.", param=api_name(capped[0]), code="key_scope_exceeded")
    options = key_options(data, known_models, limit_to=Scope.of(creator))
    return create_key(account_id, **options)


def revoke_key_as(key_id: int, account_id: int, target_id: int) -> ApiKey:
    """Revoke one of the caller's account's keys, unless it is wider than the caller's key;
    only an owner key may."""
    creator = owner_key(key_id, account_id)
    target = db.session.get(ApiKey, target_id)
    if target is None or target.account_id != account_id:
        raise NotFound("API key not found.", param="id", code="key_not_found")
    if target.revoked_at is None and Scope.of(creator).exceeded_by(Scope.of(target)):
        raise PermissionDenied("This key may not revoke a key with wider access than its own "
                               "(more models, higher rates or a later expiry).", param="id",
                               code="key_scope_exceeded")
    return revoke_key(target_id, account_id=account_id)


def key_options(data: Mapping, known_models, limit_to: Scope | None = None) -> dict:
    """Turn a key request into create_key options, never wider than the `limit_to` scope.

    A limit the request leaves out is taken from `limit_to`; a wider one is a 403
    (`key_scope_exceeded`) naming the field.
    """
    models = list(dict.fromkeys(data["models"])) if data.get("models") else None
    unknown = [m for m in models or () if m not in known_models]
    if unknown:
        raise InvalidRequest(f"Invalid 'models': unknown model '{unknown[0]}'.", param="models",
                             code="model_not_found")
    expires_at = data.get("expires_at")
    if "expires_in_days" in data:
        expires_at = utcnow() + timedelta(days=data["expires_in_days"])
    caps = data.get("spend_caps") or {}
    options = {"name": data.get("name", "default"), "expires_at": expires_at,
               "allowed_models": models, "rpm_limit": data.get("rpm_limit"),
               "tpm_limit": data.get("tpm_limit"), "role": data.get("role", "owner"),
               "concurrency_limit": data.get("concurrency_limit"),
               **{field: caps.get(period) for field, period in zip(CAPS, PERIODS, strict=True)}}
    if limit_to is None:
        return options
    if models is None and limit_to.allowed_models is not None:
        options["allowed_models"] = sorted(limit_to.allowed_models)
    for field in _NARROWING:
        if options[field] is None:
            options[field] = getattr(limit_to, field)
    _refuse_wider(limit_to, Scope(
        frozenset(options["allowed_models"]) if options["allowed_models"] else None,
        options["rpm_limit"], options["tpm_limit"], options["expires_at"],
        **{field: options[field] for field in (*CAPS, "concurrency_limit")}))
    return options


def _refuse_wider(limit_to: Scope, scope: Scope) -> None:
    """403 `key_scope_exceeded` naming the first field in which `scope` is wider than the
    scope of the key setting it."""
    wider = limit_to.exceeded_by(scope)
    if wider is None:
        return
    if wider == "models":
        raise PermissionDenied("A key may not use models the key setting it may not use.",
                               param="models", code="key_scope_exceeded")
    if wider in CAPS:
        period = PERIODS[CAPS.index(wider)]
        raise PermissionDenied(f"A key's {period} spend cap may not exceed the {period} cap "
                               f"of the key setting it (${units_to_usd(getattr(limit_to, wider))})."
                               , param=api_name(wider), code="key_scope_exceeded")
    raise PermissionDenied(f"A key's {wider} may not exceed that of the key setting it.",
                           param=wider, code="key_scope_exceeded")


PERIODS = ("day", "month", "total")  # the spend caps' names in the API, as CAPS orders them


def api_name(field: str) -> str:
    """A key limit's name in the API: `spend_caps.day` for `cap_day_units`."""
    return f"spend_caps.{PERIODS[CAPS.index(field)]}" if field in CAPS else field


RATES = ("rpm_limit", "tpm_limit", "concurrency_limit")  # a key's rate limits, as named


def update_key(target_id: int, data: Mapping, account_id: int | None = None,
               limit_to: Scope | None = None) -> ApiKey:
    """Rename a key or change its spend caps or rate limits (one sent as null is removed,
    one left out stays); with `limit_to`, none may end up above it (403
    `key_scope_exceeded`)."""
    key = db.session.get(ApiKey, target_id)
    if key is None or (account_id is not None and key.account_id != account_id):
        raise NotFound("API key not found.", param="id", code="key_not_found")
    caps = {field: getattr(key, field) for field in CAPS}
    for period, units in (data.get("spend_caps") or {}).items():
        caps[CAPS[PERIODS.index(period)]] = units
    rates = {field: data.get(field, getattr(key, field)) for field in RATES}
    if limit_to is not None:  # models and lifetime do not change here: only these count
        _refuse_wider(limit_to, Scope(limit_to.allowed_models, rates["rpm_limit"],
                                      rates["tpm_limit"], limit_to.expires_at,
                                      concurrency_limit=rates["concurrency_limit"], **caps))
    # Only the name, caps and limits change: the counters belong to metering, whose
    # statements may be updating them now.
    db.session.execute(update(ApiKey).where(ApiKey.id == target_id).values(
        name=str(data.get("name", key.name))[:100], **caps, **rates))
    db.session.commit()
    db.session.refresh(key)
    invalidation.key_changed(key.key_hash)
    return key


def update_key_as(key_id: int, account_id: int, target_id: int, data: Mapping) -> ApiKey:
    """Change one of the caller's account's keys (owner keys only), caps never above the
    caller's."""
    updater = owner_key(key_id, account_id)
    target = db.session.get(ApiKey, target_id)
    if target is None or target.account_id != account_id:
        raise NotFound("API key not found.", param="id", code="key_not_found")
    # As for revoking: capping or throttling a wider key is revoking it in all but name,
    # and one its holder could not undo (its own caps would then bound what it may set).
    if Scope.of(updater).exceeded_by(Scope.of(target)):
        raise PermissionDenied("This key may not change a key with wider access than its "
                               "own (more models, higher rates or caps, or a later expiry).",
                               param="id", code="key_scope_exceeded")
    if target_id != updater.id:
        _refuse_raised_caps(updater, target, data.get("spend_caps") or {})
    return update_key(target_id, data, account_id=account_id, limit_to=Scope.of(updater))


def _refuse_raised_caps(updater: ApiKey, target: ApiKey, caps: Mapping) -> None:
    """A key with a spend cap may lower another key's caps, never raise or remove one: each
    key counts its own spend, so raising another's would let the two spend more together
    (as a key it made would), and the caps would bound nothing."""
    if all(getattr(updater, field) is None for field in CAPS):
        return
    for period, units in caps.items():
        field = CAPS[PERIODS.index(period)]
        before = getattr(target, field)
        if before is not None and (units is None or units > before):
            raise PermissionDenied(
                "A key with a spend cap may not raise or remove another key's caps (each key "
                "counts its own spend, so the two could spend more together); it may lower "
                "them. Ask an owner key without caps.", param=api_name(field),
                code="key_scope_exceeded")
