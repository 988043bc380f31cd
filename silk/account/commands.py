"""`flask silk` commands for accounts, their API keys and registration invites."""

from __future__ import annotations

import sys
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from silk.cliutil import fail, parse_usd, topup_max, usd, when
from silk.database import utcnow
from silk.errors import SilkError
from silk.validation import MOST_ID, load, whole_number

commands = AppGroup("account-commands", help="Added to `flask silk` one by one.")
_RATE = click.IntRange(1, MOST_ID)  # a rate limit as the API takes it, in an INTEGER column
_KEY_ID = click.IntRange(1, MOST_ID)


def _opening_credit(value: str) -> int:
    """An opening credit in units: it is a top-up, so checked as the API and console check
    one (whole cents, at most SILK_TOPUP_MAX)."""
    from silk.billing.topup import check_amount

    amount = parse_usd(value)
    return check_amount(amount, topup_max(), param="credit") if amount else 0


@commands.command("create-account")
@click.argument("email")
@click.option("--tier", default=None, help="Tier name (default: the configured default tier).")
@click.option("--credit", default="0", help="USD to credit, recorded as a top-up.")
@click.option("--admin", is_flag=True, help="Give the account operator rights.")
def create_account_cmd(email: str, tier: str | None, credit: str, admin: bool):
    """Create an account and print its first API key alone on the last line."""
    from silk.account.service import create_account
    from silk.billing.tiers import tiers
    from silk.errors import Conflict

    try:
        units = _opening_credit(credit)
        account, key = create_account(
            email, tier=tier or current_app.config["SILK_DEFAULT_TIER"], known_tiers=tiers(),
            credit_units=units, is_admin=admin, actor="cli")
    except Conflict as err:
        # On stdout, where the key would be: a script reading the last line sees why.
        click.echo(f"{err.message} Nothing was changed; make another key with "
                   f"`silk create-key {email.strip().lower()}`.")
        sys.exit(1)
    except SilkError as err:
        fail(err)
    click.echo(f"account {account.id} {account.email} tier={account.tier} "
               f"admin={'yes' if account.is_admin else 'no'} "
               f"balance={usd(units)}")
    click.echo("API key (shown once; store it now):")
    click.echo(key.secret)


@commands.command("create-key")
@click.argument("account")
@click.option("--name", default="default")
@click.option("--expires", type=click.DateTime(), default=None, help="Expiry (UTC).")
@click.option("--models", default="", help="Comma-separated models this key may use.")
@click.option("--rpm", type=_RATE, default=None, help="Requests per minute.")
@click.option("--tpm", type=_RATE, default=None, help="Tokens per minute.")
@click.option("--concurrency", type=_RATE, default=None, help="Requests at once.")
@click.option("--role", type=click.Choice(["owner", "member"]), default="owner",
              help="owner: manages keys, sees everything; member: uses the API only.")
@click.option("--cap-day", default=None, help="USD the key may spend per UTC day.")
@click.option("--cap-month", default=None, help="USD the key may spend per UTC month.")
@click.option("--cap-total", default=None, help="USD the key may spend in all.")
def create_key_cmd(account: str, name: str, expires: datetime | None, models: str,
                   rpm: int | None, tpm: int | None, concurrency: int | None, role: str,
                   cap_day: str | None,
                   cap_month: str | None, cap_total: str | None):
    """Make another key for ACCOUNT (id or email); prints the key last."""
    from silk.account.schemas import key_create_schema
    from silk.account.service import create_key, find_account, key_options
    from silk.catalog import catalogue

    given = {"name": name, "role": role, "rpm_limit": rpm, "tpm_limit": tpm,
             "concurrency_limit": concurrency,
             "expires_at": expires.isoformat() if expires else None,
             "models": [m.strip() for m in models.split(",") if m.strip()] or None,
             "spend_caps": _caps(cap_day, cap_month, cap_total) or None}
    try:
        target = find_account(account)
        # Checked as POST /v1/admin/accounts/{id}/keys checks the same request.
        data = load(key_create_schema, {k: v for k, v in given.items() if v is not None})
        key = create_key(target.id, **key_options(data, catalogue().models))
    except SilkError as err:
        fail(err)
    click.echo(f"key {key.record.id} for account {target.id} ({key.record.name})")
    click.echo(key.secret)


def _caps(day: str | None, month: str | None, total: str | None) -> dict[str, str | None]:
    """Spend caps given as options, as the API's `spend_caps` (its schema checks them);
    `none` removes a cap."""
    given = {"day": day, "month": month, "total": total}
    return {period: None if value.strip().lower() == "none" else value.strip().lstrip("$")
            for period, value in given.items() if value is not None}


