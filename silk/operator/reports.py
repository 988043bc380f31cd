"""Console pages for tiers and prices, usage and money (charts, margin, CSV, the audit) and
what the server is doing now."""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from silk.billing import service
from silk.billing.margin import GROUPINGS, margin_rows, models_below_cost, total
from silk.billing.schemas import tier_input_schema
from silk.billing.tiers import save_tier, stored_tiers
from silk.catalog import catalogue
from silk.database import utcnow
from silk.errors import InvalidRequest, SilkError
from silk.extensions import db
from silk.metering.audit import audit
from silk.operator import csvout, data, forms
from silk.ops import metrics
from silk.pricing import units_to_usd
from silk.relay.routes import report
from silk.schedule import describe
from silk.validation import load, parse_month
from silk.web.charts import bar_chart
from silk.web.formats import axis_count, usd

bp = Blueprint("reports", __name__)

USAGE_TABLES = ("account", "model", "day")
_TOTALS_HEADER = ("requests", "failed_requests", "prompt_tokens", "completion_tokens",
                  "total_tokens", "cost_usd")


@bp.get("/tiers")
def tiers_page():
    """The tier table (editable as the API allows) and the catalogue's prices in force."""
    now = utcnow()
    cat = catalogue()
    models = []
    for model in cat.models.values():
        price = model.price_at(now)
        cost = model.cost_at(now)
        models.append({
            "id": model.id, "provider": cat.provider_of(model).name,
            "available": cat.available(model), "steps": price.steps,
            "cost": cost.steps[0].price if cost is not None else None,
            "schedule": describe(model.pricing, now) if model.pricing is not None else {}})
    return render_template("operator/tiers.html", tiers=sorted(stored_tiers().values(),
                                                               key=lambda t: t.name),
                           models=models, below_cost=models_below_cost(cat.models), now=now)


@bp.post("/tiers")
def save_tier_form():
    """Create or change a tier, as PUT /v1/admin/tiers/<name>."""
    form = request.form
    try:
        name = form.get("name", "").strip()
        body = {"discount_percent": str(forms.amount(form, "discount_percent")),
                "monthly_free_tokens": forms.whole(form, "monthly_free_tokens", 0)}
        request_data = load(tier_input_schema, body)
        tier = save_tier(name, request_data["discount_percent"],
                         request_data["monthly_free_tokens"])
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
    else:
        flash(f"Tier {tier.name} saved: {tier.discount * 100:g}% off, "
              f"{tier.monthly_free_tokens:,} free tokens a month.", "success")
    return redirect(url_for(".tiers_page"))


def _month():
    return parse_month(request.args.get("month") or None)


def _usage(start, end):
    with db.engine.connect() as conn:
        by_account, by_model = service.accounts_report(conn, "", start, end)
        by_day = service.days_report(conn, start, end)
    return {"account": by_account, "model": by_model, "day": by_day}


def _margin_by() -> str:
    by = request.args.get("by", "model")
    if by not in GROUPINGS:
        raise InvalidRequest(f"Invalid 'by': expected one of {', '.join(GROUPINGS)}.",
                             param="by")
    return by


@bp.get("/usage")
def usage():
    """A month's usage by account, model and day with daily charts; the margin report."""
    try:
        month, start, end = _month()
        by = _margin_by()
    except SilkError as err:
        flash(err.message, "error")
        return redirect(url_for(".usage"))
    tables = _usage(start, end)
    with db.engine.connect() as conn:
        margin = margin_rows(conn, start, end, by)
    days = {row.key: row for row in tables["day"]}
    labels = [(day.strftime("%b %d"), days.get(day.isoformat())) for day in
              data.month_days(start, end)]
    cost_chart = bar_chart([(label, units_to_usd(row.cost_units) if row else 0)
                            for label, row in labels], fmt=usd, title="Daily revenue")
    token_chart = bar_chart([(label, row.total_tokens if row else 0) for label, row in labels],
                            fmt=axis_count, title="Daily tokens")
    sums = {name: _sum(rows) for name, rows in tables.items()}
    return render_template("operator/usage.html", month=month, tables=tables, sums=sums,
                           margin=margin, margin_total=total(margin), by=by,
                           groupings=GROUPINGS, cost_chart=cost_chart, token_chart=token_chart,
                           below_cost=models_below_cost(catalogue().models))


def _sum(rows) -> dict:
    return {name: sum(getattr(row, name) for row in rows) for name in
            ("requests", "failed_requests", "prompt_tokens", "completion_tokens",
             "total_tokens", "cost_units")}


@bp.get("/usage.csv")
def usage_csv():
    """One usage table of a month as CSV, its last row the total."""
    month, start, end = _month()
    table = request.args.get("table", "account")
    if table not in USAGE_TABLES:
        raise InvalidRequest(f"Invalid 'table': one of {', '.join(USAGE_TABLES)}.",
                             param="table")
    rows = _usage(start, end)[table]
    sums = _sum(rows)
    body = [(row.key, row.requests, row.failed_requests, row.prompt_tokens,
             row.completion_tokens, row.total_tokens, units_to_usd(row.cost_units))
            for row in rows]
    body.append(("total", *(sums[name] for name in _TOTALS_HEADER[:-1]),
                 units_to_usd(sums["cost_units"])))
    return csvout.download(f"usage-{table}-{month}.csv", (table, *_TOTALS_HEADER), body)


@bp.get("/margin.csv")
def margin_csv():
    """The margin report of a month as CSV, its last row the total."""
    month, start, end = _month()
    by = _margin_by()
    with db.engine.connect() as conn:
        rows = margin_rows(conn, start, end, by)
    body = [(row.key, row.requests, units_to_usd(row.revenue_units),
             units_to_usd(row.upstream_cost_units), units_to_usd(row.margin_units))
            for row in [*rows, total(rows)]]
    return csvout.download(f"margin-{by}-{month}.csv",
                           (by, "requests", "revenue_usd", "upstream_cost_usd", "margin_usd"),
                           body)


@bp.post("/audit")
def run_audit():
    """The books check, run now: every ledger sums to its balance, every hold is covered."""
    problems = audit(db.engine)
    return render_template("operator/audit.html", problems=problems, ran_at=utcnow())


@bp.get("/now")
def now():
    """Open streams, requests per second, errors and each route's state, kept fresh by a
    small poll of now.json."""
    return render_template("operator/now.html", state=_state())


@bp.get("/now.json")
def now_json():
    """What the Now page shows, for its poll."""
    return jsonify(_state())


def _state() -> dict:
    ext = current_app.extensions
    shown = report(ext["silk.catalogue"].models, ext["silk.upstreams"], ext["silk.breakers"])
    return {"at": utcnow().isoformat(timespec="seconds") + "Z", **metrics.snapshot(),
            "open_holds": data.open_hold_count(), **shown}
