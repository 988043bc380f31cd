"""Pure model catalogue: public model id -> provider route, upstream name, extras and price."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from silk.defaults import PROVIDER_LIMIT_DEFAULTS
from silk.pricing import Price, Tier, Tiered
from silk.schedule import Schedule, schedule_from


@dataclass(frozen=True, slots=True)
class Provider:
    """An upstream provider as the operator configured it."""

    id: str
    name: str
    base_url: str
    keys: tuple[str, ...]
    limit_field: str = "max_tokens"  # the one output bound the provider obeys
    limit_covers_reasoning: bool = False  # whether that bound includes the chain of thought
    # Whether it streams the reasoning it bills; if not, only its final usage counts it.
    reasoning_streamed: bool = False
    thinking_off: Mapping = field(default_factory=dict)  # the body that stops thinking
    # Where it reads a number of thinking tokens, a key or a dotted path (None: nowhere).
    budget_field: str | None = None
    anthropic_base_url: str = ""  # where it serves Anthropic Messages natively ("" if not)

    @property
    def configured(self) -> bool:
        """True when the operator gave at least one key."""
        return bool(self.keys)


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a model: a provider, its model name and extras, its upstream price."""

    name: str  # "provider/upstream" unless the operator named it
    provider: str
    upstream: str
    extra_body: Mapping = field(default_factory=dict)
    weight: int = 0  # 0 everywhere: tried in order; else picked by weight
    cost_pricing: Schedule | None = None

    def cost_at(self, instant: datetime) -> Tiered | None:
        """The provider's prompt-tiered price at `instant`, None when none is configured."""
        return self.cost_pricing.at(instant) if self.cost_pricing is not None else None


@dataclass(frozen=True, slots=True)
class Model:
    """One public model id and how to reach and price it."""

    id: str
    provider: str
    upstream: str
    price: Price
    max_output_tokens: int
    context: int | None = None
    reasoning_budget: int = 0
    extra_body: Mapping = field(default_factory=dict)
    thinking: bool = True  # whether the model can think at all
    cost: Price | None = None  # what the provider bills the operator; None: not configured
    pricing: Schedule | None = None  # the price over time and prompt size (None: `price`)
    cost_pricing: Schedule | None = None  # the same for `cost`
    # Every route, the first one's provider, upstream and extras above; () before the
    # catalogue is built (a model alone is its one route).
    routes: tuple[Route, ...] = ()

    def price_at(self, instant: datetime) -> Tiered:
        """The customer's prompt-tiered price for a request admitted at `instant`."""
        return self.pricing.at(instant) if self.pricing else Tiered.flat(self.price)

    def cost_at(self, instant: datetime) -> Tiered | None:
        """The provider's prompt-tiered price at `instant`, None when none is configured."""
        if self.cost_pricing is not None:
            return self.cost_pricing.at(instant)
        return Tiered.flat(self.cost) if self.cost is not None else None


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every model, provider and tier the gateway serves."""

    models: Mapping[str, Model]
    providers: Mapping[str, Provider]
    tiers: Mapping[str, Tier]
    # SILK_MODEL_ALIASES: (name or glob pattern, catalogue model id), first match wins
    aliases: tuple[tuple[str, str], ...] = ()

    def model(self, model_id: str) -> Model | None:
        """Return the model for a public id or an alias of one (billed as it), or None."""
        model = self.models.get(model_id)
        if model is None and self.aliases:
            target = self.alias_target(model_id)
            model = self.models.get(target) if target else None
        return model

    def alias_target(self, name: str) -> str | None:
        """The catalogue model an alias names: an exact alias first, then the first glob."""
        for pattern, target in self.aliases:
            if pattern == name:
                return target
        for pattern, target in self.aliases:
            if _is_glob(pattern) and fnmatch.fnmatchcase(name, pattern):
                return target
        return None

    def exact_aliases(self) -> list[tuple[str, Model]]:
        """The aliases that name one model (not patterns), for /v1/models to show."""
        return [(name, self.models[target]) for name, target in self.aliases
                if not _is_glob(name) and name not in self.models]

    def price_of(self, model_id: str, at: datetime | None = None) -> Price | Tiered | None:
        """Return a model's price (at an instant: as then, by prompt size), or None for a
        model no longer in the catalogue."""
        model = self.models.get(model_id)
        if model is None:
            return None
        return model.price_at(at) if at is not None else model.price

    def cost_of(self, model_id: str, at: datetime | None = None) -> Price | Tiered | None:
        """Return a model's upstream price (at an instant: as then), or None."""
        model = self.models.get(model_id)
        if model is None:
            return None
        return model.cost_at(at) if at is not None else model.cost

    def provider_of(self, model: Model) -> Provider:
        """Return the provider that serves a model."""
        return self.providers[model.provider]

    def available(self, model: Model) -> bool:
        """True when the gateway can serve the model: the provider of one of its routes has
        a key (the relay fails over past a route whose provider has none)."""
        providers = [route.provider for route in model.routes] or [model.provider]
        return any(self.providers[pid].configured for pid in providers)


