"""Each event is written with its cause, once per crossing, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from silk.metering import rules
from tests.alerts.helpers import credit, events, settle
from tests.chat.helpers import set_quota_left


@pytest.mark.parametrize(("before", "after", "low", "high"), [
    (10, 5, True, False), (10, 10, False, False), (5, 4, False, False),
    (7, 7, False, False), (4, 7, False, True), (7, 9, False, False), (6, 7, False, True)])
def test_threshold_crossing_rule(before, after, low, high):
    assert rules.fell_below(rules.PYTHON, before, after, 7) is low
    assert rules.reached(rules.PYTHON, before, after, 7) is high


def test_crossing_rule_renders_for_both_databases():
    assert rules.fell_below(rules.SQLITE, "b", "a", "t") == "(b >= t AND a < t)"
    assert rules.reached(rules.POSTGRES, "b", "a", "t") == "(b < t AND a >= t)"
    assert [rules.cap_mark(rules.PYTHON, 1000, p) for p in rules.CAP_ALERT_PERCENTS] == [
        800, 900, 1000]
    assert rules.cap_mark(rules.PYTHON, 7, 80) == 6  # 5.6 rounds up: never before it is spent
    assert rules.cap_reached(rules.PYTHON, 790, 805, 1000, 80)
    assert not rules.cap_reached(rules.PYTHON, 805, 899, 1000, 80)
    assert not rules.cap_reached(rules.PYTHON, 805, 899, 1000, 90)


def test_cap_rule_in_sql_agrees_with_python(backend, database_url):
    """The same rule, evaluated by each database, over caps that do not divide evenly."""
    from sqlalchemy import create_engine, text

    arithmetic = (rules.SQLITE if backend == "sqlite" else rules.POSTGRES).for_sqlalchemy()
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            for cap in (1, 7, 999, 10**12 + 3, 10**18 + 99):  # up to the largest cap
                for percent in rules.CAP_ALERT_PERCENTS:
                    mark = rules.cap_mark(rules.PYTHON, cap, percent)
                    for before, after in ((mark - 1, mark), (mark, mark + 1), (0, mark - 1)):
                        sql = rules.cap_reached(arithmetic, ":before", ":after", ":cap",
                                                percent)
                        got = conn.execute(text(f"SELECT {sql}"), {
                            "before": before, "after": after, "cap": cap}).scalar()
                        assert bool(got) is rules.cap_reached(
                            rules.PYTHON, before, after, cap, percent), (cap, percent)
    finally:
        engine.dispose()


def test_balance_crossing_writes_one_event_per_crossing(app, accounts, client):
    acct = accounts.make(credit="1")  # 1,000,000,000 units
    set_quota_left(app, acct.id)
    answer = client.put("/v1/account/alerts", json={"balance_threshold": "0.99975"},
                        headers=acct.headers)
    assert answer.status_code == 200, answer.json
    assert answer.json["balance_threshold"] == 0.99975

    settle(app, acct.id, "r1", 1000)  # 999,860,000: above
    assert events(app) == []
    crossed = settle(app, acct.id, "r2", 1000)  # 999,720,000: crossed
    settle(app, acct.id, "r3", 1000)  # 999,580,000: still under, no new alert
    low = events(app, "balance_low")
    assert [e.event_id for e in low] == [f"balance_low:{crossed}"]
    assert json.loads(low[0].payload) == {"balance_units": 999_720_000,
                                          "threshold_units": 999_750_000,
                                          "reservation_id": crossed}
    assert low[0].account_id == acct.id and low[0].state == "pending"

    credit(app, acct.id, 200_000)  # 999,780,000: above again, re-armed
    settle(app, acct.id, "r4", 1000)  # 999,640,000: crossed again
    assert len(events(app, "balance_low")) == 2
    assert accounts.audit() == []


def test_a_threshold_changed_while_a_charge_waits_is_the_one_it_crosses(app, accounts,
                                                                       database_url):
    """A charge that waits for the account's row (another transaction changes the threshold
    and holds the row) reads the threshold committed before it took the row, not the one
    its statement's snapshot saw; on SQLite the writers take turns whole."""
    import threading
    import time

    from sqlalchemy import create_engine, text

    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering import service
    from silk.pricing import Usage
    from tests.alerts.helpers import PRICE

    acct = accounts.make(credit="1")  # 1,000,000,000 units, no threshold set
    set_quota_left(app, acct.id)
    with app.app_context():
        hold = service.reserve(db.engine, tiers(), account_id=acct.id, key_id=None,
                               request_id="raced", model="deepseek-chat", price=PRICE,
                               prompt_worst=1000, max_output=1, prompt_estimate=1000,
                               ttl_seconds=60)
    holder_engine = create_engine(database_url)
    holder = holder_engine.connect()
    if holder.dialect.name == "sqlite":
        holder.exec_driver_sql("BEGIN IMMEDIATE")
    holder.execute(text("UPDATE accounts SET alert_balance_units = 999900000 WHERE id = :id"),
                   {"id": acct.id})
    failures: list[BaseException] = []

    def charge() -> None:
        try:
            with app.app_context():
                service.settle(db.engine, hold,
                               service.Outcome(status="ok", usage=Usage(1000, 0)))
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    settling = threading.Thread(target=charge)
    settling.start()
    try:
        time.sleep(0.3)
        waited = settling.is_alive()  # the account's row (or SQLite's lock) is taken
        holder.commit()
    finally:
        holder.close()
        holder_engine.dispose()
    settling.join(10)
    assert waited and not settling.is_alive() and not failures
    [low] = events(app, "balance_low")  # 999,860,000 is under the new threshold
    assert json.loads(low.payload)["threshold_units"] == 999_900_000
    assert json.loads(low.payload)["balance_units"] == 999_860_000
    assert accounts.audit() == []


