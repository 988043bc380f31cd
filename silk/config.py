"""Configuration in the flaskr order: package defaults, instance file, test config, environment."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from decimal import Decimal, InvalidOperation
from typing import NamedTuple
from urllib.parse import urlparse

from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from silk.catalog.catalogue import limit_rule, parse_aliases, thinking_enabled
from silk.cors import origin_problems
from silk.database_events import sqlite_in_memory
from silk.defaults import Defaults
from silk.jsonio import column_dumps, column_loads
from silk.ops.network import parse_networks
from silk.relay.pace import LONGEST
from silk.schedule import PriceSpecError, schedule_from

INSTANCE_FILE = "silk.cfg"
_SQLITE_POOL_SIZE = 20  # connections each worker keeps (and may add) to a SQLite file


class ConfigError(RuntimeError):
    """A configuration the gateway cannot start with; the message says what to fix."""


def load_config(app: Flask, test_config: dict | None) -> None:
    """Fill app.config from every source, then refuse to start on a bad value."""
    app.config.from_object(Defaults)
    app.config.from_pyfile(INSTANCE_FILE, silent=True)
    if test_config:
        app.config.update(test_config)
    problems = _apply_environment(app)
    validate(app.config, problems)
    cfg = app.config
    options = dict(cfg["SQLALCHEMY_ENGINE_OPTIONS"] if "SQLALCHEMY_ENGINE_OPTIONS" in cfg
                   else _engine_options(cfg))
    # JSON columns (stored responses, a key's models) in and out with orjson, as every
    # answer: a long conversation is written once and read back on each turn continuing it.
    options.setdefault("json_serializer", column_dumps)
    options.setdefault("json_deserializer", column_loads)
    cfg["SQLALCHEMY_ENGINE_OPTIONS"] = options


def _apply_environment(app: Flask) -> list[str]:
    """Read the environment into app.config; return what could not be read."""
    env = os.environ
    cfg = app.config
    problems: list[str] = []
    if env.get("SECRET_KEY"):
        cfg["SECRET_KEY"] = env["SECRET_KEY"]
    if env.get("DATABASE_URL") and not cfg.get("SILK_IGNORE_ENV_DATABASE"):
        cfg["SQLALCHEMY_DATABASE_URI"] = env["DATABASE_URL"]
    if env.get("REDIS_URL"):
        cfg["REDIS_URL"] = env["REDIS_URL"]
    # SILK_FOO=value overrides the setting named SILK_FOO, read as the default's kind.
    for name, raw in env.items():
        if name.startswith("SILK_") and name in cfg and name not in _READ_APART:
            try:
                cfg[name] = coerce(name, raw, cfg[name])
            except ValueError as err:
                problems.append(str(err))  # the default stays, so the rest can be checked

    if env.get("SILK_MODEL_ALIASES"):
        cfg["SILK_MODEL_ALIASES"] = env["SILK_MODEL_ALIASES"]

    if not cfg.get("SQLALCHEMY_DATABASE_URI"):
        os.makedirs(app.instance_path, exist_ok=True)
        cfg["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "silk.db")
    uri = cfg["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith(("postgres://", "postgresql://")):
        # psycopg 3 cooperates with gevent; make it the driver for a bare postgresql URL.
        cfg["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://" + uri.split("://", 1)[1]
    if not cfg.get("SECRET_KEY"):
        cfg["SECRET_KEY"] = secrets.token_hex(32)

    cfg["SILK_UPSTREAMS"] = {
        pid: {
            "base_url": env.get(f"{p['env']}_BASE_URL") or p["base_url"],
            # Secrets come only from the environment, never from a file in the repository.
            "keys": [k.strip() for k in env.get(f"{p['env']}_API_KEY", "").split(",") if k.strip()],
            # Anthropic Messages served natively: unset, /v1/messages translates to chat.
            "anthropic_base_url": env.get(f"{p['env']}_ANTHROPIC_BASE_URL", "").strip(),
        }
        for pid, p in cfg["SILK_PROVIDERS"].items()
    }
    return problems


def _engine_options(cfg) -> dict:
    uri = cfg["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        # Writers wait for each other instead of failing; see database events for WAL.
        if _sqlite_in_memory(uri):
            return {"connect_args": {"timeout": 30}}  # one connection holds the database
        # A gevent worker serves many requests at once, and SQLite connections cost no
        # server slot: a pool that covers the burst keeps connections open instead of
        # opening (and setting up) an overflow connection per request.
        return {"connect_args": {"timeout": 30}, "pool_size": _SQLITE_POOL_SIZE,
                "max_overflow": _SQLITE_POOL_SIZE}
    # Each worker holds at most pool + overflow connections: size them so that workers x
    # hosts fit in the server's max_connections. Statements are short, so a few suffice
    # even for thousands of streams (a stream holds no connection while it runs). A burst
    # that saturates the CPU makes checkouts wait on busy greenlets, not on the database,
    # so the wait for a connection is generous rather than a quick 503.
    return {"pool_size": cfg["SILK_DB_POOL_SIZE"], "max_overflow": cfg["SILK_DB_MAX_OVERFLOW"],
            "pool_pre_ping": True, "pool_recycle": 1800, "pool_timeout": 30,
            "connect_args": postgres_connect_args(cfg)}


def postgres_connect_args(cfg) -> dict:
    """libpq settings that bound every wait on a PostgreSQL server that stops answering.

    connect_timeout bounds opening a session; statement_timeout makes the server end a
    statement that runs too long; keepalives and tcp_user_timeout find a server whose host
    went away (packets unanswered) within about 30 s, even mid-statement.
    """
    statement_ms = int(float(cfg["SILK_DB_STATEMENT_TIMEOUT"]) * 1000)
    try:
        options = make_url(cfg["SQLALCHEMY_DATABASE_URI"]).query.get("options")
    except ArgumentError:
        options = None  # validate() names the problem
    if isinstance(options, tuple):
        options = " ".join(options)
    return {"connect_timeout": max(2, math.ceil(float(cfg["SILK_DB_CONNECT_TIMEOUT"]))),
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3, "tcp_user_timeout": 30_000,
            "options": f"{options or ''} -c statement_timeout={statement_ms}".strip()}


def _sqlite_in_memory(uri: str) -> bool:
    try:
        return sqlite_in_memory(make_url(uri))
    except ArgumentError:
        return False  # validate() names the problem


# Settings with a syntax of their own, checked by validate() (aliases: JSON or name=model).
_READ_APART = frozenset({"SILK_MODEL_ALIASES"})
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
# Settings whose default is None, and the kind of value they take when set.
_OPTIONAL_KINDS = {name: int for name in (
    "SILK_DEFAULT_RPM", "SILK_DEFAULT_TPM", "SILK_DEFAULT_CONCURRENCY", "SILK_ACCOUNT_RPM",
    "SILK_ACCOUNT_TPM", "SILK_ACCOUNT_CONCURRENCY", "SILK_ACCOUNT_MODEL_RPM",
    "SILK_ACCOUNT_MODEL_TPM", "SILK_ACCOUNT_MODEL_CONCURRENCY")}
# Comma-separated address lists (CIDRs, addresses or *), read where they are used.
ADDRESS_LISTS = ("SILK_METRICS_ALLOW", "SILK_TRUSTED_PROXIES")


def coerce(name: str, raw: str, current):
    """An environment value read as the kind of the setting's current value; a ValueError
    names the setting, the value and what is allowed, in one line."""
    text = raw.strip()
    kind = _OPTIONAL_KINDS.get(name) if current is None else type(current)
    if kind is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(_bad(name, raw, "true or false (also 1/0, yes/no)"))
    if kind is int:
        if current is None and not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(_bad(name, raw, "a whole number")) from None
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(_bad(name, raw, "a number, e.g. 30 or 2.5"))
        return number
    if kind is dict:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ValueError(_bad(name, raw, "a JSON object, e.g. {\"key\": \"value\"}"))
        return value
    if kind in (list, tuple):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _bad(name: str, value, allowed: str) -> str:
    shown = value if len(str(value)) <= 80 else str(value)[:77] + "..."
    return f"{name}={shown!r} is not allowed: use {allowed}"


def _as_given(name: str, value):
    """A setting's value as the operator wrote it: the variable's text, else the value."""
    return os.environ.get(name) or value


def _kind_problems(cfg) -> list[str]:
    """Every scalar setting of silk.defaults holds the kind of value its default does (an
    instance file may set anything)."""
    problems = []
    for name in dir(Defaults):
        default = getattr(Defaults, name)
        if not name.isupper() or name not in cfg or default is None:
            continue
        value = cfg[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                problems.append(_bad(name, value, "True or False"))
        elif isinstance(default, int | float) and (
                isinstance(value, bool) or not isinstance(value, int | float)
                or (isinstance(default, int) and not isinstance(value, int))):
            kind = "a whole number" if isinstance(default, int) else "a number"
            problems.append(_bad(name, value, kind))
    for name in ADDRESS_LISTS:
        value = os.environ.get(name) or cfg.get(name)
        if value is None:
            continue
        try:
            parse_networks(value)
        except (TypeError, ValueError):
            problems.append(_bad(name, value, "comma-separated addresses or CIDRs, or *"))
    return problems


def validate(cfg, problems: list[str] | None = None) -> None:
    """Check every setting an operator can get wrong, naming the setting to fix."""
    problems = list(problems or [])
    problems += _kind_problems(cfg)
    problems += origin_problems(cfg.get("SILK_CORS_ORIGINS") or "")
    try:
        make_url(cfg["SQLALCHEMY_DATABASE_URI"])
    except ArgumentError:
        problems.append("DATABASE_URL is not a SQLAlchemy URL, e.g. "
                        "postgresql+psycopg://user@host/db or sqlite:////path/silk.db")
    for pid, upstream in cfg["SILK_UPSTREAMS"].items():
        if not _http_url(upstream["base_url"]):
            env = cfg["SILK_PROVIDERS"][pid]["env"]
            problems.append(f"{env}_BASE_URL must be an http(s) URL, got {upstream['base_url']!r}")
        native = upstream.get("anthropic_base_url")
        if native and not _http_url(native):
            env = cfg["SILK_PROVIDERS"][pid]["env"]
            problems.append(f"{env}_ANTHROPIC_BASE_URL must be an http(s) URL, got {native!r}")
    problems += _alias_problems(cfg)
    for mid, model in cfg["SILK_MODELS"].items():
        if "routes" in model:
            problems += _routes_problems(mid, model, cfg["SILK_PROVIDERS"])
        elif model.get("provider") not in cfg["SILK_PROVIDERS"]:
            problems.append(f"model {mid!r}: provider {model.get('provider')!r} is not one of "
                            f"{sorted(cfg['SILK_PROVIDERS'])}")
        problems += _price_problems(mid, model)
        if not isinstance(model.get("max_output_tokens"), int) or model["max_output_tokens"] < 1:
            problems.append(f"model {mid!r}: max_output_tokens must be a positive integer")
        if "routes" not in model:
            problems += _route_problems(mid, model,
                                        cfg["SILK_PROVIDERS"].get(model.get("provider")))
    for pid, provider in cfg["SILK_PROVIDERS"].items():
        problems += _limit_problems(pid, provider)
    for name, tier in cfg["SILK_TIERS"].items():
        if not _money_ok(tier.get("discount_percent")) or Decimal(
                str(tier["discount_percent"])) > 100:
            problems.append(f"tier {name!r}: discount_percent must be between 0 and 100")
        if not isinstance(tier.get("monthly_free_tokens"), int) or tier["monthly_free_tokens"] < 0:
            problems.append(f"tier {name!r}: monthly_free_tokens must be a whole number >= 0")
    if cfg["SILK_DEFAULT_TIER"] not in cfg["SILK_TIERS"]:
        problems.append(f"SILK_DEFAULT_TIER {cfg['SILK_DEFAULT_TIER']!r} is not a tier")
    if cfg["SILK_REGISTRATION"] not in ("open", "invite", "closed"):
        problems.append("SILK_REGISTRATION must be open, invite or closed")
    problems += _alert_problems(cfg)
    for name in _OPTIONAL_KINDS:
        value = cfg.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            problems.append(_bad(name, _as_given(name, value),
                                 "a whole number of at least 1, or unset"))
    problems += _bound_problems(cfg)
    problems += _span_problems(cfg)
    if not _money_ok(cfg["SILK_TOPUP_MAX"]) or Decimal(str(cfg["SILK_TOPUP_MAX"])) <= 0:
        problems.append("SILK_TOPUP_MAX must be a positive USD amount")
    if len(problems) == 1:
        raise ConfigError(f"SilkGateway cannot start: {problems[0]}")
    if problems:
        raise ConfigError("SilkGateway cannot start:\n  - " + "\n  - ".join(problems))


# Settings that bound what a hold covers, and the least each may be: a negative image
# allowance makes each image lower a prompt's bound (what is billed above it is written off).
# (The hold's lease, SILK_RESERVATION_TTL, is a span below.)
_LEAST = {"SILK_IMAGE_TOKEN_ALLOWANCE": (0, "a whole number of tokens, at least 0")}


def _bound_problems(cfg) -> list[str]:
    """The hold-bounding settings below their least (their kind is checked apart)."""
    problems = []
    for name, (least, allowed) in _LEAST.items():
        value = cfg.get(name, getattr(Defaults, name))
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            problems.append(_bad(name, _as_given(name, value), allowed))
    return problems


class _Span(NamedTuple):
    """The values a duration may take: from `least` (excluded when `above`) to `most`, or
    exactly `off` where that value switches the thing off."""

    least: float
    most: float
    allowed: str
    above: bool = False
    off: float | None = None

    def holds(self, value: float) -> bool:
        """Whether `value` is allowed (NaN and infinities never are)."""
        if value == self.off:
            return True
        return (self.least < value if self.above else self.least <= value) and value <= self.most


_DAY = 86400  # seconds: the longest any wait, lease, rest or timeout may be
_DAYS = 36499  # the most days a retention or window may span (it is subtracted from now)
_SECONDS = _Span(0, _DAY, f"a number of seconds from 0 to {_DAY}")
_ABOVE_0 = _Span(0, _DAY, f"a number of seconds above 0, at most {_DAY}", above=True)
_KEPT = _Span(1, _DAYS, f"a whole number of days, at least 1 (below {_DAYS + 1})")
_SESSION = _Span(0, 8760, "a number of hours above 0, at most 8760", above=True)
# Every setting that becomes a timedelta, a date, a sleep or a timeout, and its range: past
# it a date overflows (a day's window past year 9999 made every key-expiry sweep and alert
# round raise), a lease or rest outlives what it guards, or a negative one means no wait.
_SPANS = {
    "SILK_BODY_READ_TIMEOUT": _Span(0, _DAY, f"0 (no limit) or a number of seconds up to "
                                             f"{_DAY}"),
    "SILK_DB_CONNECT_TIMEOUT": _ABOVE_0,
    # PostgreSQL's statement_timeout is whole milliseconds: below one it would be no limit.
    "SILK_DB_STATEMENT_TIMEOUT": _Span(0.001, _DAY, f"0 (no limit) or a number of seconds "
                                                    f"from 0.001 to {_DAY}", off=0),
    "SILK_UPSTREAM_CONNECT_TIMEOUT": _ABOVE_0,
    "SILK_UPSTREAM_READ_TIMEOUT": _ABOVE_0,
    # A JSON answer's wait (silk.upstream.client): a rate of 0 or less would make it endless
    # or negative, and so would an unbounded cap.
    "SILK_UPSTREAM_MIN_TOKENS_PER_SECOND": _Span(0, float("inf"), "a number of tokens a "
                                                 "second above 0", above=True),
    "SILK_UPSTREAM_MAX_ANSWER_WAIT": _ABOVE_0,
    "SILK_STREAM_PACE_WHEN_LATE_MS": _Span(0, LONGEST * 1000, "a number of milliseconds "
                                                              f"from 0 to {LONGEST * 1000:g}"),
    "SILK_STREAM_PACE_MS": _Span(0, LONGEST * 1000, "a number of milliseconds from 0 to "
                                                    f"{LONGEST * 1000:g}"),
    "SILK_KEY_COOLDOWN": _SECONDS,
    "SILK_MAX_RETRY_AFTER": _ABOVE_0,
    "SILK_ROUTE_REST": _SECONDS,
    # A hold's lease of 0 or less lets the sweep settle every live hold at its estimate
    # (the late real settlement can then charge only what other holds leave).
    "SILK_RESERVATION_TTL": _Span(1, _DAY, f"a whole number of seconds, at least 1, at most "
                                           f"{_DAY}"),
    "SILK_SWEEP_INTERVAL": _Span(0, _DAY, "0 (no sweep in this process) or a number of "
                                          f"seconds up to {_DAY}"),
    "SILK_RESPONSES_RETENTION_DAYS": _KEPT,
    "SILK_KEY_CACHE_TTL": _SECONDS,
    "SILK_CONSOLE_SESSION_HOURS": _SESSION,
    "SILK_DASHBOARD_SESSION_HOURS": _SESSION,
    "SILK_CONCURRENCY_LEASE": _Span(3, _DAY, f"a number of seconds, at least 3, at most {_DAY}"),
    "SILK_ALERT_INTERVAL": _Span(0, _DAY, "0 (this process delivers none) or a number of "
                                          f"seconds up to {_DAY}"),
    "SILK_ALERT_RETRY_BASE": _SECONDS,
    # A lease of 0 leaves an event being delivered to the next worker that claims one, and
    # a timeout of 0 is no delivery at all (every round failed before recording an attempt).
    "SILK_ALERT_LEASE": _ABOVE_0,
    "SILK_ALERT_TIMEOUT": _ABOVE_0,
    "SILK_ALERT_KEY_EXPIRY_DAYS": _Span(0, _DAYS, "0 (no alert) or a whole number of days, "
                                                  f"below {_DAYS + 1}"),
    "SILK_ALERT_RETENTION_DAYS": _KEPT,
}


def _span_problems(cfg) -> list[str]:
    """The durations out of their range (their kind is checked apart)."""
    problems = []
    for name, span in _SPANS.items():
        value = cfg.get(name, getattr(Defaults, name))
        if isinstance(value, int | float) and not isinstance(value, bool) and not span.holds(
                value):
            problems.append(_bad(name, _as_given(name, value), span.allowed))
    return problems


_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")
# A budget_field: keys joined by dots, none of them a field the gateway itself writes.
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_GATEWAY_FIELDS = ("model", "messages", "stream", "stream_options", "n", *_LIMIT_FIELDS)


def _routes_problems(mid: str, model, providers) -> list[str]:
    """What is wrong with a model's `routes`: each must be a route the model could have alone,
    and every route must need the same hold (the hold is sized before a route is chosen)."""
    routes = model["routes"]
    if not isinstance(routes, list) or not routes:
        return [f"model {mid!r}: routes must be a non-empty list"]
    problems: list[str] = []
    covers = set()
    for i, route in enumerate(routes):
        where = f"model {mid!r} route {i}"
        if not isinstance(route, dict):
            problems.append(f"{where}: must be an object")
            continue
        if route.get("provider") not in providers:
            problems.append(f"{where}: provider {route.get('provider')!r} is not one of "
                            f"{sorted(providers)}")
            continue
        weight = route.get("weight", 0)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            problems.append(f"{where}: weight must be a whole number >= 0")
        if not isinstance(route.get("upstream", mid), str):
            problems.append(f"{where}: upstream must be a model name")
        if "cost" in route:
            problems += [p.replace(f"model {mid!r}: ", f"{where}: ")
                         for p in _price_problems(mid, {"input": 0, "output": 0,
                                                        "cost": route["cost"]})]
        alone = {**model, "provider": route["provider"],
                 "extra_body": route.get("extra_body")}
        problems += [p.replace(f"model {mid!r}: ", f"{where}: ")
                     for p in _route_problems(mid, alone, providers[route["provider"]])]
        covers.add(bool(limit_rule(providers[route["provider"]])["limit_covers_reasoning"]))
    if model.get("reasoning_budget") and len(covers) > 1:
        problems.append(f"model {mid!r}: with a reasoning_budget, every route's provider must "
                        "agree on limit_covers_reasoning (the hold is sized before a route "
                        "is chosen)")
    return problems


def _price_problems(mid: str, model) -> list[str]:
    """What is wrong with a model's price spec and its upstream `cost` (silk.schedule)."""
    problems = []
    for label, spec in (("", model), ("cost: ", model.get("cost"))):
        if spec is None:
            continue
        if not isinstance(spec, dict):
            problems.append(f"model {mid!r}: cost must be an object with input and output "
                            "prices, as a model's own price")
            continue
        try:
            schedule_from(spec)
        except PriceSpecError as err:
            problems.append(f"model {mid!r}: {label}{err}")
    return problems


