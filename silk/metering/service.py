"""Reserve, settle and credit: the only code that changes a balance.

Every function here runs one short transaction, so a stream holds no database connection
while it runs. They decide here and write through the database's money store
(silk.metering.store): on PostgreSQL one conditional statement, group-committed with the
other requests of the moment; on SQLite a transaction under its single write lock. Either
way concurrent requests on any number of workers or hosts see each other's holds and
cannot overdraw, and both follow the same rules (silk.metering.rules)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, localcontext
from typing import Any

from sqlalchemy.engine import Connection, Engine

from silk.database import utcnow
from silk.metering import keeper, outbox, store
from silk.metering.rules import month_of
from silk.metering.store import ACCOUNTS, LEDGER, RESERVATIONS, USAGE, Ask, tier_of
from silk.ops import metrics
from silk.pricing import (
    Cost,
    Price,
    Tier,
    Tiered,
    Usage,
    at_prompt,
    quote,
    units_to_usd,
    upstream_cost,
)

__all__ = ["ACCOUNTS", "LEDGER", "RESERVATIONS", "USAGE", "Decision", "Hold", "Outcome",
           "Settlement", "credit", "decide", "keep", "month_of", "reserve", "settle",
           "tier_of", "write"]


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Hold:
    """An open reservation: money and free-quota tokens set aside for one request.

    `prompt_bound` and `output_bound` are the token counts the hold was sized from: usage
    beyond them is never charged (the hold could not pay it) but written off. Its owner
    renews its lease (`lease_seconds`) while the request runs (silk.metering.keeper).
    """

    reservation_id: int
    account_id: int
    key_id: int | None
    request_id: str
    model: str
    price: Price
    hold_units: int
    quota_tokens: int
    prompt_estimate: int
    tier: Tier
    prompt_bound: int
    output_bound: int
    lease_seconds: float = 0  # 0: nobody renews it
    # The prompt-tiered price in force when the request was admitted: the request pays its
    # tier's rates; `price` is their ceiling over the tiers the prompt bound can reach.
    tiered: Tiered | None = None


@dataclass(slots=True)
class Outcome:
    """How a request ended, as the relay saw it."""

    status: str  # ok, cut, client_closed, timeout, upstream_error, revoked, rejected, swept
    http_status: int = 200
    usage: Usage | None = None
    reasoning_tokens: int = 0
    estimated: bool = False
    billable: bool = True  # False when nothing was delivered: the hold is released whole
    upstream_model: str = ""
    provider: str = ""
    stream: bool = False
    surface: str = ""  # the public API the request came through; a label only
    cost_price: Price | Tiered | None = None  # the serving route's upstream price, if known
    route: str = ""  # the catalogue route that served (provider/upstream unless named)
    latency_ms: int | None = None
    ttft_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What settling charged; the balance after it is None while it waits in the journal."""

    cost: Cost
    charged_units: int
    balance_after_units: int | None
    written_off_units: int = 0

    @property
    def cost_usd(self) -> Decimal:
        """The amount charged, in USD."""
        return units_to_usd(self.charged_units)


def reserve(engine: Engine, tiers: Mapping[str, Tier], *, account_id: int, key_id: int | None,
            request_id: str, model: str, price: Price | Tiered, prompt_worst: int,
            max_output: int, prompt_estimate: int, ttl_seconds: int,
            key_capped: bool = False) -> Hold:
    """Set aside the worst-case cost of a request, or raise 402 if the balance or the key's
    spend caps cannot cover it (`key_capped`: the caller saw caps on the key, a hint).

    A prompt-tiered price is held at the highest rates a prompt within the bound could pay.
    """
    tiered: Tiered | None = None
    if isinstance(price, Tiered):
        tiered, held = price, price.ceiling(prompt_worst)
    else:
        held = price
    ask = Ask(account_id, key_id, request_id, model, held, prompt_worst, max_output,
              prompt_estimate, ttl_seconds, key_capped)
    return _own(engine, ask, store.of(engine).reserve(tiers, utcnow(), ask), tiered)


def _own(engine: Engine, ask: Ask, reserved: store.Reserved,
         tiered: Tiered | None = None) -> Hold:
    """The hold a reservation became, kept alive by this process until it is settled."""
    bound = reserved.bound
    hold = Hold(reserved.reservation_id, ask.account_id, ask.key_id, ask.request_id,
                ask.model, ask.price, bound.total, bound.free_tokens, ask.prompt_estimate,
                reserved.tier, ask.prompt_worst, ask.max_output, ask.ttl_seconds, tiered)
    keeper.of(engine).own(hold)
    return hold


