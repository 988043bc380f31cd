"""The customer dashboard: sign in with an API key; balance, usage, requests, keys, codes.

Server-rendered pages on a signed session cookie (HttpOnly, SameSite=Lax, Secure over
HTTPS). Every form carries the session's CSRF token and a cross-origin POST is refused, so
another site can neither act for a signed-in user nor sign them into its own account.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from functools import wraps

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface

from silk.account import service as accounts
from silk.account.auth import count_failure, guard_address
from silk.account.schemas import key_create_schema
from silk.catalog import catalogue
from silk.cors import same_host
from silk.database import utcnow
from silk.errors import InvalidRequest, RateLimited, SilkError
from silk.extensions import db
from silk.operator import guard
from silk.pricing import units_to_usd
from silk.validation import load
from silk.web import dashboard_data as data
from silk.web.charts import bar_chart
from silk.web.errorpage import error_page
from silk.web.formats import axis_count, count, units, usd, when

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class DashboardSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, SameSite=Lax unless configured, Secure whenever on HTTPS."""

    _serializer: tuple | None = None  # (the keys it was made for, the serializer)

    def get_signing_serializer(self, app):
        """Flask's serializer, made again only when the keys change (Flask makes one per
        request, API calls included, though it depends on nothing but the keys)."""
        fallbacks = app.config["SECRET_KEY_FALLBACKS"]
        keys = (app.secret_key, tuple(fallbacks) if fallbacks else ())
        made = self._serializer
        if made is None or made[0] != keys:
            made = self._serializer = (keys, super().get_signing_serializer(app))
        return made[1]

    def open_session(self, app, request):
        """A request without cookies (every API call) gets a new empty session at once."""
        if "HTTP_COOKIE" not in request.environ:
            return None if self.get_signing_serializer(app) is None else self.session_class()
        return super().open_session(app, request)

    def save_session(self, app, session, response):
        """Nothing to write for a session nobody read or changed and that holds nothing."""
        if not session and not session.accessed and not session.modified:
            return
        super().save_session(app, session, response)

    def get_cookie_samesite(self, app):
        """Lax keeps the cookie off cross-site POSTs while links into the dashboard work."""
        return app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"

    def get_cookie_secure(self, app):
        """Behind nginx with TLS (X-Forwarded-Proto: https) the cookie never travels plain."""
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or (
            has_request_context() and request.is_secure)


@bp.record_once
def _install(state):
    app = state.app
    if type(app.session_interface) is SecureCookieSessionInterface:
        app.session_interface = DashboardSessionInterface()
    app.add_template_filter(usd, "dash_usd")
    app.add_template_filter(count, "dash_count")
    app.add_template_filter(when, "dash_when")
    app.add_template_filter(units, "dash_units")
    app.extensions.setdefault("silk.error_envelopes", {})["/dashboard/"] = _error_page


def _error_page(err: SilkError):
    """The dashboard's envelope: an error on a dashboard page that the page did not show
    itself (a value the database refuses, a crash) is a page too, never the API's JSON.
    Paths no dashboard page serves keep the API's envelope (None)."""
    if request.blueprint != "dashboard":
        return None
    return error_page("dashboard/error.html", err)


@dataclass(frozen=True)
class SignedIn:
    """Who this session is: the account and the key it signed in with."""

    account_id: int
    key_id: int
    member: bool = False  # a member key: its own usage and caps, no keys or account money


def csrf_token() -> str:
    """The session's CSRF token, made on first use; every dashboard form posts it back."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


@bp.app_context_processor
def _template_helpers():
    return {"csrf_token": csrf_token}


@bp.before_request
def _load_session():
    if request.method == "POST":
        refused = _check_csrf()
        if refused:
            return refused
    g.dashboard_user = _signed_in()
    return None


@bp.after_request
def _headers(response):
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _check_csrf():
    """Refuse a POST from another origin or without this session's token (a page, or None)."""
    origin = request.headers.get("Origin")
    # Host names only: behind a proxy the scheme and port the app sees may differ from the
    # browser's, and the token below is the real guard.
    if origin and not same_host(origin, request.host):
        return render_template("dashboard/refused.html", reason="origin"), 403
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return render_template("dashboard/refused.html", reason="token"), 400
    return None


