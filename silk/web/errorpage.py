"""An HTML page for an error, the envelope of the dashboard and the operator's console."""

from __future__ import annotations

import contextlib

from flask import g, render_template

from silk.errors import SilkError
from silk.extensions import db


def error_page(template: str, err: SilkError):
    """`template` showing the error's message, with its status and headers; the request's
    transaction is rolled back first, as the API's envelope leaves nothing half-written."""
    with contextlib.suppress(Exception):  # the connection may be gone already
        db.session.rollback()
    g.error_code = err.code
    return render_template(template, message=err.message), err.status, err.headers
