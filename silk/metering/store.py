"""The money store: every statement that moves money, behind one interface.

Two implementations, each the shortest safe form for its database: SqliteStore
(silk.metering.sqlite: plain SQL under SQLite's write lock) and PostgresStore
(silk.metering.postgres: one group-committed statement per reserve or settle). Both decide
with the rules of silk.metering.rules, so they differ in how they write, never in what.
silk.metering.service is the facade the rest of the gateway calls.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Row, bindparam, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from silk.account.models import Account, ApiKey
from silk.database import utcnow
from silk.errors import InsufficientBalance, InvalidRequest, KeyBudgetExceeded, NotFound
from silk.metering import outbox, rules
from silk.metering.models import LedgerEntry, Reservation, UsageRecord
from silk.metering.rules import PYTHON
from silk.metering.state import COLUMNS, KEY_COLUMNS, AccountState, KeyState
from silk.metering.worker import identity
from silk.pricing import Cost, Price, Tier, units_to_usd

# The models' tables, for statements built with SQLAlchemy Core.
ACCOUNTS = Account.__table__
RESERVATIONS = Reservation.__table__
LEDGER = LedgerEntry.__table__
USAGE = UsageRecord.__table__
API_KEYS = ApiKey.__table__


@dataclass(frozen=True, slots=True)
class Ask:
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
    key_capped: bool = False  # a hint: the key had caps when it was authenticated

    @property
    def want(self) -> int:
        """The request's worst-case tokens, which the free quota covers first."""
        return self.prompt_worst + self.max_output


@dataclass(frozen=True, slots=True)
class Reserved:
    """A hold the store wrote: its reservation, the account's tier and the bound held."""

    reservation_id: int
    tier: Tier
    bound: Cost


class Written(NamedTuple):
    """A settlement in the books: the balance after it, charged and written off in all."""

    balance_after: int
    charged: int
    written_off: int


class Store(Protocol):
    """Every statement that moves money, for one database."""

    def reserve(self, tiers: Mapping[str, Tier], now: datetime, ask: Ask) -> Reserved:
        """Hold the ask's worst case, or raise 404 or 402."""
        ...

    def write(self, values: dict[str, Any]) -> Written | None:
        """Claim a reservation (values["claimed"]) and write its settlement, exactly once.

        A real settlement ("settled") that finds its hold swept corrects the sweep
        (silk.metering.correction); None when there was nothing to write.
        """
        ...

    def credit(self, conn: Connection, account_id: int, amount_units: int, *, kind: str,
               note: str, actor: str, request_id: str | None) -> int:
        """Add (or remove) money in the caller's transaction; the balance after."""
        ...

    def renew(self, reservation_ids: Sequence[int], expires: datetime) -> int:
        """Move the leases of open holds to `expires`; how many were open."""
        ...

    def expired(self, now: datetime, *, everything: bool) -> Sequence[Row[Any]]:
        """Open holds whose lease ran out by `now` (all of them with `everything`), each
        with its account's tier: what the sweep settles."""
        ...


def tier_of(tiers: Mapping[str, Tier], name: str) -> Tier:
    """The account's tier; a tier an operator removed bills at list price with no quota."""
    return tiers.get(name) or Tier(name=name, discount=Decimal(0), monthly_free_tokens=0)


def plan(state: AccountState | None, ask: Ask, tiers: Mapping[str, Tier],
         month: str) -> tuple[Tier, int, Cost]:
    """The account's tier, its quota used this month and the ask's worst case; 404 or 402
    if the account cannot hold it."""
    if state is None or state.disabled:
        raise NotFound("Account not found.")
    tier = tier_of(tiers, state.tier)
    used = rules.used_in(PYTHON, state.quota_month, state.quota_used, month)
    free = rules.free_split(PYTHON, tier.monthly_free_tokens, state.quota_month,
                            state.quota_used, state.quota_held, month, ask.want)
    bound = rules.bound(ask.price, ask.prompt_worst, ask.max_output, tier, free)
    if not rules.covers(PYTHON, state.balance_units, state.reserved_units, bound.total):
        left = max(rules.spendable(PYTHON, state.balance_units, state.reserved_units), 0)
        raise InsufficientBalance(
            f"Insufficient balance: this request may cost up to ${units_to_usd(bound.total)} "
            f"({ask.max_output} output tokens at most) and "
            f"${units_to_usd(left)} is available. Top up, or lower max_tokens.")
    return tier, used, bound


