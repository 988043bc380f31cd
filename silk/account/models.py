"""Accounts, their API keys and rate limits, and registration invite codes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from silk.database import utcnow
from silk.extensions import Model


class Account(Model):
    """A customer: a tier, a balance in units, and the month's free-quota counters.

    `reserved_units` is the sum of open holds; what a request may spend is
    `balance_units - reserved_units`. The check constraints make the database itself refuse
    a negative balance or a hold the balance does not cover.
    """

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("balance_units >= 0", name="balance_nonnegative"),
        CheckConstraint("reserved_units >= 0", name="reserved_nonnegative"),
        CheckConstraint("reserved_units <= balance_units", name="reserved_covered"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    tier: Mapped[str] = mapped_column(String(32), default="free")
    is_admin: Mapped[bool] = mapped_column(default=False)
    disabled: Mapped[bool] = mapped_column(default=False)
    balance_units: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_units: Mapped[int] = mapped_column(BigInteger, default=0)
    quota_month: Mapped[str] = mapped_column(String(7), default="")
    quota_used: Mapped[int] = mapped_column(BigInteger, default=0)
    quota_held: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Model):
    """An API key, stored only as its SHA-256; `prefix` is what lists show."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="default")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    allowed_models: Mapped[list | None] = mapped_column(JSON, default=None)
    rpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer, default=None)


class AccountLimit(Model):
    """The operator's rate limits for one account (`model` "") or one account on one model.

    A limit left None falls back to the operator's default for its level (silk.defaults).
    """

    __tablename__ = "account_limits"
    __table_args__ = (UniqueConstraint("account_id", "model"),)  # also the lookup index

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    model: Mapped[str] = mapped_column(String(128), default="")
    rpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InviteCode(Model):
    """A registration invite an operator issued; stored hashed, usable `uses_left` times."""

    __tablename__ = "invite_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    uses_left: Mapped[int] = mapped_column(Integer, default=1)
    tier: Mapped[str | None] = mapped_column(String(32), default=None)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
