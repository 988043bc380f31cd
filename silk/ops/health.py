"""Readiness: whether the database answers now, for the load balancer's probe."""

from sqlalchemy import text

from silk.extensions import db


def database_answers() -> bool:
    """Run the cheapest statement there is; any failure means the gateway is not ready."""
    try:
        db.session.execute(text("SELECT 1"))
        db.session.close()
    except Exception:  # noqa: BLE001 - any database failure means not ready
        db.session.remove()
        return False
    return True
