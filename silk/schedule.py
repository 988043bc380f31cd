"""Prices that change with time: dated versions and weekday-hour bands in a named time zone.

Pure, beside silk/pricing.py: a model's price spec in SILK_MODELS (and its upstream `cost`)
becomes a Schedule, and `Schedule.at(instant)` is the prompt-tiered price in force then.
A request is priced by the instant it was admitted, so the band or version that starts
while it runs never changes what it pays. Holidays are off-peak: no band applies on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from silk.pricing import Price, Step, Tiered

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RATES = ("input", "output", "cache_hit", "reasoning")


class PriceSpecError(ValueError):
    """A price spec that cannot be read; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Band:
    """Rates in force on some weekdays between two local times (end excluded)."""

    days: frozenset[int]  # 0 is Monday
    start: time
    end: time  # at or before start: the band runs past midnight
    price: Tiered
    label: str

    def covers(self, local: datetime) -> bool:
        """Whether this band is in force at a local time (its day is the local day)."""
        now = local.time()
        inside = (self.start <= now < self.end if self.start < self.end
                  else now >= self.start or now < self.end)
        return local.weekday() in self.days and inside


@dataclass(frozen=True, slots=True)
class Version:
    """The prices from one instant on: the off-peak price, its bands, where and when."""

    start: datetime | None  # aware; None for the first version
    base: Tiered
    bands: tuple[Band, ...] = ()
    zone: ZoneInfo | None = None
    holidays: frozenset[date] = frozenset()

    def at(self, instant: datetime) -> Tiered:
        """The price in force at an instant (naive instants are UTC)."""
        if not self.bands or self.zone is None:
            return self.base
        local = _aware(instant).astimezone(self.zone)
        if local.date() in self.holidays:
            return self.base
        for band in self.bands:
            if band.covers(local):
                return band.price
        return self.base


@dataclass(frozen=True, slots=True)
class Schedule:
    """Every version of a price, oldest first."""

    versions: tuple[Version, ...]

    @classmethod
    def flat(cls, price: Price) -> Schedule:
        """One price at all times and sizes."""
        return cls((Version(None, Tiered.flat(price)),))

    @property
    def base(self) -> Price:
        """The first version's off-peak price for the shortest prompts."""
        return self.versions[0].base.steps[0].price

    def version_at(self, instant: datetime) -> Version:
        """The version in force at an instant (naive instants are UTC)."""
        current = self.versions[0]
        if len(self.versions) == 1:  # a flat price: no instant to make aware
            return current
        when = _aware(instant)
        for version in self.versions[1:]:
            if version.start is not None and version.start <= when:
                current = version
        return current

    def at(self, instant: datetime) -> Tiered:
        """The prompt-tiered price in force at an instant (naive instants are UTC)."""
        return self.version_at(instant).at(instant)

    @property
    def varies(self) -> bool:
        """Whether the price is anything but one flat price."""
        return len(self.versions) > 1 or any(
            v.bands or len(v.base.steps) > 1 for v in self.versions)


def _aware(instant: datetime) -> datetime:
    """The instant with UTC as its zone if it has none (datetime.replace costs ~9 k
    instructions: a request's price is read without it when the price has one version and
    no bands)."""
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def schedule_from(spec: Mapping[str, Any]) -> Schedule:
    """Read a price spec: rates or `tiers`, optional `time_zone`, `holidays`, `bands`, and
    `versions` (each a whole spec with a `from` instant; zone and holidays carry over)."""
    first = _version(spec, None, None, frozenset())
    versions = [first]
    dated = spec.get("versions") or []
    if not isinstance(dated, list):
        raise PriceSpecError("versions must be a list")
    for entry in dated:
        if not isinstance(entry, Mapping) or "from" not in entry:
            raise PriceSpecError("each version needs a 'from' instant (ISO 8601)")
        start = _instant(entry["from"])
        versions.append(_version(entry, start, first.zone, first.holidays))
    starts = [v.start for v in versions[1:]]
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False) if a and b):
        raise PriceSpecError("versions must be in order of their 'from' instants")
    return Schedule(tuple(versions))


