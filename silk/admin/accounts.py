"""Admin routes for accounts and their keys (mounted under /v1/admin)."""

from decimal import Decimal

from flask import Blueprint, current_app, g, jsonify, request

from silk.account import service
from silk.account.schemas import (
    account_schema,
    key_create_schema,
    key_schema,
    key_update_schema,
    new_key_body,
)
from silk.admin.schemas import account_create_schema, account_patch_schema
from silk.billing.tiers import tiers
from silk.billing.topup import check_amount
from silk.catalog import catalogue
from silk.validation import int_arg, json_body, load

bp = Blueprint("accounts", __name__)


def _actor() -> str:
    return f"key:{g.principal.key_id}"


@bp.get("/accounts")
def list_accounts():
    """Accounts in id order; ?email= filters by a part of the address."""
    accounts = service.list_accounts(email_contains=request.args.get("email"),
                                     limit=int_arg("limit", 100, 1, 1000),
                                     offset=int_arg("offset", 0, 0, 10**9))
    return jsonify({"object": "list", "data": account_schema.dump(accounts, many=True)})


@bp.post("/accounts")
def create_account():
    """Create an account (any tier, optional opening credit) and show its first key once."""
    data = load(account_create_schema, json_body())
    credit = data.get("credit") or Decimal(0)
    maximum = Decimal(str(current_app.config["SILK_TOPUP_MAX"]))
    units = check_amount(credit, maximum, param="credit") if credit else 0
    account, key = service.create_account(
        data["email"], tier=data.get("tier") or current_app.config["SILK_DEFAULT_TIER"],
        known_tiers=tiers(), credit_units=units, is_admin=data["admin"], actor=_actor())
    return jsonify({**account_schema.dump(account), "api_key": key.secret,
                    "key": key_schema.dump(key.record)}), 201


@bp.get("/accounts/<int:account_id>")
def show_account(account_id: int):
    """One account with its keys."""
    account = service.find_account(account_id)
    keys = service.list_keys(account_id)
    return jsonify({**account_schema.dump(account), "keys": key_schema.dump(keys, many=True)})


@bp.patch("/accounts/<int:account_id>")
def update_account(account_id: int):
    """Change an account's tier, or disable or enable it."""
    data = load(account_patch_schema, json_body())
    account = service.update_account(account_id, known_tiers=tiers(), tier=data.get("tier"),
                                     disabled=data.get("disabled"))
    return jsonify(account_schema.dump(account))


@bp.get("/accounts/<int:account_id>/keys")
def list_keys(account_id: int):
    """An account's keys."""
    service.find_account(account_id)
    keys = service.list_keys(account_id)
    return jsonify({"object": "list", "data": key_schema.dump(keys, many=True)})


@bp.post("/accounts/<int:account_id>/keys")
def create_key(account_id: int):
    """Make a key for any account, with any limits."""
    data = load(key_create_schema, json_body())
    key = service.create_key(account_id, **service.key_options(data, catalogue().models))
    return jsonify(new_key_body(key)), 201


@bp.patch("/keys/<int:key_id>")
def update_key(key_id: int):
    """Rename any key or set its spend caps and rate limits, with no ceiling."""
    key = service.update_key(key_id, load(key_update_schema, json_body()))
    return jsonify(key_schema.dump(key))


@bp.delete("/keys/<int:key_id>")
def revoke_key(key_id: int):
    """Revoke any key."""
    key = service.revoke_key(key_id)
    return jsonify({**key_schema.dump(key), "deleted": True})
