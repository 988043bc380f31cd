"""Races: concurrent redemptions and idempotent top-ups credit once, on every backend.

Two kinds of real concurrency: threads in this process, each request on its own database
connection, and a gunicorn-run gateway (gevent workers in other processes) hit by threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from silk.pricing import usd_to_units
from tests.support.gateway import Gateway

RACERS = 16


def race(count: int, call):
    """Run call(i) in `count` threads released together; return the results in order."""
    barrier = threading.Barrier(count)

    def run(i):
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def issue_code(client, admin, amount: str) -> str:
    response = client.post("/v1/admin/redemption-codes", headers=admin.headers,
                           json={"amount": amount})
    return response.json["data"][0]["code"]


def test_one_code_redeemed_by_many_accounts_at_once_pays_one(app, client, accounts):
    admin = accounts.make(admin=True)
    users = [accounts.make() for _ in range(RACERS)]
    code = issue_code(client, admin, "5")

    def redeem(i):
        response = app.test_client().post("/v1/topup", json={"code": code},
                                          headers=users[i].headers)
        return response.status_code

    statuses = race(RACERS, redeem)
    assert Counter(statuses) == {200: 1, 409: RACERS - 1}
    balances = [accounts.balance_units(user.id) for user in users]
    assert sorted(balances) == [0] * (RACERS - 1) + [usd_to_units(5)]
    assert accounts.audit() == []


def test_one_idempotency_key_sent_many_times_at_once_credits_once(app, accounts):
    admin = accounts.make(admin=True)
    user = accounts.make()
    headers = {**admin.headers, "Idempotency-Key": "invoice-2026-0042"}

    def pay(_):
        response = app.test_client().post("/v1/topup", headers=headers,
                                          json={"amount": 10, "account": user.id})
        return response.status_code, response.json.get("transaction_id")

    results = race(RACERS, pay)
    assert {status for status, _ in results} == {200}
    assert len({txn for _, txn in results}) == 1
    assert accounts.balance_units(user.id) == usd_to_units(10)
    assert len(accounts.ledger(user.id)) == 1
    assert accounts.audit() == []


@pytest.mark.parametrize("keyed", [True, False], ids=["keys", "no-keys"])
def test_concurrent_topups_all_apply(app, accounts, keyed):
    admin = accounts.make(admin=True)

    def pay(i):
        headers = {**admin.headers, **({"Idempotency-Key": f"k{i}"} if keyed else {})}
        return app.test_client().post("/v1/topup", json={"amount": 1, "account": admin.id},
                                      headers=headers).status_code

    assert set(race(RACERS, pay)) == {200}
    assert accounts.balance_units(admin.id) == usd_to_units(RACERS)
    ledger = accounts.ledger(admin.id)
    assert [e.balance_after_units for e in ledger] == [usd_to_units(i + 1)
                                                       for i in range(RACERS)]
    assert accounts.audit() == []


def test_a_multi_use_invite_admits_exactly_its_uses(app, client, accounts):
    app.config["SILK_REGISTRATION_PER_HOUR"] = 0
    admin = accounts.make(admin=True)
    code = client.post("/v1/admin/invite-codes", headers=admin.headers,
                       json={"uses": 3}).json["data"][0]["code"]

    def sign_up(i):
        return app.test_client().post("/v1/register", json={
            "email": f"racer{i}@example.com", "invite_code": code}).status_code

    assert Counter(race(RACERS, sign_up)) == {201: 3, 400: RACERS - 3}


@pytest.mark.slow
def test_races_against_a_gunicorn_gateway(app, client, accounts, database_url):
    admin = accounts.make(admin=True)
    users = [accounts.make() for _ in range(8)]
    code = issue_code(client, admin, "3")
    with Gateway(database_url, {"SILK_SWEEP_INTERVAL": "0"}, workers=2) as gateway:
        def redeem(i):
            return requests.post(gateway.url + "/v1/topup", json={"code": code},
                                 headers=users[i].headers, timeout=30).status_code

        assert Counter(race(len(users), redeem)) == {200: 1, 409: len(users) - 1}

        def pay(_):
            response = requests.post(gateway.url + "/v1/topup", timeout=30,
                                     json={"amount": "2.50", "account": users[0].id},
                                     headers={**admin.headers, "Idempotency-Key": "gw-1"})
            return response.status_code, response.json()["transaction_id"]

        results = race(RACERS, pay)
        assert {status for status, _ in results} == {200}
        assert len({txn for _, txn in results}) == 1

    redeemed = sum(accounts.balance_units(user.id) for user in users)
    assert redeemed == usd_to_units(3) + usd_to_units("2.50")
    assert accounts.audit() == []