def _alias_problems(cfg) -> list[str]:
    """What is wrong with SILK_MODEL_ALIASES: its shape, or a target not in the catalogue."""
    try:
        aliases = parse_aliases(cfg.get("SILK_MODEL_ALIASES") or {})
    except ValueError:
        return ["SILK_MODEL_ALIASES must be a JSON object or name=model pairs separated by "
                "commas, e.g. claude-opus-*=deepseek-reasoner,claude-*=deepseek-chat"]
    return [f"SILK_MODEL_ALIASES: {name!r} names {target!r}, which is not a model"
            for name, target in aliases if target not in cfg["SILK_MODELS"] or not name]


def _limit_problems(pid: str, provider) -> list[str]:
    """What is wrong with a provider's output-limit rule (see silk.defaults.PROVIDERS)."""
    problems = []
    if provider.get("limit_field", "max_tokens") not in _LIMIT_FIELDS:
        problems.append(f"provider {pid!r}: limit_field must be one of {list(_LIMIT_FIELDS)}")
    if not isinstance(provider.get("limit_covers_reasoning", False), bool):
        problems.append(f"provider {pid!r}: limit_covers_reasoning must be true or false")
    if not isinstance(provider.get("reasoning_streamed", False), bool):
        problems.append(f"provider {pid!r}: reasoning_streamed must be true or false")
    if not isinstance(provider.get("thinking_off", {}), dict | type(None)):
        problems.append(f"provider {pid!r}: thinking_off must be an object (the body that "
                        "switches thinking off) or null")
    field = provider.get("budget_field")
    if field is not None and not (isinstance(field, str) and all(
            _KEY.match(key) for key in field.split("."))
            and field.split(".")[0] not in _GATEWAY_FIELDS):
        problems.append(f"provider {pid!r}: budget_field must be null or where the provider "
                        "reads a number of thinking tokens, a key or keys joined by dots "
                        "(thinking.budget_tokens, reasoning.max_tokens, thinking_budget), "
                        f"not one of {list(_GATEWAY_FIELDS)}; got {field!r}")
    return problems


