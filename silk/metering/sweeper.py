"""A background greenlet in each worker that settles reservations orphaned by dead workers."""

from __future__ import annotations

import logging
import random

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
        from silk.metering.service import sweep

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
