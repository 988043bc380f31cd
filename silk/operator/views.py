"""The console's blueprint at /admin/: sign-in by an admin key, the session and CSRF guard
every page goes through, and the page groups mounted under it."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for

from silk.account.auth import count_failure, guard_address
from silk.account.schemas import spend, spend_caps
from silk.errors import AuthenticationFailed, RateLimited, SilkError, error_response
from silk.extensions import db
from silk.operator import guard
from silk.operator.accounts import bp as accounts_bp
from silk.operator.codes import bp as codes_bp
from silk.operator.reports import bp as reports_bp
from silk.web.dashboard_data import key_for_login
from silk.web.errorpage import error_page
from silk.web.formats import count, units, usd, when

bp = Blueprint("operator", __name__, url_prefix="/admin")

_OPEN = {"operator.login", "operator.login_submit"}  # the only pages without a session
_SECURITY_HEADERS = {
    # As the dashboard, and `connect-src 'self'` for the Now page's poll.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@bp.record_once
def _install(state):
    for name, function in (("op_usd", usd), ("op_count", count), ("op_when", when),
                           ("op_units", units)):
        state.app.add_template_filter(function, name)
    state.app.extensions.setdefault("silk.error_envelopes", {})["/admin/"] = _error_page


@bp.context_processor
def _helpers():
    return {"op_csrf": guard.csrf_token, "operator": g.get("operator"),
            "key_caps": spend_caps, "key_spend": spend}


@bp.before_request
def _guard():
    """Every request: a cross-site or token-less POST is refused, then the key is checked
    again (still an admin's, not revoked or expired) before any page or action."""
    if request.method == "POST":
        reason = guard.refusal()
        if reason:
            status = 403 if reason == "origin" else 400
            return render_template("operator/refused.html", reason=reason), status
    g.operator = guard.current_operator()
    if g.operator is None and request.endpoint not in _OPEN:
        db.session.close()
        if request.path.endswith(".json"):  # the Now page's poll: the API's envelope
            refused = AuthenticationFailed("Sign in to the console with an admin key.",
                                           code="console_signed_out")
            return error_response(refused.status, refused.body())
        return redirect(url_for("operator.login"))
    if g.operator is not None:
        g.account_id = g.operator.account_id  # the request's log line names the operator
    return None


@bp.after_request
def _headers(response):
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _error_page(err: SilkError):
    """The console's envelope: any error on a console page (bad input, a value the database
    refuses, a crash) is the console's error page, never the API's JSON. The Now page's poll
    (.json) and paths no console page serves keep the API's envelope (None)."""
    if request.blueprint is None or not request.blueprint.startswith("operator") \
            or request.path.endswith(".json"):
        return None
    return error_page("operator/error.html", err)


@bp.teardown_request
def _close(_error):
    db.session.close()


@bp.get("/login")
def login():
    """The sign-in form."""
    if g.operator is not None:
        return redirect(url_for("operator.accounts.index"))
    return render_template("operator/login.html")


@bp.post("/login")
def login_submit():
    """Sign in with an admin key: a fresh console session (new CSRF token) on success."""
    try:
        guard_address()  # the API's limit on failed key checks holds here too
        key = key_for_login(request.form.get("api_key", ""))
        operator = guard.admin_key(key)
        if key is None:
            count_failure()
    except RateLimited as err:
        return render_template("operator/login.html", error=err.message), 429
    if operator is None:
        error = ("That key is not an admin key (an owner key of an admin account, without "
                 "limits)." if key is not None else
                 "That API key is not valid (unknown, revoked or expired).")
        return render_template("operator/login.html", error=error), 401 if key is None else 403
    guard.sign_in(operator)
    return redirect(url_for("operator.accounts.index"))


@bp.post("/logout")
def logout():
    """Sign out of the console (copies of this session's cookie too)."""
    guard.end_session()
    return redirect(url_for("operator.login"))


@bp.get("/")
def home():
    """The console opens on the accounts list."""
    return redirect(url_for("operator.accounts.index"))


for child in (accounts_bp, codes_bp, reports_bp):
    bp.register_blueprint(child)