def check_key(key: KeyState | None, now: datetime, amount: int) -> None:
    """402 (`key_budget_exceeded`) if `amount` does not fit under the key's caps, naming
    the cap and when it resets; a key without caps (or no key) passes."""
    if key is None or not key.capped:
        return
    day, month = rules.day_of(now), rules.month_of(now)
    spent = (rules.spent_in(PYTHON, key.spent_day, key.spent_day_units, day),
             rules.spent_in(PYTHON, key.spent_month, key.spent_month_units, month),
             key.spent_total_units)
    caps = (key.cap_day_units, key.cap_month_units, key.cap_total_units)
    if rules.key_covers(PYTHON, caps, spent, key.held_units, amount):
        return
    name, cap, used = next(
        (name, cap, used) for name, cap, used in zip(("daily", "monthly", "total"), caps, spent,
                                                     strict=True)
        if cap is not None and not rules.within_cap(PYTHON, cap, used, key.held_units, amount))
    left = max(cap - used - key.held_units, 0)
    raise KeyBudgetExceeded(
        f"This API key's {name} spend cap of ${units_to_usd(cap)} would be exceeded: "
        f"this request may cost up to ${units_to_usd(amount)} and ${units_to_usd(left)} of "
        f"the cap is left. The cap {_resets(name, now)}. Lower max_tokens, or ask the "
        "account's owner to raise the cap.")


def _resets(name: str, now: datetime) -> str:
    """When a cap's period ends, in words for the refusal."""
    moment = reset_at(name, now)
    return "never resets" if moment is None else f"resets at {moment.isoformat()}Z"


