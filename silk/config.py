"""Configuration in the flaskr order: package defaults, instance file, test config, environment."""

from __future__ import annotations

import math
import os
import secrets
from decimal import Decimal, InvalidOperation
from urllib.parse import urlparse

from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from silk.catalog.catalogue import limit_rule, parse_aliases, thinking_enabled
from silk.database_events import sqlite_in_memory
from silk.defaults import Defaults

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
    _apply_environment(app)
    validate(app.config)


def _apply_environment(app: Flask) -> None:
    env = os.environ
    cfg = app.config
    if env.get("SECRET_KEY"):
        cfg["SECRET_KEY"] = env["SECRET_KEY"]
    if env.get("DATABASE_URL") and not cfg.get("SILK_IGNORE_ENV_DATABASE"):
        cfg["SQLALCHEMY_DATABASE_URI"] = env["DATABASE_URL"]
    if env.get("REDIS_URL"):
        cfg["REDIS_URL"] = env["REDIS_URL"]
    # SILK_FOO=value overrides a scalar setting named SILK_FOO.
    for name, raw in env.items():
        if name.startswith("SILK_") and name in cfg and not isinstance(cfg[name], dict):
            cfg[name] = _coerce(raw, cfg[name])

    if env.get("SILK_MODEL_ALIASES"):
        cfg["SILK_MODEL_ALIASES"] = env["SILK_MODEL_ALIASES"]

    if not cfg.get("SQLALCHEMY_DATABASE_URI"):
        os.makedirs(app.instance_path, exist_ok=True)
        cfg["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "silk.db")
    uri = cfg["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith(("postgres://", "postgresql://")):
        # psycopg 3 cooperates with gevent; make it the driver for a bare postgresql URL.
        cfg["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://" + uri.split("://", 1)[1]
    cfg.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _engine_options(cfg))
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


def _coerce(raw: str, current):
    if isinstance(current, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    return raw


def validate(cfg) -> None:
    """Check every setting an operator can get wrong, naming the setting to fix."""
    problems: list[str] = []
    try:
        make_url(cfg["SQLALCHEMY_DATABASE_URI"])
    except ArgumentError:
        problems.append("DATABASE_URL is not a SQLAlchemy URL, e.g. "
                        "postgresql+psycopg://user@host/db or sqlite:////path/silk.db")
    for pid, upstream in cfg["SILK_UPSTREAMS"].items():
        parsed = urlparse(upstream["base_url"])
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            env = cfg["SILK_PROVIDERS"][pid]["env"]
            problems.append(f"{env}_BASE_URL must be an http(s) URL, got {upstream['base_url']!r}")
        native = upstream.get("anthropic_base_url")
        parsed = urlparse(native or "")
        if native and (parsed.scheme not in ("http", "https") or not parsed.netloc):
            env = cfg["SILK_PROVIDERS"][pid]["env"]
            problems.append(f"{env}_ANTHROPIC_BASE_URL must be an http(s) URL, got {native!r}")
    problems += _alias_problems(cfg)
    for mid, model in cfg["SILK_MODELS"].items():
        if model.get("provider") not in cfg["SILK_PROVIDERS"]:
            problems.append(f"model {mid!r}: provider {model.get('provider')!r} is not one of "
                            f"{sorted(cfg['SILK_PROVIDERS'])}")
        for field in ("input", "output", "cache_hit"):
            if field in model and not _money_ok(model[field]):
                problems.append(f"model {mid!r}: {field} price must be a non-negative number")
        if not isinstance(model.get("max_output_tokens"), int) or model["max_output_tokens"] < 1:
            problems.append(f"model {mid!r}: max_output_tokens must be a positive integer")
        problems += _route_problems(mid, model, cfg["SILK_PROVIDERS"].get(model.get("provider")))
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
    if not _money_ok(cfg["SILK_TOPUP_MAX"]) or Decimal(str(cfg["SILK_TOPUP_MAX"])) <= 0:
        problems.append("SILK_TOPUP_MAX must be a positive USD amount")
    if problems:
        raise ConfigError("SilkGateway cannot start:\n  - " + "\n  - ".join(problems))


_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


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
    if not isinstance(provider.get("thinking_off", {}), dict | type(None)):
        problems.append(f"provider {pid!r}: thinking_off must be an object (the body that "
                        "switches thinking off) or null")
    return problems


def _route_problems(mid: str, model, provider) -> list[str]:
    """What is wrong with a model's route, above all thinking that nothing would bound.

    On a provider whose limit leaves thinking out, a route that enables thinking needs a
    reasoning budget, and any other thinking model needs the provider's thinking_off.
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
    if rule["limit_covers_reasoning"] or budget:
        return []
    if thinking_enabled(extra):
        return [f"model {mid!r}: its extra_body enables thinking, which its provider's "
                f"{rule['limit_field']} does not bound: give it a reasoning_budget"]
    if not rule["thinking_off"]:
        return [f"model {mid!r}: its provider's {rule['limit_field']} does not bound "
                "thinking and the provider has no thinking_off: give the model a "
                "reasoning_budget or thinking: false"]
    return []


def _money_ok(value) -> bool:
    try:
        return Decimal(str(value)) >= 0
    except (InvalidOperation, TypeError):
        return False
