"""`flask silk` commands for tiers, credits, redemption codes and usage reports."""

from __future__ import annotations

from datetime import datetime

import click
from flask.cli import AppGroup

from silk.cliutil import fail, parse_usd, percent, topup_max, usd, when
from silk.errors import SilkError
from silk.extensions import db

commands = AppGroup("billing-commands", help="Added to `flask silk` one by one.")


@commands.command("list-tiers")
def list_tiers_cmd():
    """List the tiers in effect: name, discount, monthly free tokens."""
    from silk.billing.tiers import tiers

    for tier in tiers().values():
        click.echo(f"{tier.name}\tdiscount={percent(tier.discount)}\t"
                   f"free_tokens={tier.monthly_free_tokens}")


@commands.command("set-tier")
@click.argument("name")
@click.option("--discount-percent", required=True, help="Discount on list price, 0-100.")
@click.option("--free-tokens", type=click.IntRange(max=2**63 - 1), required=True,
              help="Monthly free token quota.")  # the most a BIGINT column holds
def set_tier_cmd(name: str, discount_percent: str, free_tokens: int):
    """Create or change tier NAME (stored in the database; overrides the config)."""
    from silk.billing.tiers import save_tier

    try:
        tier = save_tier(name, parse_usd(discount_percent), free_tokens)
    except SilkError as err:
        fail(err)
    click.echo(f"tier {tier.name}: discount {percent(tier.discount)}, "
               f"{tier.monthly_free_tokens} free tokens a month")


@commands.command("credit", context_settings={"ignore_unknown_options": True})
@click.argument("account")
@click.argument("amount")
@click.option("--kind", type=click.Choice(["topup", "refund", "adjustment"]), default="topup",
              help="topup (default), refund, or adjustment (may be negative).")
@click.option("--note", default="", help="Why; kept in the ledger.")
def credit_cmd(account: str, amount: str, kind: str, note: str):
    """Add AMOUNT USD to ACCOUNT (id or email) as a ledger entry; prints the new balance."""
    from silk.account.service import find_account
    from silk.billing.topup import check_adjustment, operator_credit

    try:
        target = find_account(account)
        units = check_adjustment(parse_usd(amount), topup_max(), kind)
        db.session.close()
        answer = operator_credit(db.engine, account_id=target.id, units=units, kind=kind,
                                 note=note or f"operator {kind} (cli)", actor="cli")
    except SilkError as err:
        fail(err)
    body = answer.body
    click.echo(f"{kind} of ${body['credited']:f} to account {target.id} ({target.email}); "
               f"balance ${body['balance']:f}; ledger entry {body['transaction_id']}")


@commands.command("issue-codes")
@click.argument("amount")
@click.option("--count", type=int, default=1, help="How many codes.")
@click.option("--expires", type=click.DateTime(), default=None, help="Expiry (UTC).")
@click.option("--note", default="", help="What the codes are for.")
def issue_codes_cmd(amount: str, count: int, expires: datetime | None, note: str):
    """Issue single-use redemption codes worth AMOUNT USD each; printed once, one per line."""
    from silk.billing.codes import issue_codes
    from silk.billing.topup import check_amount

    try:
        units = check_amount(parse_usd(amount), topup_max())
        issued = issue_codes(units, count=count, expires_at=expires, note=note)
    except SilkError as err:
        fail(err)
    click.echo(f"issued {len(issued)} code(s) worth {usd(units)} each "
               "(shown once; store them now):")
    for item in issued:
        click.echo(item.code)


@commands.command("list-codes")
@click.option("--state", type=click.Choice(["unused", "redeemed", "expired"]), default=None)
@click.option("--limit", type=click.IntRange(1, 100_000), default=100)
def list_codes_cmd(state: str | None, limit: int):
    """List redemption codes: id, prefix, amount, state, redeemer."""
    from silk.billing.codes import code_state, list_codes

    for code in list_codes(state=state, limit=limit):
        click.echo(f"{code.id}\t{code.prefix}...\t{usd(code.amount_units)}\t"
                   f"{code_state(code)}\tby={code.redeemed_by or '-'}\t"
                   f"expires={when(code.expires_at)}\t{code.note}")


@commands.command("usage")
@click.option("--month", default=None, help="YYYY-MM (default: this UTC month).")
@click.option("--account", default=None, help="Only this account (id or email).")
def usage_cmd(month: str | None, account: str | None):
    """Report a month's requests, tokens and cost by account and by model."""
    from silk.account.service import find_account
    from silk.billing.service import accounts_report
    from silk.validation import parse_month

    try:
        label, start, end = parse_month(month)
        account_id = find_account(account).id if account else None
    except SilkError as err:
        fail(err)
    with db.engine.connect() as conn:
        by_account, by_model = accounts_report(conn, label, start, end, account_id)
    click.echo(f"usage in {label} (UTC)")
    for title, rows in (("by account", by_account), ("by model", by_model)):
        click.echo(f"{title}:")
        for row in rows:
            click.echo(f"  {row.key}\trequests={row.requests}\tfailed={row.failed_requests}\t"
                       f"prompt={row.prompt_tokens}\t"
                       f"completion={row.completion_tokens}\ttotal={row.total_tokens}\t"
                       f"cost={usd(row.cost_units)}")
    click.echo(f"total cost: {usd(sum(row.cost_units for row in by_account))}")


@commands.command("margin")
@click.option("--month", default=None, help="YYYY-MM (default: this UTC month).")
@click.option("--by", type=click.Choice(["model", "provider", "day"]), default="model",
              help="Group by model (default), provider or day.")
def margin_cmd(month: str | None, by: str):
    """Report a month's revenue, upstream cost and margin; flag models sold below cost."""
    from silk.billing.margin import margin_rows, models_below_cost, total
    from silk.catalog import catalogue
    from silk.validation import parse_month

    try:
        label, start, end = parse_month(month)
    except SilkError as err:
        fail(err)
    with db.engine.connect() as conn:
        rows = margin_rows(conn, start, end, by)
    click.echo(f"margin in {label} (UTC) by {by}")
    for row in [*rows, total(rows)]:
        click.echo(f"  {row.key}\trequests={row.requests}\trevenue={usd(row.revenue_units)}\t"
                   f"upstream_cost={usd(row.upstream_cost_units)}\t"
                   f"margin={usd(row.margin_units)}")
    for model, rates in models_below_cost(catalogue().models).items():
        click.echo(f"BELOW COST: {model} is priced below its upstream cost "
                   f"({', '.join(rates)})")


@commands.command("ledger")
@click.argument("account")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50)
def ledger_cmd(account: str, limit: int):
    """Show ACCOUNT's latest ledger entries, newest first."""
    from silk.account.service import find_account
    from silk.metering.ledger import history

    try:
        target = find_account(account)
    except SilkError as err:
        fail(err)
    with db.engine.connect() as conn:
        rows = history(conn, target.id, limit=limit)
    for row in rows:
        sign = "-" if row.amount_units < 0 else "+"
        click.echo(f"{row.id}\t{when(row.created_at)}\t{row.kind}\t"
                   f"{sign}{usd(abs(row.amount_units))}\tbalance={usd(row.balance_after_units)}\t"
                   f"{row.actor}\t{row.note}")
