"""Both money stores, side by side: the same random operations on SQLite and PostgreSQL must
leave the same books, row by row, after every step.

A hypothesis state machine reserves (several holds open at once), settles with random usage
(within the hold, beyond it, cut, nothing delivered), settles twice, sweeps and settles
swept holds late, credits and adjusts, changes an account's tier, and moves the clock across
month boundaries (silk.database.set_clock). After each step it compares balances, holds,
ledgers, usage records and quota state, and the dashboard's and billing report's quota
figures. A money rule changed in one store only shows up here as a difference.
"""

from __future__ import annotations

import calendar
import os
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select, update

from silk.errors import InsufficientBalance, InvalidRequest, NotFound
from silk.pricing import Price, Usage
from tests.support import databases

PRICES = {
    "cheap": Price(Decimal("0.14"), Decimal("0.28"), Decimal("0.014")),
    "dear": Price(Decimal("2"), Decimal("8")),
}
UPSTREAM = Price(Decimal("0.07"), Decimal("0.11"), Decimal("0.007"), reasoning=Decimal("0.2"))
TIERS = (("small", Decimal("10"), 3000), ("tiny", Decimal("0"), 1500))
START = datetime(2031, 1, 31, 22, 0, 0)
ACCOUNTS = 2


class Clock:
    """The time the gateway reads while the machine runs (set through silk.database)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Twin:
    """One database behind its own app: the store under test."""

    def __init__(self, name: str, url: str) -> None:
        from silk import create_app
        from silk.extensions import db

        self.name = name
        self.app = create_app({
            "TESTING": True, "SQLALCHEMY_DATABASE_URI": url,
            "SECRET_KEY": "test-" + uuid.uuid4().hex, "SILK_SWEEP_INTERVAL": 0})
        with self.app.app_context():
            self.engine = db.engine

    def reset(self) -> None:
        """An empty schema with the test's tiers and accounts."""
        from silk.account.service import create_account
        from silk.billing.tiers import forget_tiers, save_tier, tiers
        from silk.extensions import db

        with self.app.app_context():
            databases.reset_schema(db)
            forget_tiers()
            for name, percent, free in TIERS:
                save_tier(name, percent, free)
            for i in range(ACCOUNTS):
                create_account(f"u{i}@example.com", tier=TIERS[i % len(TIERS)][0],
                               known_tiers=tiers(), credit_units=(i + 1) * 25_000_000,
                               actor="test")
            db.session.remove()

    def tiers(self):
        from silk.billing.tiers import tiers

        with self.app.app_context():
            return tiers()

    def books(self) -> dict[str, list[tuple]]:
        """Everything money wrote, row by row, without surrogate ids."""
        from silk.metering.service import ACCOUNTS as ACCOUNT_ROWS
        from silk.metering.service import LEDGER, RESERVATIONS, USAGE

        a, r, ledger, u = ACCOUNT_ROWS.c, RESERVATIONS.c, LEDGER.c, USAGE.c
        with self.engine.connect() as conn:
            books = {
                "accounts": _rows(conn, select(
                    a.id, a.tier, a.balance_units, a.reserved_units, a.quota_month,
                    a.quota_used, a.quota_held).order_by(a.id)),
                "reservations": _rows(conn, select(
                    r.request_id, r.account_id, r.state, r.hold_units, r.quota_tokens,
                    r.prompt_estimate).order_by(r.id)),
                "ledger": _rows(conn, select(
                    ledger.account_id, ledger.kind, ledger.amount_units,
                    ledger.balance_after_units, ledger.request_id).order_by(ledger.id)),
                "usage": _rows(conn, select(
                    u.request_id, u.account_id, u.status, u.prompt_tokens, u.completion_tokens,
                    u.cache_hit_tokens, u.total_tokens, u.free_tokens, u.subtotal_units,
                    u.discount_units, u.cost_units, u.written_off_units,
                    u.upstream_cost_units, u.estimated, u.day).order_by(u.id)),
            }
        return books

    def shown(self, month: str) -> dict[str, list]:
        """The quota figures users see: the dashboard's and the billing report's."""
        from silk.billing.service import billing_report
        from silk.validation import parse_month
        from silk.web.dashboard_data import overview

        label, start, end = parse_month(month)
        with self.engine.connect() as conn:
            billing = [billing_report(conn, i + 1, self.tiers(), label, start, end).quota
                       for i in range(ACCOUNTS)]
        with self.app.app_context():
            dashboard = [overview(i + 1, days=1) for i in range(ACCOUNTS)]
        return {"billing": [(q.free, q.used, q.remaining) for q in billing],
                "dashboard": [(o.quota_free, o.quota_used, o.quota_remaining, o.available)
                              for o in dashboard]}


