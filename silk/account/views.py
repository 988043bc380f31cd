"""The account blueprint: a user's own API keys, and registration's JSON twin."""

from flask import Blueprint, current_app, jsonify, request

from silk.account import registration, service
from silk.account.auth import authenticate, require_owner
from silk.account.schemas import (
    SHOWN_ONCE,
    account_schema,
    key_create_schema,
    key_schema,
    key_update_schema,
    new_key_body,
    register_schema,
)
from silk.alerts import service as alerts
from silk.alerts.schemas import SECRET_SHOWN_ONCE, settings_schema, update_schema
from silk.billing.tiers import tiers
from silk.catalog import catalogue
from silk.validation import json_body, load

bp = Blueprint("account", __name__, url_prefix="/v1")


@bp.get("/keys")
def list_keys():
    """The caller's account's keys (prefixes only); a member key sees itself alone."""
    principal = authenticate()
    keys = service.list_keys(principal.account_id)
    if not principal.is_owner:
        keys = [key for key in keys if key.id == principal.key_id]
    return jsonify({"object": "list", "data": key_schema.dump(keys, many=True)})


@bp.post("/keys")
def create_key():
    """Make a key for the caller's account, no wider than the key asking."""
    principal = authenticate()
    data = load(key_create_schema, json_body())
    key = service.create_key_as(principal.key_id, principal.account_id, data,
                                catalogue().models)
    return jsonify(new_key_body(key)), 201


@bp.delete("/keys/<int:key_id>")
def revoke_key(key_id: int):
    """Revoke one of the caller's account's keys no wider than the caller's; another
    account's key is a 404."""
    principal = authenticate()
    key = service.revoke_key_as(principal.key_id, principal.account_id, key_id)
    return jsonify({**key_schema.dump(key), "deleted": True})


@bp.patch("/keys/<int:key_id>")
def update_key(key_id: int):
    """Rename one of the caller's account's keys or change its spend caps or rate limits
    (owner keys only; none above the caller's)."""
    principal = authenticate()
    data = load(key_update_schema, json_body())
    key = service.update_key_as(principal.key_id, principal.account_id, key_id, data)
    return jsonify(key_schema.dump(key))
@bp.get("/account/alerts")
def alert_settings():
    """Where the caller's account's alerts go, and its balance threshold (owner keys)."""
    principal = require_owner()
    return jsonify(settings_schema.dump(alerts.settings_of(principal.account_id)))


@bp.put("/account/alerts")
def update_alert_settings():
    """Set the account's webhook, alert address and balance threshold; a new webhook's
    signing secret is in this answer only (owner keys)."""
    principal = require_owner()
    data = load(update_schema, json_body())
    account, secret = alerts.update_settings(
        principal.account_id, data,
        allow_private=bool(current_app.config["SILK_ALERT_ALLOW_PRIVATE"]))
    body = settings_schema.dump(account)
    if secret is not None:
        body.update(webhook_secret=secret, message=SECRET_SHOWN_ONCE)
    return jsonify(body)


@bp.post("/register")
def register():
    """Create an account and its first key (JSON twin of the /register/ page)."""
    config = current_app.config
    registration.throttle_signups()
    data = load(register_schema, json_body())
    account, key = registration.register(
        data["email"], data.get("invite_code"), mode=config["SILK_REGISTRATION"],
        default_tier=config["SILK_DEFAULT_TIER"], known_tiers=tiers())
    return jsonify({**account_schema.dump(account), "api_key": key.secret,
                    "key": key_schema.dump(key.record),
                    "message": SHOWN_ONCE}), 201


@bp.get("/register")
def registration_mode():
    """Tell a client whether registration is open, needs an invite, or is closed."""
    mode = current_app.config["SILK_REGISTRATION"]
    return jsonify({"registration": mode, "invite_code_required": mode == "invite",
                    "page": request.host_url.rstrip("/") + "/register/"})
