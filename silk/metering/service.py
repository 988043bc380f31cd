"""Reserve, settle and credit: the only code that changes a balance.

Every function here runs one short transaction, so a stream holds no database connection
while it runs. Each database gets the shortest safe form: on PostgreSQL one conditional
statement, group-committed with the other requests of the moment (silk.metering.postgres);
on SQLite a transaction under its single write lock (silk.metering.sqlite). Either way
concurrent requests on any number of workers or hosts see each other's holds and cannot
overdraw."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Context, Decimal, localcontext

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine

from silk.account.models import Account
from silk.database import utcnow
from silk.errors import InsufficientBalance, InvalidRequest, NotFound
from silk.metering import correction, keeper, postgres, sqlite
from silk.metering.models import LedgerEntry, Reservation, UsageRecord
from silk.metering.worker import identity
from silk.ops import metrics
from silk.pricing import Cost, Price, Tier, Usage, quote, units_to_usd, worst_case

ACCOUNTS = Account.__table__
RESERVATIONS = Reservation.__table__
LEDGER = LedgerEntry.__table__
USAGE = UsageRecord.__table__


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


@dataclass(slots=True)
class Outcome:
    """How a request ended, as the relay saw it."""

    status: str  # ok, cut, client_closed, timeout, upstream_error, rejected, swept
    http_status: int = 200
    usage: Usage | None = None
    reasoning_tokens: int = 0
    estimated: bool = False
    billable: bool = True  # False when nothing was delivered: the hold is released whole
    upstream_model: str = ""
    provider: str = ""
    stream: bool = False
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
    def cost_usd(self):
        """The amount charged, in USD."""
        return units_to_usd(self.charged_units)


def month_of(moment: datetime) -> str:
    """The quota month of a moment, as YYYY-MM (UTC)."""
    return f"{moment.year:04d}-{moment.month:02d}"  # strftime costs three times as much


# Statements are built once: building and cache-keying a Core statement per call cost more
# than running it. Parameters prefixed p_ keep bind names apart from column names.
_STATE = (ACCOUNTS.c.balance_units, ACCOUNTS.c.reserved_units, ACCOUNTS.c.tier,
          ACCOUNTS.c.quota_month, ACCOUNTS.c.quota_used, ACCOUNTS.c.quota_held,
          ACCOUNTS.c.disabled)
_THIS_ACCOUNT = ACCOUNTS.c.id == bindparam("p_account")
_LOCK = (update(ACCOUNTS).where(_THIS_ACCOUNT)
         .values(reserved_units=ACCOUNTS.c.reserved_units).returning(*_STATE))
_HOLD = update(ACCOUNTS).where(_THIS_ACCOUNT).values(
    reserved_units=ACCOUNTS.c.reserved_units + bindparam("p_hold"),
    quota_held=ACCOUNTS.c.quota_held + bindparam("p_quota"),
    quota_month=bindparam("p_month"), quota_used=bindparam("p_used"))
_RESERVE_ATTEMPTS = 3  # optimistic statements before taking the row lock
_NEW_RESERVATION = insert(RESERVATIONS).returning(RESERVATIONS.c.id)


def tier_of(tiers: Mapping[str, Tier], name: str) -> Tier:
    """The account's tier; a tier an operator removed bills at list price with no quota."""
    return tiers.get(name) or Tier(name=name, discount=Decimal(0), monthly_free_tokens=0)


def _free_available(row, tier: Tier, month: str) -> tuple[int, int]:
    used = row.quota_used if row.quota_month == month else 0
    return used, max(0, tier.monthly_free_tokens - used - row.quota_held)


@dataclass(frozen=True, slots=True)
class _Ask:
    """What a request asks to reserve."""

    account_id: int
    key_id: int | None
    request_id: str
    model: str
    price: Price
    prompt_worst: int
    max_output: int
    prompt_estimate: int
    ttl_seconds: int

    def hold(self, engine: Engine, reservation_id: int, bound: Cost, tier: Tier) -> Hold:
        """The hold this ask became, kept alive by this process until it is settled."""
        hold = Hold(reservation_id, self.account_id, self.key_id, self.request_id, self.model,
                    self.price, bound.total, bound.free_tokens, self.prompt_estimate, tier,
                    self.prompt_worst, self.max_output, self.ttl_seconds)
        keeper.of(engine).own(hold)
        return hold