def _is_glob(pattern: str) -> bool:
    return any(mark in pattern for mark in "*?[")


def parse_aliases(value) -> tuple[tuple[str, str], ...]:
    """SILK_MODEL_ALIASES as pairs: a mapping, a JSON object, or `name=model,pattern=model`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            value = dict(item.split("=", 1) for item in text.split(",") if item.strip())
    if not isinstance(value, Mapping):
        raise ValueError("SILK_MODEL_ALIASES must map names or patterns to models")
    return tuple((str(name).strip(), str(target).strip()) for name, target in value.items())


def tier_from_config(name: str, spec: Mapping) -> Tier:
    """Build a Tier from its config entry (discount given in per cent)."""
    return Tier(name=name, discount=Decimal(str(spec["discount_percent"])) / 100,
                monthly_free_tokens=int(spec["monthly_free_tokens"]))


def limit_rule(spec: Mapping) -> dict:
    """A provider's output-limit rule from its config entry, cautious where it says nothing."""
    rule = {name: spec.get(name, default) for name, default in PROVIDER_LIMIT_DEFAULTS.items()}
    rule["limit_covers_reasoning"] = bool(rule["limit_covers_reasoning"])
    rule["reasoning_streamed"] = bool(rule["reasoning_streamed"])
    rule["thinking_off"] = dict(rule["thinking_off"] or {})
    return rule


def thinking_enabled(body: Mapping) -> bool:
    """Whether a body's `thinking` switch asks for thinking (enabled, auto or any non-off)."""
    switch = body.get("thinking")
    if not isinstance(switch, Mapping):
        return switch is not None and switch is not False
    return switch.get("type") != "disabled"


def _model(mid: str, spec: Mapping) -> Model:
    """A catalogue model from its validated config entry."""
    pricing = schedule_from(spec)
    cost = schedule_from(spec["cost"]) if spec.get("cost") else None
    routes = tuple(_route(mid, entry, cost) for entry in spec.get("routes") or [spec])
    first = routes[0]
    return Model(
        id=mid, provider=first.provider, upstream=first.upstream,
        price=pricing.base, max_output_tokens=int(spec["max_output_tokens"]),
        context=spec.get("context"), reasoning_budget=int(spec.get("reasoning_budget", 0)),
        extra_body=first.extra_body, thinking=bool(spec.get("thinking", True)),
        cost=first.cost_pricing.base if first.cost_pricing else None, pricing=pricing,
        cost_pricing=first.cost_pricing, routes=routes)


def _route(mid: str, spec: Mapping, cost: Schedule | None) -> Route:
    """One route from its config entry; without a cost of its own it costs the model's."""
    upstream = spec.get("upstream", mid)
    return Route(name=str(spec.get("name") or f"{spec['provider']}/{upstream}"),
                 provider=spec["provider"], upstream=upstream,
                 extra_body=dict(spec.get("extra_body") or {}),
                 weight=int(spec.get("weight", 0)),
                 cost_pricing=schedule_from(spec["cost"]) if spec.get("cost") else cost)


def build_catalogue(config: Mapping) -> Catalogue:
    """Build the catalogue from validated configuration."""
    providers = {
        pid: Provider(id=pid, name=spec["name"],
                      base_url=config["SILK_UPSTREAMS"][pid]["base_url"].rstrip("/"),
                      keys=tuple(config["SILK_UPSTREAMS"][pid]["keys"]),
                      anthropic_base_url=config["SILK_UPSTREAMS"][pid].get(
                          "anthropic_base_url", "").rstrip("/"),
                      **limit_rule(spec))
        for pid, spec in config["SILK_PROVIDERS"].items()
    }
    models = {
        mid: _model(mid, spec)
        for mid, spec in config["SILK_MODELS"].items()
    }
    tiers = {name: tier_from_config(name, spec) for name, spec in config["SILK_TIERS"].items()}
    return Catalogue(models=models, providers=providers, tiers=tiers,
                     aliases=parse_aliases(config.get("SILK_MODEL_ALIASES") or {}))