def _signed_in() -> SignedIn | None:
    """The session's user while its key still works, the session is fresh and no sign-out
    ended the key's sessions since it began (a copied cookie is refused then too)."""
    account_id, key_id = session.get("account_id"), session.get("key_id")
    if account_id is None or key_id is None:
        return None
    hours = current_app.config["SILK_DASHBOARD_SESSION_HOURS"]
    fresh = time.time() - session.get("since", 0) < hours * 3600
    key = accounts.session_key(key_id, account_id, session.get("epoch")) if fresh else None
    if key is None:
        _sign_out()
        flash("Your session ended. Sign in again with an API key.", "info")
        return None
    g.account_id = account_id  # the request's log line names the account
    return SignedIn(account_id, key_id, member=key.role != "owner")


def _sign_out() -> None:
    for name in ("account_id", "key_id", "since", "epoch", "csrf"):
        session.pop(name, None)


def login_required(view):
    """Send an anonymous visitor to the sign-in page."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if g.dashboard_user is None:
            return redirect(url_for("dashboard.login"))
        return view(*args, **kwargs)

    return wrapper


@bp.get("/login")
def login():
    """The sign-in form."""
    if g.dashboard_user is not None:
        return redirect(url_for("dashboard.overview"))
    return render_template("dashboard/login.html")


@bp.post("/login")
def login_submit():
    """Sign in with an API key; a fresh dashboard session (new CSRF token) on success, the
    console's left as is (as the console's sign-in leaves the dashboard's)."""
    try:
        guard_address()  # the API's limit on failed key checks holds here too
        key = data.key_for_login(request.form.get("api_key", ""))
        db.session.close()
        if key is None:
            count_failure()
    except RateLimited as err:
        return render_template("dashboard/login.html", error=err.message), 429
    if key is None:
        return render_template("dashboard/login.html",
                               error="That API key is not valid (unknown, revoked or expired)."
                               ), 401
    # A sign-in signs nothing out: a console session in the cookie stays (dropped here, it
    # would live on in any copy of the cookie with no sign-out left to end it).
    console = guard.held()
    session.clear()
    session.permanent = False
    session.update(console, account_id=key.account_id, key_id=key.id, since=time.time(),
                   epoch=key.session_epoch)
    csrf_token()
    return redirect(url_for("dashboard.overview"))


@bp.post("/logout")
def logout():
    """Sign out: end the key's sessions (copies of this cookie included) and, as the whole
    cookie is cleared, a console session it holds too."""
    if g.dashboard_user is not None:
        accounts.end_sessions(g.dashboard_user.key_id)
    guard.end_session()
    db.session.close()
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("dashboard.login"))


@bp.get("/")
@login_required
def overview():
    """Balance, tier and quota, daily usage and cost charts, recent requests."""
    user = g.dashboard_user
    info = data.overview(user.account_id, key_id=user.key_id, member=user.member)
    db.session.close()
    labels = [d.day.strftime("%b %d") for d in info.days]
    cost_chart = bar_chart(list(zip(labels, [d.cost for d in info.days], strict=True)),
                           fmt=usd, title="Daily cost")
    token_chart = bar_chart(list(zip(labels, [d.tokens for d in info.days], strict=True)),
                            fmt=axis_count, title="Daily tokens")
    return render_template("dashboard/overview.html", info=info, cost_chart=cost_chart,
                           token_chart=token_chart)


@bp.post("/redeem")
@login_required
def redeem():
    """Credit the balance with an operator-issued redemption code."""
    code = request.form.get("code", "").strip()
    if g.dashboard_user.member:
        flash("A member key may not top up the account; ask its owner.", "error")
        return redirect(url_for("dashboard.overview"))
    if not code:
        flash("Enter a redemption code.", "error")
        return redirect(url_for("dashboard.overview"))
    try:
        credited = redeem_code(g.dashboard_user, code)
    except SilkError as err:
        flash(err.message, "error")
    else:
        flash(f"Redeemed: {usd(credited)} was added to your balance.", "success")
    return redirect(url_for("dashboard.overview"))