def _bound(row, ask: _Ask, tiers: Mapping[str, Tier], month: str) -> tuple[Tier, int, Cost]:
    """The account's tier, quota used and the ask's worst case; 404 or 402 if impossible."""
    if row is None or row.disabled:
        raise NotFound("Account not found.")
    tier = tier_of(tiers, row.tier)
    used, free = _free_available(row, tier, month)
    bound = worst_case(ask.price, ask.prompt_worst, ask.max_output, tier, free)
    spendable = row.balance_units - row.reserved_units
    if bound.total > spendable:
        raise InsufficientBalance(
            f"Insufficient balance: this request may cost up to ${units_to_usd(bound.total)} "
            f"({ask.max_output} output tokens at most) and "
            f"${units_to_usd(max(spendable, 0))} is available. Top up, or lower max_tokens.")
    return tier, used, bound


def reserve(engine: Engine, tiers: Mapping[str, Tier], *, account_id: int, key_id: int | None,
            request_id: str, model: str, price: Price, prompt_worst: int, max_output: int,
            prompt_estimate: int, ttl_seconds: int) -> Hold:
    """Set aside the worst-case cost of a request, or raise 402 if it cannot be covered."""
    ask = _Ask(account_id, key_id, request_id, model, price, prompt_worst, max_output,
               prompt_estimate, ttl_seconds)
    now = utcnow()
    if engine.dialect.name == "sqlite":
        return _reserve_sqlite(engine, tiers, now, ask)
    return _reserve_postgres(engine, tiers, now, ask) or _reserve_locked(engine, tiers, now, ask)


def _reserve_sqlite(engine: Engine, tiers: Mapping[str, Tier], now: datetime, ask: _Ask) -> Hold:
    """Reserve inside SQLite's write lock (see silk.metering.sqlite)."""
    month = month_of(now)
    with sqlite.write_transaction(engine) as driver:
        tier, used, bound = _bound(sqlite.lock_account(driver, ask.account_id), ask, tiers, month)
        sqlite.run(driver, sqlite.HOLD, {"account": ask.account_id, "hold": bound.total,
                                         "quota": bound.free_tokens, "month": month,
                                         "used": used})
        (reservation_id,) = sqlite.run(driver, sqlite.NEW_RESERVATION, {
            "account": ask.account_id, "key": ask.key_id, "request": ask.request_id,
            "model": ask.model, "hold": bound.total, "quota": bound.free_tokens,
            "estimate": ask.prompt_estimate, "worker": identity(), "now": now,
            "expires": now + timedelta(seconds=ask.ttl_seconds)})
    return ask.hold(engine, reservation_id, bound, tier)


def _reserve_locked(engine: Engine, tiers: Mapping[str, Tier], now: datetime, ask: _Ask) -> Hold:
    """Reserve under the account's row lock: PostgreSQL's way when optimism keeps losing."""
    month = month_of(now)
    with engine.begin() as conn:
        row = conn.execute(_LOCK, {"p_account": ask.account_id}).first()
        tier, used, bound = _bound(row, ask, tiers, month)
        conn.execute(_HOLD, {"p_account": ask.account_id, "p_hold": bound.total,
                             "p_quota": bound.free_tokens, "p_month": month, "p_used": used})
        reservation_id = conn.execute(_NEW_RESERVATION, {
            "account_id": ask.account_id, "key_id": ask.key_id, "request_id": ask.request_id,
            "model": ask.model, "hold_units": bound.total, "quota_tokens": bound.free_tokens,
            "prompt_estimate": ask.prompt_estimate, "state": "open", "worker": identity(),
            "created_at": now, "expires_at": now + timedelta(seconds=ask.ttl_seconds),
            "settled_at": None}).scalar_one()
    return ask.hold(engine, reservation_id, bound, tier)


