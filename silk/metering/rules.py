"""The money rules, each written once, for Python and for both databases' SQL.

A rule is a function of an `Arithmetic`. With `PYTHON` it computes on ints and month
strings; with `POSTGRES` or `SQLITE` it returns the SQL text of the same computation over
columns and statement parameters, which the stores' statements embed (rendered once, at
import, so a statement costs what it would cost written by hand). A hold priced in Python
and re-checked by PostgreSQL's statement, a settlement written by either database, the
dashboard's and the reports' quota figures: all follow the definitions below, and a rule
changes here, in one place.

What each rule says:
- month rollover (`used_in`): free tokens used count in the month they were counted in; an
  account's counter read in a later month is 0. A settlement adds its free tokens to the
  month it is written in (`used_after`), whatever month its hold was taken in. The counter's
  month never goes back (`quota_month_after`): a hold or settlement that read the clock
  before a change of month and reached the database after another wrote the new month's
  counter counts in the new month, as it settles into it (read in an earlier month, the
  counter is the newer month's).
- free quota left (`free_left`): the tier's monthly quota less the tokens used this month
  and those open holds took. Open holds count against the current month whenever they were
  taken, since they settle into it.
- free-quota split (`free_split`): of a request's worst-case tokens, those the quota left
  covers; the worst-case bound (silk.pricing.worst_case) prices the rest.
- balance check (`covers`): money open holds set aside is theirs; an amount must fit in
  the rest (`spendable`).
- balance ceiling (`holds`): a credit must leave the balance within what its BIGINT column
  holds (`MOST_UNITS`); a removal always does.
- key budget (`key_covers`): a key's spend cap per UTC day, per UTC month and in total
  bounds what the key spent in that period plus its open holds plus the amount asked;
  open holds count against the current day and month, as they settle into them. A key's
  spend counts in the day (and month) of its usage record (`spent_after`); a counter read
  in a later period is 0 (in an earlier one, by a hold stamped before the change and
  written after it, it is the newer period's, which the hold settles into), and a late
  settlement for a period that is over leaves the current period's counter as it is.
- threshold crossing (`fell_below`, `reached`): a change that takes a value from one side
  of a threshold to the other writes one alert; staying on the far side writes none, and
  coming back re-arms it. Balance alerts, the free quota used up and (once keys have caps)
  a key's spend at 80, 90 and 100 % of a cap are this one rule over their own values.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar, cast

from silk.pricing import Cost, Price, Tier, worst_case

N = TypeVar("N")  # a number: an int, or SQL text
M = TypeVar("M")  # a month (YYYY-MM): a str, or SQL text


class Arithmetic(Generic[N, M]):
    """The operations a rule may use."""

    def number(self, value: int) -> N:
        """A constant."""
        raise NotImplementedError

    def plus(self, a: N, b: N) -> N:
        """a + b."""
        raise NotImplementedError

    def minus(self, a: N, b: N) -> N:
        """a - b."""
        raise NotImplementedError

    def at_least(self, a: N, b: N) -> N:
        """a >= b (a truth value)."""
        raise NotImplementedError

    def greatest(self, a: N, b: N) -> N:
        """The larger of a and b."""
        raise NotImplementedError

    def less(self, a: N, b: N) -> N:
        """a < b (a truth value)."""
        raise NotImplementedError

    def both(self, a: N, b: N) -> N:
        """a and b (truth values)."""
        raise NotImplementedError

    def share(self, a: N, percent: N) -> N:
        """`percent` % of a non-negative a, rounded up to a whole unit."""
        raise NotImplementedError

    def least(self, a: N, b: N) -> N:
        """The smaller of a and b."""
        raise NotImplementedError

    def by_period(self, stored: M, new: M, same: N, newer: N, older: N) -> N:
        """`same` if `new` is the `stored` period, `newer` if it is later, else `older`."""
        raise NotImplementedError

    def later(self, a: M, b: M) -> M:
        """The later of two periods (ISO day or month strings compare as text)."""
        raise NotImplementedError

    def unless_uncapped(self, cap: N | None, check: Callable[[], N]) -> N:
        """True when there is no cap, else `check()`."""
        raise NotImplementedError


class Python(Arithmetic[int, str]):
    """Rules computed on values."""

    def number(self, value: int) -> int:
        """A constant."""
        return value

    def plus(self, a: int, b: int) -> int:
        """a + b."""
        return a + b

    def minus(self, a: int, b: int) -> int:
        """a - b."""
        return a - b

    def at_least(self, a: int, b: int) -> int:
        """a >= b, as 1 or 0 (a bool)."""
        return a >= b

    def greatest(self, a: int, b: int) -> int:
        """The larger of a and b."""
        return a if a >= b else b

    def less(self, a: int, b: int) -> int:
        """a < b, as 1 or 0 (a bool)."""
        return a < b

    def both(self, a: int, b: int) -> int:
        """a and b, as 1 or 0 (a bool)."""
        return bool(a) and bool(b)

    def share(self, a: int, percent: int) -> int:
        """`percent` % of a non-negative a, rounded up to a whole unit."""
        return -(-a * percent // 100)

    def least(self, a: int, b: int) -> int:
        """The smaller of a and b."""
        return a if a <= b else b

    def by_period(self, stored: str, new: str, same: int, newer: int, older: int) -> int:
        """`same` if `new` is the `stored` period, `newer` if it is later, else `older`."""
        return same if new == stored else newer if new > stored else older

    def later(self, a: str, b: str) -> str:
        """The later of two periods."""
        return a if a >= b else b

    def unless_uncapped(self, cap: int | None, check: Callable[[], int]) -> int:
        """True when there is no cap, else `check()`."""
        return True if cap is None else check()


class Sql(Arithmetic[str, str]):
    """Rules rendered as one database's SQL text over columns and placeholders."""

    def __init__(self, greatest: str, least: str, placeholder: str) -> None:
        self._greatest = greatest
        self._least = least
        self._placeholder = placeholder

    def param(self, name: str) -> str:
        """The statement parameter `name`, in the driver's placeholder style."""
        return self._placeholder.format(name)

    def for_sqlalchemy(self) -> Sql:
        """The same rendering with SQLAlchemy's `:name` placeholders, for text() clauses."""
        return Sql(self._greatest, self._least, ":{}")

    def number(self, value: int) -> str:
        """A constant."""
        return str(int(value))

    def plus(self, a: str, b: str) -> str:
        """a + b."""
        return f"({a} + {b})"

    def minus(self, a: str, b: str) -> str:
        """a - b."""
        return f"({a} - {b})"

    def at_least(self, a: str, b: str) -> str:
        """a >= b."""
        return f"{a} >= {b}"

    def greatest(self, a: str, b: str) -> str:
        """The larger of a and b."""
        return f"{self._greatest}({a}, {b})"

    def less(self, a: str, b: str) -> str:
        """a < b."""
        return f"{a} < {b}"

    def both(self, a: str, b: str) -> str:
        """a and b."""
        return f"({a} AND {b})"

    def share(self, a: str, percent: str) -> str:
        """`percent` % of a non-negative a, rounded up (integer division truncates). With
        a = 100q + r it is q * percent + ceil(r * percent / 100): a * percent would overflow
        a BIGINT for the largest caps, this never does (CAP_ALERT_PERCENTS are at most 100)."""
        return f"(({a}) / 100 * {percent} + (({a}) % 100 * {percent} + 99) / 100)"

    def least(self, a: str, b: str) -> str:
        """The smaller of a and b."""
        return f"{self._least}({a}, {b})"

    def by_period(self, stored: str, new: str, same: str, newer: str, older: str) -> str:
        """`same` if `new` is the `stored` period, `newer` if it is later, else `older`."""
        return (f"CASE WHEN {new} = {stored} THEN {same} WHEN {new} > {stored} THEN {newer} "
                f"ELSE {older} END")

    def later(self, a: str, b: str) -> str:
        """The later of two periods."""
        return f"CASE WHEN {a} >= {b} THEN {a} ELSE {b} END"

    def unless_uncapped(self, cap: str | None, check: Callable[[], str]) -> str:
        """True when there is no cap (NULL), else `check()`."""
        return f"({cap} IS NULL OR {check()})"


