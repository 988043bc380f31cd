"""The account blueprint: a user's own API keys."""

from flask import Blueprint

bp = Blueprint("account", __name__, url_prefix="/v1")
