"""Pure model catalogue: public model id -> provider route, upstream name, extras and price."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from silk.defaults import PROVIDER_LIMIT_DEFAULTS
from silk.pricing import Price, Tier


@dataclass(frozen=True, slots=True)
class Provider:
    """An upstream provider as the operator configured it."""

    id: str
    name: str
    base_url: str
    keys: tuple[str, ...]
    limit_field: str = "max_tokens"  # the one output bound the provider obeys
    limit_covers_reasoning: bool = False  # whether that bound includes the chain of thought
    thinking_off: Mapping = field(default_factory=dict)  # the body that stops thinking
    anthropic_base_url: str = ""  # where it serves Anthropic Messages natively ("" if not)

    @property
    def configured(self) -> bool:
        """True when the operator gave at least one key."""
        return bool(self.keys)


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

    def price_of(self, model_id: str) -> Price | None:
        """Return a model's price, or None for a model no longer in the catalogue."""
        model = self.models.get(model_id)
        return model.price if model else None

    def provider_of(self, model: Model) -> Provider:
        """Return the provider that serves a model."""
        return self.providers[model.provider]


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
    rule["thinking_off"] = dict(rule["thinking_off"] or {})
    return rule


def thinking_enabled(body: Mapping) -> bool:
    """Whether a body's `thinking` switch asks for thinking (enabled, auto or any non-off)."""
    switch = body.get("thinking")
    if not isinstance(switch, Mapping):
        return switch is not None and switch is not False
    return switch.get("type") != "disabled"


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
        mid: Model(
            id=mid, provider=spec["provider"], upstream=spec.get("upstream", mid),
            price=Price(input=Decimal(str(spec["input"])), output=Decimal(str(spec["output"])),
                        cache_hit=(Decimal(str(spec["cache_hit"])) if "cache_hit" in spec
                                   else None)),
            max_output_tokens=int(spec["max_output_tokens"]), context=spec.get("context"),
            reasoning_budget=int(spec.get("reasoning_budget", 0)),
            extra_body=dict(spec.get("extra_body") or {}),
            thinking=bool(spec.get("thinking", True)),
        )
        for mid, spec in config["SILK_MODELS"].items()
    }
    tiers = {name: tier_from_config(name, spec) for name, spec in config["SILK_TIERS"].items()}
    return Catalogue(models=models, providers=providers, tiers=tiers,
                     aliases=parse_aliases(config.get("SILK_MODEL_ALIASES") or {}))
