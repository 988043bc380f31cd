"""Admin routes for tiers, usage across accounts, and the books check."""

from flask import Blueprint, jsonify, request

from silk.account.service import find_account
from silk.billing import service
from silk.billing.schemas import (
    account_usage_schema,
    day_totals_schema,
    margin_schema,
    model_totals_schema,
    tier_input_schema,
    tier_schema,
)
from silk.billing.tiers import save_tier, stored_tiers
from silk.extensions import db
from silk.metering.audit import audit
from silk.validation import json_body, load, parse_month

bp = Blueprint("reports", __name__)


@bp.get("/tiers")
def list_tiers():
    """Every tier (config overlaid by operator edits), read from the database: workers
    apply an edit at once with Redis, else within 10 s."""
    return jsonify({"object": "list",
                    "data": tier_schema.dump(stored_tiers().values(), many=True)})


@bp.put("/tiers/<name>")
def put_tier(name: str):
    """Create or change a tier; every worker sees it at once with Redis, else within 10 s."""
    data = load(tier_input_schema, json_body())
    tier = save_tier(name, data["discount_percent"], data["monthly_free_tokens"])
    return jsonify(tier_schema.dump(tier))


@bp.get("/usage")
def usage():
    """A month's usage by account, by model and by day; ?account= narrows to one account."""
    month, start, end = parse_month(request.args.get("month"))
    ref = request.args.get("account")
    account_id = find_account(ref).id if ref else None
    with db.engine.connect() as conn:
        by_account, by_model = service.accounts_report(conn, month, start, end, account_id)
        by_day = service.days_report(conn, start, end, account_id)
    return jsonify({"object": "usage_report", "month": month, "currency": "USD",
                    "by_account": account_usage_schema.dump(by_account, many=True),
                    "by_model": model_totals_schema.dump(by_model, many=True),
                    "by_day": day_totals_schema.dump(by_day, many=True)})


@bp.get("/margin")
def margin():
    """A month's revenue, upstream cost and margin, ?by=model|provider|day; models sold
    below their upstream price are listed."""
    from silk.billing.margin import GROUPINGS, margin_rows, models_below_cost, total
    from silk.catalog import catalogue
    from silk.errors import InvalidRequest

    month, start, end = parse_month(request.args.get("month"))
    by = request.args.get("by", "model")
    if by not in GROUPINGS:
        raise InvalidRequest(f"Invalid 'by': expected one of {', '.join(GROUPINGS)}.",
                             param="by", code="invalid_value")
    with db.engine.connect() as conn:
        rows = margin_rows(conn, start, end, by)
    return jsonify({"object": "margin_report", "month": month, "by": by, "currency": "USD",
                    "data": margin_schema.dump(rows, many=True),
                    "total": margin_schema.dump(total(rows)),
                    "below_cost": [{"model": model, "rates": rates} for model, rates
                                   in models_below_cost(catalogue().models).items()]})


@bp.get("/audit")
def books():
    """The books check over HTTP: empty `problems` means every ledger sums to its balance."""
    problems = audit(db.engine)
    return jsonify({"ok": not problems, "problems": problems})
