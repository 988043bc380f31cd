"""SilkGateway: an OpenAI-compatible LLM gateway that meters and bills every token."""

from __future__ import annotations

import os

from flask import Flask

from silk.config import load_config
from silk.startup import instance_path
from silk.syncapp import SyncFlask, check


def create_app(test_config: dict | None = None, *, serving: bool = False) -> Flask:
    """Build the WSGI app; each step below is short and named for what it adds. `serving`
    (wsgi.py, the server) leaves out what only the commands use."""
    app = SyncFlask(__name__, instance_path=instance_path(), instance_relative_config=True)
    load_config(app, test_config)
    register_json(app)
    register_extensions(app)
    register_migrations(app, lazily=serving)
    register_catalogue(app)
    register_request_hooks(app)
    register_cors(app)
    register_schema_check(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    register_body_deadline(app)
    check(app)  # every view and hook a plain function, as SyncFlask takes them
    return app


def register_json(app: Flask) -> None:
    """Serialise with orjson, showing Decimal money as JSON numbers."""
    from silk.jsonio import OrjsonProvider

    app.json = OrjsonProvider(app)


def register_extensions(app: Flask) -> None:
    """Bind the database and the shared services to this app."""
    from silk import models  # noqa: F401 - every table must be known to migrations
    from silk.database_events import install_engine_events
    from silk.extensions import db
    from silk.limits import build_limiter
    from silk.metering import outbox
    from silk.metering.journal import configure as configure_journal
    from silk.pricing import usd_to_units

    db.init_app(app)
    with app.app_context():
        install_engine_events(db.engine)
        configure_journal(db.engine, app.config["SILK_SETTLEMENT_JOURNAL_DIR"]
                          or os.path.join(app.instance_path, "journal"))
        outbox.configure(db.engine, usd_to_units(app.config["SILK_ALERT_BALANCE_USD"]))
    app.extensions["silk.limiter"] = build_limiter(app.config.get("REDIS_URL"),
                                                   app.config["SILK_CONCURRENCY_LEASE"])
    from silk.invalidation import install

    install(app)


def register_migrations(app: Flask, *, lazily: bool = False) -> None:
    """Bind Flask-Migrate (the `db` commands) to this app; `lazily`, only once a `db`
    command runs, so a server's workers never import alembic, mako and pygments (11 MB a
    process) while `flask db ...` still finds its commands on the server's app."""
    import click

    def bind() -> None:
        from flask_migrate import Migrate

        from silk.extensions import db
        from silk.ops.schema import MIGRATIONS

        if "migrate" not in app.extensions:
            Migrate(app, db, directory=MIGRATIONS, compare_type=True, render_as_batch=True)

    if not lazily:
        bind()
        return

    class Db(click.Group):
        """Stands in for Flask-Migrate's `db` group until it runs, then is that group."""

        def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
            from flask_migrate.cli import db as commands

            bind()
            return commands.make_context(info_name, args, parent=parent, **extra)

    app.cli.add_command(Db("db", help="Perform database migrations."))


def register_catalogue(app: Flask) -> None:
    """Build the model catalogue and upstream clients from configuration; the clients count
    their failovers in the gateway's metrics, and a route that starts resting both in the
    metrics and as an alert. Refuse to start on a urllib3, httptools or
    requests that lacks what the upstream transport uses."""
    from silk.upstream import dependencies

    dependencies.check()  # before the transport is imported: it may not import on a bad one
    from silk.alerts.service import route_listener
    from silk.catalog.catalogue import build_catalogue
    from silk.ops import metrics
    from silk.upstream.breaker import Breakers
    from silk.upstream.client import build_clients

    catalogue = build_catalogue(app.config)
    app.extensions["silk.catalogue"] = catalogue
    _warn_below_cost(app, catalogue)
    app.extensions["silk.upstreams"] = build_clients(catalogue, app.config,
                                                     on_failover=metrics.failover)
    app.extensions["silk.breakers"] = Breakers(app.config["SILK_ROUTE_FAILURES"],
                                               app.config["SILK_ROUTE_REST"],
                                               app.config.get("REDIS_URL"),
                                               on_change=_both(metrics.route_state,
                                                               route_listener(app)))


def _both(first, second):
    """A listener that tells two."""
    def tell(*args) -> None:
        first(*args)
        second(*args)
    return tell


def _warn_below_cost(app: Flask, catalogue) -> None:
    """Log and count every model whose list price is below what its provider charges."""
    from silk.billing.margin import models_below_cost
    from silk.ops import metrics

    below = models_below_cost(catalogue.models)
    for model, rates in below.items():
        app.logger.warning("model %s is priced below its upstream cost (%s)", model,
                           ", ".join(rates))
    metrics.models_below_cost(list(below))


def register_request_hooks(app: Flask) -> None:
    """Give every request an id, echoed as `x-request-id`, and log one line per request; a
    settled request's line carries what it used and cost."""
    from silk.ops import metrics
    from silk.ops.requestlog import install_request_hooks, remember_settlement

    install_request_hooks(app)
    metrics.report_settlements_to(remember_settlement)


def register_cors(app: Flask) -> None:
    """Share the API with the browser origins in SILK_CORS_ORIGINS (off by default)."""
    from silk.cors import install

    install(app)


def register_schema_check(app: Flask) -> None:
    """Answer 503 "schema not ready" while the database lacks migrations (a forgotten
    `db upgrade`), instead of failing every statement."""
    from silk.ops.schema import install

    install(app)


def register_blueprints(app: Flask) -> None:
    """Mount the API, the operator API, the web pages and the operator's console."""
    from silk.account.views import bp as account_bp
    from silk.admin.views import bp as admin_bp
    from silk.billing.views import bp as billing_bp
    from silk.catalog.views import bp as models_bp
    from silk.chat.views import bp as chat_bp
    from silk.messages.views import bp as messages_bp
    from silk.openapi import bp as openapi_bp
    from silk.operator.views import bp as operator_bp
    from silk.ops.views import bp as ops_bp
    from silk.responses.views import bp as responses_bp
    from silk.web.dashboard import bp as dashboard_bp
    from silk.web.views import bp as web_bp

    for blueprint in (chat_bp, messages_bp, models_bp, account_bp, billing_bp, admin_bp,
                      ops_bp, web_bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(responses_bp)
    app.register_blueprint(dashboard_bp)
    app.register_blueprint(operator_bp)
    app.register_blueprint(openapi_bp)


def register_error_handlers(app: Flask) -> None:
    """Answer every failure with the one OpenAI-style envelope."""
    from silk.errors import register_error_handlers as register

    register(app)


def register_commands(app: Flask) -> None:
    """Add the `flask silk ...` operator commands."""
    from silk.cli import silk_cli

    app.cli.add_command(silk_cli)


def register_body_deadline(app: Flask) -> None:
    """Cut off a request whose body does not arrive within SILK_BODY_READ_TIMEOUT."""
    from silk.bodydeadline import BodyDeadline

    app.wsgi_app = BodyDeadline(app.wsgi_app, app.config["SILK_BODY_READ_TIMEOUT"])
