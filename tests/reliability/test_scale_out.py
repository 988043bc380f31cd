"""Two gateway instances (two gevent workers each) on one PostgreSQL and one Redis.

Load spread over both must never overdraw a balance, a key's requests-per-minute must hold
across both instances together, and every admitted request must leave exactly one usage
record in books that the operator's audit finds balanced.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.chat.helpers import set_quota_left
from tests.reliability.helpers import (
    assert_audit_cli_green,
    assert_money_exact,
    body,
    call,
    errors_logged,
    fresh_window,
    gateways,
    stream_ok,
)

pytestmark = pytest.mark.slow

RPM = 12


@pytest.fixture(scope="session")
def database_url(pg_url):
    """Scale-out is a PostgreSQL question: SQLite cannot be shared between hosts."""
    return pg_url


def test_two_instances_share_balances_limits_and_books(app, database_url, accounts, upstream,
                                                       gateway_env, redis_url, tmp_path):
    from silk.account.service import create_key

    env = {**gateway_env, "REDIS_URL": redis_url}
    limited = accounts.make(credit="5")
    with app.app_context():
        limited_key = create_key(limited.id, name="rpm", rpm_limit=RPM).secret
    # Small balances: a few worst-case holds fit at once, so concurrency must be refused.
    poor = [accounts.make(credit="0.002") for _ in range(3)]
    for acct in [limited, *poor]:
        set_quota_left(app, acct.id)

    with gateways(database_url, env, 2, tmp_path) as (one, two):
        urls = itertools.cycle([one.url, two.url])
        fresh_window(15)  # the whole burst falls in one rate-limit minute
        with ThreadPoolExecutor(max_workers=16) as pool:
            burst = list(pool.map(
                lambda i: (i, call(next(urls), limited_key, body(f"rpm {i}", stream=i % 2 == 0))),
                range(RPM * 3)))
        rpm_statuses = Counter(status for _, (status, _) in burst)
        assert rpm_statuses == {200: RPM, 429: RPM * 2}, rpm_statuses

        lowest = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                lowest.append(min(accounts.balance_units(a.id) for a in poor))
                time.sleep(0.05)

        def hit(i):
            acct = poor[i % len(poor)]
            url = one.url if i % 2 else two.url
            payload = body(f"load {i}", "pieces=8 chunk_delay=0.01", stream=i % 3 != 0,
                           max_tokens=1000)
            return acct.id, url, call(url, acct.key, payload)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with ThreadPoolExecutor(max_workers=40) as pool:
            results = list(pool.map(hit, range(240)))
        stop.set()
        watcher.join(timeout=5)

    statuses = Counter(status for _, _, (status, _) in results)
    print(f"rpm burst: {dict(rpm_statuses)}; load: {dict(statuses)}")
    assert set(statuses) <= {200, 402}, statuses
    assert statuses[200] and statuses[402]  # the balances really were contended
    assert {url for _, url, (status, _) in results if status == 200} == {one.url, two.url}
    for _, _, (status, text) in results:
        if status == 200 and text.startswith("data:"):
            assert stream_ok(text), text[-300:]
    assert min(lowest) >= 0

    served = Counter(acct_id for acct_id, _, (status, _) in results if status == 200)
    for acct in poor:
        records = assert_money_exact(accounts, acct.id, "0.002")
        assert len(records) == served[acct.id]  # exactly one usage record per admitted request
        assert {r.status for r in records} == {"ok"}
    limited_records = assert_money_exact(accounts, limited.id, "5")
    assert len(limited_records) == RPM
    assert_audit_cli_green(one.env)
    assert errors_logged(one) == errors_logged(two) == []