def test_removal_of_money_that_crosses_writes_one_event(app, accounts, client):
    acct = accounts.make(credit="1")
    client.put("/v1/account/alerts", json={"balance_threshold": "0.5"}, headers=acct.headers)
    credit(app, acct.id, -400_000_000)  # 0.6: above
    credit(app, acct.id, -200_000_000)  # 0.4: crossed
    credit(app, acct.id, -100_000_000)  # 0.3: still under
    credit(app, acct.id, 300_000_000)  # 0.6: re-armed, and a top-up never alerts
    credit(app, acct.id, -150_000_000)  # 0.45: crossed again
    low = events(app, "balance_low")
    assert [json.loads(e.payload)["balance_units"] for e in low] == [400_000_000, 450_000_000]
    assert all(e.event_id.startswith("balance_low:ledger:") for e in low)
    assert accounts.audit() == []


@pytest.mark.parametrize("app_config", [{"SILK_ALERT_BALANCE_USD": "0.99975"}])
def test_operator_threshold_applies_to_accounts_that_set_none(app, accounts, client):
    acct, own = accounts.make(credit="1"), accounts.make(credit="1")
    client.put("/v1/account/alerts", json={"balance_threshold": 0}, headers=own.headers)
    for account in (acct, own):
        set_quota_left(app, account.id)
        for n in range(4):
            settle(app, account.id, f"r{account.id}-{n}", 1000)
    assert [e.account_id for e in events(app, "balance_low")] == [acct.id]
    assert json.loads(events(app)[0].payload)["threshold_units"] == 999_750_000


def test_no_threshold_no_balance_alert(app, accounts):
    acct = accounts.make(credit="0.001")
    set_quota_left(app, acct.id)
    settle(app, acct.id, "r1", 7000)  # down to 20,000 units, no threshold set
    assert events(app) == []


def test_free_quota_used_up_once_per_month(app, accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, 1500)
    settle(app, acct.id, "r1", 1000)  # 500 free tokens left
    assert events(app, "quota_used_up") == []
    settle(app, acct.id, "r2", 1000)  # the last 500 used: crossed
    settle(app, acct.id, "r3", 1000)  # nothing free left, nothing crossed
    used_up = events(app, "quota_used_up")
    assert len(used_up) == 1
    payload = json.loads(used_up[0].payload)
    assert payload["used_tokens"] == payload["quota_tokens"] == 100_000
    assert accounts.audit() == []


def test_key_expiring_writes_one_event_per_key_and_expiry(app, accounts):
    from silk.account.service import create_key
    from silk.alerts.service import key_expiry_chore
    from silk.database import utcnow
    from silk.extensions import db

    acct = accounts.make()
    with app.app_context():
        soon = create_key(acct.id, name="soon", expires_at=utcnow() + timedelta(days=3))
        create_key(acct.id, name="later", expires_at=utcnow() + timedelta(days=30))
        soon_id = soon.record.id
        chore = key_expiry_chore(7)
        assert chore(db.engine) == 1
        assert chore(db.engine) == 0  # every sweep looks again; one event per key
    expiring = events(app, "key_expiring")
    assert [e.account_id for e in expiring] == [acct.id]
    assert json.loads(expiring[0].payload)["key_id"] == soon_id


def test_route_that_starts_resting_writes_one_event(app):
    breakers = app.extensions["silk.breakers"]
    for _ in range(breakers.threshold):
        breakers.get("deepseek/deepseek-chat").failed(0.01)
    breakers.get("deepseek/deepseek-chat").failed(0.01)  # rested again in the same period
    failing = events(app, "route_failing")
    assert len(failing) == 1
    assert failing[0].account_id is None
    assert json.loads(failing[0].payload)["route"] == "deepseek/deepseek-chat"

