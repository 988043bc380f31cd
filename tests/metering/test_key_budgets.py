"""Per-key spend caps, decided in the reservation that checks the balance, on both databases.

A key's caps bound what it spent in the UTC day, the UTC month and in all, plus its open
holds; bursts of holds never take a key past a cap, the counters follow every settlement
and sweep, and the audit checks them against the usage records and open holds.
"""

from __future__ import annotations

import threading
from datetime import datetime
from decimal import Decimal

import pytest

from silk.pricing import Price, Usage

PRICE = Price(Decimal("0.14"), Decimal("0.28"))  # 140 units a prompt token, 280 an output one
HOLD = 100 * 140 + 1000 * 280  # a request of 100 prompt and 1,000 output tokens, no free quota
FREE = 100_000  # the free tier's monthly quota
LAST_SECOND = datetime(2031, 1, 31, 23, 59, 59)
NEXT_DAY = datetime(2031, 2, 1, 0, 0, 1)  # the next day, and the next month
LATER_IN_FEBRUARY = datetime(2031, 2, 14, 12, 0, 0)
NEXT_MONTH = datetime(2031, 3, 1, 0, 0, 1)


class Clock:
    """A clock the test moves, read by the gateway through silk.database.set_clock."""

    def __init__(self) -> None:
        self.now = LAST_SECOND

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    from silk.database import set_clock

    moved = Clock()
    set_clock(moved)
    yield moved
    set_clock(None)


def _no_free_tokens(app, account_id, now=None):
    """This month's free quota used up, so that every token is charged."""
    from silk.account.models import Account
    from silk.database import utcnow
    from silk.extensions import db
    from silk.metering.rules import month_of

    with app.app_context():
        account = db.session.get(Account, account_id)
        account.quota_month, account.quota_used = month_of(now or utcnow()), FREE
        db.session.commit()
        db.session.remove()


def _caps(app, key_id, **caps):
    """Set a key's caps (USD) as the API does."""
    from silk.account.service import update_key
    from silk.extensions import db
    from silk.pricing import usd_to_units

    with app.app_context():
        update_key(key_id, {"spend_caps": {period: None if usd is None else usd_to_units(usd)
                                           for period, usd in caps.items()}})
        db.session.remove()


def _reserve(app, user, request_id, *, capped=True, prompt=100, output=1000):
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering.service import reserve

    with app.app_context():
        return reserve(db.engine, tiers(), account_id=user.id, key_id=user.key_id,
                       request_id=request_id, model="deepseek-chat", price=PRICE,
                       prompt_worst=prompt, max_output=output, prompt_estimate=prompt,
                       ttl_seconds=60, key_capped=capped)


def _settle(app, hold, usage):
    from silk.extensions import db
    from silk.metering.service import Outcome, settle

    with app.app_context():
        return settle(db.engine, hold, Outcome(status="ok", usage=usage))


def _key(app, key_id):
    from silk.account.models import ApiKey
    from silk.extensions import db

    with app.app_context():
        key = db.session.get(ApiKey, key_id)
        db.session.refresh(key)
        db.session.remove()
        return key


def _refusal(app, user, request_id, **kw):
    from silk.errors import KeyBudgetExceeded

    with pytest.raises(KeyBudgetExceeded) as refused:
        _reserve(app, user, request_id, **kw)
    assert refused.value.status == 402
    assert refused.value.code == "key_budget_exceeded"
    return refused.value.message


@pytest.mark.parametrize("hinted", [True, False], ids=["caps-known", "caps-unknown"])
def test_a_total_cap_counts_open_holds_and_what_was_spent(app, accounts, hinted):
    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    _caps(app, user.key_id, total="0.001")  # 1,000,000 units: three holds of 294,000
    holds = [_reserve(app, user, f"r{i}", capped=hinted) for i in range(3)]
    message = _refusal(app, user, "r3", capped=hinted)
    assert "total spend cap of $0.001" in message and "never resets" in message
    assert "$0.000118 of the cap is left" in message  # 1,000,000 - 3 x 294,000 units

    _settle(app, holds[0], Usage(100, 100))  # charges 14,000 + 28,000
    key = _key(app, user.key_id)
    assert (key.held_units, key.spent_total_units) == (2 * HOLD, 42_000)
    _reserve(app, user, "r4", capped=hinted)  # 1,000,000 - 42,000 - 2 holds fits one more
    _refusal(app, user, "r5", capped=hinted)
    assert accounts.audit() == []


