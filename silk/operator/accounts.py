"""Console pages for accounts and keys: search, create, tier, disable, money, keys."""

from __future__ import annotations

import secrets
from decimal import Decimal

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from silk.account import service
from silk.billing.tiers import stored_tiers
from silk.billing.topup import check_adjustment, check_amount, operator_credit
from silk.catalog import catalogue
from silk.database import utcnow
from silk.errors import InvalidRequest, SilkError
from silk.extensions import db
from silk.operator import data, forms
from silk.pricing import units_to_usd
from silk.web.formats import usd

bp = Blueprint("accounts", __name__)

KINDS = ("topup", "refund", "adjustment")


def _maximum() -> Decimal:
    return Decimal(str(current_app.config["SILK_TOPUP_MAX"]))


def _actor() -> str:
    return f"console:key:{g.operator.key_id}"


@bp.get("/accounts")
def index():
    """Accounts by id, searched by email or id, a page at a time."""
    query = request.args.get("q", "")[:254]
    page = max(1, min(forms.whole(request.args, "page", 1) or 1, 10**6))
    found = data.search_accounts(query, page)
    return render_template("operator/accounts.html", found=found, q=query,
                           tiers=sorted(stored_tiers()),
                           default_tier=current_app.config["SILK_DEFAULT_TIER"])


@bp.post("/accounts")
def create():
    """Create an account (tier, opening credit, admin) and show its first key once."""
    form = request.form
    try:
        raw_credit = form.get("credit", "").strip()
        credit = forms.amount(form, "credit") if raw_credit else Decimal(0)
        units = check_amount(credit, _maximum(), param="credit") if credit else 0
        account, key = service.create_account(
            form.get("email", ""), tier=form.get("tier") or
            current_app.config["SILK_DEFAULT_TIER"], known_tiers=stored_tiers(), credit_units=units,
            is_admin=form.get("admin") == "on", actor=_actor())
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for(".index"))
    flash(f"Created account {account.id} ({account.email}).", "success")
    return _account_page(account.id, 201, new_secret=key.secret, new_name=key.record.name)


@bp.get("/accounts/<int:account_id>")
def show(account_id: int):
    """An account: balance, holds, tier and quota, keys, recent requests, ledger."""
    return _account_page(account_id)


def _account_page(account_id: int, status: int = 200, **extra):
    view = data.account_view(account_id)
    return render_template("operator/account.html", view=view, tiers=sorted(stored_tiers()),
                           kinds=KINDS, key_fields=forms.KEY_FIELDS,
                           models=sorted(catalogue().models), **extra), status


@bp.post("/accounts/<int:account_id>/tier")
def change_tier(account_id: int):
    """Move an account to another tier (it applies from the account's next request)."""
    try:
        account = service.update_account(account_id, known_tiers=stored_tiers(),
                                         tier=request.form.get("tier", ""))
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
    else:
        flash(f"Tier changed to {account.tier}.", "success")
    return redirect(url_for(".show", account_id=account_id))


@bp.post("/accounts/<int:account_id>/status")
def change_status(account_id: int):
    """Disable or enable an account."""
    disable = request.form.get("disabled") == "1"
    try:
        service.update_account(account_id, known_tiers=stored_tiers(), disabled=disable)
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
    else:
        flash("Account disabled." if disable else "Account enabled.", "success")
    return redirect(url_for(".show", account_id=account_id))


def _credit_request() -> tuple[str, Decimal, int, str]:
    """The credit form as (kind, amount, units, note), checked as the admin API checks it."""
    form = request.form
    kind = form.get("kind", "")
    if kind not in KINDS:
        raise InvalidRequest(f"Invalid 'kind': one of {', '.join(KINDS)}.", param="kind")
    note = form.get("note", "").strip()
    if not note:
        raise InvalidRequest("Write a note saying why: it goes into the ledger.", param="note")
    if len(note) > 200:
        raise InvalidRequest("Invalid 'note': at most 200 characters.", param="note")
    value = forms.amount(form)
    return kind, value, check_adjustment(value, _maximum(), kind), note


@bp.post("/accounts/<int:account_id>/credit")
def credit_review(account_id: int):
    """The confirmation step: what will be written, and the balance after."""
    try:
        kind, value, units, note = _credit_request()
        view = data.account_view(account_id)
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for(".show", account_id=account_id))
    account = view.account
    after = account.balance_units + units
    return render_template(
        "operator/confirm_credit.html", account=account, kind=kind, amount=value, note=note,
        after=units_to_usd(after), covered=after >= account.reserved_units,
        token=secrets.token_urlsafe(24))


@bp.post("/accounts/<int:account_id>/credit/confirm")
def credit_apply(account_id: int):
    """Write the confirmed entry through metering; the form's one-time token makes a second
    submission replay the first instead of paying twice."""
    try:
        kind, value, units, note = _credit_request()
        service.find_account(account_id)
        db.session.close()
        token = request.form.get("token", "").strip()
        if not token or len(token) > 64:
            raise InvalidRequest("This confirmation has no token; start again.", param="token")
        answer = operator_credit(
            db.engine, caller_account_id=g.operator.account_id, account_id=account_id,
            units=units, kind=kind, note=note, actor=_actor(),
            idempotency_key=f"console:{token}", request_id=g.get("request_id"))
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for(".show", account_id=account_id))
    body = answer.body
    if answer.replayed:
        flash("This confirmation was already applied; nothing more was written.", "info")
    else:
        flash(f"{kind.capitalize()} of {usd(value)} written; balance now "
              f"{usd(body['balance'])}.", "success")
    return redirect(url_for(".show", account_id=account_id))


@bp.post("/accounts/<int:account_id>/keys")
def create_key(account_id: int):
    """Make a key for the account with any of the API's options; its secret is shown once."""
    try:
        request_data = forms.key_request(request.form)
        new = service.create_key(account_id,
                                 **service.key_options(request_data, catalogue().models))
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for(".show", account_id=account_id))
    return _account_page(account_id, 201, new_secret=new.secret, new_name=new.record.name)


@bp.post("/keys/<int:key_id>/revoke")
def revoke_key(key_id: int):
    """Revoke any key; back to the page the form came from."""
    try:
        key = service.revoke_key(key_id)
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for(".keys"))
    flash(f"Revoked key {key.prefix}… ({key.name}).", "success")
    if request.form.get("back") == "account":
        return redirect(url_for(".show", account_id=key.account_id))
    return redirect(url_for(".keys"))


@bp.get("/keys")
def keys():
    """Keys across accounts, newest first, with their last use."""
    query = request.args.get("account", "")[:254]
    return render_template("operator/keys.html", rows=data.all_keys(query), account=query,
                           now=utcnow())
