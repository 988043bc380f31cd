"""The web blueprint: the home page for browsers (/) and the registration page
(/register/), the HTML twin of POST /v1/register."""

from flask import Blueprint, abort, current_app, render_template, request

from silk.account import registration
from silk.account.schemas import register_schema
from silk.billing.tiers import tiers
from silk.cors import same_host
from silk.errors import PermissionDenied, SilkError
from silk.validation import load

bp = Blueprint("web", __name__)

# The pages load their own CSS and script only, and are never framed.
_CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@bp.get("/")
def home():
    """A short page of links for a browser; an API client gets the JSON 404 of any path."""
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html":
        abort(404)
    html = render_template("web/home.html", mode=current_app.config["SILK_REGISTRATION"],
                           api_base=request.host_url + "v1")
    return html, 200, {"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"}


def _page(status: int = 200, **context):
    mode = current_app.config["SILK_REGISTRATION"]
    html = render_template("web/register.html", mode=mode, api_base=request.host_url + "v1",
                           **context)
    # The page may carry a new key: never cache it. Same-origin, as the dashboard and the
    # template's meta tag: the URL goes to no other site, and the page's own form posts with
    # its real Origin (under no-referrer a browser sends `Origin: null`, which is refused).
    return html, status, {"Cache-Control": "no-store", "Referrer-Policy": "same-origin",
                          "Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"}


@bp.get("/register/")
def register_page():
    """Show the sign-up form (or say that registration is closed)."""
    return _page()


@bp.post("/register/")
def register_submit():
    """Create the account and show its first key once."""
    form = {"email": request.form.get("email", "").strip()}
    if request.form.get("invite_code", "").strip():
        form["invite_code"] = request.form["invite_code"].strip()
    try:
        _same_origin()
        config = current_app.config
        registration.throttle_signups()
        data = load(register_schema, form)
        account, key = registration.register(
            data["email"], data.get("invite_code"), mode=config["SILK_REGISTRATION"],
            default_tier=config["SILK_DEFAULT_TIER"], known_tiers=tiers())
    except SilkError as err:
        return _page(err.status, error=err.message, email=form["email"])
    return _page(201, account=account, secret=key.secret)


def _same_origin() -> None:
    """Refuse a form posted from another site (a browser always says where it came from).

    Host names only, as the dashboard: behind a proxy the scheme and port may differ. An
    opaque `null` (a sandboxed frame, another site's no-referrer page) names no host."""
    origin = request.headers.get("Origin")
    if origin and not same_host(origin, request.host):
        raise PermissionDenied("Cross-site form submissions are refused.")
