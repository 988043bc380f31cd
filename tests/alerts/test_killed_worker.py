"""At least once, across processes: a gateway killed mid-delivery leaves its events to
another, and the receiver drops the repeat by its id."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.alerts.helpers import events
from tests.alerts.receiver import Receiver
from tests.support.gateway import Gateway

SECRET = "whsec_operator_test"


def _record(app, event_id: str) -> None:
    from silk.alerts import outbox
    from silk.database import utcnow
    from silk.extensions import db

    with app.app_context(), db.engine.begin() as conn:
        outbox.record(conn, event_id, "route_failing", None, {"route": event_id}, utcnow())


@pytest.mark.slow
def test_gateway_killed_mid_delivery_delivers_once_per_id(app, database_url, gateway_env,
                                                          tmp_path):
    ids = [f"route_failing:r{n}:1" for n in range(5)]
    for event_id in ids:
        _record(app, event_id)
    with Receiver(secret=SECRET) as receiver:
        receiver.hang_on = ids[0]
        env = {**gateway_env, "SILK_ALERT_INTERVAL": "0.2", "SILK_ALERT_LEASE": "3",
               "SILK_ALERT_RETRY_BASE": "1", "SILK_ALERT_ALLOW_PRIVATE": "true",
               "SILK_ALERT_WEBHOOK_URL": receiver.url, "SILK_ALERT_WEBHOOK_SECRET": SECRET}
        first = Gateway(database_url, env, workers=2, log_path=tmp_path / "first.log")
        first.start()
        try:
            assert receiver.hung.wait(30), "no delivery arrived"
            os.killpg(first.process.pid, signal.SIGKILL)  # master and workers, mid-delivery
            first.process.wait(timeout=10)
        finally:
            first.stop()
        receiver.release.set()
        assert ids[0] not in receiver.accepted  # the killed delivery was never answered
        # The other worker may have been killed between a delivery the receiver took and
        # marking it delivered: that event must come again, with the same id.
        unmarked = {row.event_id for row in events(app) if row.state != "delivered"}
        repeated = {ids[0]} | (unmarked & set(receiver.accepted))

        with Gateway(database_url, env, workers=2, log_path=tmp_path / "second.log"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                    len(receiver.accepted) < len(ids)
                    or any(row.state != "delivered" for row in events(app))):
                time.sleep(0.2)
            time.sleep(1)  # a repeat, if any were coming, would arrive meanwhile

    assert sorted(receiver.accepted) == sorted(ids)
    assert receiver.bad_signatures == 0
    counts = receiver.counts()
    assert counts[ids[0]] == 2  # delivered again after the lease ran out, same id
    assert counts == {event_id: 2 if event_id in repeated else 1 for event_id in ids}, counts
    assert {row.event_id: row.state for row in events(app)} == dict.fromkeys(ids, "delivered")