def _route_problems(mid: str, model, provider) -> list[str]:
    """What is wrong with a model's route, above all thinking that nothing would bound.

    On a provider whose limit leaves thinking out, a route that enables thinking needs a
    reasoning budget, and any other thinking model needs the provider's thinking_off; a
    budget needs the provider's budget_field, which the gateway sends it in (the route may
    set a smaller one there, not a larger).
    """
    budget = model.get("reasoning_budget", 0)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        return [f"model {mid!r}: reasoning_budget must be a whole number >= 0"]
    extra = model.get("extra_body") or {}
    if not isinstance(extra, dict):
        return [f"model {mid!r}: extra_body must be an object"]
    if extra.keys() & set(_LIMIT_FIELDS):
        return [f"model {mid!r}: extra_body may not set an output limit; max_output_tokens "
                "is the model's, sent in its provider's limit_field"]
    if provider is None or _limit_problems("", provider) or not model.get("thinking", True):
        return []
    rule = limit_rule(provider)
    if rule["limit_covers_reasoning"]:
        return []
    if budget:
        return _budget_problems(mid, extra, budget, rule)
    if thinking_enabled(extra):
        return [f"model {mid!r}: its extra_body enables thinking, which its provider's "
                f"{rule['limit_field']} does not bound: give it a reasoning_budget"]
    if not rule["thinking_off"]:
        return [f"model {mid!r}: its provider's {rule['limit_field']} does not bound "
                "thinking and the provider has no thinking_off: give the model a "
                "reasoning_budget or thinking: false"]
    return []


