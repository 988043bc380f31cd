"""`flask silk ...`: the operator's commands, each a thin shell over a service."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from silk.extensions import db


@click.group("silk", cls=AppGroup, help="Operate SilkGateway: accounts, keys, money, audits.")
@with_appcontext
def silk_cli():
    """Refuse, in one line, to run on a schema that lacks migrations (no SQLAlchemy error)."""
    from silk.ops.schema import problem

    message = problem()
    if message is not None:
        click.echo(f"error: {message}", err=True)
        sys.exit(1)


@silk_cli.command("audit")
def audit_cmd():
    """Check every account's ledger against its balance; exit 1 naming any that differ.

    Also reports usage written off (delivered but never charged), which leaves the books
    balanced and so does not change the exit status.
    """
    from silk.metering.audit import audit, written_off
    from silk.pricing import units_to_usd

    problems = audit(db.engine)
    for line in problems:
        click.echo(line)
    losses = written_off(db.engine)
    total = sum(units for _, _, units in losses)
    click.echo(f"written off: ${units_to_usd(total)} ({total} units) of usage never charged")
    for account_id, email, units in losses:
        click.echo(f"  account {account_id} ({email}): ${units_to_usd(units)} ({units} units)")
    if problems:
        sys.exit(1)
    click.echo("audit ok: every ledger sums to its balance, no balance is negative and "
               "every key's budget counters match its records")


@silk_cli.command("sweep")
@click.option("--all", "everything", is_flag=True,
              help="Settle every open reservation (only when no gateway is running).")
def sweep_cmd(everything: bool):
    """Write stopped workers' journaled settlements, settle holds whose lease ran out,
    delete stored responses past their retention and write key-expiry alerts."""
    from silk.alerts.service import key_expiry_chore
    from silk.billing.tiers import tiers
    from silk.catalog import catalogue
    from silk.metering.sweeper import sweep
    from silk.responses.store import expire

    count = sweep(db.engine, tiers(), catalogue().price_of, catalogue().cost_of,
                  everything=everything)
    click.echo(f"settled {count} reservation(s)")
    click.echo(f"deleted {expire(db.engine)} expired stored response(s)")
    days = float(current_app.config["SILK_ALERT_KEY_EXPIRY_DAYS"])
    click.echo(f"recorded {key_expiry_chore(days)(db.engine)} key-expiry alert(s)")


@silk_cli.command("alerts")
@click.option("--deliver", is_flag=True, help="Deliver the events due now, from here.")
def alerts_cmd(deliver: bool):
    """Alert events by state (pending, delivered, failed); --deliver sends those due."""
    from silk.alerts.delivery import deliver_due
    from silk.alerts.service import counts_by_state

    if deliver:
        click.echo(f"delivered {deliver_due(db.engine, current_app.config)} event(s)")
    for state, count in counts_by_state(db.engine).items():
        click.echo(f"{state}: {count}")


@silk_cli.command("providers")
def providers_cmd():
    """Show each model's routes and each provider key: serving or resting, recent failures,
    latency percentiles (as this process sees them; rests are shared through Redis)."""
    from silk.relay.routes import report

    ext = current_app.extensions
    shown = report(ext["silk.catalogue"].models, ext["silk.upstreams"], ext["silk.breakers"])
    for row in shown["routes"]:
        latency = row["latency_ms"]
        click.echo(f"route {row['route']}\tmodel={row['model']}\tstate={row['state']}"
                   f"\tuntil={row['resting_until'] or '-'}\tfailures={row['failures']}"
                   f"\trecent_failures={row['recent_failures']}\tp50={latency['p50']}"
                   f"\tp90={latency['p90']}\tp99={latency['p99']}")
    for row in shown["keys"]:
        click.echo(f"key {row['provider']} {row['key']}\tstate={row['state']}"
                   f"\tuntil={row['resting_until'] or '-'}")


def _add_domain_commands() -> None:
    """Each domain keeps its commands beside its services; all appear under `flask silk`."""
    from silk.account.commands import commands as account_commands
    from silk.billing.commands import commands as billing_commands

    for group in (account_commands, billing_commands):
        for command in group.commands.values():
            silk_cli.add_command(command)


_add_domain_commands()
