"""The `silk` console script: every `flask silk` command, and `silk db ...`, from any
directory, on the instance folder SILK_INSTANCE_PATH (default the project's instance/)."""

from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo

from silk.config import ConfigError


def _make_app() -> Flask:
    """The gateway's app; a bad setting is one line (click's "Error: ..."), no traceback."""
    from silk import create_app

    try:
        return create_app()
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


@click.pass_context
def _schema_ready(ctx: click.Context) -> None:
    """Every command but `db` needs the schema: say in one line when migrations are due."""
    if ctx.invoked_subcommand in (None, "db"):
        return
    from silk.ops.schema import problem

    with ctx.ensure_object(ScriptInfo).load_app().app_context():
        message = problem()
    if message is not None:
        click.echo(f"error: {message}", err=True)
        sys.exit(1)


def _commands() -> FlaskGroup:
    from flask_migrate.cli import db

    from silk.cli import silk_cli

    group = FlaskGroup(name="silk", create_app=_make_app, add_default_commands=False,
                       add_version_option=False, load_dotenv=False, set_debug_flag=False,
                       callback=_schema_ready,
                       help="Operate SilkGateway: accounts, keys, money, audits; `silk db "
                            "upgrade` applies the schema migrations.")
    for name, command in silk_cli.commands.items():
        group.add_command(command, name)
    group.add_command(db, "db")
    return group


def main() -> None:
    """Entry point of the `silk` script (also `python -m silk`)."""
    _commands().main(prog_name="silk")