def _rows(conn, query) -> list[tuple]:
    return [tuple(row) for row in conn.execute(query)]


def _kind(result):
    """What a store did, comparable across stores."""
    if isinstance(result, Exception):
        return type(result).__name__
    if result is None or isinstance(result, int):  # nothing done, or a balance after
        return result
    if hasattr(result, "reservation_id"):  # a Hold
        return ("hold", result.hold_units, result.quota_tokens, result.tier)
    return ("settled", result.charged_units, result.balance_after_units,
            result.written_off_units, result.cost)


class Books(RuleBasedStateMachine):
    """Random money operations, each run on both twins and compared."""

    twins: tuple[Twin, Twin]

    def __init__(self) -> None:
        from silk.database import set_clock

        super().__init__()
        for twin in self.twins:
            twin.reset()
        self.clock = Clock(START)
        set_clock(self.clock)
        self.count = 0
        self.open: list[tuple] = []  # holds of both twins, not settled yet
        self.swept: list[tuple] = []  # swept by the sweep, their real settlement to come
        self.done: list[tuple] = []  # settled

    @initialize(used=st.lists(st.integers(0, 1500), min_size=ACCOUNTS, max_size=ACCOUNTS))
    def start_with_quota_used(self, used):
        """Free tokens each account used this month before the machine starts."""
        from silk.metering.rules import month_of
        from silk.metering.service import ACCOUNTS as ACCOUNT_ROWS

        for twin in self.twins:
            with twin.engine.begin() as conn:
                for account, tokens in enumerate(used, start=1):
                    conn.execute(update(ACCOUNT_ROWS).where(ACCOUNT_ROWS.c.id == account)
                                 .values(quota_month=month_of(START), quota_used=tokens))

    def both(self, action):
        results = []
        for twin in self.twins:
            try:
                results.append(action(twin))
            except (InsufficientBalance, InvalidRequest, NotFound) as exc:
                results.append(exc)
        first, second = (_kind(result) for result in results)
        assert first == second, f"sqlite: {first}\npostgres: {second}"
        return results

    @rule(account=st.integers(1, ACCOUNTS), model=st.sampled_from(sorted(PRICES)),
          prompt=st.integers(0, 3000), output=st.integers(1, 4000))
    def reserve(self, account, model, prompt, output):
        from silk.metering.service import reserve

        self.count += 1
        request_id = f"req-{self.count}"

        def action(twin):
            return reserve(twin.engine, twin.tiers(), account_id=account, key_id=None,
                           request_id=request_id, model=model, price=PRICES[model],
                           prompt_worst=prompt, max_output=output, prompt_estimate=prompt,
                           ttl_seconds=0)  # no lease: nobody renews it, the sweep may take it

        holds = self.both(action)
        if not isinstance(holds[0], Exception):
            self.open.append(tuple(holds))

    @precondition(lambda self: self.open)
    @rule(data=st.data(), status=st.sampled_from(["ok", "cut", "client_closed", "timeout"]),
          prompt=st.integers(0, 4000), completion=st.integers(0, 6000),
          hit=st.integers(0, 4000), billable=st.booleans())
    def settle(self, data, status, prompt, completion, hit, billable):
        pair = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        self._settle(pair, status, Usage(prompt, completion, hit), billable)
        self.done.append(pair)

    @precondition(lambda self: self.swept)
    @rule(data=st.data(), prompt=st.integers(0, 4000), completion=st.integers(0, 6000))
    def settle_swept(self, data, prompt, completion):
        """The real settlement of a swept hold arrives: it corrects the sweep's estimate."""
        pair = self.swept.pop(data.draw(st.integers(0, len(self.swept) - 1)))
        self._settle(pair, "ok", Usage(prompt, completion), True)
        self.done.append(pair)

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def settle_again(self, data):
        pair = self.done[data.draw(st.integers(0, len(self.done) - 1))]
        results = self._settle(pair, "ok", Usage(1, 1), True)
        assert results == [None, None]

    def _settle(self, pair, status, usage, billable):
        from silk.metering.service import Outcome, settle

        holds = iter(pair)
        outcome = Outcome(status=status, usage=usage, billable=billable,
                          estimated=status != "ok", cost_price=UPSTREAM)
        return self.both(lambda twin: settle(twin.engine, next(holds), outcome))

    @rule(account=st.integers(1, ACCOUNTS), amount=st.integers(-30_000_000, 30_000_000))
    def credit(self, account, amount):
        """A top-up, or an adjustment that may not take held money."""
        from silk.metering.service import credit

        def action(twin):
            with twin.engine.begin() as conn:
                return credit(conn, account, amount, kind="topup" if amount > 0 else
                              "adjustment", note="differential", actor="test")

        self.both(action)

    @rule(account=st.integers(1, ACCOUNTS), tier=st.sampled_from([t[0] for t in TIERS]))
    def change_tier(self, account, tier):
        from silk.metering.service import ACCOUNTS as ACCOUNT_ROWS

        for twin in self.twins:
            with twin.engine.begin() as conn:
                conn.execute(update(ACCOUNT_ROWS).where(ACCOUNT_ROWS.c.id == account)
                             .values(tier=tier))

    @rule(seconds=st.sampled_from([1, 61, 3600, 86_400, 20 * 86_400]))
    def advance(self, seconds):
        self.clock.now += timedelta(seconds=seconds)

    @rule()
    def to_last_second_of_month(self):
        now = self.clock.now
        last = calendar.monthrange(now.year, now.month)[1]
        self.clock.now = datetime(now.year, now.month, last, 23, 59, 59)

    @rule()
    def sweep(self):
        """Every hold's lease ran out (none is renewed): the sweep settles them all."""
        from silk.metering.sweeper import sweep

        counts = [sweep(twin.engine, twin.tiers(), PRICES.get) for twin in self.twins]
        assert counts[0] == counts[1] == len(self.open)
        self.swept.extend(self.open)
        self.open.clear()

    @invariant()
    def same_books(self):
        first, second = (twin.books() for twin in self.twins)
        _same(first, second, self.clock.now)

    @rule()
    def look(self):
        """What the dashboard and the billing report show agrees too."""
        from silk.metering.rules import month_of

        month = month_of(self.clock.now)
        first, second = (twin.shown(month) for twin in self.twins)
        _same(first, second, self.clock.now)

    def teardown(self):
        from silk.database import set_clock

        set_clock(None)


def _same(first: dict, second: dict, now: datetime) -> None:
    for name in first:
        assert first[name] == second[name], (
            f"{name} differ at {now}:\nsqlite:   {first[name]}\npostgres: {second[name]}")


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    name = f"silk_diff_{os.getpid()}"
    url = databases.postgres_database(name)
    sqlite_url = "sqlite:///" + str(tmp_path_factory.mktemp("diff") / "silk.db")
    pair = (Twin("sqlite", sqlite_url), Twin("postgres", url))
    yield pair
    for twin in pair:
        twin.engine.dispose()
    databases.drop_postgres_database(name)


def test_both_stores_keep_the_same_books(twins):
    """SILK_DIFFERENTIAL_EXAMPLES runs more sequences; SILK_DIFFERENTIAL_SHRINK=1 shrinks a
    failing one (minutes: every try empties both databases), else it is reported whole."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("SILK_DIFFERENTIAL_SHRINK"):
        phases.append(Phase.shrink)
    Books.twins = twins
    run_state_machine_as_test(Books, settings=settings(
        max_examples=int(os.environ.get("SILK_DIFFERENTIAL_EXAMPLES", "25")),
        stateful_step_count=20, deadline=None, database=None, phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