def _budget(key) -> str:
    """A key's role, caps and spend against them, for the key lines."""
    from silk.metering.rules import PYTHON, day_of, month_of, spent_in

    now = utcnow()
    spent = {"day": spent_in(PYTHON, key.spent_day, key.spent_day_units, day_of(now)),
             "month": spent_in(PYTHON, key.spent_month, key.spent_month_units, month_of(now)),
             "total": key.spent_total_units}
    caps = {"day": key.cap_day_units, "month": key.cap_month_units,
            "total": key.cap_total_units}
    against = " ".join(f"{period}={usd(spent[period])}/"
                       f"{'-' if caps[period] is None else usd(caps[period])}"
                       for period in ("day", "month", "total"))
    return f"role={key.role}\tspend {against} held={usd(key.held_units)}"


@commands.command("set-key-caps")
@click.argument("key_id", type=_KEY_ID)
@click.option("--day", default=None, help="USD per UTC day (`none` removes the cap).")
@click.option("--month", default=None, help="USD per UTC month (`none` removes the cap).")
@click.option("--total", default=None, help="USD in all (`none` removes the cap).")
def set_key_caps_cmd(key_id: int, day: str | None, month: str | None, total: str | None):
    """Set or remove a key's spend caps; caps not given stay as they are."""
    from silk.account.schemas import key_update_schema
    from silk.account.service import update_key

    caps = _caps(day, month, total)
    if not caps:
        raise click.UsageError("Give --day, --month or --total.")
    try:
        key = update_key(key_id, load(key_update_schema, {"spend_caps": caps}))
    except SilkError as err:
        fail(err)
    click.echo(f"key {key.id}\t{_budget(key)}")


@commands.command("list-keys")
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
                   f"last_used={key.last_used_at or '-'}\t{_budget(key)}")


@commands.command("revoke-key")
@click.argument("key_id", type=_KEY_ID)
def revoke_key_cmd(key_id: int):
    """Revoke a key by id (everywhere at once with Redis, else within the key cache TTL)."""
    from silk.account.service import revoke_key

    try:
        key = revoke_key(key_id)
    except SilkError as err:
        fail(err)
    click.echo(f"key {key.id} revoked")


