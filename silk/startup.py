"""What the operator must hear once when the gateway starts: a setting that stops it, in one
line, and warnings such as a provider without a key."""

from __future__ import annotations

import os

from flask import Flask

from silk.config import ConfigError, load_config


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
    """One warning per provider that has no key: its models cannot be served."""
    warnings = []
    for pid, provider in config["SILK_PROVIDERS"].items():
        if config["SILK_UPSTREAMS"][pid]["keys"]:
            continue
        models = sorted(m for m, model in config["SILK_MODELS"].items()
                        if model.get("provider") == pid)
        if models:
            warnings.append(f"{provider.get('name', pid)} has no API key: set "
                            f"{provider['env']}_API_KEY to serve {', '.join(models)} "
                            "(until then /v1/models leaves them out)")
    return warnings


def report() -> tuple[str | None, list[str]]:
    """(the line that stops the gateway, or None; the warnings to log)."""
    try:
        app = settings_only()
    except ConfigError as err:
        return str(err), []
    except Exception as err:  # noqa: BLE001 - e.g. a syntax error in instance/silk.cfg
        return f"SilkGateway cannot start: {type(err).__name__}: {err}", []
    return None, provider_warnings(app.config)