PYTHON = Python()
POSTGRES = Sql("GREATEST", "LEAST", "%({})s")  # psycopg's named placeholders
SQLITE = Sql("MAX", "MIN", ":{}")  # SQLite's two-argument MAX and MIN are scalar


def month_of(moment: datetime) -> str:
    """The quota month of a moment, as YYYY-MM (UTC)."""
    return f"{moment.year:04d}-{moment.month:02d}"  # strftime costs three times as much


def used_in(o: Arithmetic[N, M], quota_month: M, quota_used: N, month: M) -> N:
    """Month rollover: the free tokens used in `month`, from the account's counters. A
    `month` before the counter's (a clock read before the change, written after it) reads
    the newer month's counter, the month it counts in (`quota_month_after`)."""
    return o.by_period(quota_month, month, quota_used, o.number(0), quota_used)


def quota_month_after(o: Arithmetic[N, M], quota_month: M, month: M) -> M:
    """The counter's month once a hold or settlement of `month` is written: never earlier
    than it was."""
    return o.later(quota_month, month)


def used_after(o: Arithmetic[N, M], quota_month: M, quota_used: N, month: M, free: N) -> N:
    """The free tokens used in `month` once a settlement written in it adds `free`."""
    return o.plus(used_in(o, quota_month, quota_used, month), free)