def _budget_problems(mid: str, extra: dict, budget: int, rule: dict) -> list[str]:
    """What keeps a reasoning budget from bounding the thinking: a provider that names no
    budget_field (nothing would tell it the budget), or a route whose extra_body sets that
    field past the budget or is not an object where the field's path needs one."""
    field = rule["budget_field"]
    if not field:
        return [f"model {mid!r}: its provider's {rule['limit_field']} does not bound thinking "
                "and the provider has no budget_field (where it reads a number of thinking "
                "tokens), so nothing would keep the thinking within the reasoning_budget: "
                "set the provider's budget_field, or give the model thinking: false"]
    *parents, name = field.split(".")
    where = extra
    for depth, key in enumerate(parents, 1):
        if key not in where:
            return []
        where = where[key]
        if not isinstance(where, dict):
            return [f"model {mid!r}: its extra_body's {'.'.join(parents[:depth])} must be "
                    f"an object: its provider reads the thinking budget in {field}"]
    value = where.get(name)
    if name in where and not (isinstance(value, int) and not isinstance(value, bool)
                              and 0 < value <= budget):
        return [f"model {mid!r}: its extra_body sets {field} to {value!r}, which must be a "
                f"whole number from 1 to the reasoning_budget ({budget}), or unset (the "
                "gateway sends the budget there)"]
    return []


