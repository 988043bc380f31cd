"""Stored responses: the customer's conversation, kept for previous_response_id and GET."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from silk.extensions import Model


class StoredResponse(Model):
    """One response kept for its account until `expires_at` (store: true).

    `response` is the Response object as answered (instructions, output items, usage, model,
    status); `input_items` the request's own input items. Rows go with their account;
    `key_id` is the key that made it (None before keys were recorded: owner keys only).
    """

    __tablename__ = "stored_responses"
    __table_args__ = (Index("ix_stored_responses_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            index=True)
    key_id: Mapped[int | None] = mapped_column(Integer, default=None)
    previous_response_id: Mapped[str | None] = mapped_column(String(64), default=None)
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    input_items: Mapped[list] = mapped_column(JSON)
    response: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
