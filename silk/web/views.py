"""The web blueprint: the registration page and the dashboard."""

from flask import Blueprint

bp = Blueprint("web", __name__)
