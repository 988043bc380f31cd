"""Admin routes that make or move money: credits, the ledger, redemption and invite codes."""

from decimal import Decimal

from flask import Blueprint, current_app, g, jsonify, request

from silk.account import registration
from silk.account.service import find_account
from silk.admin.schemas import (
    credit_schema,
    invite_issue_schema,
    invite_schema,
    ledger_entry_schema,
)
from silk.billing import codes
from silk.billing.idempotency import HEADER, answer_response, check_key
from silk.billing.schemas import code_issue_schema, code_schema
from silk.billing.tiers import tiers
from silk.billing.topup import check_adjustment, check_amount, operator_credit
from silk.extensions import db
from silk.metering.ledger import history
from silk.validation import int_arg, json_body, load

bp = Blueprint("money", __name__)


def _maximum() -> Decimal:
    return Decimal(str(current_app.config["SILK_TOPUP_MAX"]))


@bp.post("/accounts/<int:account_id>/credits")
def credit(account_id: int):
    """Credit, refund or adjust an account; Idempotency-Key makes a retry apply once."""
    key = check_key(request.headers.get(HEADER))
    data = load(credit_schema, json_body())
    units = check_adjustment(data["amount"], _maximum(), data["kind"])
    find_account(account_id)
    db.session.close()
    answer = operator_credit(
        db.engine, caller_account_id=g.principal.account_id, account_id=account_id,
        units=units, kind=data["kind"], note=data["note"] or f"operator {data['kind']}",
        actor=f"key:{g.principal.key_id}", idempotency_key=key, request_id=g.get("request_id"))
    return answer_response(answer)


@bp.get("/accounts/<int:account_id>/ledger")
def ledger(account_id: int):
    """An account's ledger, newest first; ?before=<id> pages back."""
    find_account(account_id)
    before = request.args.get("before")
    with db.engine.connect() as conn:
        rows = history(conn, account_id, limit=int_arg("limit", 100, 1, 1000),
                       before_id=int_arg("before", 0, 1, 2**62) if before else None)
    return jsonify({"object": "list", "data": ledger_entry_schema.dump(rows, many=True)})


@bp.post("/redemption-codes")
def issue_codes():
    """Issue single-use redemption codes; the codes are in this response only."""
    data = load(code_issue_schema, json_body())
    units = check_amount(data["amount"], _maximum())
    issued = codes.issue_codes(units, count=data["count"], expires_at=data.get("expires_at"),
                               note=data["note"])
    return jsonify({"object": "list", "data": [
        {**code_schema.dump(item.record), "code": item.code} for item in issued]}), 201


@bp.get("/redemption-codes")
def list_codes():
    """Redemption codes (prefixes only); ?state=unused|redeemed|expired."""
    records = codes.list_codes(state=request.args.get("state") or None,
                               limit=int_arg("limit", 100, 1, 1000))
    return jsonify({"object": "list", "data": code_schema.dump(records, many=True)})


@bp.post("/invite-codes")
def issue_invites():
    """Issue registration invite codes; the codes are in this response only."""
    data = load(invite_issue_schema, json_body())
    issued = registration.issue_invites(
        count=data["count"], uses=data["uses"], tier=data.get("tier"),
        expires_at=data.get("expires_at"), note=data["note"], known_tiers=tiers())
    return jsonify({"object": "list", "data": [
        {**invite_schema.dump(item.record), "code": item.code} for item in issued]}), 201


@bp.get("/invite-codes")
def list_invites():
    """Invite codes (prefixes and uses left only)."""
    records = registration.list_invites(limit=int_arg("limit", 100, 1, 1000))
    return jsonify({"object": "list", "data": invite_schema.dump(records, many=True)})
