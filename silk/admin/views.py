"""The admin blueprint: operator tasks over HTTP, for admin keys only."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")
