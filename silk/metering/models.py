"""The money tables: ledger entries, open reservations and one usage record per request."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from silk.database import utcnow
from silk.extensions import Model


class LedgerEntry(Model):
    """One change of an account's balance and the balance after it; they sum to the balance."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # topup, redeem, charge, refund, adjustment
    amount_units: Mapped[int] = mapped_column(BigInteger)
    balance_after_units: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    note: Mapped[str] = mapped_column(String(200), default="")
    actor: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Reservation(Model):
    """A worst-case hold on a balance (and free quota) while a request runs."""

    __tablename__ = "reservations"
    # Rows of settled holds are deleted (silk.metering.store.claim_sql), so SQLite must
    # never give a deleted row's id to a new hold: a settlement that comes again, a late
    # lease renewal or an alert's id (silk.metering.outbox) would name someone else's.
    # The table holds only what is in flight, and its readers read it whole or by id: no
    # secondary index, which every hold and settlement would write.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    key_id: Mapped[int | None] = mapped_column(Integer, default=None)
    request_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    hold_units: Mapped[int] = mapped_column(BigInteger)
    quota_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_estimate: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(8), default="open")  # open, swept
    worker: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(default=None)  # when swept


class UsageRecord(Model):
    """What one request used and cost, however it ended."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_account_day", "account_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    key_id: Mapped[int | None] = mapped_column(Integer, default=None)
    model: Mapped[str] = mapped_column(String(64))
    upstream_model: Mapped[str] = mapped_column(String(128), default="")
    provider: Mapped[str] = mapped_column(String(32), default="")
    stream: Mapped[bool] = mapped_column(default=False)
    # The catalogue route that served (a model may have several); '' before one answered.
    route: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # The public API the request came through (chat, messages, responses); '' when swept.
    surface: Mapped[str] = mapped_column(String(16), default="", server_default="")
    status: Mapped[str] = mapped_column(String(24))  # ok, cut, client_closed, upstream_error...
    http_status: Mapped[int] = mapped_column(Integer, default=200)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_hit_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    free_tokens: Mapped[int] = mapped_column(Integer, default=0)
    subtotal_units: Mapped[int] = mapped_column(BigInteger, default=0)
    discount_units: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_units: Mapped[int] = mapped_column(BigInteger, default=0)
    written_off_units: Mapped[int] = mapped_column(BigInteger, default=0)
    # What the provider bills the operator for this request, at its route's upstream price.
    upstream_cost_units: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    estimated: Mapped[bool] = mapped_column(default=False)
    latency_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    day: Mapped[date] = mapped_column(default=lambda: utcnow().date())