# Counts a provider sends are clamped to this before any arithmetic (2**62 tokens is far
# beyond any hold), and stored amounts to the columns' ranges, so no value can raise.
_MOST_TOKENS = 2**62
_BIGINT = 2**63 - 1
_WIDE = Context(prec=60)  # exact for any clamped count times any catalogue price


def _count(value: Any) -> int:
    """A token count as a whole number in [0, _MOST_TOKENS], whatever a provider sent."""
    try:
        if isinstance(value, float) and not value < _MOST_TOKENS:  # inf, NaN, huge
            return _MOST_TOKENS if value > 0 else 0
        return min(max(int(value), 0), _MOST_TOKENS)
    except (TypeError, ValueError, OverflowError):
        return 0


_UNPRINTABLE = dict.fromkeys(range(32))  # control characters, NUL among them


def _text(value: Any, size: int) -> str:
    """A provider's string fit for a text column: no control characters (PostgreSQL refuses
    NUL), cut to the column's size."""
    text = value if type(value) is str else str(value or "")
    if not text.isprintable():  # a printable text has no control character: nothing to drop
        text = text.translate(_UNPRINTABLE)
    return text[:size]


@dataclass(frozen=True, slots=True)
class Decision:
    """A settlement decided and priced, to be written exactly once (maybe from the journal).

    `values` are what the settlement statements bind, less the quota month and how the
    reservation is claimed, which `write` adds when it writes.
    """

    reservation_id: int
    account_id: int
    model: str
    cost: Cost
    charged: int
    written_off: int
    values: dict[str, Any]

    @property
    def usage(self) -> Usage:
        """The tokens billed (capped at the hold's bounds)."""
        values = self.values
        return Usage(values["prompt_tokens"], values["completion_tokens"],
                     values["cache_hit_tokens"], values.get("cache_write_tokens", 0))

    def to_json(self) -> dict[str, Any]:
        """The decision as JSON-ready data, for the journal."""
        values = {**self.values, "now": self.values["now"].isoformat(),
                  "day": self.values["day"].isoformat()}
        return {"reservation_id": self.reservation_id, "account_id": self.account_id,
                "model": self.model, "cost": list(_cost_fields(self.cost)),
                "charged": self.charged, "written_off": self.written_off, "values": values}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        """A decision read back from the journal."""
        values = dict(data["values"])
        values.setdefault("surface", "")  # journaled before usage records named it
        values.setdefault("upstream_cost_units", 0)  # journaled before upstream cost was kept
        values.setdefault("route", "")  # journaled before usage records named the route
        values["now"] = datetime.fromisoformat(values["now"])
        values["day"] = datetime.fromisoformat(values["day"]).date()
        return cls(data["reservation_id"], data["account_id"], data["model"],
                   Cost(*data["cost"]), data["charged"], data["written_off"], values)


def _cost_fields(cost: Cost) -> tuple[int, ...]:
    return (cost.free_tokens, cost.billable_tokens, cost.subtotal, cost.discount, cost.total)


