"""Pure pricing arithmetic, checked against hand-computed values."""

from decimal import Decimal

import pytest

from silk.pricing import Price, Tier, Usage, quote, units_to_usd, usd_to_units, worst_case

CHAT = Price(Decimal("0.14"), Decimal("0.28"))
FREE = Tier("free", Decimal(0), 100_000)
PRO = Tier("pro", Decimal("0.10"), 1_000_000)


def test_seed_example_45000_output_tokens():
    """45,000 tokens of deepseek-chat output cost 0.0126 before a 10 % pro discount."""
    cost = quote(CHAT, Usage(0, 45_000), PRO, free_available=0)
    assert units_to_usd(cost.subtotal) == Decimal("0.0126")
    assert units_to_usd(cost.discount) == Decimal("0.00126")
    assert units_to_usd(cost.total) == Decimal("0.01134")


def test_prompt_and_completion():
    # 25 × 0.14/M + 150 × 0.28/M = 0.0000035 + 0.000042 = 0.0000455
    cost = quote(CHAT, Usage(25, 150), FREE, free_available=0)
    assert cost.total == 45_500 and units_to_usd(cost.total) == Decimal("0.0000455")


def test_free_quota_covers_prompt_first_then_completion():
    # 100 prompt + 100 completion, 150 free: the last 50 completion tokens are charged.
    cost = quote(CHAT, Usage(100, 100), FREE, free_available=150)
    assert cost.free_tokens == 150 and cost.billable_tokens == 50
    assert cost.total == 50 * 280


def test_quota_larger_than_request_is_free():
    cost = quote(CHAT, Usage(10, 10), PRO, free_available=10**6)
    assert cost.total == 0 and cost.free_tokens == 20


def test_cache_hit_price():
    price = Price(Decimal("0.14"), Decimal("0.28"), cache_hit=Decimal("0.014"))
    cost = quote(price, Usage(1000, 0, cache_hit_tokens=800), FREE, 0)
    assert cost.total == 800 * 14 + 200 * 140


def test_discount_rounds_half_up_to_the_nanodollar():
    tier = Tier("odd", Decimal("0.15"), 0)
    cost = quote(Price(Decimal("0.10"), Decimal("0.10")), Usage(1, 0), tier, 0)
    assert cost.subtotal == 100 and cost.discount == 15 and cost.total == 85
    cost = quote(Price(Decimal("0.11"), Decimal("0.11")), Usage(1, 0), tier, 0)
    assert cost.discount == 17  # 16.5 rounds up


@pytest.mark.parametrize("prompt,completion,hit,free", [
    (0, 0, 0, 0), (10, 5, 0, 0), (10, 5, 3, 7), (1000, 1, 999, 500), (5, 5000, 0, 4000),
])
def test_worst_case_bounds_every_smaller_outcome(prompt, completion, hit, free):
    price = Price(Decimal("0.55"), Decimal("2.19"), cache_hit=Decimal("0.07"))
    bound = worst_case(price, prompt, completion, PRO, free)
    for p in range(0, prompt + 1, max(1, prompt // 7)):
        for c in range(0, completion + 1, max(1, completion // 7)):
            for f in (free, free + 10):
                actual = quote(price, Usage(p, c, min(hit, p)), PRO, f)
                assert actual.total <= bound.total


def test_worst_case_holds_even_when_output_is_cheaper_than_input():
    price = Price(Decimal("1.00"), Decimal("0.10"))
    bound = worst_case(price, 10, 10, FREE, 0)
    assert quote(price, Usage(10, 10), FREE, 0).total <= bound.total


def test_unit_conversions_are_exact():
    assert usd_to_units("10.50") == 10_500_000_000
    assert units_to_usd(10_500_000_000) == Decimal("10.5")
    assert usd_to_units(Decimal("0.000000001")) == 1
    assert units_to_usd(0) == 0


def test_upstream_cost_prices_every_kind_of_token_without_tier_or_quota():
    from silk.pricing import upstream_cost

    cost = Price(Decimal("0.30"), Decimal("1.20"), cache_hit=Decimal("0.03"),
                 reasoning=Decimal("2.00"))
    # 100 hit, 900 miss, 300 completion of which 200 reasoning.
    units = upstream_cost(cost, Usage(1000, 300, 100), 200)
    assert units == 100 * 30 + 900 * 300 + 100 * 1200 + 200 * 2000
    # Without a reasoning rate, reasoning is output; without a cache-hit rate, input.
    assert upstream_cost(Price(Decimal("0.30"), Decimal("1.20")), Usage(1000, 300, 100), 200) \
        == 1000 * 300 + 300 * 1200
    assert upstream_cost(cost, Usage(0, 0), 0) == 0
    assert upstream_cost(Price(Decimal("0.0005"), Decimal(0)), Usage(1, 0)) == 1  # half up


def test_below_cost_names_each_rate_sold_below_what_the_provider_charges():
    from silk.pricing import below_cost

    price = Price(Decimal("0.14"), Decimal("0.28"), cache_hit=Decimal("0.028"))
    assert below_cost(price, Price(Decimal("0.14"), Decimal("0.28"), Decimal("0.028"))) == []
    assert below_cost(price, Price(Decimal("0.20"), Decimal("0.28"))) == ["input", "cache_hit"]
    assert below_cost(price, Price(Decimal("0.1"), Decimal("0.2"), Decimal("0.02"),
                                   reasoning=Decimal("0.5"))) == ["reasoning"]
