"""Holds stay alive while their worker renews them; only a hold nobody renews is swept."""

from __future__ import annotations

import gc
import socket
import subprocess
import time

import pytest
from sqlalchemy import select, update

from tests.chat.helpers import expected_cost, messages, prompt_tokens, set_quota_left, units
from tests.metering.test_service import PRICE

# Seconds: renewed every third of it, so the tests' own sweeps find a live hold run out only
# if the process stalls for two thirds of it (a second's stall on a loaded machine did so to
# a lease of one second).
LEASE = 3


@pytest.fixture
def app_config(tmp_path):
    return {"SILK_RESERVATION_TTL": LEASE, "SILK_SETTLEMENT_JOURNAL_DIR": str(tmp_path)}


def _sweep(app) -> int:
    from silk.billing.tiers import tiers
    from silk.catalog import catalogue
    from silk.extensions import db
    from silk.metering.sweeper import sweep

    with app.app_context():
        return sweep(db.engine, tiers(), catalogue().price_of)


def _reservation(app, reservation_id: int):
    from silk.extensions import db
    from silk.metering.models import Reservation

    with app.app_context():
        row = db.session.scalars(select(Reservation).where(
            Reservation.id == reservation_id)).one_or_none()
        db.session.remove()
        return row


def _hold(app, account_id: int, request_id: str, *, prompt: int = 100, output: int = 1000,
          model: str = "deepseek-chat", price=PRICE):
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering.service import reserve

    with app.app_context():
        return reserve(db.engine, tiers(), account_id=account_id, key_id=None,
                       request_id=request_id, model=model, price=price,
                       prompt_worst=prompt, max_output=output, prompt_estimate=prompt,
                       ttl_seconds=LEASE)


def test_a_stream_read_slowly_past_many_leases_is_charged_in_full(app, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    # The provider paces the stream (a slow reader's pieces would be joined once the
    # provider's events pile up, so the reader alone cannot make it last).
    msgs = messages("slow reader", "pieces=35 chunk_delay=0.2")
    response = app.test_client().post(
        "/v1/chat/completions", headers=acct.headers, buffered=False,
        json={"model": "deepseek-chat", "stream": True, "messages": msgs})
    started = time.monotonic()
    sweeps = 0
    for _ in response.response:  # the client reads a chunk, then dawdles
        time.sleep(0.15)
        sweeps += _sweep(app)
    response.close()
    assert time.monotonic() - started > 2 * LEASE
    assert sweeps == 0
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.estimated, record.completion_tokens) == ("ok", False, 35)
    cost = units(expected_cost("deepseek-chat", prompt_tokens(msgs), 35))
    assert record.cost_units == cost and record.written_off_units == 0
    assert accounts.balance_units(acct.id) == 10**9 - cost
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.audit() == []


def test_a_renewed_hold_is_live_whatever_pid_its_worker_names(app, accounts):
    """Two processes on one host need not share a PID namespace: a PID proves nothing."""
    from silk.extensions import db
    from silk.metering.models import Reservation

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    hold = _hold(app, acct.id, "renewed")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with app.app_context():
        db.session.execute(update(Reservation).where(Reservation.id == hold.reservation_id)
                           .values(worker=f"{socket.gethostname()}:{dead.pid}"))
        db.session.commit()
    first = _reservation(app, hold.reservation_id).expires_at
    deadline = time.monotonic() + LEASE + 1  # unrenewed, it would have run out
    while time.monotonic() < deadline:
        assert _sweep(app) == 0
        time.sleep(0.2)
    row = _reservation(app, hold.reservation_id)
    assert row.state == "open" and row.expires_at > first  # its owner renewed it
    assert accounts.row(acct.id).reserved_units == hold.hold_units


def test_a_hold_whose_owner_stopped_renewing_is_swept_after_its_lease(app, accounts):
    """A request gone without settling (here: its hold dropped) is renewed no more."""
    from silk.extensions import db
    from silk.metering import keeper

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    live = _hold(app, acct.id, "live")
    leaked = _hold(app, acct.id, "leaked")
    leaked_id = leaked.reservation_id
    del leaked
    gc.collect()
    with app.app_context():
        assert set(keeper.of(db.engine).live) == {live.reservation_id}
    time.sleep(LEASE + 0.3)
    assert _sweep(app) == 1
    assert _reservation(app, leaked_id).state == "swept"
    assert _reservation(app, live.reservation_id).state == "open"
    [record] = accounts.usage_records(acct.id)
    assert (record.request_id, record.status, record.estimated) == ("leaked", "swept", True)
    assert accounts.audit() == []

