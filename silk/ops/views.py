"""Health endpoints for load balancers and orchestrators; no key needed."""

from flask import Blueprint, jsonify
from sqlalchemy import text

from silk.extensions import db

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """Alive: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready: the database answers."""
    try:
        db.session.execute(text("SELECT 1"))
        db.session.close()
    except Exception:  # noqa: BLE001 - any database failure means not ready
        db.session.remove()
        return jsonify({"status": "unavailable", "database": "unreachable"}), 503
    return jsonify({"status": "ok", "database": "ok"})
