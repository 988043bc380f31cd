"""Settle requests directly and read the outbox, for the alert tests."""

from __future__ import annotations

from decimal import Decimal

from silk.pricing import Price, Usage

PRICE = Price(Decimal("0.14"), Decimal("0.28"))  # 140 units per prompt token


def settle(app, account_id: int, request_id: str, prompt: int, output: int = 0):
    """Reserve and settle one request using `prompt` and `output` tokens; its reservation
    id (the row goes when it settles)."""
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering import service

    with app.app_context():
        engine = db.engine
        hold = service.reserve(engine, tiers(), account_id=account_id, key_id=None,
                               request_id=request_id, model="deepseek-chat", price=PRICE,
                               prompt_worst=prompt, max_output=max(output, 1),
                               prompt_estimate=prompt, ttl_seconds=60)
        service.settle(engine, hold, service.Outcome(status="ok", usage=Usage(prompt, output)))
        return hold.reservation_id


def credit(app, account_id: int, units: int) -> None:
    """Add money through the ledger, as a top-up does."""
    from silk.extensions import db
    from silk.metering import service

    with app.app_context(), db.engine.begin() as conn:
        service.credit(conn, account_id, units, kind="topup", actor="test")


def events(app, kind: str | None = None) -> list:
    """The outbox's rows (of one kind), oldest first."""
    from sqlalchemy import select

    from silk.alerts.models import AlertEvent
    from silk.extensions import db

    with app.app_context():
        query = select(AlertEvent).order_by(AlertEvent.id)
        if kind is not None:
            query = query.where(AlertEvent.kind == kind)
        rows = list(db.session.scalars(query))
        db.session.remove()
        return rows
