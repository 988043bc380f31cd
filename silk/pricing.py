"""Pure pricing: tokens, prices and a tier in, an exact cost out; no Flask, no database.

Money is counted in integer nano-dollars ("units", 1 USD = 10**9 units) so that every
per-token price of the catalogue is a whole number and sums never drift.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

UNITS_PER_USD = 10**9
_UNITS_PER_TOKEN_PER_MUSD = Decimal(UNITS_PER_USD) / Decimal(10**6)


def usd_to_units(usd: Decimal | str | int) -> int:
    """Convert a USD amount to whole units, rounding half up at the nano-dollar."""
    value = Decimal(str(usd)) * UNITS_PER_USD
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def units_to_usd(units: int) -> Decimal:
    """Convert whole units back to an exact USD Decimal."""
    return (Decimal(units) / UNITS_PER_USD).normalize() if units else Decimal(0)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for one model."""

    input: Decimal
    output: Decimal
    cache_hit: Decimal | None = None
    reasoning: Decimal | None = None  # upstream prices only: a provider may bill it apart

    @property
    def cache_hit_price(self) -> Decimal:
        """Price of a cache-hit prompt token (the input price when the model sets none)."""
        return self.input if self.cache_hit is None else self.cache_hit

    @property
    def reasoning_price(self) -> Decimal:
        """Price of a reasoning token (the output price when the price sets none)."""
        return self.output if self.reasoning is None else self.reasoning


@dataclass(frozen=True, slots=True)
class Tier:
    """A plan: a discount on list price and a monthly free token quota."""

    name: str
    discount: Decimal  # a fraction: 0.10 is ten per cent
    monthly_free_tokens: int


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one request, as the upstream reports them (reasoning inside completion)."""

    prompt_tokens: int
    completion_tokens: int
    cache_hit_tokens: int = 0
    # Of the prompt, those the provider wrote to its cache (Anthropic's
    # cache_creation_input_tokens): priced as input, as the catalogue has no price for a
    # write; counted apart only to be told back in the dialect that names them.
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Cost:
    """What a request costs: free tokens, list price of what is charged, discount, total."""

    free_tokens: int
    billable_tokens: int
    subtotal: int  # units: list price of the billable tokens
    discount: int  # units
    total: int  # units: what the balance pays

    @property
    def total_usd(self) -> Decimal:
        """The total in USD."""
        return units_to_usd(self.total)


def _units(tokens: int, usd_per_million: Decimal) -> Decimal:
    return Decimal(tokens) * usd_per_million * _UNITS_PER_TOKEN_PER_MUSD


def quote(price: Price, usage: Usage, tier: Tier, free_available: int) -> Cost:
    """Price one request's tokens for a tier with `free_available` quota tokens left.

    The free quota covers the request's tokens in the order they were made: cache-hit
    prompt tokens, other prompt tokens, then completion tokens. Because every token that
    comes later is priced at least as high, the cost never decreases as tokens are added,
    which is what lets a worst-case hold bound the real cost.
    """
    hit = min(max(usage.cache_hit_tokens, 0), usage.prompt_tokens)
    miss = usage.prompt_tokens - hit
    completion = usage.completion_tokens
    free_left = max(0, min(free_available, usage.total_tokens))
    free_tokens = free_left

    charged = Decimal(0)
    order = ((hit, price.cache_hit_price), (miss, price.input), (completion, price.output))
    for tokens, rate in order:
        covered = min(tokens, free_left)
        free_left -= covered
        charged += _units(tokens - covered, rate)

    subtotal = int(charged.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    discount = int((subtotal * tier.discount).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return Cost(
        free_tokens=free_tokens,
        billable_tokens=usage.total_tokens - free_tokens,
        subtotal=subtotal,
        discount=discount,
        total=subtotal - discount,
    )


def worst_case(price: Price, prompt_tokens: int, max_output: int, tier: Tier,
               free_available: int) -> Cost:
    """Bound the cost of a request before it runs: all prompt tokens uncached, full output.

    Each token is priced at the highest rate any token in its place could cost, so the bound
    holds even for a catalogue whose output or cache-hit price is below its input price.
    """
    prompt_rate = max(price.input, price.cache_hit_price)
    bound = Price(input=prompt_rate, output=max(prompt_rate, price.output))
    return quote(bound, Usage(prompt_tokens, max_output), tier, free_available)


def upstream_cost(price: Price, usage: Usage, reasoning_tokens: int = 0) -> int:
    """What the provider bills the operator for one request's tokens, in units.

    No tier and no free quota: the operator pays for every token the provider counted.
    Reasoning tokens are inside the completion count and priced apart only when the
    provider's price names a reasoning rate.
    """
    hit = min(max(usage.cache_hit_tokens, 0), usage.prompt_tokens)
    reasoning = min(max(reasoning_tokens, 0), usage.completion_tokens)
    units = (_units(hit, price.cache_hit_price) + _units(usage.prompt_tokens - hit, price.input)
             + _units(usage.completion_tokens - reasoning, price.output)
             + _units(reasoning, price.reasoning_price))
    return int(units.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def below_cost(price: Price, cost: Price) -> list[str]:
    """The rates at which a customer's list price is below the upstream cost (empty: none)."""
    pairs = (("input", price.input, cost.input), ("output", price.output, cost.output),
             ("cache_hit", price.cache_hit_price, cost.cache_hit_price),
             ("reasoning", price.output, cost.reasoning_price))
    return [name for name, sold, paid in pairs if sold < paid]


@dataclass(frozen=True, slots=True)
class Step:
    """One prompt-length tier: its price applies to a request of at most `up_to` prompt
    tokens (None: any length)."""

    up_to: int | None
    price: Price


@dataclass(frozen=True, slots=True)
class Tiered:
    """A price set by the prompt's length: the whole request pays its tier's rates."""

    steps: tuple[Step, ...]

    @classmethod
    def flat(cls, price: Price) -> "Tiered":
        """One price whatever the prompt's length."""
        return cls((Step(None, price),))

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The price of a request with this many prompt tokens."""
        for step in self.steps:
            if step.up_to is None or prompt_tokens <= step.up_to:
                return step.price
        return self.steps[-1].price

    def ceiling(self, prompt_bound: int) -> Price:
        """Each rate at its highest over the tiers a prompt of at most `prompt_bound` tokens
        can fall in: the price a hold is sized with, so the real price never exceeds it."""
        reachable: list[Price] = []
        for step in self.steps:
            reachable.append(step.price)
            if step.up_to is None or prompt_bound <= step.up_to:
                break
        return Price(input=max(p.input for p in reachable),
                     output=max(p.output for p in reachable),
                     cache_hit=max(p.cache_hit_price for p in reachable),
                     reasoning=max(p.reasoning_price for p in reachable))


def at_prompt(price: Price | Tiered, prompt_tokens: int) -> Price:
    """The price a request with this many prompt tokens pays, tiered or not."""
    return price.for_prompt(prompt_tokens) if isinstance(price, Tiered) else price
