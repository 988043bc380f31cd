"""Reserve and settle directly: exactly-once settlement, holds under threads, month rollover."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from silk.errors import InsufficientBalance
from silk.pricing import Price, Usage

PRICE = Price(Decimal("0.14"), Decimal("0.28"))


def _services(app):
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering import service

    with app.app_context():
        return db.engine, tiers(), service


def _reserve(app, account_id, request_id, prompt=100, output=1000, locked=False):
    engine, tiers, service = _services(app)
    request = {"account_id": account_id, "key_id": None, "request_id": request_id,
               "model": "deepseek-chat", "price": PRICE, "prompt_worst": prompt,
               "max_output": output, "prompt_estimate": prompt, "ttl_seconds": 60}
    if locked:  # the row-lock path PostgreSQL falls back to under contention
        from silk.metering import store

        ask = store.Ask(**request)
        reserved = store.reserve_locked(engine, tiers, service.utcnow(), ask)
        return service._own(engine, ask, reserved)
    return service.reserve(engine, tiers, **request)


def test_settle_is_exactly_once(app, accounts):
    from tests.chat.helpers import set_quota_left

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    hold = _reserve(app, acct.id, "r1")
    assert accounts.row(acct.id).reserved_units == hold.hold_units == 100 * 140 + 1000 * 280
    engine, tiers, service = _services(app)
    outcome = service.Outcome(status="ok", usage=Usage(50, 10))
    first = service.settle(engine, hold, outcome)
    assert first.charged_units == 50 * 140 + 10 * 280
    assert service.settle(engine, hold, outcome) is None
    assert accounts.balance_units(acct.id) == 10**9 - first.charged_units
    assert len(accounts.usage_records(acct.id)) == 1
    assert accounts.audit() == []


@pytest.mark.parametrize("locked", [False, True], ids=["reserve", "locked"])
def test_threads_racing_for_one_balance_never_overdraw(app, accounts, locked):
    from tests.chat.helpers import set_quota_left

    acct = accounts.make(credit="0.001")  # 1,000,000 units; each hold is 294,000
    set_quota_left(app, acct.id)

    def attempt(i):
        try:
            return _reserve(app, acct.id, f"race-{i}", locked=locked)
        except InsufficientBalance:
            return None

    with ThreadPoolExecutor(max_workers=16) as pool:
        holds = [h for h in pool.map(attempt, range(64)) if h]
    assert len(holds) == 3  # 3 × 294,000 fits in 1,000,000; a fourth does not
    assert accounts.row(acct.id).reserved_units == 3 * 294_000
    engine, tiers, service = _services(app)
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda h: service.settle(engine, h, service.Outcome(
            status="ok", usage=Usage(100, 1000))), holds))
    row = accounts.row(acct.id)
    assert row.reserved_units == 0 and row.balance_units == 1_000_000 - 3 * 294_000
    assert accounts.audit() == []


def test_free_quota_is_held_too(app, accounts):
    """Two requests cannot both spend the same free tokens."""
    from tests.chat.helpers import set_quota_left

    acct = accounts.make(credit="0")
    set_quota_left(app, acct.id, left=1500)
    first = _reserve(app, acct.id, "q1", prompt=100, output=1000)  # fits in the quota
    assert first.hold_units == 0 and first.quota_tokens == 1100
    with pytest.raises(InsufficientBalance):
        _reserve(app, acct.id, "q2", prompt=100, output=1000)  # 400 left: needs money
    engine, tiers, service = _services(app)
    service.settle(engine, first, service.Outcome(status="ok", usage=Usage(10, 10)))
    second = _reserve(app, acct.id, "q3", prompt=100, output=1000)
    assert second.hold_units == 0  # the unused part of the first hold came back
    assert accounts.row(acct.id).quota_used == 100_000 - 1500 + 20


def test_free_tokens_change_no_balance_and_write_no_ledger_entry(app, accounts):
    """A ledger entry is a change of balance: a request inside the free quota makes none."""
    from tests.chat.helpers import set_quota_left

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, left=1500)
    engine, tiers, service = _services(app)
    free = _reserve(app, acct.id, "free", prompt=100, output=1000)
    settled = service.settle(engine, free, service.Outcome(status="ok", usage=Usage(10, 10)))
    assert settled.charged_units == 0
    set_quota_left(app, acct.id, left=0)
    paid = _reserve(app, acct.id, "paid", prompt=100, output=1000)
    settled = service.settle(engine, paid, service.Outcome(status="ok", usage=Usage(10, 10)))
    assert settled.charged_units > 0
    entries = [(e.kind, e.request_id) for e in accounts.ledger(acct.id)]
    assert entries == [("topup", None), ("charge", "paid")]
    assert {r.request_id: r.cost_units for r in accounts.usage_records(acct.id)} == {
        "free": 0, "paid": settled.charged_units}
    assert accounts.audit() == []


def test_new_month_resets_the_quota(app, accounts):
    from silk.account.models import Account
    from silk.extensions import db

    acct = accounts.make(credit="0")
    with app.app_context():
        account = db.session.get(Account, acct.id)
        account.quota_month, account.quota_used = "2000-01", 100_000
        db.session.commit()
    hold = _reserve(app, acct.id, "m1", prompt=10, output=10)
    assert hold.hold_units == 0 and hold.quota_tokens == 20
    assert accounts.row(acct.id).quota_used == 0


def test_credit_cannot_take_held_money(app, accounts):
    from silk.errors import InvalidRequest
    from silk.extensions import db
    from silk.metering.service import credit
    from tests.chat.helpers import set_quota_left

    acct = accounts.make(credit="0.001")
    set_quota_left(app, acct.id)
    _reserve(app, acct.id, "h1")
    with app.app_context(), pytest.raises(InvalidRequest), db.engine.begin() as conn:
        credit(conn, acct.id, -1_000_000, kind="adjustment", note="too much")
    with app.app_context(), db.engine.begin() as conn:
        after = credit(conn, acct.id, -(1_000_000 - 294_000), kind="adjustment", note="ok")
    assert after == 294_000


def test_sqlite_writer_waits_for_the_lock_without_blocking(app, accounts, backend):
    """Another process holding SQLite's write lock delays a reservation; it does not fail it."""
    if backend != "sqlite":
        pytest.skip("SQLite's single write lock")
    import sqlite3
    import threading
    import time

    from silk.extensions import db

    acct = accounts.make(credit="1")
    with app.app_context():
        path = db.engine.url.database
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the other worker is writing
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    started = time.monotonic()
    hold = _reserve(app, acct.id, "waits")
    assert time.monotonic() - started >= 0.25
    assert hold.hold_units >= 0 and accounts.row(acct.id).reserved_units == hold.hold_units
    other.close()


def test_many_requests_share_commits_and_balance_exactly(app, accounts):
    """Both stores group-commit: 96 requests from 16 threads, each charged exactly once."""
    from tests.chat.helpers import set_quota_left

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    engine, _, service = _services(app)

    def request(i):
        hold = _reserve(app, acct.id, f"b{i}")
        return service.settle(engine, hold, service.Outcome(status="ok", usage=Usage(100, 10)))

    with ThreadPoolExecutor(max_workers=16) as pool:
        settled = list(pool.map(request, range(96)))
    each = 100 * 140 + 10 * 280
    assert all(s.charged_units == each for s in settled)
    row = accounts.row(acct.id)
    assert row.reserved_units == 0 and row.balance_units == 10**9 - 96 * each
    assert len(accounts.usage_records(acct.id)) == 96
    assert accounts.audit() == []
