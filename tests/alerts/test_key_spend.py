"""A key's spend at 80, 90 and 100 % of a cap writes one alert, with the settlement that
crossed it, on SQLite and PostgreSQL; a key without caps writes none."""

from __future__ import annotations

import json

from silk.pricing import Usage
from tests.alerts.helpers import events
from tests.metering.test_key_budgets import (  # noqa: F401 - clock is a fixture
    LAST_SECOND,
    NEXT_DAY,
    PRICE,
    _caps,
    _no_free_tokens,
    _reserve,
    _settle,
    clock,
)


def _spend(app) -> list[tuple[str, dict]]:
    return [(e.event_id, json.loads(e.payload)) for e in events(app, "key_spend")]


def test_each_share_of_a_total_cap_alerts_once(app, accounts):
    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    _caps(app, user.key_id, total="0.001022")  # 1,022,000 units: 817,600; 919,800; all
    key = user.key_id
    for request, output in (("a", 1000), ("b", 1000)):  # 294,000 each: 588,000
        _settle(app, _reserve(app, user, request, output=output), Usage(100, output))
    assert _spend(app) == []
    _settle(app, _reserve(app, user, "c"), Usage(100, 1000))  # 882,000: 80 %
    assert _spend(app) == [(f"key_spend:{key}:total:1022000:80", {
        "key_id": key, "period": "total", "period_value": "1022000", "percent": 80,
        "cap_units": 1_022_000, "spent_units": 882_000})]
    _settle(app, _reserve(app, user, "d", output=300), Usage(100, 300))  # 980,000: 90 %
    _settle(app, _reserve(app, user, "e", output=100), Usage(100, 100))  # 1,022,000: all
    ids = [event_id for event_id, _ in _spend(app)]
    assert ids == [f"key_spend:{key}:total:1022000:{p}" for p in (80, 90, 100)]
    assert {e.account_id for e in events(app, "key_spend")} == {user.id}
    assert accounts.audit() == []


def test_one_settlement_crossing_two_shares_writes_both_and_a_new_day_rearms(
        app, accounts, clock):  # noqa: F811 - the fixture imported above
    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id, LAST_SECOND)
    _caps(app, user.key_id, day="0.0003", month="0.001")  # day: 240,000; 270,000; 300,000
    key = user.key_id
    _settle(app, _reserve(app, user, "jan-31"), Usage(100, 1000))  # 294,000
    assert [e for e, _ in _spend(app)] == [
        f"key_spend:{key}:day:2031-01-31:300000:80", f"key_spend:{key}:day:2031-01-31:300000:90"]

    clock.now = NEXT_DAY  # a new day (and month): its counter starts from the charge
    _no_free_tokens(app, user.id, NEXT_DAY)
    _settle(app, _reserve(app, user, "feb-1"), Usage(100, 1000))
    assert [e for e, _ in _spend(app)][2:] == [
        f"key_spend:{key}:day:2031-02-01:300000:80", f"key_spend:{key}:day:2031-02-01:300000:90"]
    # The month counted 294,000 of 1,000,000 each time: under 80 %, no month alert.
    assert all(payload["period"] == "day" for _, payload in _spend(app))
    assert accounts.audit() == []


def test_a_month_cap_alerts_at_each_share_once_and_a_new_month_rearms(
        app, accounts, clock):  # noqa: F811 - the fixture imported above
    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id, LAST_SECOND)
    _caps(app, user.key_id, month="0.00049")  # 490,000 units: 392,000; 441,000; all
    key = user.key_id
    _settle(app, _reserve(app, user, "jan-a"), Usage(100, 1000))  # 294,000
    assert _spend(app) == []
    _settle(app, _reserve(app, user, "jan-b", output=400), Usage(100, 400))  # 420,000: 80 %
    assert _spend(app) == [(f"key_spend:{key}:month:2031-01:490000:80", {
        "key_id": key, "period": "month", "period_value": "2031-01", "percent": 80,
        "cap_units": 490_000, "spent_units": 420_000})]
    _settle(app, _reserve(app, user, "jan-c", output=200), Usage(100, 200))  # 490,000: all
    assert [(e, p["percent"], p["spent_units"]) for e, p in _spend(app)][1:] == [
        (f"key_spend:{key}:month:2031-01:490000:{share}", share, 490_000)
        for share in (90, 100)]

    clock.now = NEXT_DAY  # a new month: its counter starts from the charge
    _no_free_tokens(app, user.id, NEXT_DAY)
    _settle(app, _reserve(app, user, "feb-a"), Usage(100, 1000))  # 294,000
    assert len(_spend(app)) == 3
    _settle(app, _reserve(app, user, "feb-b", output=400), Usage(100, 400))  # 420,000: 80 %
    assert [e for e, _ in _spend(app)][3:] == [f"key_spend:{key}:month:2031-02:490000:80"]
    assert accounts.audit() == []


def test_a_day_cap_raised_within_the_day_alerts_again_at_its_own_shares(
        app, accounts, clock):  # noqa: F811 - the fixture imported above
    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id, LAST_SECOND)
    _caps(app, user.key_id, day="0.0003")  # 240,000; 270,000; 300,000
    key = user.key_id
    _settle(app, _reserve(app, user, "first"), Usage(100, 1000))  # 294,000: 80 and 90 %
    _caps(app, user.key_id, day="0.0006")  # 480,000; 540,000; 600,000
    _settle(app, _reserve(app, user, "second"), Usage(100, 1000))  # 588,000: 80 and 90 %
    assert [e for e, _ in _spend(app)] == [
        f"key_spend:{key}:day:2031-01-31:{cap}:{share}"
        for cap in (300000, 600000) for share in (80, 90)]
    assert [(p["cap_units"], p["percent"]) for _, p in _spend(app)][2:] == [
        (600000, 80), (600000, 90)]
    assert accounts.audit() == []


def test_a_key_without_caps_writes_no_spend_alert(app, accounts):
    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    for i in range(4):
        _settle(app, _reserve(app, user, f"r{i}", capped=False), Usage(100, 1000))
    assert _spend(app) == []
    assert accounts.audit() == []


def test_a_late_settlement_that_corrects_a_sweep_alerts(app, accounts):
    from silk.extensions import db
    from silk.metering.sweeper import sweep

    user = accounts.make(credit="1")
    _no_free_tokens(app, user.id)
    _caps(app, user.key_id, total="0.00018")  # 180,000: 144,000; 162,000; all
    hold = _reserve(app, user, "late", output=500)  # 154,000
    with app.app_context():
        assert sweep(db.engine, {}, lambda model, at: PRICE, everything=True) == 1
    assert _spend(app) == []  # the sweep's estimate: 14,000
    _settle(app, hold, Usage(100, 500))  # the real 154,000: 80 %, in the correction
    assert [e for e, _ in _spend(app)] == [f"key_spend:{user.key_id}:total:180000:80"]
    assert accounts.audit() == []
