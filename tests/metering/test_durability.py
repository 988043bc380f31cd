"""Settlements once decided are written: through an outage, after their worker stopped,
after the sweep, whatever counts a provider sends; and what is written off is visible."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from silk.pricing import Price, Usage, units_to_usd
from tests.chat.helpers import (
    expected_cost,
    messages,
    prompt_tokens,
    set_quota_left,
    sse_events,
    units,
)
from tests.metering.test_leases import PRICE, _hold, _reservation, _sweep
from tests.ops.helpers import sample
from tests.reliability.helpers import assert_money_exact, block_database, wait_until
from tests.support import databases
from tests.support.gateway import ROOT

CHAT = "/v1/chat/completions"
LEASE = 1  # second: these tests wait for leases to run out, none for a renewal


@pytest.fixture
def journal_dir(tmp_path):
    return tmp_path / "journal"


@pytest.fixture
def app_config(journal_dir):
    return {"SILK_RESERVATION_TTL": LEASE, "SILK_SETTLEMENT_JOURNAL_DIR": str(journal_dir)}


@pytest.fixture
def outage(app, backend, database_url, monkeypatch):
    """A context manager during which the database refuses the gateway's writes for good:
    PostgreSQL ends the database's sessions and refuses new ones; on SQLite another
    connection holds the write lock (and metering gives up waiting for it at once)."""

    @contextlib.contextmanager
    def away():
        if backend == "postgres":
            name = make_url(database_url).database
            try:
                block_database(databases.PG_ADMIN_URL, name, allow=False)
                yield
            finally:
                block_database(databases.PG_ADMIN_URL, name, allow=True)
            return
        from silk.metering import sqlite as metering_sqlite

        monkeypatch.setattr(metering_sqlite, "_GIVE_UP_AFTER", 0.2)
        other = sqlite3.connect(make_url(database_url).database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()

    return away


def _journal_files(journal_dir) -> list[str]:
    return sorted(os.listdir(journal_dir)) if journal_dir.exists() else []


def test_a_settlement_the_database_refuses_is_journaled_and_written_when_it_answers(
        app, accounts, upstream, outage, journal_dir):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    msgs = messages("outage", "pieces=12 chunk_delay=0.02")
    response = app.test_client().post(CHAT, headers=acct.headers, buffered=False, json={
        "model": "deepseek-chat", "stream": True, "stream_options": {"include_usage": True},
        "messages": msgs})
    chunks = iter(response.response)
    body = next(chunks)  # reserved; the answer is on its way
    cost = units(expected_cost("deepseek-chat", prompt_tokens(msgs), 12))
    with outage():
        body += b"".join(chunks)  # it ends, and settles, while the database is away
        response.close()
        assert len(_journal_files(journal_dir)) == 1
        time.sleep(LEASE + 0.5)  # longer than the lease: renewals fail too
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    [usage] = [e["usage"] for e in events[:-1] if e.get("usage")]
    assert Decimal(str(usage["cost"])) == units_to_usd(cost)  # told the real cost
    wait_until(lambda: accounts.usage_records(acct.id), timeout=10)  # written once it answers
    assert _sweep(app) == 0
    [record] = assert_money_exact(accounts, acct.id, "1")
    assert (record.status, record.estimated, record.cost_units) == ("ok", False, cost)
    wait_until(lambda: not _journal_files(journal_dir), timeout=5)


_STOPPING_WORKER = """
import os, sys
from silk import create_app
from silk.billing.tiers import tiers
from silk.catalog import catalogue
from silk.extensions import db
from silk.metering import keeper
from silk.metering.service import Outcome, decide, keep, reserve
from silk.pricing import Usage

account, journal = int(sys.argv[1]), sys.argv[2]
app = create_app({"SILK_SETTLEMENT_JOURNAL_DIR": journal, "SILK_SWEEP_INTERVAL": 0})
with app.app_context():
    hold = reserve(db.engine, tiers(), account_id=account, key_id=None, request_id="stopped",
                   model="deepseek-chat", price=catalogue().model("deepseek-chat").price,
                   prompt_worst=100, max_output=1000, prompt_estimate=100, ttl_seconds=1)
    # The database did not take it (as during an outage): it waits in the journal, and
    # this worker's loop is stopped so that it never writes it.
    loop = keeper.of(db.engine)
    loop.close()
    loop._thread.join()
    keep(db.engine, decide(hold, Outcome(status="ok", usage=Usage(60, 700))), hold)