def used_after_correction(quota_month: str, quota_used: int, month: str, swept_month: str,
                          change: int) -> int:
    """`month`'s counter once a late settlement changes the free tokens a sweep counted.

    Tokens the sweep counted in `month` may be given back; tokens it counted in a month
    that is over stay counted there, and `month` gains only what is new.
    """
    used = used_in(PYTHON, quota_month, quota_used, month)
    month = quota_month_after(PYTHON, quota_month, month)
    return max(used + change, 0) if swept_month == month else used + max(change, 0)


def free_left(o: Arithmetic[N, M], tier_quota: N, used: N, held: N) -> N:
    """Free tokens left to hold this month: the quota less those used and those held."""
    return o.greatest(o.minus(o.minus(tier_quota, used), held), o.number(0))


def free_split(o: Arithmetic[N, M], tier_quota: N, quota_month: M, quota_used: N,
               quota_held: N, month: M, want: N) -> N:
    """Free-quota split: how many of a request's `want` worst-case tokens are free."""
    used = used_in(o, quota_month, quota_used, month)
    return o.least(free_left(o, tier_quota, used, quota_held), want)


def held_in(month: str, current_month: str, quota_held: int) -> int:
    """The free tokens open holds take from `month`'s quota: all of them in the current
    month (they settle into it), none in any other."""
    return quota_held if month == current_month else 0


def spendable(o: Arithmetic[N, M], balance: N, reserved: N) -> N:
    """Money that open holds have not set aside."""
    return o.minus(balance, reserved)


def covers(o: Arithmetic[N, M], balance: N, reserved: N, amount: N) -> N:
    """Balance check: `amount` fits in the money open holds have not set aside."""
    return o.at_least(spendable(o, balance, reserved), amount)


# The most a balance holds, in units: its column is a BIGINT (about 9.2e9 USD). SQLite
# would store a sum past it as a float, PostgreSQL refuse it.
MOST_UNITS = 2**63 - 1


def holds(o: Arithmetic[N, M], balance: N, amount: N) -> N:
    """Balance ceiling: `balance` plus `amount` stays within MOST_UNITS (written so that no
    step of it can pass MOST_UNITS itself)."""
    return o.at_least(o.minus(o.number(MOST_UNITS), o.greatest(amount, o.number(0))), balance)