def test_a_key_without_caps_is_counted_and_never_refused_for_it(app, accounts):
    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    holds = [_reserve(app, user, f"r{i}", capped=False) for i in range(5)]
    assert _key(app, user.key_id).held_units == 5 * HOLD
    for hold in holds:
        _settle(app, hold, Usage(100, 1000))
    key = _key(app, user.key_id)
    assert (key.held_units, key.spent_total_units) == (0, 5 * HOLD)
    # A cap set now counts what the key spent already.
    _caps(app, user.key_id, total=str(Decimal(6 * HOLD) / 10**9))
    _reserve(app, user, "r5")
    _refusal(app, user, "r6")
    assert accounts.audit() == []


def test_a_daily_cap_resets_at_utc_midnight_and_a_monthly_one_at_the_month(app, accounts,
                                                                            clock):
    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id, LAST_SECOND)
    _caps(app, user.key_id, day="0.0005", month="0.0008")  # one request a day, two a month
    _settle(app, _reserve(app, user, "jan-31"), Usage(100, 1000))
    message = _refusal(app, user, "jan-31-again")
    assert "daily spend cap of $0.0005" in message
    assert "resets at 2031-02-01T00:00:00Z" in message

    clock.now = NEXT_DAY  # a new day and a new month: both counters start again
    _no_free_tokens(app, user.id, NEXT_DAY)
    _settle(app, _reserve(app, user, "feb-1"), Usage(100, 1000))
    clock.now = LATER_IN_FEBRUARY
    _settle(app, _reserve(app, user, "feb-14"), Usage(100, 1000))
    clock.now = datetime(2031, 2, 15, 9, 0, 0)  # a new day, but the month's cap is spent
    message = _refusal(app, user, "feb-15")
    assert "monthly spend cap of $0.0008" in message
    assert "resets at 2031-03-01T00:00:00Z" in message

    clock.now = NEXT_MONTH
    _no_free_tokens(app, user.id, NEXT_MONTH)
    _reserve(app, user, "mar-1")
    key = _key(app, user.key_id)
    assert (key.spent_day, key.spent_month) == ("2031-02-14", "2031-02")
    assert (key.spent_day_units, key.spent_month_units, key.spent_total_units) == (
        HOLD, 2 * HOLD, 3 * HOLD)
    assert accounts.audit() == []


def test_a_sweep_releases_the_keys_hold_and_counts_its_charge(app, accounts):
    from silk.extensions import db
    from silk.metering.sweeper import sweep

    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    _caps(app, user.key_id, total="0.001")
    _reserve(app, user, "orphan")
    with app.app_context():
        assert sweep(db.engine, {}, lambda model, at: PRICE, everything=True) == 1
    key = _key(app, user.key_id)
    assert (key.held_units, key.spent_total_units) == (0, 100 * 140)  # the prompt estimate
    assert accounts.audit() == []


def test_the_audit_names_a_key_whose_counters_drift(app, accounts):
    from silk.account.models import ApiKey
    from silk.extensions import db

    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    _settle(app, _reserve(app, user, "one"), Usage(100, 1000))
    assert accounts.audit() == []
    with app.app_context():
        db.session.get(ApiKey, user.key_id).spent_total_units += 1
        db.session.commit()
        db.session.remove()
    [problem] = accounts.audit()
    assert f"key {user.key_id}" in problem and "spent in all" in problem


