"""Settle holds whose owner stopped renewing them: the sweep, and a greenlet running it."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from flask import Flask
from sqlalchemy.engine import Engine

from silk.database import utcnow
from silk.metering import keeper, store
from silk.metering.service import Hold, Outcome, decide, tier_of, write
from silk.pricing import Price, Tier, Tiered, Usage, at_prompt

log = logging.getLogger("silk.sweeper")

# A model's price (or upstream price) as in force at an instant; None: no such model.
PriceOf = Callable[[str, datetime], Price | Tiered | None]


def start_sweeper(app: Flask, tiers: Callable[[], Mapping[str, Tier]],
                  price_of: PriceOf, cost_of: PriceOf | None = None,
                  chores: Sequence[Callable[[Engine], int]] = ()) -> None:
    """Start this process's keeper (it adopts stopped workers' journals) and, unless
    SILK_SWEEP_INTERVAL is 0, spawn the sweeper for `app` in the current gevent hub.

    `tiers()`, `price_of(model)` and `cost_of(model)` (its upstream price) are asked afresh
    at each round, inside `app`'s context, so that the sweep bills with the tiers and prices
    in effect then. Each of `chores` (an expiry that is not money, such as stored responses)
    runs after the sweep every round; one that fails is tried again the next round.
    """
    import gevent

    from silk.extensions import db

    with app.app_context():
        keeper.of(db.engine).start()
    interval = float(app.config["SILK_SWEEP_INTERVAL"])
    if interval <= 0:
        return

    def run() -> None:
        gevent.sleep(random.uniform(1, interval))  # workers do not all sweep at once
        while True:
            try:
                with app.app_context():
                    count = sweep(db.engine, tiers(), price_of, cost_of)
                if count:
                    log.warning("swept orphaned reservations", extra={"fields": {"count": count}})
            except Exception:  # noqa: BLE001 - a failed sweep is retried next round
                log.exception("sweep failed")
            for chore in chores:
                try:
                    with app.app_context():
                        chore(db.engine)
                except Exception:  # noqa: BLE001 - a failed chore is retried next round
                    log.exception("sweep chore failed")
            gevent.sleep(interval)

    gevent.spawn(run)


def sweep(engine: Engine, tiers: Mapping[str, Tier], price_of: PriceOf,
          cost_of: PriceOf | None = None, *, everything: bool = False) -> int:
    """Settle holds whose lease ran out (their worker stopped renewing); returns how many.

    Journals of stopped workers are written first: a settlement someone decided beats any
    estimate. What a stopped worker delivered is otherwise unknown, so the sweep bills the
    prompt estimate alone, marks it estimated and claims the hold as "swept": should its
    real settlement arrive after all, it replaces the estimate (silk.metering.correction).
    `everything` settles every open hold, for when no gateway runs.
    """
    keeper.of(engine).adopt()
    settled = 0
    for row in store.of(engine).expired(utcnow(), everything=everything):
        # Priced as when the request was admitted, at the tier of its estimated prompt.
        listed = price_of(row.model, row.created_at)
        price = at_prompt(listed, row.prompt_estimate) if listed else Price(Decimal(0),
                                                                            Decimal(0))
        hold = Hold(row.id, row.account_id, row.key_id, row.request_id, row.model, price,
                    row.hold_units, row.quota_tokens, row.prompt_estimate,
                    tier_of(tiers, row.tier), prompt_bound=row.prompt_estimate, output_bound=0)
        outcome = Outcome(status="swept", http_status=0, usage=Usage(row.prompt_estimate, 0),
                          estimated=True,
                          cost_price=cost_of(row.model, row.created_at) if cost_of else None)
        if write(engine, decide(hold, outcome), claim="swept") is not None:
            settled += 1
    return settled