@commands.command("list-accounts")
@click.option("--email", default=None, help="Only accounts whose email contains this.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000)
def list_accounts_cmd(email: str | None, limit: int):
    """List accounts: id, email, tier, balance, state."""
    from silk.account.service import list_accounts

    for account in list_accounts(email_contains=email, limit=limit):
        state = "disabled" if account.disabled else "active"
        click.echo(f"{account.id}\t{account.email}\ttier={account.tier}\t"
                   f"balance={usd(account.balance_units)}\t{state}"
                   f"{chr(9) + 'admin' if account.is_admin else ''}")


@commands.command("show-account")
@click.argument("account")
def show_account_cmd(account: str):
    """Show ACCOUNT (id or email): tier, money, quota and keys."""
    from silk.account.service import find_account, list_keys

    try:
        found = find_account(account)
    except SilkError as err:
        fail(err)
    click.echo(f"account {found.id} {found.email}")
    click.echo(f"  tier: {found.tier}   admin: {'yes' if found.is_admin else 'no'}   "
               f"state: {'disabled' if found.disabled else 'active'}")
    click.echo(f"  balance: {usd(found.balance_units)}   "
               f"held by open requests: {usd(found.reserved_units)}")
    click.echo(f"  free tokens used in {found.quota_month or '-'}: {found.quota_used}")
    click.echo(f"  created: {when(found.created_at)}")
    for key in list_keys(found.id):
        state = "revoked" if key.revoked_at else "active"
        click.echo(f"  key {key.id}\t{key.prefix}...\t{key.name}\t{state}\t"
                   f"expires={when(key.expires_at)}\tlast_used={when(key.last_used_at)}\t"
                   f"{_budget(key)}")


class _Limit(click.ParamType):
    """A rate limit on the command line: a whole number of at least 1, or `none` to clear."""

    name = "N|none"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value.strip().lower() == "none":
            return value if isinstance(value, int) else "none"
        number = whole_number(value.strip(), MOST_ID)  # not isdigit(): '²' is one
        if number is not None and number >= 1:
            return number
        self.fail(f"{value!r} is not a whole number of at least 1 (at most {MOST_ID}), "
                  "or none", param, ctx)


_LIMIT_HELP = "{} (none: clear it, the operator's default applies)."


@commands.command("set-limits")
@click.argument("account")
@click.option("--model", default=None, help="Limit the account on this model only.")
@click.option("--rpm", type=_Limit(), default=None, help=_LIMIT_HELP.format("Requests per minute"))
@click.option("--tpm", type=_Limit(), default=None, help=_LIMIT_HELP.format("Tokens per minute"))
@click.option("--concurrency", type=_Limit(), default=None,
              help=_LIMIT_HELP.format("Requests at once"))
def set_limits_cmd(account: str, model: str | None, rpm, tpm, concurrency):
    """Set the rate limits of ACCOUNT (id or email), or of ACCOUNT on one model; limits
    not named keep their value. Every worker applies them at once with Redis, else within
    the key cache TTL."""
    from silk.account.limits import set_limits
    from silk.account.service import find_account
    from silk.catalog import catalogue

    changes = {field: None if value == "none" else value for field, value in (
        ("rpm_limit", rpm), ("tpm_limit", tpm), ("concurrency_limit", concurrency))
        if value is not None}
    if not changes:
        fail(SilkError("name at least one of --rpm, --tpm, --concurrency"))
    try:
        found = find_account(account)
        set_limits(found.id, changes, model=model, known_models=catalogue().models)
    except SilkError as err:
        fail(err)
    _echo_limits(found.id)


@commands.command("show-limits")
@click.argument("account")
def show_limits_cmd(account: str):
    """Show the rate limits set for ACCOUNT and its models, and the operator's defaults."""
    from silk.account.service import find_account

    try:
        found = find_account(account)
    except SilkError as err:
        fail(err)
    _echo_limits(found.id)


def _echo_limits(account_id: int) -> None:
    from silk.account.limits import defaults, list_limits

    def shown(value) -> str:
        return "-" if value is None else str(value)

    click.echo(f"account {account_id} limits (-: the default applies)")
    for row in list_limits(account_id):
        click.echo(f"  {row.model or '(account)'}\trpm={shown(row.rpm_limit)}\t"
                   f"tpm={shown(row.tpm_limit)}\tconcurrency={shown(row.concurrency_limit)}")
    for level, values in defaults(current_app.config).items():
        click.echo(f"  default per {level.replace('_', ' and ')}\t"
                   f"rpm={values['rpm_limit'] or 'none'}\ttpm={values['tpm_limit'] or 'none'}"
                   f"\tconcurrency={values['concurrency_limit'] or 'none'}")


def _set_state(account: str, **change):
    from silk.account.service import find_account, update_account
    from silk.billing.tiers import tiers

    try:
        found = update_account(find_account(account).id, known_tiers=tiers(), **change)
    except SilkError as err:
        fail(err)
    return found


@commands.command("disable-account")
@click.argument("account")
def disable_account_cmd(account: str):
    """Disable ACCOUNT: its keys stop working (at once with Redis, else within the key cache
    TTL)."""
    found = _set_state(account, disabled=True)
    click.echo(f"account {found.id} {found.email} disabled")


@commands.command("enable-account")
@click.argument("account")
def enable_account_cmd(account: str):
    """Enable a disabled ACCOUNT again."""
    found = _set_state(account, disabled=False)
    click.echo(f"account {found.id} {found.email} enabled")


@commands.command("set-account-tier")
@click.argument("account")
@click.argument("tier")
def set_account_tier_cmd(account: str, tier: str):
    """Move ACCOUNT to TIER (its discount and free quota apply from the next request)."""
    found = _set_state(account, tier=tier)
    click.echo(f"account {found.id} {found.email} is now on tier {found.tier}")


@commands.command("issue-invites")
@click.option("--count", type=int, default=1, help="How many codes.")
@click.option("--uses", type=int, default=1, help="Sign-ups each code admits.")
@click.option("--tier", default=None, help="Tier for accounts made with these codes.")
@click.option("--expires", type=click.DateTime(), default=None, help="Expiry (UTC).")
@click.option("--note", default="", help="What the codes are for.")
def issue_invites_cmd(count: int, uses: int, tier: str | None, expires: datetime | None,
                      note: str):
    """Issue registration invite codes; they are printed once, one per line, last."""
    from silk.account.registration import issue_invites
    from silk.billing.tiers import tiers

    try:
        issued = issue_invites(count=count, uses=uses, tier=tier, expires_at=expires, note=note,
                               known_tiers=tiers())
    except SilkError as err:
        fail(err)
    click.echo(f"issued {len(issued)} invite code(s), {uses} use(s) each "
               "(shown once; store them now):")
    for item in issued:
        click.echo(item.code)


@commands.command("list-invites")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100)
def list_invites_cmd(limit: int):
    """List invite codes: id, prefix, uses left, tier, expiry, note."""
    from silk.account.registration import list_invites

    for invite in list_invites(limit):
        click.echo(f"{invite.id}\t{invite.prefix}...\tuses_left={invite.uses_left}\t"
                   f"tier={invite.tier or '-'}\texpires={when(invite.expires_at)}\t{invite.note}")
