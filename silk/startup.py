"""What the operator must hear once when the gateway starts: a setting that stops it, in one
line, and warnings such as a provider without a key."""

from __future__ import annotations

import math
import os

from flask import Flask

from silk.config import ConfigError, load_config

ANSWER_MARGIN = 60  # seconds to connect, read a JSON answer once it begins, and settle it


def instance_path() -> str | None:
    """The instance folder: SILK_INSTANCE_PATH, else Flask's default (the project's
    instance/), whatever the working directory."""
    path = os.environ.get("SILK_INSTANCE_PATH")
    return os.path.abspath(path) if path else None


def settings_only() -> Flask:
    """An app holding only the configuration, as create_app would read it."""
    app = Flask("silk", instance_path=instance_path(), instance_relative_config=True)
    load_config(app, None)
    return app


def provider_warnings(config) -> list[str]:
    """One warning per provider that has no key, naming the models it leaves unserved: its
    own, and those with routes whose every route's provider has no key."""
    keyed = {pid for pid, upstream in config["SILK_UPSTREAMS"].items() if upstream["keys"]}
    warnings = []
    for pid, provider in config["SILK_PROVIDERS"].items():
        if pid in keyed:
            continue
        models = sorted(m for m, model in config["SILK_MODELS"].items()
                        if pid in _providers(model) and not keyed & _providers(model))
        if models:
            warnings.append(f"{provider.get('name', pid)} has no API key: set "
                            f"{provider['env']}_API_KEY to serve {', '.join(models)} "
                            "(until then /v1/models leaves them out)")
    return warnings


def _providers(model: dict) -> set:
    """The providers a model's routes (or, without routes, the model) are served by."""
    routes = model.get("routes")
    if isinstance(routes, list):
        return {route.get("provider") for route in routes if isinstance(route, dict)}
    return {model.get("provider")}


def longest_answer(config) -> int:
    """Seconds a JSON request admitted just before its worker is told to stop may still run:
    its provider may be silent until the answer's body begins for up to the larger of
    SILK_UPSTREAM_READ_TIMEOUT and SILK_UPSTREAM_MAX_ANSWER_WAIT (silk.upstream.client's
    first_byte_wait, one wait however many keys and routes the request fails over to:
    silk.relay.routes), plus ANSWER_MARGIN. A worker killed sooner loses an answer the
    provider bills, and its hold is swept at the estimate."""
    wait = max(float(config["SILK_UPSTREAM_READ_TIMEOUT"]),
               float(config["SILK_UPSTREAM_MAX_ANSWER_WAIT"]))
    return math.ceil(wait) + ANSWER_MARGIN


def report() -> tuple[str | None, list[str], int]:
    """(the line that stops the gateway, or None; the warnings to log; `longest_answer`)."""
    try:
        app = settings_only()
    except ConfigError as err:
        return str(err), [], 0
    except Exception as err:  # noqa: BLE001 - e.g. a syntax error in instance/silk.cfg
        return f"SilkGateway cannot start: {type(err).__name__}: {err}", [], 0
    return None, provider_warnings(app.config), longest_answer(app.config)
