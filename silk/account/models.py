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
    # Alerts the owner set (silk.alerts): where they go, and the balance under which the
    # settlement that crosses it writes one (None: the operator's SILK_ALERT_BALANCE_USD).
    alert_webhook_url: Mapped[str | None] = mapped_column(String(500), default=None)
    alert_webhook_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    alert_email: Mapped[str | None] = mapped_column(String(254), default=None)
    alert_balance_units: Mapped[int | None] = mapped_column(BigInteger, default=None)


class ApiKey(Model):
    """An API key, stored only as its SHA-256; `prefix` is what lists show.

    `role` is `owner` (manages the account) or `member` (uses the API, sees its own
    usage). The spend caps (units; None: no cap) bound what the key may spend per UTC day,
    per UTC month and in total. The counters are kept by metering alone, in the same
    statements that hold and charge the account: `held_units` is the sum of the key's open
    holds, `spent_*` what its settlements charged in the day and month named beside them
    and in all.

    `session_epoch` is the generation of the dashboard and console sessions signed in with
    the key: a session remembers the one it began in and is good only while it is still the
    key's, so a sign-out (and disabling the account) ends every copy of a session cookie.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("held_units >= 0", name="key_held_nonnegative"),
        CheckConstraint("role IN ('owner', 'member')", name="key_role"),
    )

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
    role: Mapped[str] = mapped_column(String(8), default="owner", server_default="owner")
    cap_day_units: Mapped[int | None] = mapped_column(BigInteger, default=None)
    cap_month_units: Mapped[int | None] = mapped_column(BigInteger, default=None)
    cap_total_units: Mapped[int | None] = mapped_column(BigInteger, default=None)
    held_units: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    spent_day: Mapped[str] = mapped_column(String(10), default="", server_default="")
    spent_day_units: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    spent_month: Mapped[str] = mapped_column(String(7), default="", server_default="")
    spent_month_units: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    spent_total_units: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    concurrency_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


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
