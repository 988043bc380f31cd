"""A real settlement that finds its hold swept replaces the sweep's estimate with the truth.

The sweep settles a hold whose lease ran out, at the prompt estimate. Its owner may still
have been serving it: a database outage longer than the lease kept the owner from renewing,
or a journaled settlement is written after its worker stopped. The real settlement then
charges what the estimate missed (or refunds what it took too much), as far as the balance
can pay without touching other holds and the key's spend caps allow beside its other spend
and holds; what it cannot pay is written off, and counted. One
ledger entry; the usage record is rewritten with the real counts. The statements are the
same on both databases, and each store runs them in its own transaction (this path is rare).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from silk.metering import rules
from silk.metering.rules import PYTHON
from silk.metering.state import KEY_SELECT, KeyState
from silk.metering.store import Written
from silk.pricing import Price, Tier, Usage, quote

_BIGINT = 2**63 - 1

RECLAIM = ("DELETE FROM reservations WHERE id = :reservation AND request_id = :request "
           "AND state = 'swept'")  # the settlement's own request's hold (store.claim_sql)
SWEPT = "SELECT cost_units, free_tokens, day FROM usage_records WHERE request_id = :request"
ACCOUNT = ("UPDATE accounts SET balance_units = balance_units WHERE id = :account "
           "RETURNING balance_units, reserved_units, quota_month, quota_used, quota_held")
CORRECT = ("UPDATE accounts SET balance_units = balance_units - :applied, "
           "quota_used = :quota_used, quota_month = :month WHERE id = :account "
           "RETURNING balance_units")
ENTRY = ("INSERT INTO ledger_entries (account_id, kind, amount_units, balance_after_units, "
         "request_id, note, actor, created_at) VALUES (:account, :kind, -:applied, :balance, "
         ":request, :model, 'gateway', :now)")
KEY_STATE = f"SELECT {KEY_SELECT} FROM api_keys WHERE id = :key"
# The key's spend counts the correction on the day the sweep's record counted it.
_KEY_SPENT = rules.spent_after(rules.SQLITE.for_sqlalchemy(), "spent_day", "spent_day_units",
                               ":swept_day", ":applied")
_KEY_MONTH = rules.spent_after(rules.SQLITE.for_sqlalchemy(), "spent_month",
                               "spent_month_units", ":swept_month", ":applied")
KEY = (f"UPDATE api_keys SET spent_day_units = {_KEY_SPENT}, "
       f"spent_month_units = {_KEY_MONTH}, spent_total_units = spent_total_units + :applied "
       "WHERE id = :key")
USAGE = (
    "UPDATE usage_records SET upstream_model = :upstream_model, provider = :provider, "
    "stream = :stream, route = :route, surface = :surface, status = :status, "
    "http_status = :http_status, "
    "prompt_tokens = :prompt_tokens, completion_tokens = :completion_tokens, "
    "reasoning_tokens = :reasoning_tokens, cache_hit_tokens = :cache_hit_tokens, "
    "total_tokens = :total_tokens, free_tokens = :free_tokens, "
    "subtotal_units = :subtotal_units, discount_units = :discount_units, "
    "cost_units = :cost_total, written_off_units = :written_off_total, "
    "upstream_cost_units = :upstream_cost_units, "
    "estimated = :estimated, latency_ms = :latency_ms, ttft_ms = :ttft_ms "
    "WHERE request_id = :request")

Run = Callable[[str, dict[str, Any]], Any]  # one statement: its first row (or None)
Count = Callable[[str, dict[str, Any]], int]  # one statement: the rows it changed


def correct(run: Run, count: Count, values: dict[str, Any], key_alerts: str) -> Written | None:
    """Correct a swept hold inside the caller's transaction: the balance after, charged in
    all and written off in all; None when the hold was not swept (settled already).
    `key_alerts` is the database's statement of a key's spend alerts
    (silk.metering.outbox), run when the correction adds to a key's spend."""
    if count(RECLAIM, values) != 1:
        return None
    swept = run(SWEPT, values)
    swept_cost, swept_free, swept_day = (
        (int(swept[0]), int(swept[1]), str(swept[2])) if swept else (0, 0, ""))
    balance, reserved, quota_month, used, held = run(ACCOUNT, values)
    month = rules.quota_month_after(PYTHON, quota_month, values["month"])
    # The sweep released the free tokens the hold had set aside, and other requests may have
    # used them since: the late settlement keeps those the sweep's record took, and may use
    # only what the month has left now, never more than its hold had.
    left = rules.free_left(PYTHON, values["tier_quota"],
                           rules.used_in(PYTHON, quota_month, used, month), held)
    free = min(values["quota"], swept_free + left)
    cost = quote(Price(Decimal(values["price_input"]), Decimal(values["price_output"]),
                       Decimal(values["price_cache_hit"])),
                 Usage(values["prompt_tokens"], values["completion_tokens"],
                       values["cache_hit_tokens"]),
                 Tier("", Decimal(values["discount"]), values["tier_quota"]), free)
    due = min(cost.total, values["hold"])  # never more than the hold could pay
    missed = due - swept_cost
    # Money the account holds for other requests is theirs: a late charge takes only the
    # rest, and never makes the balance negative; nor does it take the key past a cap.
    spendable = max(rules.spendable(PYTHON, balance, reserved), 0)
    room = _key_room(run, values, swept_day)
    if room is not None:
        spendable = min(spendable, max(room, 0))
    applied = min(missed, spendable) if missed > 0 else missed
    quota_used = rules.used_after_correction(quota_month, used, month, swept_day[:7],
                                             cost.free_tokens - swept_free)
    values = {**values, "month": month, "applied": applied, "quota_used": quota_used,
              "free_tokens": cost.free_tokens, "subtotal_units": cost.subtotal,
              "discount_units": cost.discount}
    (balance_after,) = run(CORRECT, values)
    if applied:
        run(ENTRY, {**values, "kind": "charge" if applied > 0 else "refund",
                    "balance": balance_after})
        if values["key"] is not None:
            run(KEY, {**values, "swept_day": swept_day[:10], "swept_month": swept_day[:7]})
            if applied > 0:  # the key's spend grew: it may have reached a share of a cap
                count(key_alerts, {**values, "charge": applied, "budget_day": swept_day[:10],
                                   "budget_month": swept_day[:7]})
    written_off = min(values["beyond_units"] + cost.total - due + missed - applied, _BIGINT)
    run(USAGE, {**values, "cost_total": swept_cost + applied, "written_off_total": written_off})
    return Written(balance_after, swept_cost + applied, written_off)


def _key_room(run: Run, values: dict[str, Any], swept_day: str) -> int | None:
    """What the key's caps leave for a charge counted on the sweep's day: the least of each
    cap less the key's spend in that period and its open holds (the sweep gave the hold's
    share back, and other requests may have spent it); None for no key or no cap."""
    row = run(KEY_STATE, values) if values["key"] is not None else None
    key = KeyState(*row) if row is not None else None
    if key is None or not key.capped:
        return None
    spent = (rules.spent_in(PYTHON, key.spent_day, key.spent_day_units, swept_day[:10]),
             rules.spent_in(PYTHON, key.spent_month, key.spent_month_units, swept_day[:7]),
             key.spent_total_units)
    caps = (key.cap_day_units, key.cap_month_units, key.cap_total_units)
    return min(rules.cap_left(PYTHON, cap, used, key.held_units)
               for cap, used in zip(caps, spent, strict=True) if cap is not None)
