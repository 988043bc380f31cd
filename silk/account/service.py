"""Accounts and keys: create, list, revoke. Money moves only through metering.credit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from silk.account.keys import display_prefix, generate_key, hash_secret
from silk.account.models import Account, ApiKey
from silk.database import utcnow
from silk.errors import Conflict, InvalidRequest, NotFound
from silk.extensions import db
from silk.metering.service import credit


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
    db.session.flush()
    key = _new_key(account.id, name="default")
    if credit_units:
        credit(db.session.connection(), account.id, credit_units, kind="topup",
               note="initial credit", actor=actor)
    db.session.commit()
    return account, key


def _new_key(account_id: int, *, name: str, expires_at: datetime | None = None,
             allowed_models: list[str] | None = None, rpm_limit: int | None = None,
             tpm_limit: int | None = None) -> NewKey:
    secret = generate_key()
    record = ApiKey(account_id=account_id, key_hash=hash_secret(secret),
                    prefix=display_prefix(secret), name=name[:100], expires_at=expires_at,
                    allowed_models=allowed_models or None, rpm_limit=rpm_limit,
                    tpm_limit=tpm_limit)
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
        raise NotFound("API key not found.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        db.session.commit()
    return key


def find_account(ref: str | int) -> Account:
    """Find an account by id or email."""
    if isinstance(ref, int) or str(ref).isdigit():
        account = db.session.get(Account, int(ref))
    else:
        account = db.session.scalar(select(Account).where(Account.email == str(ref).lower()))
    if account is None:
        raise NotFound(f"No account {ref}.")
    return account