def _version(spec: Mapping[str, Any], start: datetime | None, zone: ZoneInfo | None,
             holidays: frozenset[date]) -> Version:
    if spec.get("time_zone") is not None:
        try:
            zone = ZoneInfo(str(spec["time_zone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise PriceSpecError(f"time_zone {spec['time_zone']!r} is not a known time zone "
                                 "(e.g. Asia/Shanghai)") from None
    if spec.get("holidays") is not None:
        holidays = frozenset(_date(day) for day in _list(spec["holidays"], "holidays"))
    bands = tuple(_band(entry, i) for i, entry in enumerate(_list(spec.get("bands"), "bands")))
    if bands and zone is None:
        raise PriceSpecError("bands need a time_zone")
    return Version(start, _tiered(spec), bands, zone, holidays)


def _band(spec: Any, index: int) -> Band:
    if not isinstance(spec, Mapping):
        raise PriceSpecError("each band must be an object")
    days = _days(spec.get("days", "mon-sun"))
    hours = str(spec.get("hours", ""))
    try:
        start_text, end_text = hours.split("-")
        start, end = _clock(start_text), _clock(end_text)
    except ValueError:
        raise PriceSpecError(f"band {index}: hours must be 'HH:MM-HH:MM', got {hours!r}") from None
    label = str(spec.get("name") or f"{spec.get('days', 'mon-sun')} {hours}")
    return Band(days, start, end, _tiered(spec), label)


def _days(value: Any) -> frozenset[int]:
    names = value.split(",") if isinstance(value, str) else value
    found: set[int] = set()
    for name in _list(names, "days"):
        text = str(name).strip().lower()
        first, _, last = text.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise PriceSpecError(f"days: {text!r} is not a day or range like mon-fri")
        a, b = DAYS.index(first), DAYS.index(last or first)
        found.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(found)


def _clock(text: str) -> time:
    hours, minutes = text.strip().split(":")
    if int(hours) == 24 and int(minutes) == 0:
        return time(0, 0)
    return time(int(hours), int(minutes))


def _tiered(spec: Mapping[str, Any]) -> Tiered:
    tiers = spec.get("tiers")
    if tiers is None:
        return Tiered.flat(_price(spec))
    steps: list[Step] = []
    for i, entry in enumerate(_list(tiers, "tiers")):
        if not isinstance(entry, Mapping):
            raise PriceSpecError("each tier must be an object")
        up_to = entry.get("max_prompt_tokens")
        last = i == len(tiers) - 1
        if (up_to is None) != last or (up_to is not None and (
                not isinstance(up_to, int) or isinstance(up_to, bool) or up_to < 0)):
            raise PriceSpecError("every tier but the last needs max_prompt_tokens (a whole "
                                 "number), and the last has none")
        if steps and up_to is not None and up_to <= (steps[-1].up_to or 0):
            raise PriceSpecError("tiers must grow: max_prompt_tokens in increasing order")
        steps.append(Step(up_to, _price(entry)))
    if not steps:
        raise PriceSpecError("tiers must not be empty")
    return Tiered(tuple(steps))


def _price(spec: Mapping[str, Any]) -> Price:
    if "input" not in spec or "output" not in spec:
        raise PriceSpecError("a price needs input and output (USD per million tokens)")
    rates = {name: _money(spec[name], name) for name in RATES if spec.get(name) is not None}
    return Price(**rates)


def _money(value: Any, name: str) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, TypeError):
        amount = Decimal(-1)
    if isinstance(value, bool) or not amount.is_finite() or amount < 0:
        raise PriceSpecError(f"{name} price must be a non-negative number")
    return amount


def _list(value: Any, name: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise PriceSpecError(f"{name} must be a list")
    return value


def _date(value: Any) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise PriceSpecError(f"holiday {value!r} is not a date YYYY-MM-DD") from None


def _instant(value: Any) -> datetime:
    try:
        instant = datetime.fromisoformat(str(value))
    except ValueError:
        raise PriceSpecError(f"version 'from' {value!r} is not an ISO 8601 instant") from None
    if instant.tzinfo is None:
        raise PriceSpecError(f"version 'from' {value!r} needs a UTC offset, e.g. +08:00")
    return instant


def below_cost_rates(price: Schedule, cost: Schedule, now: datetime) -> list[str]:
    """The rates at which `price` falls below `cost` at some time from `now` on (a week
    sampled every quarter hour from now and from each later version's start) and some
    prompt length (each tier's edges)."""
    from silk.pricing import below_cost

    if not price.varies and not cost.varies:
        return below_cost(price.base, cost.base)
    anchors = [_aware(now)] + [v.start for s in (price, cost) for v in s.versions
                                if v.start is not None and v.start > _aware(now)]
    edges = {0} | {n for s in (price, cost) for v in s.versions
                   for t in (v.base, *(b.price for b in v.bands))
                   for step in t.steps if step.up_to is not None
                   for n in (step.up_to, step.up_to + 1)}
    found: list[str] = []
    for anchor in anchors:
        for quarter in range(7 * 24 * 4):
            instant = anchor + timedelta(minutes=15 * quarter)
            sold, paid = price.at(instant), cost.at(instant)
            for prompt in edges:
                for rate in below_cost(sold.for_prompt(prompt), paid.for_prompt(prompt)):
                    if rate not in found:
                        found.append(rate)
    return [rate for rate in RATES if rate in found]


def describe(schedule: Schedule, now: datetime) -> dict[str, Any]:
    """What /v1/pricing shows beyond the flat rates: the zone, holidays, bands and tiers of
    the version in force, and the versions still to come (empty for a flat price)."""
    if not schedule.varies:
        return {}
    current = schedule.version_at(now)
    shown: dict[str, Any] = _shape(current, with_place=True)
    later = [v for v in schedule.versions if v.start is not None and v.start > _aware(now)]
    if later:
        shown["versions"] = [{"from": v.start.isoformat() if v.start else None,
                              **_rates(v.base), **_shape(v, with_place=False)} for v in later]
    return shown


def _shape(version: Version, *, with_place: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    if with_place and version.zone is not None and version.bands:
        shown["time_zone"] = version.zone.key
        shown["holidays"] = sorted(day.isoformat() for day in version.holidays)
    if version.bands:
        shown["bands"] = [{"name": band.label, "days": [DAYS[d] for d in sorted(band.days)],
                           "hours": f"{band.start:%H:%M}-{band.end:%H:%M}", **_rates(band.price)}
                          for band in version.bands]
    if len(version.base.steps) > 1:
        shown["tiers"] = _tiers(version.base)
    return shown


def _rates(tiered: Tiered) -> dict[str, Any]:
    """A flat price's rates, or its tiers."""
    if len(tiered.steps) > 1:
        return {"tiers": _tiers(tiered)}
    return _flat(tiered.steps[0].price)


def _tiers(tiered: Tiered) -> list[dict[str, Any]]:
    return [{"max_prompt_tokens": step.up_to, **_flat(step.price)} for step in tiered.steps]


def _flat(price: Price) -> dict[str, Any]:
    shown: dict[str, Any] = {"input": price.input, "output": price.output}
    if price.cache_hit is not None:
        shown["cache_hit_input"] = price.cache_hit
    return shown
