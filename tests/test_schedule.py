"""Prices over time and size, pure: bands at their edges, holidays, tiers, versions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from silk.pricing import Price, Tiered, Usage, quote, worst_case
from silk.pricing import Tier as Plan
from silk.schedule import PriceSpecError, below_cost_rates, schedule_from

# DeepSeek's weekday peak in Beijing (09:00-18:00 at double price), National Day off-peak.
PEAK = {"input": "0.14", "output": "0.28", "cache_hit": "0.028", "time_zone": "Asia/Shanghai",
        "holidays": ["2031-10-01"],
        "bands": [{"name": "peak", "days": "mon-fri", "hours": "09:00-18:00",
                   "input": "0.28", "output": "0.56", "cache_hit": "0.056"}]}
# Doubao's price set by prompt length.
LENGTH = {"tiers": [{"max_prompt_tokens": 32000, "input": "0.11", "output": "0.43"},
                    {"max_prompt_tokens": 128000, "input": "0.17", "output": "0.86"},
                    {"input": "0.34", "output": "1.71"}]}
OFF, ON = Price(Decimal("0.14"), Decimal("0.28"), Decimal("0.028")), Price(
    Decimal("0.28"), Decimal("0.56"), Decimal("0.056"))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("instant,price", [
    ("2031-03-03 00:59:59", OFF),  # Monday 08:59:59 Beijing
    ("2031-03-03 01:00:00", ON),  # Monday 09:00:00 Beijing
    ("2031-03-03 09:59:59", ON),  # 17:59:59
    ("2031-03-03 10:00:00", OFF),  # 18:00:00: the band's end is excluded
    ("2031-03-08 01:00:00", OFF),  # Saturday 09:00
    ("2031-10-01 00:59:59", OFF),  # a Wednesday, National Day 08:59:59
    ("2031-10-01 01:00:00", OFF),  # ... and 09:00:00: a holiday is off-peak
    ("2031-09-30 16:00:00", OFF),  # 00:00 Beijing on the holiday, still Tuesday in UTC
    ("2031-09-30 09:59:59", ON),  # Tuesday 17:59:59 Beijing, the day before
])
def test_peak_band_edges_in_beijing_time(instant, price):
    schedule = schedule_from(PEAK)
    assert schedule.at(utc(instant)).for_prompt(10) == price
    assert schedule.at(utc(instant).replace(tzinfo=None)).for_prompt(10) == price  # naive: UTC


def test_length_tiers_price_the_whole_request_by_its_prompt():
    tiered = schedule_from(LENGTH).at(utc("2031-03-03 01:00:00"))
    assert tiered.for_prompt(32000).input == Decimal("0.11")
    assert tiered.for_prompt(32001).input == Decimal("0.17")
    assert tiered.for_prompt(128001).output == Decimal("1.71")
    assert tiered.ceiling(32000) == Price(Decimal("0.11"), Decimal("0.43"), Decimal("0.11"),
                                          Decimal("0.43"))
    assert tiered.ceiling(32001).input == Decimal("0.17")
    assert tiered.ceiling(10**9).output == Decimal("1.71")


@pytest.mark.parametrize("prompt,bound", [(0, 10), (32000, 32000), (32000, 40000),
                                          (32001, 200000), (100, 10**6)])
def test_the_ceiling_bounds_every_prompt_within_the_bound(prompt, bound):
    tiered = schedule_from(LENGTH).at(utc("2031-03-03 01:00:00"))
    plan = Plan("t", Decimal("0.1"), 0)
    hold = worst_case(tiered.ceiling(bound), bound, 500, plan, 0)
    for p in {0, prompt, bound}:
        for c in (0, 499, 500):
            assert quote(tiered.for_prompt(p), Usage(p, c, p // 2), plan, 0).total <= hold.total


def test_a_dated_version_takes_effect_at_its_instant():
    spec = {**PEAK, "versions": [{"from": "2031-03-03T12:00:00+08:00", "input": "0.20",
                                  "output": "0.40"}]}
    schedule = schedule_from(spec)
    assert schedule.at(utc("2031-03-03 03:59:59")).for_prompt(1) == ON  # 11:59:59 peak
    assert schedule.at(utc("2031-03-03 04:00:00")).for_prompt(1) == Price(
        Decimal("0.20"), Decimal("0.40"))  # the new version has no bands
    assert schedule.base == OFF


def test_a_flat_spec_stays_the_documents_price():
    schedule = schedule_from({"input": "0.14", "output": "0.28"})
    assert not schedule.varies
    assert schedule.at(utc("2031-03-03 01:00:00")) == Tiered.flat(
        Price(Decimal("0.14"), Decimal("0.28")))


def test_below_cost_looks_at_every_band_and_tier():
    flat = schedule_from({"input": "0.20", "output": "0.40"})
    assert below_cost_rates(flat, schedule_from(PEAK), utc("2031-03-03 00:00:00")) == [
        "input", "output", "reasoning"]  # the upstream's peak is dearer
    assert below_cost_rates(schedule_from(PEAK), schedule_from(PEAK),
                            utc("2031-03-03 00:00:00")) == []
    assert below_cost_rates(schedule_from({"input": "0.3", "output": "1"}), schedule_from(
        LENGTH), utc("2031-03-03 00:00:00")) == ["input", "output", "cache_hit", "reasoning"]


@pytest.mark.parametrize("spec,fragment", [
    ({**PEAK, "time_zone": "Mars/Olympus"}, "time zone"),
    ({**PEAK, "time_zone": None}, "bands need a time_zone"),
    ({**PEAK, "bands": [{"days": "mon-fri", "hours": "9-18", "input": "1", "output": "1"}]},
     "hours"),
    ({**PEAK, "bands": [{"days": "weekdays", "hours": "09:00-18:00", "input": "1",
                         "output": "1"}]}, "days"),
    ({**PEAK, "holidays": ["1 Oct"]}, "holiday"),
    ({"tiers": [{"input": "1", "output": "1"}, {"max_prompt_tokens": 5, "input": "1",
                                                 "output": "1"}]}, "max_prompt_tokens"),
    ({"tiers": [{"max_prompt_tokens": 5, "input": "1", "output": "1"},
                {"max_prompt_tokens": 5, "input": "1", "output": "1"},
                {"input": "1", "output": "1"}]}, "increasing"),
    ({"input": "1", "output": "1", "versions": [{"from": "2031-01-01T00:00:00",
                                                 "input": "1", "output": "1"}]}, "offset"),
    ({"input": "1", "output": "-2"}, "output price"),
])
def test_bad_price_specs_say_what_to_fix(spec, fragment):
    with pytest.raises(PriceSpecError) as err:
        schedule_from(spec)
    assert fragment in str(err.value)
