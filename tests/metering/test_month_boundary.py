"""A request reserved in one month and settled in the next, on both databases.

The hold takes free tokens from what is left of the old month; it is settled into the new
one, whose counter starts from zero: the free tokens it used count once, in the month it
was settled in. While it is open in the new month, its held tokens count against the new
month, and the dashboard and the billing report show what metering would allow.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from silk.pricing import Price, Usage

PRICE = Price(Decimal("0.14"), Decimal("0.28"))
FREE = 100_000  # the free tier's monthly quota
LAST_SECOND = datetime(2031, 1, 31, 23, 59, 59)
NEXT_MONTH = datetime(2031, 2, 1, 0, 0, 1)


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


def _reserve(app, account_id, request_id, prompt, output):
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering.service import reserve

    with app.app_context():
        return reserve(db.engine, tiers(), account_id=account_id, key_id=None,
                       request_id=request_id, model="deepseek-chat", price=PRICE,
                       prompt_worst=prompt, max_output=output, prompt_estimate=prompt,
                       ttl_seconds=60)


def _settle(app, hold, usage, billable=True):
    from silk.extensions import db
    from silk.metering.service import Outcome, settle

    with app.app_context():
        return settle(db.engine, hold, Outcome(status="ok", usage=usage, billable=billable))


def _january_quota_left(app, account_id, left):
    from silk.account.models import Account
    from silk.extensions import db

    with app.app_context():
        account = db.session.get(Account, account_id)
        account.quota_month, account.quota_used = "2031-01", FREE - left
        db.session.commit()
        db.session.remove()


def _shown(app, client, user, month):
    """(used, remaining) as the dashboard and as the billing report show them."""
    from silk.web.dashboard_data import overview

    with app.app_context():
        page = overview(user.id)
    bill = client.get(f"/v1/billing?month={month}", headers=user.headers).json["quota"]
    return (page.quota_used, page.quota_remaining), (bill["used"], bill["remaining"])


def _free_metering_gives(app, account_id):
    """The free tokens metering grants a request of a whole month's quota, released at once."""
    probe = _reserve(app, account_id, f"probe-{datetime.now().timestamp()}", FREE // 2,
                     FREE // 2)
    _settle(app, probe, None, billable=False)
    return probe.quota_tokens


def test_reserved_on_the_last_second_settled_in_the_next_month(app, client, accounts, clock):
    user = accounts.make(credit="1")
    _january_quota_left(app, user.id, 500)
    hold = _reserve(app, user.id, "boundary", prompt=100, output=1000)
    assert hold.quota_tokens == 500  # what January had left
    assert hold.hold_units == 600 * 280  # the other 600 tokens at the output price

    clock.now = NEXT_MONTH
    settled = _settle(app, hold, Usage(100, 300))
    assert settled.charged_units == 0  # 400 tokens, inside the 500 it held

    row = accounts.row(user.id)
    assert (row.quota_month, row.quota_used, row.quota_held) == ("2031-02", 400, 0)
    assert (row.reserved_units, row.balance_units) == (0, 10**9)
    [record] = accounts.usage_records(user.id)
    assert (record.free_tokens, str(record.day)) == (400, "2031-02-01")
    # Counted once, in February; January's counter is gone, not added to.
    assert _shown(app, client, user, "2031-02") == ((400, FREE - 400), (400, FREE - 400))
    assert client.get("/v1/billing?month=2031-01",
                      headers=user.headers).json["quota"]["used"] == 0
    assert _free_metering_gives(app, user.id) == FREE - 400
    assert accounts.audit() == []


def test_a_hold_open_across_the_change_counts_against_the_new_month(app, client, accounts,
                                                                     clock):
    user = accounts.make(credit="1")
    _january_quota_left(app, user.id, 1500)
    hold = _reserve(app, user.id, "open", prompt=100, output=1000)
    assert hold.quota_tokens == 1100

    clock.now = NEXT_MONTH  # nothing has touched the account in February yet
    held = FREE - 1100
    assert _shown(app, client, user, "2031-02") == ((0, held), (0, held))
    assert _free_metering_gives(app, user.id) == held

    second = _reserve(app, user.id, "february", prompt=10, output=10)
    assert second.quota_tokens == 20
    assert _shown(app, client, user, "2031-02") == ((0, held - 20), (0, held - 20))

    _settle(app, hold, Usage(100, 1000))
    _settle(app, second, Usage(10, 10))
    row = accounts.row(user.id)
    assert (row.quota_month, row.quota_used, row.quota_held) == ("2031-02", 1120, 0)
    assert _shown(app, client, user, "2031-02") == ((1120, FREE - 1120), (1120, FREE - 1120))
    assert accounts.audit() == []


def test_a_hold_swept_in_the_next_month_and_settled_late(app, client, accounts, clock):
    """The sweep's estimate and the late real settlement both land in the new month."""
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering.sweeper import sweep

    user = accounts.make(credit="1")
    _january_quota_left(app, user.id, 500)
    hold = _reserve(app, user.id, "late", prompt=100, output=1000)

    clock.now = NEXT_MONTH
    with app.app_context():
        assert sweep(db.engine, tiers(), lambda model, at: PRICE, everything=True) == 1
    row = accounts.row(user.id)
    assert (row.quota_month, row.quota_used, row.quota_held) == ("2031-02", 100, 0)

    _settle(app, hold, Usage(100, 300))  # the real settlement corrects the estimate
    row = accounts.row(user.id)
    assert (row.quota_month, row.quota_used, row.quota_held) == ("2031-02", 400, 0)
    assert _shown(app, client, user, "2031-02") == ((400, FREE - 400), (400, FREE - 400))
    assert accounts.audit() == []


def _reserve_stamped(app, account_id, request_id, prompt, output, now):
    """A hold whose request read the clock at `now` and reached the database later: what a
    worker's reserve does when another worker's write gets the lock first."""
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering import store
    from silk.metering.service import _own
    from silk.metering.store import Ask

    ask = Ask(account_id, None, request_id, "deepseek-chat", PRICE, prompt, output, prompt, 60)
    with app.app_context():
        return _own(db.engine, ask, store.of(db.engine).reserve(tiers(), now, ask))


def test_a_hold_stamped_before_the_change_and_written_after_never_turns_the_month_back(
        app, accounts, clock):
    """At the change of month, a worker may read the clock in January and reach the
    database after another worker wrote February's counter. The hold settles into
    February, so it takes February's quota: the counter never goes back to January (which
    would forget what February used and grant its quota again)."""
    user = accounts.make(credit="1")
    _january_quota_left(app, user.id, 0)  # January's free quota is used up

    clock.now = NEXT_MONTH  # another worker's request, already in February
    _settle(app, _reserve(app, user.id, "february", prompt=49_500, output=49_500),
            Usage(49_500, 49_500))
    row = accounts.row(user.id)
    assert (row.quota_month, row.quota_used, row.balance_units) == ("2031-02", 99_000, 10**9)

    late = _reserve_stamped(app, user.id, "stamped-in-january", 1000, 1000, LAST_SECOND)
    assert late.quota_tokens == 1000  # what February has left, not a fresh month's quota
    _settle(app, late, Usage(1000, 1000))
    row = accounts.row(user.id)
    assert (row.quota_month, row.quota_used, row.quota_held) == ("2031-02", FREE, 0)
    assert _free_metering_gives(app, user.id) == 0  # February's quota is spent
    assert accounts.audit() == []


def test_the_system_clock_is_naive_utc_to_the_microsecond():
    """The gateway's clock (the epoch plus the system clock's microseconds) reads what
    `datetime.now(UTC)` reads, without its zone: months and days turn at UTC midnight."""
    from datetime import UTC, timedelta

    from silk.database import system_utcnow

    before = datetime.now(UTC).replace(tzinfo=None)
    now = system_utcnow()
    after = datetime.now(UTC).replace(tzinfo=None)
    assert now.tzinfo is None
    assert before - timedelta(microseconds=1) <= now <= after
