"""Record usage through the real metering code (reserve, then settle), without an upstream."""

from __future__ import annotations

import uuid
from datetime import date

from silk.pricing import Usage


def spend(app, account_id: int, *, model: str = "deepseek-chat", prompt: int, completion: int,
          cache_hit: int = 0):
    """Run one request's money path for `account_id` and return the Settlement."""
    from silk.billing.tiers import forget_tiers, tiers
    from silk.catalog import catalogue
    from silk.extensions import db
    from silk.metering.service import Outcome, reserve, settle

    with app.app_context():
        forget_tiers()
        table = tiers()
        price = catalogue().model(model).price
        hold = reserve(db.engine, table, account_id=account_id, key_id=None,
                       request_id=uuid.uuid4().hex, model=model, price=price,
                       prompt_worst=prompt, max_output=completion, prompt_estimate=prompt,
                       ttl_seconds=60)
        outcome = Outcome(status="ok", usage=Usage(prompt, completion, cache_hit),
                          upstream_model=model, provider="deepseek")
        return settle(db.engine, hold, outcome)


def backdate(app, account_id: int, day: date) -> None:
    """Move an account's usage records to `day`, as if they were made then."""
    from sqlalchemy import update

    from silk.extensions import db
    from silk.metering.models import UsageRecord

    with app.app_context(), db.engine.begin() as conn:
        conn.execute(update(UsageRecord.__table__)
                     .where(UsageRecord.__table__.c.account_id == account_id)
                     .values(day=day))