def _reserve_postgres(engine: Engine, tiers: Mapping[str, Tier], now: datetime,
                      ask: _Ask) -> Hold | None:
    """Reserve with one conditional statement, group-committed (see silk.metering.postgres).

    The hold is computed from the account's last known state; the statement checks that
    state still holds, or returns the current one to compute again. A refusal (402, 404) is
    only ever decided on a state just read. None when the account changed under every try
    (many requests racing for the last of its money or free quota): the caller then
    reserves under the row lock.
    """
    month = month_of(now)
    line = postgres.channel(engine)
    state, fresh = line.snapshots.get(ask.account_id), False
    tries = 0
    while tries < _RESERVE_ATTEMPTS:
        if state is None:
            answer = line.run(postgres.Queued(ask.account_id, postgres.READING, postgres.SNAPSHOT,
                                          {"account": ask.account_id}))
            state, fresh = (answer.state if answer else None), True
        try:
            tier, _, bound = _bound(state, ask, tiers, month)
        except (NotFound, InsufficientBalance):
            if fresh:
                raise
            state = None  # what was remembered may be out of date: read before refusing
            continue
        tries += 1
        answer = line.run(postgres.Queued(ask.account_id, postgres.RESERVING, postgres.RESERVE, {
            "account": ask.account_id, "hold": bound.total, "quota": bound.free_tokens,
            "tier": state.tier, "tier_quota": tier.monthly_free_tokens, "month": month,
            "want": ask.prompt_worst + ask.max_output, "key": ask.key_id,
            "request": ask.request_id, "model": ask.model, "estimate": ask.prompt_estimate,
            "worker": identity(), "now": now,
            "expires": now + timedelta(seconds=ask.ttl_seconds)}))
        if answer is None:
            raise NotFound("Account not found.")
        if answer.value is not None:
            return ask.hold(engine, answer.value, bound, tier)
        state, fresh = answer.state, True  # it changed since: compute again from this
    return None


# Counts a provider sends are clamped to this before any arithmetic (2**62 tokens is far
# beyond any hold), and stored amounts to the columns' ranges, so no value can raise.
_MOST_TOKENS = 2**62
_BIGINT = 2**63 - 1
_WIDE = Context(prec=60)  # exact for any clamped count times any catalogue price


def _count(value) -> int:
    """A token count as a whole number in [0, _MOST_TOKENS], whatever a provider sent."""
    try:
        if isinstance(value, float) and not value < _MOST_TOKENS:  # inf, NaN, huge
            return _MOST_TOKENS if value > 0 else 0
        return min(max(int(value), 0), _MOST_TOKENS)
    except (TypeError, ValueError, OverflowError):
        return 0


_UNPRINTABLE = dict.fromkeys(range(32))  # control characters, NUL among them


