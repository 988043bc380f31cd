"""Admin route for the operator's view of providers: each route and key, serving or resting."""

from flask import Blueprint, current_app, jsonify

from silk.relay.routes import report

bp = Blueprint("providers", __name__)


@bp.get("/providers")
def providers():
    """Every route and key as the answering worker sees them (rests are shared with Redis)."""
    ext = current_app.extensions
    shown = report(ext["silk.catalogue"].models, ext["silk.upstreams"], ext["silk.breakers"])
    return jsonify({"object": "providers", **shown})
