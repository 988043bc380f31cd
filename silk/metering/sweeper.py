"""Settle reservations orphaned by dead workers: the sweep, and a greenlet running it."""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from silk.database import utcnow
from silk.metering.service import (
    ACCOUNTS,
    RESERVATIONS,
    Hold,
    Outcome,
    settle,
    tier_of,
)
from silk.pricing import Price, Tier, Usage

log = logging.getLogger("silk.sweeper")


def start_sweeper(app) -> None:
    """Spawn the sweeper for `app` (a Flask app) in the current gevent hub."""
    import gevent

    interval = float(app.config["SILK_SWEEP_INTERVAL"])
    if interval <= 0:
        return

    def run():
        from silk.billing.tiers import tiers
        from silk.catalog import catalogue
        from silk.extensions import db

        gevent.sleep(random.uniform(1, interval))  # workers do not all sweep at once
        while True:
            try:
                with app.app_context():
                    count = sweep(db.engine, tiers(), catalogue().price_of)
                if count:
                    log.warning("swept orphaned reservations", extra={"fields": {"count": count}})
            except Exception:  # noqa: BLE001 - a failed sweep is retried next round
                log.exception("sweep failed")
            gevent.sleep(interval)

    gevent.spawn(run)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def abandoned(row, now: datetime, host: str) -> bool:
    """True for a reservation whose worker is gone or whose time ran out."""
    if row.expires_at <= now:
        return True
    worker_host, _, pid = row.worker.rpartition(":")
    return worker_host == host and pid.isdigit() and not _pid_alive(int(pid))


def sweep(engine: Engine, tiers: Mapping[str, Tier], price_of: Callable[[str], Price | None],
          *, everything: bool = False) -> int:
    """Settle reservations left open by a killed worker or past their time; returns how many.

    What a killed worker delivered is unknown, so the sweep bills the prompt estimate alone
    and marks it estimated: the customer never pays for output nobody can show was sent.
    """
    now = utcnow()
    host = socket.gethostname()
    with engine.connect() as conn:
        rows = conn.execute(
            select(RESERVATIONS, ACCOUNTS.c.tier)
            .join(ACCOUNTS, ACCOUNTS.c.id == RESERVATIONS.c.account_id)
            .where(RESERVATIONS.c.state == "open")).all()
    settled = 0
    for row in rows:
        if not everything and not abandoned(row, now, host):
            continue
        price = price_of(row.model) or Price(0, 0)
        hold = Hold(row.id, row.account_id, row.key_id, row.request_id, row.model, price,
                    row.hold_units, row.quota_tokens, row.prompt_estimate,
                    tier_of(tiers, row.tier))
        outcome = Outcome(status="swept", http_status=0, usage=Usage(row.prompt_estimate, 0),
                          estimated=True)
        if settle(engine, hold, outcome) is not None:
            settled += 1
    return settled
