"""`flask silk ...`: the operator's commands, each a thin shell over a service."""

from __future__ import annotations

import sys
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from silk.cliutil import fail, parse_usd, usd
from silk.errors import SilkError
from silk.extensions import db
from silk.pricing import usd_to_units

silk_cli = AppGroup("silk", help="Operate SilkGateway: accounts, keys, money, audits.")


def _usd(value: str) -> int:
    amount = parse_usd(value)
    if amount.as_tuple().exponent < -9:
        raise click.BadParameter(f"{value!r} is not a USD amount")
    return usd_to_units(amount)


@silk_cli.command("create-account")
@click.argument("email")
@click.option("--tier", default=None, help="Tier name (default: the configured default tier).")
@click.option("--credit", default="0", help="USD to credit, recorded as a top-up.")
@click.option("--admin", is_flag=True, help="Give the account operator rights.")
def create_account_cmd(email: str, tier: str | None, credit: str, admin: bool):
    """Create an account and print its first API key alone on the last line."""
    from silk.account.service import create_account
    from silk.billing.tiers import tiers

    try:
        account, key = create_account(
            email, tier=tier or current_app.config["SILK_DEFAULT_TIER"], known_tiers=tiers(),
            credit_units=_usd(credit), is_admin=admin, actor="cli")
    except SilkError as err:
        fail(err)
    click.echo(f"account {account.id} {account.email} tier={account.tier} "
               f"admin={'yes' if account.is_admin else 'no'} "
               f"balance={usd(_usd(credit))}")
    click.echo("API key (shown once; store it now):")
    click.echo(key.secret)


@silk_cli.command("create-key")
@click.argument("account")
@click.option("--name", default="default")
@click.option("--expires", type=click.DateTime(), default=None, help="Expiry (UTC).")
@click.option("--models", default="", help="Comma-separated models this key may use.")
@click.option("--rpm", type=int, default=None, help="Requests per minute.")
@click.option("--tpm", type=int, default=None, help="Tokens per minute.")
def create_key_cmd(account: str, name: str, expires: datetime | None, models: str,
                   rpm: int | None, tpm: int | None):
    """Make another key for ACCOUNT (id or email); prints the key last."""
    from silk.account.service import create_key, find_account

    try:
        target = find_account(account)
        key = create_key(target.id, name=name, expires_at=expires,
                         allowed_models=[m.strip() for m in models.split(",") if m.strip()],
                         rpm_limit=rpm, tpm_limit=tpm)
    except SilkError as err:
        fail(err)
    click.echo(f"key {key.record.id} for account {target.id} ({key.record.name})")
    click.echo(key.secret)


@silk_cli.command("list-keys")
@click.option("--account", default=None, help="Account id or email.")
def list_keys_cmd(account: str | None):
    """List keys: id, account, prefix, name, state, last use."""
    from silk.account.service import find_account, list_keys

    try:
        account_id = find_account(account).id if account else None
    except SilkError as err:
        fail(err)
    for key in list_keys(account_id):
        state = "revoked" if key.revoked_at else (
            f"expires {key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "active")
        click.echo(f"{key.id}\taccount={key.account_id}\t{key.prefix}...\t{key.name}\t{state}\t"
                   f"last_used={key.last_used_at or '-'}")


@silk_cli.command("revoke-key")
@click.argument("key_id", type=int)
def revoke_key_cmd(key_id: int):
    """Revoke a key by id (everywhere at once with Redis, else within the key cache TTL)."""
    from silk.account.service import revoke_key

    try:
        key = revoke_key(key_id)
    except SilkError as err:
        fail(err)
    click.echo(f"key {key.id} revoked")


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
    click.echo("audit ok: every ledger sums to its balance and no balance is negative")


@silk_cli.command("sweep")
@click.option("--all", "everything", is_flag=True,
              help="Settle every open reservation (only when no gateway is running).")
def sweep_cmd(everything: bool):
    """Write stopped workers' journaled settlements, then settle holds whose lease ran out."""
    from silk.billing.tiers import tiers
    from silk.catalog import catalogue
    from silk.metering.sweeper import sweep

    count = sweep(db.engine, tiers(), catalogue().price_of, everything=everything)
    click.echo(f"settled {count} reservation(s)")


def _add_domain_commands() -> None:
    """Each domain keeps its commands beside its services; all appear under `flask silk`."""
    from silk.account.commands import commands as account_commands
    from silk.billing.commands import commands as billing_commands

    for group in (account_commands, billing_commands):
        for command in group.commands.values():
            silk_cli.add_command(command)


_add_domain_commands()
