"""The pages a newcomer lands on: the home page, registration styled like the dashboard with
a copy button, the dashboard's key form with the API's options; and all of it in Chromium."""

from __future__ import annotations

import re

import pytest

from tests.ops.helpers import csrf_from, sign_in

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_home_is_a_page_for_browsers(client):
    page = client.get("/", headers={"Accept": BROWSER})
    assert page.status_code == 200 and page.mimetype == "text/html"
    for link in ("/dashboard/", "/register/", "/v1/pricing", "/openapi.json"):
        assert f'href="{link}"' in page.text, link
    assert "silk.css" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize("accept", [None, "*/*", "application/json",
                                    "application/json, text/html;q=0.5"])
def test_home_is_the_json_404_for_api_clients(client, accept):
    answer = client.get("/", headers={"Accept": accept} if accept else {})
    assert answer.status_code == 404
    assert answer.json["error"]["code"] == "not_found"


@pytest.fixture
def open_registration(app_config):
    app_config["SILK_REGISTRATION"] = "open"
    return app_config


def test_registration_looks_like_the_dashboard_and_offers_to_copy_the_key(open_registration,
                                                                         client):
    form = client.get("/register/")
    assert "silk.css" in form.text and 'class="topbar"' in form.text
    assert 'href="/dashboard/login"' in form.text
    done = client.post("/register/", data={"email": "new@example.com"})
    assert done.status_code == 201
    secret = re.search(r'id="api-key"[^>]*>(sk-[^<]+)<', done.text).group(1)
    assert 'data-copy="#api-key"' in done.text and "copy.js" in done.text
    assert 'href="/dashboard/login"' in done.text
    assert client.get("/v1/balance", headers={"Authorization": f"Bearer {secret}"}
                      ).status_code == 200
    assert done.headers["Cache-Control"] == "no-store"


def test_the_key_form_offers_every_option_of_the_api(client, accounts):
    from silk.account.models import ApiKey
    from silk.extensions import db

    user = accounts.make()
    sign_in(client, user.key)
    page = client.get("/dashboard/keys").text
    for field in ("name", "models", "rpm_limit", "tpm_limit", "expires_in_days", "expires_at"):
        assert f'name="{field}"' in page, field
    made = client.post("/dashboard/keys", data={
        "name": "dated", "expires_at": "2099-12-31T23:59", "models": ["deepseek-chat"],
        "rpm_limit": "5", "csrf_token": csrf_from(page)})
    assert made.status_code == 200 and 'data-copy="#new-secret"' in made.text
    with client.application.app_context():
        key = db.session.query(ApiKey).filter_by(name="dated").one()
        assert key.expires_at.isoformat().startswith("2099-12-31T23:59")
        assert key.rpm_limit == 5
    bad = client.post("/dashboard/keys", data={"name": "x", "expires_at": "soon",
                                               "csrf_token": csrf_from(page)})
    assert bad.status_code == 400 and "expires_at" in bad.text


@pytest.mark.slow
def test_the_pages_in_a_browser(sqlite_only, gateway_env, request, page, tmp_path):
    from tests.ops.test_dashboard_browser import _screenshot_checks

    gateway_env["SILK_REGISTRATION"] = "open"
    gateway = request.getfixturevalue("gateway")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=gateway.url)
    page.goto(gateway.url + "/")
    assert page.title() == "SilkGateway"
    hrefs = page.eval_on_selector_all("main a", "links => links.map(a => a.pathname)")
    assert {"/dashboard/", "/register/", "/v1/pricing", "/openapi.json"} <= set(hrefs)
    _screenshot_checks(page.screenshot(path=str(tmp_path / "home.png"), full_page=True),
                       width=1280)

    page.click("main a[href='/register/']")
    page.fill("#email", "browser@example.com")
    page.click("button[type=submit].primary")
    secret = page.inner_text("[data-testid=new-secret]").strip()
    assert secret.startswith("sk-")
    page.click("[data-testid=copy-key]")
    # A function, not a string: the page's CSP forbids evaluating a string.
    page.wait_for_function("() => document.querySelector('[data-testid=copy-key]')"
                           ".textContent.trim() === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    _screenshot_checks(page.screenshot(path=str(tmp_path / "registered.png"), full_page=True),
                       width=1280)

    page.click("a.button-link")  # on to the dashboard, signing in with the new key
    page.fill("#api_key", secret)
    page.click("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/dashboard/$"))
    assert page.inner_text("[data-testid=balance]") == "$0.00"


@pytest.mark.slow
def test_registration_in_a_browser_takes_its_own_form_and_refuses_a_null_origin(
        sqlite_only, gateway_env, request, page):
    """The page's own form is posted with its real Origin and accepted; another site's form
    under no-referrer is posted with `Origin: null`, which was let through."""
    gateway_env["SILK_REGISTRATION"] = "open"
    gateway = request.getfixturevalue("gateway")

    page.goto(gateway.url + "/register/")
    page.fill("#email", "own@example.com")
    with page.expect_response(lambda got: got.request.method == "POST") as answered:
        page.click("button[type=submit].primary")
    assert answered.value.status == 201
    assert page.inner_text("[data-testid=new-secret]").strip().startswith("sk-")

    attacker = ('<!doctype html><meta name="referrer" content="no-referrer">'
                f'<form method="post" action="{gateway.url}/register/">'
                '<input name="email" value="forged@example.com">'
                '<button type="submit">Go</button></form>')
    page.route("http://attacker.test/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body=attacker))
    page.goto("http://attacker.test/")
    with page.expect_response(lambda got: got.request.method == "POST") as answered:
        page.click("button[type=submit]")
    assert answered.value.status == 403
    assert not page.locator("[data-testid=new-secret]").count()
