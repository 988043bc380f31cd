"""Admin routes for the rate limits of an account and of an account on each model."""

from flask import Blueprint, current_app, jsonify

from silk.account import limits
from silk.admin.schemas import account_limit_schema, limits_patch_schema
from silk.catalog import catalogue
from silk.validation import json_body, load

bp = Blueprint("limits", __name__)


@bp.get("/accounts/<int:account_id>/limits")
def list_limits(account_id: int):
    """The limits set for the account and its models, and the operator's defaults."""
    rows = limits.list_limits(account_id)
    return jsonify({"object": "list", "data": account_limit_schema.dump(rows, many=True),
                    "defaults": limits.defaults(current_app.config)})


@bp.patch("/accounts/<int:account_id>/limits")
def update_limits(account_id: int):
    """Set or clear (null) the account's limits, or with `model` the account's on a model."""
    data = load(limits_patch_schema, json_body())
    model = data.pop("model", None)
    row = limits.set_limits(account_id, data, model=model, known_models=catalogue().models)
    if row is None:  # nothing left set here: the defaults apply
        return jsonify({"object": "account_limits", "model": model, "rpm_limit": None,
                        "tpm_limit": None, "concurrency_limit": None, "updated_at": None})
    return jsonify(account_limit_schema.dump(row))
