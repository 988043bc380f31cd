"""A real settlement that finds its hold swept replaces the sweep's estimate with the truth.

The sweep settles a hold whose lease ran out, at the prompt estimate. Its owner may still
have been serving it: a database outage longer than the lease kept the owner from renewing,
or a journaled settlement is written after its worker stopped. The real settlement then
charges what the estimate missed (or refunds what it took too much), as far as the balance
can pay without touching other holds; what it cannot pay is written off, and counted. One
ledger entry; the usage record is rewritten with the real counts. The statements are the
same on both databases; this path is rare, so it runs on an ordinary transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import Engine

from silk.metering import sqlite
from silk.pricing import Price, Tier, Usage, quote

_BIGINT = 2**63 - 1

RECLAIM = ("UPDATE reservations SET state = 'settled', settled_at = :now "
           "WHERE id = :reservation AND state = 'swept'")
SWEPT = "SELECT cost_units, free_tokens, day FROM usage_records WHERE request_id = :request"
ACCOUNT = ("UPDATE accounts SET balance_units = balance_units WHERE id = :account "
           "RETURNING balance_units, reserved_units, quota_month, quota_used, quota_held")
CORRECT = ("UPDATE accounts SET balance_units = balance_units - :applied, "
           "quota_used = :quota_used, quota_month = :month WHERE id = :account "
           "RETURNING balance_units")
ENTRY = ("INSERT INTO ledger_entries (account_id, kind, amount_units, balance_after_units, "
         "request_id, note, actor, created_at) VALUES (:account, :kind, -:applied, :balance, "
         ":request, :model, 'gateway', :now)")
USAGE = (
    "UPDATE usage_records SET upstream_model = :upstream_model, provider = :provider, "
    "stream = :stream, status = :status, http_status = :http_status, "
    "prompt_tokens = :prompt_tokens, completion_tokens = :completion_tokens, "
    "reasoning_tokens = :reasoning_tokens, cache_hit_tokens = :cache_hit_tokens, "
    "total_tokens = :total_tokens, free_tokens = :free_tokens, "
    "subtotal_units = :subtotal_units, discount_units = :discount_units, "
    "cost_units = :cost_total, written_off_units = :written_off_total, "
    "estimated = :estimated, latency_ms = :latency_ms, ttft_ms = :ttft_ms "
    "WHERE request_id = :request")

Run = Callable[[str, dict], object]


def correct(run: Run, count: Callable[[str, dict], int],
            values: dict) -> tuple[int, int, int] | None:
    """Correct a swept hold inside the caller's transaction: (balance after, charged in
    all, written off in all), or None when the hold was not swept (settled already)."""
    if count(RECLAIM, values) != 1:
        return None
    swept = run(SWEPT, values)
    swept_cost, swept_free, swept_day = (swept[0], swept[1], str(swept[2])) if swept else (
        0, 0, "")
    balance, reserved, month, used, held = run(ACCOUNT, values)
    this_month = values["month"]
    used_now = used if month == this_month else 0
    # The sweep released the free tokens the hold had set aside, and other requests may have
    # used them since: the late settlement keeps those the sweep's record took, and may use
    # only what the month has left now, never more than its hold had.
    free = min(values["quota"],
               swept_free + max(0, values["tier_quota"] - used_now - held))
    cost = quote(Price(Decimal(values["price_input"]), Decimal(values["price_output"]),
                       Decimal(values["price_cache_hit"])),
                 Usage(values["prompt_tokens"], values["completion_tokens"],
                       values["cache_hit_tokens"]),
                 Tier("", Decimal(values["discount"]), values["tier_quota"]), free)
    due = min(cost.total, values["hold"])  # never more than the hold could pay
    missed = due - swept_cost
    # Money the account holds for other requests is theirs: a late charge takes only the
    # rest, and never makes the balance negative.
    applied = min(missed, max(balance - reserved, 0)) if missed > 0 else missed
    more_free = cost.free_tokens - swept_free
    if swept_day[:7] == this_month:  # the sweep's free tokens counted in this month
        quota_used = max(used_now + more_free, 0)
    else:  # they counted in a month that is over: this one only gains what is new
        quota_used = used_now + max(more_free, 0)
    values = {**values, "applied": applied, "quota_used": quota_used,
              "free_tokens": cost.free_tokens, "subtotal_units": cost.subtotal,
              "discount_units": cost.discount}
    (balance_after,) = run(CORRECT, values)
    if applied:
        run(ENTRY, {**values, "kind": "charge" if applied > 0 else "refund",
                    "balance": balance_after})
    written_off = min(values["beyond_units"] + cost.total - due + missed - applied, _BIGINT)
    run(USAGE, {**values, "cost_total": swept_cost + applied, "written_off_total": written_off})
    return balance_after, swept_cost + applied, written_off


def on_sqlite(driver: sqlite3.Connection, values: dict) -> tuple[int, int, int] | None:
    """`correct` inside SQLite's write transaction (silk.metering.sqlite)."""
    return correct(lambda sql, bound: sqlite.run(driver, sql, bound),
                   lambda sql, bound: sqlite.count(driver, sql, bound), values)


def on_postgres(engine: Engine, values: dict) -> tuple[int, int, int] | None:
    """`correct` in a transaction of its own: the reservation and account rows stay locked."""
    with engine.begin() as conn:

        def run(sql: str, bound: dict):
            result = conn.execute(text(sql), bound)
            return result.first() if result.returns_rows else None

        return correct(run, lambda sql, bound: conn.execute(text(sql), bound).rowcount, values)