def fell_below(o: Arithmetic[N, M], before: N, after: N, threshold: N) -> N:
    """Threshold crossing, downwards: `before` was at or above `threshold`, `after` is under
    it (a balance running low)."""
    return o.both(o.at_least(before, threshold), o.less(after, threshold))


def reached(o: Arithmetic[N, M], before: N, after: N, threshold: N) -> N:
    """Threshold crossing, upwards: `before` was under `threshold`, `after` is at or above
    it (a quota used up, a key's spend at a share of its cap)."""
    return o.both(o.less(before, threshold), o.at_least(after, threshold))


# The shares of a key's spend cap that alert when its spend reaches them, in percent.
CAP_ALERT_PERCENTS = (80, 90, 100)
assert all(0 < percent <= 100 for percent in CAP_ALERT_PERCENTS)  # Sql.share cannot overflow


def cap_mark(o: Arithmetic[N, M], cap: N, percent: N) -> N:
    """The spend, in units, at which a key reaches `percent` of its `cap` (rounded up, so
    the alert never comes before the share is really spent)."""
    return o.share(cap, percent)


def cap_reached(o: Arithmetic[N, M], before: N, after: N, cap: N, percent: N) -> N:
    """A key's spend alert: a change took its spend from under `percent` % of `cap` to at
    least that (one alert per share crossed, as for any threshold)."""
    return reached(o, before, after, cap_mark(o, cap, percent))


def bound(price: Price, prompt_worst: int, max_output: int, tier: Tier, free: int) -> Cost:
    """The worst-case cost a request holds, with `free` of its tokens from the quota."""
    return worst_case(price, prompt_worst, max_output, tier, free)


def day_of(moment: datetime) -> str:
    """The budget day of a moment, as YYYY-MM-DD (UTC)."""
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"


def spent_in(o: Arithmetic[N, M], spent_period: M, spent: N, period: M) -> N:
    """What a key spent in `period` (a day or a month), from its counter of `spent_period`:
    0 for a later period. A `period` before the counter's (a hold that read the clock before
    midnight and reached the database after a settlement of the new day) reads the newer
    period's counter, the period the hold settles into."""
    return o.by_period(spent_period, period, spent, o.number(0), spent)


def cap_left(o: Arithmetic[N, M], cap: N, spent: N, held: N) -> N:
    """What `cap` leaves beside what was spent in its period and what is held."""
    return o.minus(o.minus(cap, spent), held)


def within_cap(o: Arithmetic[N, M], cap: N, spent: N, held: N, amount: N) -> N:
    """`amount` fits under `cap` beside what was spent in its period and what is held."""
    return o.at_least(cap_left(o, cap, spent, held), amount)


def key_covers(o: Arithmetic[N, M], caps: tuple[N | None, N | None, N | None],
               spent: tuple[N, N, N], held: N, amount: N) -> N:
    """Key budget: `amount` fits under the day, month and total caps (None: no cap), given
    what the key spent in the current day, month and in all, and its open holds."""
    checks = [o.unless_uncapped(cap, _within(o, cap, used, held, amount))
              for cap, used in zip(caps, spent, strict=True)]
    return o.both(o.both(checks[0], checks[1]), checks[2])


def _within(o: Arithmetic[N, M], cap: N | None, spent: N, held: N,
            amount: N) -> Callable[[], N]:
    """The cap check, computed only where there is a cap."""
    return lambda: within_cap(o, cast(N, cap), spent, held, amount)


def spent_after(o: Arithmetic[N, M], spent_period: M, spent: N, period: M, charge: N) -> N:
    """A period counter once a settlement of `period` adds `charge`: a new period starts
    from it, one that is over leaves the current counter alone."""
    return o.by_period(spent_period, period, o.plus(spent, charge), charge, spent)
