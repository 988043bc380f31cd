"""The billing blueprint: balance, usage, billing report, top-up."""

from decimal import Decimal

from flask import Blueprint, current_app, g, jsonify, request

from silk.account.auth import authenticate, require_owner
from silk.billing import service
from silk.billing import topup as topups
from silk.billing.idempotency import HEADER, answer_response, check_key
from silk.billing.schemas import billing_schema, topup_schema, usage_report_schema
from silk.billing.tiers import tiers
from silk.extensions import db
from silk.pricing import units_to_usd
from silk.validation import json_body, load, parse_month

bp = Blueprint("billing", __name__, url_prefix="/v1")


@bp.get("/balance")
def balance():
    """The caller's balance in USD (owner keys: a member key sees only its own spend)."""
    principal = require_owner()
    with db.engine.connect() as conn:
        units = service.balance_units(conn, principal.account_id)
    return jsonify({"balance": units_to_usd(units), "currency": "USD"})


@bp.get("/usage")
def usage():
    """The caller's requests, tokens and cost in a month, by model and by day: the whole
    account's for an owner key, the key's own for a member key."""
    principal = authenticate()
    month, start, end = parse_month(request.args.get("month"))
    with db.engine.connect() as conn:
        report = service.usage_report(conn, principal.account_id, month, start, end,
                                      key_id=None if principal.is_owner else principal.key_id)
    return jsonify(usage_report_schema.dump(report))


@bp.get("/billing")
def billing():
    """The caller's bill for a month in the document's shape (owner keys)."""
    principal = require_owner()
    month, start, end = parse_month(request.args.get("month"))
    tier_table = tiers()
    with db.engine.connect() as conn:
        report = service.billing_report(conn, principal.account_id, tier_table, month, start,
                                        end)
    return jsonify(billing_schema.dump(report))


@bp.post("/topup")
def topup():
    """Add funds: an admin amount, a redemption code, or an open self-service amount (owner
    keys)."""
    principal = require_owner()
    key = check_key(request.headers.get(HEADER))
    data = load(topup_schema, json_body())
    config = current_app.config
    policy = topups.Policy(open_topup=bool(config["SILK_OPEN_TOPUP"]),
                           maximum=Decimal(str(config["SILK_TOPUP_MAX"])))
    answer = topups.topup(db.engine, principal, data, policy, idempotency_key=key,
                          request_id=g.get("request_id"))
    return answer_response(answer)