def _text(value, size: int) -> str:
    """A provider's string fit for a text column: no control characters (PostgreSQL refuses
    NUL), cut to the column's size."""
    return str(value or "").translate(_UNPRINTABLE)[:size]


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
    values: dict

    @property
    def usage(self) -> Usage:
        """The tokens billed (capped at the hold's bounds)."""
        values = self.values
        return Usage(values["prompt_tokens"], values["completion_tokens"],
                     values["cache_hit_tokens"])

    def to_json(self) -> dict:
        """The decision as JSON-ready data, for the journal."""
        values = {**self.values, "now": self.values["now"].isoformat(),
                  "day": self.values["day"].isoformat()}
        return {"reservation_id": self.reservation_id, "account_id": self.account_id,
                "model": self.model, "cost": list(_cost_fields(self.cost)),
                "charged": self.charged, "written_off": self.written_off, "values": values}

    @classmethod
    def from_json(cls, data: dict) -> Decision:
        """A decision read back from the journal."""
        values = dict(data["values"])
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
    usage = Usage(prompt, completion, min(sent_hit, prompt))
    reasoning = min(_count(outcome.reasoning_tokens), completion) if outcome.billable else 0
    # The request may use the free tokens it held, no more: then its cost is priced
    # exactly as its hold was, so it never exceeds the hold.
    cost = quote(hold.price, usage, hold.tier, hold.quota_tokens)
    beyond = 0
    if (sent_prompt, sent_completion) != (prompt, completion):
        with localcontext(_WIDE):
            asked = quote(hold.price, Usage(sent_prompt, sent_completion, sent_hit), hold.tier,
                          hold.quota_tokens)
        beyond = max(asked.total - cost.total, 0)
    charged = min(cost.total, hold.hold_units)
    written_off = min(cost.total - charged + beyond, _BIGINT)
    values = {
        # What a late correction needs to price the usage again (silk.metering.correction).
        "price_input": str(hold.price.input), "price_output": str(hold.price.output),
        "price_cache_hit": str(hold.price.cache_hit_price),
        "discount": str(hold.tier.discount), "tier_quota": hold.tier.monthly_free_tokens,
        "beyond_units": min(beyond, _BIGINT),
        "account": hold.account_id, "reservation": hold.reservation_id,
        "hold": hold.hold_units, "quota": hold.quota_tokens, "free": cost.free_tokens,
        "request": _text(hold.request_id, 64), "key": hold.key_id,
        "model": _text(hold.model, 64), "upstream_model": _text(outcome.upstream_model, 128),
        "provider": _text(outcome.provider, 32), "stream": bool(outcome.stream),
        "status": _text(outcome.status, 24), "http_status": int(outcome.http_status),
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": reasoning, "cache_hit_tokens": usage.cache_hit_tokens,
        "total_tokens": usage.total_tokens, "free_tokens": cost.free_tokens,
        "subtotal_units": cost.subtotal, "discount_units": cost.discount, "charge": charged,
        "written_off_units": written_off, "estimated": bool(outcome.estimated),
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
    the account, the ledger entry and the usage record, in one transaction. The sweep
    claims with "swept": a real settlement that comes later (its lease ran out while the
    database was away) then corrects the sweep's estimate (silk.metering.correction).
    """
    values = {**decision.values, "month": month_of(utcnow()), "claimed": claim}
    done = (decision.charged, decision.written_off)
    if engine.dialect.name == "postgresql":
        answer = postgres.channel(engine).run(postgres.Queued(
            decision.account_id, postgres.SETTLING, postgres.SETTLE, values))
        if answer is not None:
            written = (answer.value, *done)
        else:
            written = correction.on_postgres(engine, values) if claim == "settled" else None
    else:
        with sqlite.write_transaction(engine) as driver:
            if sqlite.count(driver, sqlite.CLAIM, values) == 1:
                (balance_after,) = sqlite.run(driver, sqlite.SETTLE, values)
                if decision.charged:  # a ledger entry is a change of balance
                    sqlite.run(driver, sqlite.NEW_LEDGER_ENTRY,
                               {**values, "balance": balance_after})
                sqlite.run(driver, sqlite.NEW_USAGE_RECORD, values)
                written = (balance_after, *done)
            else:
                written = correction.on_sqlite(driver, values) if claim == "settled" else None
    keeper.of(engine).release(decision.reservation_id)
    if written is None:
        return None
    balance_after, charged, written_off = written
    if written_off:
        metrics.written_off(decision.model, written_off)
    return Settlement(cost=decision.cost, charged_units=charged,
                      balance_after_units=balance_after, written_off_units=written_off)


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
    row = conn.execute(
        update(ACCOUNTS)
        .where(ACCOUNTS.c.id == account_id,
               ACCOUNTS.c.balance_units + amount_units >= ACCOUNTS.c.reserved_units)
        .values(balance_units=ACCOUNTS.c.balance_units + amount_units)
        .returning(ACCOUNTS.c.balance_units)
    ).first()
    if row is None:
        exists = conn.execute(select(ACCOUNTS.c.id).where(ACCOUNTS.c.id == account_id)).first()
        if exists is None:
            raise NotFound("Account not found.")
        raise InvalidRequest("The adjustment would take the balance below zero.",
                             param="amount", code="balance_would_go_negative")
    conn.execute(insert(LEDGER).values(
        account_id=account_id, kind=kind, amount_units=amount_units,
        balance_after_units=row.balance_units, request_id=request_id, note=note[:200],
        actor=actor[:100], created_at=utcnow()))
    return row.balance_units