print(hold.reservation_id, flush=True)
os._exit(0)  # the worker stops before it could write it
"""


def test_a_stopped_workers_journal_is_adopted_and_written_by_another_process(
        app, accounts, database_url, journal_dir):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "journal-test"}
    done = subprocess.run([sys.executable, "-c", _STOPPING_WORKER, str(acct.id),
                           str(journal_dir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    reservation_id = int(done.stdout.split()[-1])
    [name] = _journal_files(journal_dir)
    entry = json.loads((journal_dir / name).read_text())
    assert entry["reservation_id"] == reservation_id
    time.sleep(LEASE + 0.2)  # nobody renews its hold now
    assert _sweep(app) == 0  # the sweep writes the journal first: no estimate
    assert _reservation(app, reservation_id) is None  # settled: its row is gone
    [record] = assert_money_exact(accounts, acct.id, "1")
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("ok", 60, 700)
    assert _journal_files(journal_dir) == []


def _expire(app, reservation_id: int) -> None:
    """Its owner stops renewing it and its lease runs out."""
    from silk.database import utcnow
    from silk.extensions import db
    from silk.metering import keeper
    from silk.metering.models import Reservation

    with app.app_context():
        keeper.of(db.engine).release(reservation_id)
        time.sleep(0.2)  # a renewal already under way ends first
        db.session.execute(update(Reservation).where(Reservation.id == reservation_id)
                           .values(expires_at=utcnow()))
        db.session.commit()
        db.session.remove()


def _settle(app, hold, usage: Usage):
    from silk.extensions import db
    from silk.metering.service import Outcome, settle

    with app.app_context():
        return settle(db.engine, hold, Outcome(status="ok", usage=usage, provider="deepseek"))


def test_a_real_settlement_after_the_sweep_charges_what_the_estimate_missed(app, accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    hold = _hold(app, acct.id, "late")
    _expire(app, hold.reservation_id)
    assert _sweep(app) == 1
    [swept] = accounts.usage_records(acct.id)
    assert swept.status == "swept" and swept.cost_units == 100 * 140 and swept.surface == ""
    real = 80 * 140 + 900 * 280
    settlement = _settle(app, hold, Usage(80, 900))
    assert (settlement.charged_units, settlement.written_off_units) == (real, 0)
    assert _settle(app, hold, Usage(80, 900)) is None  # exactly once
    [record] = accounts.usage_records(acct.id)
    assert (record.status, record.estimated, record.prompt_tokens, record.completion_tokens,
            record.cost_units, record.written_off_units) == ("ok", False, 80, 900, real, 0)
    assert [(e.kind, e.amount_units) for e in accounts.ledger(acct.id)] == [
        ("topup", 10**9), ("charge", -100 * 140), ("charge", -(real - 100 * 140))]
    assert accounts.balance_units(acct.id) == 10**9 - real
    assert _reservation(app, hold.reservation_id) is None  # corrected: its row is gone
    assert accounts.audit() == []


def test_what_a_late_settlement_cannot_charge_is_written_off_and_reported(app, accounts,
                                                                          client, runner):
    from silk.ops import metrics

    # A model of its own, so the counter's delta is this test's alone.
    model, price = "ark-code-latest", Price(Decimal("0.11"), Decimal("0.43"))
    acct = accounts.make(credit="0.000441")  # 441,000 units: one hold of (100, 1000)
    set_quota_left(app, acct.id)
    hold = _hold(app, acct.id, "late", model=model, price=price)
    assert hold.hold_units == 441_000
    _expire(app, hold.reservation_id)
    assert _sweep(app) == 1  # charges the estimate, 11,000 units, and frees the hold
    other = _hold(app, acct.id, "other", prompt=100, output=900, model=model, price=price)
    assert other.hold_units == 398_000  # leaves 32,000 units spendable
    before = metrics.render()[0].decode()
    settlement = _settle(app, hold, Usage(100, 1000))  # really cost 441,000
    after = metrics.render()[0].decode()
    assert (settlement.charged_units, settlement.written_off_units) == (43_000, 398_000)
    [record] = accounts.usage_records(acct.id)
    assert (record.cost_units, record.written_off_units) == (43_000, 398_000)
    row = accounts.row(acct.id)
    assert (row.balance_units, row.reserved_units) == (398_000, 398_000)
    assert accounts.audit() == []
    written_off = "silk_written_off_usd_total"
    assert sample(after, written_off, model=model) - sample(
        before, written_off, model=model) == pytest.approx(0.000398)
    report = runner.invoke(args=["silk", "audit"])
    assert report.exit_code == 0, report.output  # the books balance: leakage is reported
    assert "written off: $0.000398 (398000 units)" in report.output
    assert f"account {acct.id} (user1@example.com): $0.000398" in report.output


def test_a_late_settlement_never_spends_free_quota_the_sweep_gave_back(app, accounts):
    """The sweep releases a hold's free tokens; a later request may use them; the late real
    settlement may not use them again: what it cannot get free it pays, or writes off."""
    acct = accounts.make(credit="0")  # the free tier: 100,000 free tokens a month
    late = _hold(app, acct.id, "late", prompt=100, output=99_900)
    assert late.quota_tokens == 100_000 and late.hold_units == 0
    _expire(app, late.reservation_id)
    assert _sweep(app) == 1  # the estimate, 100 prompt tokens, takes 100 free tokens
    other = _hold(app, acct.id, "other", prompt=100, output=99_800)
    assert other.quota_tokens == 99_900
    _settle(app, other, Usage(100, 99_800))
    assert accounts.row(acct.id).quota_used == 100_000
    settlement = _settle(app, late, Usage(100, 99_900))
    assert accounts.row(acct.id).quota_used == 100_000  # not 199,900
    # 99,900 completion tokens were not free any more, and the balance is empty.
    assert (settlement.charged_units, settlement.written_off_units) == (0, 99_900 * 280)
    record = next(r for r in accounts.usage_records(acct.id) if r.request_id == "late")
    assert (record.free_tokens, record.cost_units, record.written_off_units) == (
        100, 0, 99_900 * 280)
    assert accounts.balance_units(acct.id) == 0
    assert accounts.audit() == []


def test_a_renewal_the_database_refused_is_tried_again_within_a_second(app, accounts, outage):
    """A missed renewal eats into the lease: the next try comes soon, not a third of it later."""
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering import keeper
    from silk.metering.service import reserve

    acct = accounts.make(credit="1")
    with app.app_context():
        hold = reserve(db.engine, tiers(), account_id=acct.id, key_id=None,
                       request_id="renewed", model="deepseek-chat", price=PRICE,
                       prompt_worst=100, max_output=100, prompt_estimate=100, ttl_seconds=30)
        keeper_ = keeper.of(db.engine)
    wait_until(lambda: keeper_._next_round > time.monotonic() + 5)  # renewed, asleep for 10 s
    first = _reservation(app, hold.reservation_id).expires_at
    with outage():
        keeper_._wake.set()  # a round while the database is away: the renewal fails
        time.sleep(0.8)
    wait_until(lambda: _reservation(app, hold.reservation_id).expires_at > first, timeout=4)


def test_a_settled_holds_row_goes_and_its_id_is_never_given_again(app, accounts):
    """Settling deletes the hold's row, so the table keeps only holds in flight; a hold made
    next must not take the settled one's id (SQLite would give the largest id again), or a
    settlement that came again would claim the new hold."""
    from silk.extensions import db
    from silk.metering.models import Reservation

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    first = _hold(app, acct.id, "first")
    assert _settle(app, first, Usage(80, 900)) is not None
    assert _reservation(app, first.reservation_id) is None
    second = _hold(app, acct.id, "second")
    assert second.reservation_id > first.reservation_id
    assert _settle(app, first, Usage(80, 900)) is None  # exactly once
    assert _reservation(app, second.reservation_id).state == "open"
    assert accounts.row(acct.id).reserved_units == second.hold_units
    assert _settle(app, second, Usage(10, 10)) is not None
    with app.app_context():
        assert db.session.scalars(select(Reservation)).all() == []
        db.session.remove()
    assert [r.request_id for r in accounts.usage_records(acct.id)] == ["first", "second"]
    assert accounts.audit() == []


def test_a_journal_naming_another_requests_hold_settles_nothing(app, accounts, journal_dir):
    """A journal left from another database of the same URL, or from before the database
    was restored from a backup, names reservation ids that here belong to other requests.
    Its settlement must not claim such a hold: that request would never be charged (its
    own settlement finds no hold), its account's money would stay held, and the
    journal's account would be charged for a hold it still has."""
    from silk.extensions import db
    from silk.metering import journal, keeper
    from silk.metering.service import Outcome, decide

    payer, victim = accounts.make(credit="1"), accounts.make(credit="1")
    for acct in (payer, victim):
        set_quota_left(app, acct.id)
    foreign = _hold(app, payer.id, "foreign")  # the request the journal was written for
    victims = _hold(app, victim.id, "victim")  # here, another request's hold
    entry = decide(foreign, Outcome(status="ok", usage=Usage(60, 700))).to_json()
    # The same id, in the other database.
    entry["reservation_id"] = entry["values"]["reservation"] = victims.reservation_id
    with app.app_context():
        digest = journal.database_digest(db.engine)
        journal_dir.mkdir(exist_ok=True)
        (journal_dir / f"{digest}-0123456789abcdef.jsonl").write_text(json.dumps(entry) + "\n")
        keeper.of(db.engine).adopt()
    assert _reservation(app, victims.reservation_id).state == "open"
    assert accounts.usage_records(payer.id) == []
    _settle(app, foreign, Usage(60, 700))
    _settle(app, victims, Usage(80, 900))
    for acct, (prompt, completion) in ((payer, (60, 700)), (victim, (80, 900))):
        cost = prompt * 140 + completion * 280
        [record] = accounts.usage_records(acct.id)
        assert record.cost_units == cost
        row = accounts.row(acct.id)
        assert (row.balance_units, row.reserved_units) == (10**9 - cost, 0)
    assert accounts.audit() == []
