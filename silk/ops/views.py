"""Health, readiness and metrics endpoints for load balancers and Prometheus; no key needed."""

from flask import Blueprint, Response, current_app, jsonify, request

from silk.errors import PermissionDenied
from silk.ops import metrics
from silk.ops.health import database_answers
from silk.ops.network import DEFAULT_METRICS_ALLOW, address_in, parse_networks, setting
from silk.ops.schema import problem as schema_problem

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """Alive: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready: the database answers and its schema has every migration."""
    if not database_answers():
        return jsonify({"status": "unavailable", "database": "unreachable"}), 503
    behind = schema_problem()
    if behind is not None:
        return jsonify({"status": "unavailable", "database": "ok",
                        "schema": "behind migrations", "message": behind}), 503
    return jsonify({"status": "ok", "database": "ok", "schema": "ok"})


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus text for every worker; only for addresses in SILK_METRICS_ALLOW."""
    if not address_in(request.remote_addr, _metrics_networks()):
        raise PermissionDenied("Metrics are not served to this address; see SILK_METRICS_ALLOW.",
                               code="metrics_not_allowed")
    body, content_type = metrics.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _metrics_networks():
    """Parse the allow list once per app (it is read on every scrape)."""
    cached = current_app.extensions.get("silk.metrics_allow")
    if cached is None:
        spec = setting(current_app.config, "SILK_METRICS_ALLOW", DEFAULT_METRICS_ALLOW)
        cached = current_app.extensions["silk.metrics_allow"] = parse_networks(spec)
    return cached
