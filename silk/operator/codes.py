"""Console pages for redemption and invite codes: issue (shown once, with a CSV), list by
state."""

from __future__ import annotations

from decimal import Decimal

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from silk.account import registration
from silk.admin.schemas import invite_issue_schema
from silk.billing import codes
from silk.billing.schemas import code_issue_schema
from silk.billing.tiers import stored_tiers
from silk.billing.topup import check_amount
from silk.errors import SilkError
from silk.extensions import db
from silk.operator import csvout, data, forms
from silk.pricing import units_to_usd
from silk.validation import load

bp = Blueprint("codes", __name__)

STATES = ("unused", "redeemed", "expired")
INVITE_STATES = ("usable", "used", "expired")


@bp.get("/codes")
def index():
    """Redemption codes and invite codes, each list narrowed by state."""
    state = request.args.get("state", "")
    invite_state = request.args.get("invite_state", "")
    try:
        redemption = codes.list_codes(state=state or None, limit=500)
    except SilkError as err:
        flash(err.message, "error")
        redemption, state = codes.list_codes(limit=500), ""
    invites = [(invite, data.invite_state(invite))
               for invite in registration.list_invites(limit=500)]
    if invite_state in INVITE_STATES:
        invites = [(invite, shown) for invite, shown in invites if shown == invite_state]
    return render_template("operator/codes.html", redemption=redemption, invites=invites,
                           state=state, invite_state=invite_state, states=STATES,
                           invite_states=INVITE_STATES, code_state=codes.code_state,
                           tiers=sorted(stored_tiers()))


@bp.post("/codes/redemption")
def issue_redemption():
    """Issue redemption codes; the codes are on this page and in its CSV only."""
    form = request.form
    try:
        body = {"amount": str(forms.amount(form)), "count": forms.whole(form, "count", 1),
                "note": form.get("note", "").strip()}
        if expires := forms.moment(form, "expires_at"):
            body["expires_at"] = expires
        request_data = load(code_issue_schema, body)
        units = check_amount(request_data["amount"],
                             Decimal(str(current_app.config["SILK_TOPUP_MAX"])))
        issued = codes.issue_codes(units, count=request_data["count"],
                                   expires_at=request_data.get("expires_at"),
                                   note=request_data["note"])
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for(".index"))
    header = ("code", "amount_usd", "expires_at", "note")
    rows = [(item.code, csvout.cell(units_to_usd(item.record.amount_units)),
             item.record.expires_at.isoformat() if item.record.expires_at else "",
             item.record.note) for item in issued]
    return render_template("operator/issued.html", what="redemption codes", header=header,
                           rows=rows, csv_url=csvout.data_url(header, rows),
                           filename="redemption-codes.csv"), 201


@bp.post("/codes/invites")
def issue_invites():
    """Issue invite codes; the codes are on this page and in its CSV only."""
    form = request.form
    try:
        body: dict = {"count": forms.whole(form, "count", 1), "uses": forms.whole(form, "uses", 1),
                      "note": form.get("note", "").strip()}
        if form.get("tier"):
            body["tier"] = form["tier"]
        if expires := forms.moment(form, "expires_at"):
            body["expires_at"] = expires
        request_data = load(invite_issue_schema, body)
        issued = registration.issue_invites(
            count=request_data["count"], uses=request_data["uses"],
            tier=request_data.get("tier"), expires_at=request_data.get("expires_at"),
            note=request_data["note"], known_tiers=stored_tiers())
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for(".index"))
    header = ("code", "uses", "tier", "expires_at", "note")
    rows = [(item.code, item.record.uses_left, item.record.tier or "",
             item.record.expires_at.isoformat() if item.record.expires_at else "",
             item.record.note) for item in issued]
    return render_template("operator/issued.html", what="invite codes", header=header,
                           rows=rows, csv_url=csvout.data_url(header, rows),
                           filename="invite-codes.csv"), 201
