"""The billing blueprint: balance, usage, billing report, top-up."""

from flask import Blueprint, jsonify

from silk.account.auth import authenticate
from silk.account.models import Account
from silk.extensions import db
from silk.pricing import units_to_usd

bp = Blueprint("billing", __name__, url_prefix="/v1")


@bp.get("/balance")
def balance():
    """The caller's balance in USD."""
    principal = authenticate()
    units = db.session.get(Account, principal.account_id).balance_units
    db.session.close()
    return jsonify({"balance": units_to_usd(units), "currency": "USD"})