def decide(hold: Hold, outcome: Outcome) -> Decision:
    """Price a request's outcome against its hold; pure, and never raises on what was sent.

    Usage beyond the token bounds the hold was sized from is capped at them, so the cost
    never exceeds the hold (pricing.quote is monotone); the price of what was capped away
    is written off, and counted.
    """
    now = utcnow()
    sent = outcome.usage if outcome.billable and outcome.usage else Usage(0, 0)
    sent_prompt, sent_completion = _count(sent.prompt_tokens), _count(sent.completion_tokens)
    sent_hit = min(_count(sent.cache_hit_tokens), sent_prompt)
    prompt = min(sent_prompt, hold.prompt_bound)
    completion = min(sent_completion, hold.output_bound)
    hit = min(sent_hit, prompt)
    # Cache writes are prompt tokens priced as input: kept only to be told back, within
    # what the prompt billed holds beside its hits.
    usage = Usage(prompt, completion, hit, min(_count(sent.cache_write_tokens), prompt - hit))
    reasoning = min(_count(outcome.reasoning_tokens), completion) if outcome.billable else 0
    # The request may use the free tokens it held, no more: then its cost is priced
    # exactly as its hold was, so it never exceeds the hold.
    # A prompt-tiered price: the whole request pays the tier of its (billed) prompt, never
    # above the ceiling its hold was sized with.
    price = hold.tiered.for_prompt(prompt) if hold.tiered else hold.price
    cost = quote(price, usage, hold.tier, hold.quota_tokens)
    beyond = 0
    if (sent_prompt, sent_completion) != (prompt, completion):
        # Priced as counted: a prompt count past a tier's edge is in that dearer tier.
        asked_price = hold.tiered.for_prompt(sent_prompt) if hold.tiered else price
        with localcontext(_WIDE):
            asked = quote(asked_price, Usage(sent_prompt, sent_completion, sent_hit),
                          hold.tier, hold.quota_tokens)
        beyond = max(asked.total - cost.total, 0)
    charged = min(cost.total, hold.hold_units)
    written_off = min(cost.total - charged + beyond, _BIGINT)
    # What the operator pays the provider for the same counts: the bound sent upstream is
    # the most the provider may bill, so the capped counts are the ones it costs.
    upstream = (upstream_cost(at_prompt(outcome.cost_price, prompt), usage, reasoning)
                if outcome.cost_price is not None else 0)
    values = {
        # What a late correction needs to price the usage again (silk.metering.correction).
        "price_input": str(price.input), "price_output": str(price.output),
        "price_cache_hit": str(price.cache_hit_price),
        "discount": str(hold.tier.discount), "tier_quota": hold.tier.monthly_free_tokens,
        "beyond_units": min(beyond, _BIGINT),
        "account": hold.account_id, "reservation": hold.reservation_id,
        "hold": hold.hold_units, "quota": hold.quota_tokens, "free": cost.free_tokens,
        "request": _text(hold.request_id, 64), "key": hold.key_id,
        "model": _text(hold.model, 64), "upstream_model": _text(outcome.upstream_model, 128),
        "provider": _text(outcome.provider, 32), "stream": bool(outcome.stream),
        "surface": _text(outcome.surface, 16), "route": _text(outcome.route, 64),
        "status": _text(outcome.status, 24), "http_status": int(outcome.http_status),
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": reasoning, "cache_hit_tokens": usage.cache_hit_tokens,
        "cache_write_tokens": usage.cache_write_tokens,  # told, not stored: priced as input
        "total_tokens": usage.total_tokens, "free_tokens": cost.free_tokens,
        "subtotal_units": cost.subtotal, "discount_units": cost.discount, "charge": charged,
        "written_off_units": written_off, "estimated": bool(outcome.estimated),
        "upstream_cost_units": min(upstream, _BIGINT),
        "latency_ms": outcome.latency_ms, "ttft_ms": outcome.ttft_ms, "now": now,
        "day": now.date()}
    return Decision(hold.reservation_id, hold.account_id, hold.model, cost, charged,
                    written_off, values)


def settle(engine: Engine, hold: Hold, outcome: Outcome) -> Settlement | None:
    """Release a hold and charge the real cost, exactly once; None if already settled."""
    return write(engine, decide(hold, outcome))


def write(engine: Engine, decision: Decision, *, claim: str = "settled") -> Settlement | None:
    """Write a decided settlement exactly once; None if its hold was settled already.

    One claim of the reservation (which makes a second settlement a no-op), one update of
    the account, the ledger entry, the usage record and any alert it crosses into (silk.
    metering.outbox), in one transaction. The sweep
    claims with "swept": a real settlement that comes later (its lease ran out while the
    database was away) then corrects the sweep's estimate (silk.metering.correction).
    """
    day = decision.values["day"].isoformat()  # a key's spend counts on its record's day
    values = {**decision.values, "month": month_of(utcnow()), "claimed": claim,
              "budget_day": day, "budget_month": day[:7],
              "alert_floor": outbox.floor(engine)}
    written = store.of(engine).write(values)
    keeper.of(engine).release(decision.reservation_id)
    if written is None:
        return None
    if written.written_off:
        metrics.written_off(decision.model, written.written_off)
    return Settlement(cost=decision.cost, charged_units=written.charged,
                      balance_after_units=written.balance_after,
                      written_off_units=written.written_off)


def keep(engine: Engine, decision: Decision, hold: Hold | None = None) -> Settlement:
    """Journal a settlement the database cannot take now; it is written once it answers.

    The hold stays this process's (its lease renewed) until then; the settlement returned
    is what will be charged.
    """
    keeper.of(engine).keep(decision, hold)
    return Settlement(cost=decision.cost, charged_units=decision.charged,
                      balance_after_units=None, written_off_units=decision.written_off)


def credit(conn: Connection, account_id: int, amount_units: int, *, kind: str, note: str = "",
           actor: str = "", request_id: str | None = None) -> int:
    """Add (or, negative, remove) money inside the caller's transaction; returns the balance.

    A removal never takes money that open holds have set aside, so the balance stays
    covered and non-negative.
    """
    return store.of(conn.engine).credit(conn, account_id, amount_units, kind=kind, note=note,
                                        actor=actor, request_id=request_id)