def reset_at(name: str, now: datetime) -> datetime | None:
    """When the `daily`/`monthly` cap's period ends; None for `total`."""
    if name == "total":
        return None
    if name == "monthly":
        return datetime(now.year + now.month // 12, now.month % 12 + 1, 1)
    return datetime(now.year, now.month, now.day) + timedelta(days=1)


# Statements are built once: building and cache-keying a Core statement per call cost more
# than running it. Parameters prefixed p_ keep bind names apart from column names.
_THIS_ACCOUNT = ACCOUNTS.c.id == bindparam("p_account")
_LOCK = (update(ACCOUNTS).where(_THIS_ACCOUNT)
         .values(reserved_units=ACCOUNTS.c.reserved_units)
         .returning(*(ACCOUNTS.c[name] for name in COLUMNS)))
_HOLD = update(ACCOUNTS).where(_THIS_ACCOUNT).values(
    reserved_units=ACCOUNTS.c.reserved_units + bindparam("p_hold"),
    quota_held=ACCOUNTS.c.quota_held + bindparam("p_quota"),
    quota_month=bindparam("p_month"), quota_used=bindparam("p_used"))
_NEW_RESERVATION = insert(RESERVATIONS).returning(RESERVATIONS.c.id)
_LOCK_KEY = (select(*(API_KEYS.c[name] for name in KEY_COLUMNS))
             .where(API_KEYS.c.id == bindparam("p_key"),
                    API_KEYS.c.account_id == bindparam("p_account"))
             .with_for_update())
_KEY_HOLD = (update(API_KEYS).where(API_KEYS.c.id == bindparam("p_key"))
             .values(held_units=API_KEYS.c.held_units + bindparam("p_hold")))
RENEW = "UPDATE reservations SET expires_at = :expires WHERE state = 'open' AND id IN ({})"


def claim_sql(o: rules.Sql, claimed: str) -> str:
    """The statement that claims an open hold for its settlement, exactly once.

    A hold's row lives while the hold is open. A real settlement ("settled") deletes it: a
    settlement that comes again finds no open row either way, and the table keeps only
    what is in flight instead of a row per request forever. A swept hold ("swept") stays,
    marked, so that its real settlement can still replace the sweep's estimate
    (silk.metering.correction), which then deletes it. The hold must be the settlement's
    own request's: a journal from another database of the same URL, or from before a
    restore, names ids that here are other requests' holds.
    """
    where = (f"WHERE id = {o.param('reservation')} AND request_id = {o.param('request')} "
             "AND state = 'open'")
    if claimed == "settled":
        return f"DELETE FROM reservations {where}"
    return (f"UPDATE reservations SET state = {o.param('claimed')}, "
            f"settled_at = {o.param('now')} {where}")

# A key with a cap: its holds are checked against its counters.
CAPPED = "NOT (cap_day_units IS NULL AND cap_month_units IS NULL AND cap_total_units IS NULL)"


def key_sql(o: rules.Sql) -> tuple[str, str]:
    """The key-budget rules over `api_keys` columns and the statement parameters `hold`,
    `budget_day`, `month` (checking a hold), `budget_month` and `charge` (settling one):
    (the cap check, the counters' assignments when a settlement of that day is written)."""
    spent = (rules.spent_in(o, "spent_day", "spent_day_units", o.param("budget_day")),
             rules.spent_in(o, "spent_month", "spent_month_units", o.param("month")),
             "spent_total_units")
    covers = rules.key_covers(o, ("cap_day_units", "cap_month_units", "cap_total_units"),
                              spent, "held_units", o.param("hold"))
    day, month, charge = o.param("budget_day"), o.param("budget_month"), o.param("charge")
    assignments = (
        f"spent_day_units = {rules.spent_after(o, 'spent_day', 'spent_day_units', day, charge)}, "
        f"spent_day = {o.later('spent_day', day)}, "
        f"spent_month_units = "
        f"{rules.spent_after(o, 'spent_month', 'spent_month_units', month, charge)}, "
        f"spent_month = {o.later('spent_month', month)}, "
        f"spent_total_units = spent_total_units + {charge}")
    return covers, assignments


def reserve_locked(engine: Engine, tiers: Mapping[str, Tier], now: datetime,
                   ask: Ask) -> Reserved:
    """Reserve under the account's row lock, through SQLAlchemy: PostgreSQL's way when
    optimism keeps losing, and a form either database can run."""
    month = rules.month_of(now)
    with engine.begin() as conn:
        row = conn.execute(_LOCK, {"p_account": ask.account_id}).first()
        state = AccountState(*row) if row is not None else None
        tier, used, bound = plan(state, ask, tiers, month)
        if ask.key_id is not None:  # the key's row after the account's, as everywhere
            key = conn.execute(_LOCK_KEY, {"p_key": ask.key_id,
                                           "p_account": ask.account_id}).first()
            check_key(KeyState(*key) if key is not None else None, now, bound.total)
            conn.execute(_KEY_HOLD, {"p_key": ask.key_id, "p_hold": bound.total})
        assert state is not None  # plan refused a missing account
        conn.execute(_HOLD, {"p_account": ask.account_id, "p_hold": bound.total,
                             "p_quota": bound.free_tokens, "p_used": used,
                             "p_month": rules.quota_month_after(PYTHON, state.quota_month,
                                                                month)})
        reservation_id = conn.execute(_NEW_RESERVATION, {
            "account_id": ask.account_id, "key_id": ask.key_id, "request_id": ask.request_id,
            "model": ask.model, "hold_units": bound.total, "quota_tokens": bound.free_tokens,
            "prompt_estimate": ask.prompt_estimate, "state": "open", "worker": identity(),
            "created_at": now, "expires_at": now + timedelta(seconds=ask.ttl_seconds),
            "settled_at": None}).scalar_one()
    return Reserved(reservation_id, tier, bound)


class Common:
    """What both stores run the same way: credit, the sweep's query, leases by SQLAlchemy."""

    sql: rules.Sql  # the database's rendering of the rules

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        sql = self.sql.for_sqlalchemy()
        covered = rules.covers(sql, "balance_units", "reserved_units", sql.param("p_taken"))
        fits = rules.holds(sql, "balance_units", sql.param("p_amount"))
        self._credit = (update(ACCOUNTS)
                        .where(ACCOUNTS.c.id == bindparam("p_account"), text(covered),
                               text(fits))
                        .values(balance_units=ACCOUNTS.c.balance_units + bindparam("p_amount"))
                        .returning(ACCOUNTS.c.balance_units, ACCOUNTS.c.alert_balance_units))

    def credit(self, conn: Connection, account_id: int, amount_units: int, *, kind: str,
               note: str, actor: str, request_id: str | None) -> int:
        """Add (or, negative, remove) money inside the caller's transaction.

        A removal never takes money that open holds have set aside (the balance check),
        so the balance stays covered and non-negative; an addition never takes it past
        what its column holds (the balance ceiling).
        """
        row = conn.execute(self._credit, {"p_account": account_id, "p_amount": amount_units,
                                          "p_taken": -amount_units}).first()
        if row is None:
            exists = conn.execute(select(ACCOUNTS.c.id).where(ACCOUNTS.c.id == account_id))
            if exists.first() is None:
                raise NotFound("Account not found.")
            if amount_units > 0:
                raise InvalidRequest(
                    "The credit would take the balance past the most an account can hold "
                    f"(${units_to_usd(rules.MOST_UNITS)}).", param="amount",
                    code="balance_too_large")
            raise InvalidRequest("The adjustment would take the balance below zero.",
                                 param="amount", code="balance_would_go_negative")
        balance: int = row.balance_units
        now = utcnow()
        entry = conn.execute(insert(LEDGER).values(
            account_id=account_id, kind=kind, amount_units=amount_units,
            balance_after_units=balance, request_id=request_id, note=note[:200],
            actor=actor[:100], created_at=now).returning(LEDGER.c.id)).scalar_one()
        # alerts: a removal that takes the balance under its threshold (silk.metering.outbox)
        threshold = (row.alert_balance_units if row.alert_balance_units is not None
                     else outbox.floor(self.engine))
        if rules.fell_below(PYTHON, balance - amount_units, balance, threshold):
            outbox.balance_low_after_credit(conn, account_id, entry, balance, threshold, now)
        return balance

    def expired(self, now: datetime, *, everything: bool) -> Sequence[Row[Any]]:
        """Open holds whose lease ran out by `now` (every open hold with `everything`)."""
        query = (select(RESERVATIONS, ACCOUNTS.c.tier)
                 .join(ACCOUNTS, ACCOUNTS.c.id == RESERVATIONS.c.account_id)
                 .where(RESERVATIONS.c.state == "open"))
        if not everything:
            query = query.where(RESERVATIONS.c.expires_at <= now)
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def renew(self, reservation_ids: Sequence[int], expires: datetime) -> int:
        """Move the leases of open holds to `expires` in one statement."""
        with self.engine.begin() as conn:
            return conn.execute(text(renewal(reservation_ids)), {"expires": expires}).rowcount


def renewal(reservation_ids: Sequence[int]) -> str:
    """The statement renewing these holds' leases (ids are integers, written inline)."""
    return RENEW.format(", ".join(str(int(i)) for i in reservation_ids))


_stores: weakref.WeakKeyDictionary[Engine, Store] = weakref.WeakKeyDictionary()


def of(engine: Engine) -> Store:
    """The store of an engine's database."""
    store = _stores.get(engine)
    if store is None:
        if engine.dialect.name == "sqlite":
            from silk.metering.sqlite import SqliteStore

            store = SqliteStore(engine)
        else:
            from silk.metering.postgres import PostgresStore

            store = PostgresStore(engine)
        _stores[engine] = store
    return store
