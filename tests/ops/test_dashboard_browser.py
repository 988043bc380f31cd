"""The dashboard in headless Chromium against the real gateway under gunicorn."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
import requests

pytestmark = pytest.mark.slow


def _screenshot_checks(png: bytes, *, width: int) -> None:
    """A real page: the right size, and far from one flat colour."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width == width and image.height >= 600
    small = image.resize((image.width // 4, image.height // 4))
    colours = small.getcolors(maxcolors=1_000_000)
    assert len(colours) > 50
    commonest = max(count for count, _ in colours)
    assert commonest < 0.9 * small.width * small.height  # not blank


def _use_up_free_quota(app, account_id: int) -> None:
    from sqlalchemy import update

    from silk.account.models import Account
    from silk.database import utcnow
    from silk.extensions import db

    with app.app_context():
        db.session.execute(update(Account).where(Account.id == account_id).values(
            quota_month=utcnow().strftime("%Y-%m"), quota_used=1_000_000))
        db.session.commit()


def test_dashboard_in_a_browser(sqlite_only, app, accounts, gateway, page, tmp_path):
    from silk.billing.codes import issue_codes
    from silk.pricing import units_to_usd

    user = accounts.make(tier="pro", credit="42.75", email="ada@example.com")
    _use_up_free_quota(app, user.id)
    for text in ("Write a haiku about gateways", "And another one [[fake: pieces=40]]"):
        answer = requests.post(gateway.url + "/v1/chat/completions", headers=user.headers,
                               json={"model": "deepseek-reasoner", "stream": False,
                                     "messages": [{"role": "user", "content": text}]},
                               timeout=30)
        assert answer.status_code == 200
    with app.app_context():
        code = issue_codes(5_000_000_000)[0].code

    page.goto(gateway.url + "/dashboard/")
    assert page.url.endswith("/dashboard/login")
    page.fill("#api_key", user.key)
    page.click("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/dashboard/$"))
    balance = units_to_usd(accounts.balance_units(user.id))
    assert Decimal("42") < balance < Decimal("42.75")  # two requests were charged
    assert page.inner_text("[data-testid=balance]") == f"${balance}"  # exact, not rounded
    assert page.inner_text("[data-testid=tier]") == "pro"
    assert page.locator("table[data-testid=recent] tbody tr").count() == 2
    assert page.locator("svg.chart-cost rect.bar").count() == 30
    shot = page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    _screenshot_checks(shot, width=1280)

    page.fill("#code", code)
    page.click("form[action$='/redeem'] button")
    page.wait_for_selector(".flash-success")
    assert "$5.00 was added" in page.inner_text(".flash-success")

    page.click("nav a[href$='/dashboard/keys']")
    page.fill("#name", "ci-runner")
    page.click("form[action$='/keys'] button")
    secret = page.inner_text("[data-testid=new-secret]").strip()
    assert secret.startswith("sk-")
    assert requests.get(gateway.url + "/v1/balance", timeout=10,
                        headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    page.screenshot(path=str(tmp_path / "keys.png"), full_page=True)
    new_row = page.locator("table[data-testid=keys] tbody tr", has_text="ci-runner")
    new_row.locator("button", has_text="Revoke").click()
    page.wait_for_selector(".flash-success")
    assert "Revoked" in page.inner_text(".flash-success")

    page.click("nav button.link")
    page.wait_for_url(re.compile(r"/dashboard/login$"))
    page.goto(gateway.url + "/dashboard/")
    assert page.url.endswith("/dashboard/login")
    cookies = page.context.cookies()
    session = [c for c in cookies if c["name"] == "session"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Lax"


def test_sign_in_page_renders(sqlite_only, gateway, page, tmp_path):
    page.goto(gateway.url + "/dashboard/login")
    assert page.title().startswith("Sign in")
    _screenshot_checks(page.screenshot(path=str(tmp_path / "login.png")), width=1280)