def redeem_code(user: SignedIn, code: str) -> Decimal:
    """Claim a code for the user's account through billing; return the USD credited."""
    from silk.billing.topup import redeem

    with db.engine.begin() as conn:
        entry = redeem(conn, user.account_id, code, actor=f"dashboard:key:{user.key_id}",
                       request_id=g.get("request_id"))
    return units_to_usd(entry.amount_units)


@bp.get("/keys")
@login_required
def keys():
    """The account's API keys."""
    return _keys_page()


@bp.post("/keys")
@login_required
def create_key():
    """Make a key no wider than the session's and show its secret this once (never stored,
    never redirected); a refusal is shown on the keys page."""
    user = g.dashboard_user
    try:
        data = _key_request()
        new = accounts.create_key_as(user.key_id, user.account_id, data, catalogue().models)
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return _keys_page(), err.status
    return _keys_page(new_secret=new.secret, new_name=new.record.name)


_WHOLE = re.compile(r"[0-9]{1,12}")
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?")


def _key_request() -> dict:
    """The create-key form as an API key request, checked by the API's own schema."""
    data: dict = {"name": request.form.get("name", "").strip()[:100] or "dashboard"}
    models = [m for m in request.form.getlist("models") if m]
    if models:
        data["models"] = models
    role = request.form.get("role", "").strip()
    if role:
        data["role"] = role
    caps = {period: request.form.get(f"cap_{period}", "").strip()
            for period in ("day", "month", "total")}
    if any(caps.values()):
        data["spend_caps"] = {period: usd for period, usd in caps.items() if usd}
    for field in ("rpm_limit", "tpm_limit", "concurrency_limit", "expires_in_days"):
        raw = request.form.get(field, "").strip()
        if not raw:
            continue
        if not _WHOLE.fullmatch(raw):
            raise InvalidRequest(f"Invalid '{field}': must be a whole number.", param=field)
        data[field] = int(raw)
    expires_at = request.form.get("expires_at", "").strip()
    if expires_at:
        if not _MOMENT.fullmatch(expires_at):
            raise InvalidRequest("Invalid 'expires_at': a date and time, e.g. "
                                 "2026-12-31T23:59 (UTC).", param="expires_at")
        data["expires_at"] = expires_at  # UTC, as the API reads a time without a zone
    return load(key_create_schema, data)


@bp.post("/keys/<int:key_id>/revoke")
@login_required
def revoke_key(key_id: int):
    """Revoke a key no wider than the session's; revoking the one this session uses signs
    out."""
    user = g.dashboard_user
    try:
        key = accounts.revoke_key_as(user.key_id, user.account_id, key_id)
    except SilkError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for("dashboard.keys"))
    db.session.close()
    if key_id == user.key_id:
        session.clear()
        flash("You revoked the key this session used; sign in with another key.", "info")
        return redirect(url_for("dashboard.login"))
    flash(f"Revoked key {key.prefix}… ({key.name}).", "success")
    return redirect(url_for("dashboard.keys"))


def _keys_page(**extra):
    user = g.dashboard_user
    rows = accounts.list_keys(user.account_id)
    if user.member:  # a member key sees itself alone
        rows = [key for key in rows if key.id == user.key_id]
    own = next((key for key in rows if key.id == user.key_id), None)
    db.session.close()
    models = sorted(catalogue().models)
    if own is not None and own.allowed_models:
        models = [m for m in models if m in own.allowed_models]
    budgets = {key.id: data.budget(key) for key in rows}
    return render_template("dashboard/keys.html", keys=rows, now=utcnow(),
                           current_key_id=user.key_id, own=own, models=models,
                           member=user.member, budgets=budgets, **extra)