def _alert_problems(cfg) -> list[str]:
    """What is wrong with the alert settings (defaults stand in for those not set)."""
    def get(name):
        return cfg.get(name, getattr(Defaults, name))

    problems = []
    if not _money_ok(get("SILK_ALERT_BALANCE_USD")):
        problems.append("SILK_ALERT_BALANCE_USD must be a USD amount of at least 0")
    if get("SILK_SMTP_SECURITY") not in ("starttls", "ssl", "none"):
        problems.append("SILK_SMTP_SECURITY must be starttls, ssl or none")
    attempts = get("SILK_ALERT_MAX_ATTEMPTS")
    if not isinstance(attempts, int | float) or attempts < 0:
        problems.append("SILK_ALERT_MAX_ATTEMPTS must be a number of at least 0")
    url = get("SILK_ALERT_WEBHOOK_URL")
    if url and not _http_url(url):
        problems.append("SILK_ALERT_WEBHOOK_URL must be an http or https URL")
    return problems


def _http_url(value) -> bool:
    """Whether a setting is an http(s) URL with a host; one Python cannot split
    (`http://[`, an unclosed IPv6 bracket) is not, rather than a traceback at start."""
    try:
        parsed = urlparse(value)
    except (ValueError, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _money_ok(value) -> bool:
    try:
        return Decimal(str(value)) >= 0
    except (InvalidOperation, TypeError):
        return False
