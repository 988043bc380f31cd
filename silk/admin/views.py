"""The admin blueprint: operator tasks over HTTP, for admin keys only."""

from flask import Blueprint

from silk.account.auth import require_admin
from silk.admin.accounts import bp as accounts_bp
from silk.admin.limits import bp as limits_bp
from silk.admin.money import bp as money_bp
from silk.admin.providers import bp as providers_bp
from silk.admin.reports import bp as reports_bp

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")


@bp.before_request
def admins_only():
    """Guard every admin route in one place, so no route can forget to."""
    require_admin()


for child in (accounts_bp, limits_bp, money_bp, reports_bp, providers_bp):
    bp.register_blueprint(child)
