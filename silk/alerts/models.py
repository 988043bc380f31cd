"""The alert outbox: one row per event, written in the transaction of its cause."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from silk.database import utcnow
from silk.extensions import Model


class AlertEvent(Model):
    """An event to deliver at least once to each of its recipients.

    `event_id` is unique and made from the cause (the settlement, the key and its expiry,
    the route and its rest), so a cause written twice is one event, and receivers drop a
    repeated delivery by it. `recipients` is fixed when the event is first claimed;
    `pending` lists those not yet reached. A worker claims an event until `claim_until`
    (a lease), so a worker that dies mid-delivery leaves it to another once that passes.
    """

    __tablename__ = "alert_outbox"
    __table_args__ = (Index("ix_alert_outbox_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    payload: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    recipients: Mapped[str | None] = mapped_column(Text, default=None)  # JSON list
    pending: Mapped[str | None] = mapped_column(Text, default=None)  # JSON list
    state: Mapped[str] = mapped_column(String(16), default="pending")  # delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(100), default=None)  # a worker
    claim_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