def test_a_burst_of_holds_never_takes_a_key_past_its_cap(app, accounts):
    """Threads reserve at once, many times over; no instant has more held than the cap."""
    from silk.errors import KeyBudgetExceeded

    user = accounts.make(credit="5")
    _no_free_tokens(app, user.id)
    _caps(app, user.key_id, total="0.003")  # ten holds of 294,000 units, 60,000 left over
    cap = 3_000_000
    threads, rounds = 24, 3
    start = threading.Barrier(threads)
    admitted, refused, errors = [], [], []

    def burst(n):
        try:
            start.wait()
            for i in range(rounds):
                try:
                    admitted.append(_reserve(app, user, f"b{n}-{i}", capped=n % 2 == 0))
                except KeyBudgetExceeded:
                    refused.append(n)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=burst, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert len(admitted) == 10 and len(refused) == threads * rounds - 10
    assert _key(app, user.key_id).held_units == 10 * HOLD <= cap
    # Each charges a third of its hold; the room freed admits more, never past the cap.
    for hold in admitted:
        _settle(app, hold, Usage(100, 300))
    spent = 10 * (100 * 140 + 300 * 280)
    more = 0
    while True:
        try:
            _reserve(app, user, f"after-{more}")
        except KeyBudgetExceeded:
            break
        more += 1
    assert more == (cap - spent) // HOLD
    key = _key(app, user.key_id)
    assert key.spent_total_units + key.held_units <= cap
    assert (key.spent_total_units, key.held_units) == (spent, more * HOLD)
    assert accounts.audit() == []


def test_a_late_settlement_after_a_sweep_corrects_the_keys_spend(app, accounts):
    from silk.extensions import db
    from silk.metering.sweeper import sweep

    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    hold = _reserve(app, user, "late")
    with app.app_context():
        assert sweep(db.engine, {}, lambda model, at: PRICE, everything=True) == 1
    assert _key(app, user.key_id).spent_total_units == 100 * 140  # the sweep's estimate
    settled = _settle(app, hold, Usage(100, 500))  # the owner's real settlement arrives
    assert settled.charged_units == 100 * 140 + 500 * 280
    key = _key(app, user.key_id)
    assert (key.held_units, key.spent_day_units, key.spent_total_units) == (
        0, 100 * 140 + 500 * 280, 100 * 140 + 500 * 280)
    assert accounts.audit() == []


def test_a_hold_stamped_before_midnight_and_written_after_is_checked_against_the_new_day(
        app, accounts, clock):
    """At midnight a worker may read the clock on the old day and reach the database after
    another worker counted the new day's spend. The hold settles into the new day, so the
    new day's spend bounds it: the day's cap is never passed."""
    from silk.billing.tiers import tiers
    from silk.errors import KeyBudgetExceeded
    from silk.extensions import db
    from silk.metering import store
    from silk.metering.store import Ask

    user = accounts.make(credit="1")
    clock.now = NEXT_DAY
    _no_free_tokens(app, user.id, NEXT_DAY)
    _caps(app, user.key_id, day="0.0005")  # one request of 294,000 units a day
    _settle(app, _reserve(app, user, "feb-1"), Usage(100, 1000))  # the new day's spend

    ask = Ask(user.id, user.key_id, "stamped-jan-31", "deepseek-chat", PRICE, 100, 1000, 100,
              60, True)
    with app.app_context(), pytest.raises(KeyBudgetExceeded):
        store.of(db.engine).reserve(tiers(), LAST_SECOND, ask)  # read the clock on Jan 31
    key = _key(app, user.key_id)
    assert (key.spent_day, key.spent_day_units, key.held_units) == ("2031-02-01", HOLD, 0)
    assert accounts.audit() == []


def test_a_late_settlement_after_a_sweep_never_takes_a_key_past_its_cap(app, accounts):
    """The sweep freed the hold's share of the cap and another request spent it: the late
    settlement charges only what the cap has left, and writes off the rest."""
    from silk.extensions import db
    from silk.metering.sweeper import sweep

    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    _caps(app, user.key_id, total=str(Decimal(HOLD) / 10**9))  # one full request
    late = _reserve(app, user, "late")
    with app.app_context():
        assert sweep(db.engine, {}, lambda model, at: PRICE, everything=True) == 1
    # The cap's room freed by the sweep (all but the estimate) goes to another request.
    other = _reserve(app, user, "other", output=950)
    _settle(app, other, Usage(100, 950))
    spent = 100 * 140 + (100 * 140 + 950 * 280)
    assert _key(app, user.key_id).spent_total_units == spent
    settled = _settle(app, late, Usage(100, 1000))  # the owner's real settlement arrives
    key = _key(app, user.key_id)
    assert (key.held_units, key.spent_total_units) == (0, HOLD)
    assert settled.charged_units == 100 * 140 + (HOLD - spent)
    assert settled.written_off_units == spent - 100 * 140
    assert accounts.balance_units(user.id) == 10**9 - HOLD
    assert accounts.audit() == []
