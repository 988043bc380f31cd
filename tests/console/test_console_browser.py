"""The operator's console in headless Chromium against the real gateway under gunicorn:
every page and action, with screenshots checked; money actions on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
import requests

from tests.console.conftest import screenshot_checks, sign_in
from tests.console.helpers import csv_of, csv_rows, downloaded, money

pytestmark = pytest.mark.slow


def _api(gateway, key: str, method: str, path: str, **kw):
    answer = requests.request(method, gateway.url + path, timeout=30,
                              headers={"Authorization": f"Bearer {key}"}, **kw)
    return answer.status_code, json.loads(answer.text or "null", parse_float=Decimal)


def _chat(gateway, key: str, text: str = "Hello console", model: str = "deepseek-chat"):
    answer = requests.post(gateway.url + "/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": model, "messages": [{"role": "user", "content": text}]})
    assert answer.status_code == 200, answer.text


def _use_up_free_quota(app, account_id: int) -> None:
    """The month's free tokens used up, so that requests are paid in money."""
    from sqlalchemy import update

    from silk.account.models import Account
    from silk.database import utcnow
    from silk.extensions import db

    with app.app_context():
        db.session.execute(update(Account).where(Account.id == account_id).values(
            quota_month=utcnow().strftime("%Y-%m"), quota_used=10_000_000))
        db.session.commit()


def _hold(app, account_id: int, request_id: str):
    """An open hold, as a request in flight makes: $10 at these made-up rates, all of it
    money."""
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering.service import reserve
    from silk.pricing import Price

    _use_up_free_quota(app, account_id)
    with app.app_context():
        return reserve(db.engine, tiers(), account_id=account_id, key_id=None,
                       request_id=request_id, model="deepseek-chat",
                       price=Price(Decimal("1000"), Decimal("1000")), prompt_worst=0,
                       max_output=10_000, prompt_estimate=0, ttl_seconds=600)


def _books_exact(accounts, books, account_id: int) -> list:
    """The ledger sums to the balance and `flask silk audit` passes; the ledger, oldest first."""
    entries = accounts.ledger(account_id)
    assert sum(e.amount_units for e in entries) == accounts.balance_units(account_id)
    assert entries[-1].balance_after_units == accounts.balance_units(account_id)
    code, output = books()
    assert code == 0, output
    assert accounts.audit() == []
    return entries


def _go(page, selector: str) -> None:
    """Click a link or submit button and wait for the page it leads to (a locator read
    straight after a click could still see the page before)."""
    with page.expect_navigation():
        page.click(selector)


def _credit(page, kind: str, amount: str, note: str) -> dict:
    """Fill the credit form and review it; returns the confirmation form's fields."""
    page.select_option("#kind", kind)
    page.fill("#amount", amount)
    page.fill("#note", note)
    _go(page, "form[data-testid=credit-form] button")
    page.wait_for_selector("[data-testid=confirm]")
    form = page.locator("[data-testid=confirm] form")
    return {name: form.locator(f"input[name={name}]").get_attribute("value")
            for name in ("csrf_token", "kind", "amount", "note", "token")}


def test_money_actions_with_confirmation_ledger_and_audit(backend, app, accounts, gateway,
                                                          page, books, tmp_path):
    admin = accounts.make(admin=True, email="ops@example.com")
    user = accounts.make(credit="20", email="ada@example.com")
    accounts.make(email="bob@example.com")
    sign_in(page, gateway, admin.key)

    page.fill("#q", "ada")
    _go(page, "form[role=search] button")
    rows = page.locator("table[data-testid=accounts] tbody tr")
    assert rows.count() == 1
    rows.locator("a", has_text="ada@example.com").click()
    page.wait_for_url(re.compile(rf"/admin/accounts/{user.id}$"))
    assert page.inner_text("[data-testid=balance]") == "$20.00"
    screenshot_checks(page.screenshot(path=str(tmp_path / "account.png"), full_page=True))
    start = len(_books_exact(accounts, books, user.id))

    # A top-up: reviewed, then confirmed; one ledger entry with the note.
    fields = _credit(page, "topup", "5", "goodwill")
    assert page.inner_text("[data-testid=confirm-after]") == "$25.00"
    screenshot_checks(page.screenshot(path=str(tmp_path / "confirm.png"), full_page=True),
                      min_height=500)
    _go(page, "[data-testid=confirm-button]")
    page.wait_for_selector(".flash-success")
    assert page.inner_text("[data-testid=balance]") == "$25.00"
    entries = _books_exact(accounts, books, user.id)
    assert len(entries) == start + 1
    assert (entries[-1].kind, entries[-1].amount_units, entries[-1].note) == (
        "topup", 5_000_000_000, "goodwill")
    assert entries[-1].actor == f"console:key:{admin.key_id}"
    assert "goodwill" in page.inner_text("table[data-testid=ledger] tbody tr:first-child")

    # The same confirmation sent again (a double click, a resubmitted page) pays nothing more.
    again = page.request.post(gateway.url + f"/admin/accounts/{user.id}/credit/confirm",
                              form=fields)
    assert again.ok and "already applied" in again.text()
    assert len(_books_exact(accounts, books, user.id)) == start + 1
    assert accounts.balance_units(user.id) == 25_000_000_000

    # A refund and a negative adjustment, each one exact entry.
    _credit(page, "refund", "2.50", "bad answer")
    _go(page, "[data-testid=confirm-button]")
    page.wait_for_selector(".flash-success")
    _credit(page, "adjustment", "-7.25", "correction")
    _go(page, "[data-testid=confirm-button]")
    page.wait_for_selector(".flash-success")
    assert page.inner_text("[data-testid=balance]") == "$20.25"
    entries = _books_exact(accounts, books, user.id)
    assert [(e.kind, e.amount_units) for e in entries[-2:]] == [
        ("refund", 2_500_000_000), ("adjustment", -7_250_000_000)]

    # Never below what open holds need: with $10 held, taking $10.26 is refused.
    _hold(app, user.id, "console-open-hold")
    page.reload()
    assert page.inner_text("[data-testid=held]") == "$10.00"
    assert page.locator("table[data-testid=holds] tbody tr", has_text="console-open-hold").count()
    _credit(page, "adjustment", "-10.26", "too much")
    assert page.locator("[data-testid=confirm] .flash-error").count() == 1  # warned first
    _go(page, "[data-testid=confirm-button]")
    page.wait_for_selector(".flash-error")
    assert page.inner_text("[data-testid=balance]") == "$20.25"
    assert len(_books_exact(accounts, books, user.id)) == len(entries)
    # Down to exactly what is held is allowed.
    _credit(page, "adjustment", "-10.25", "down to the hold")
    _go(page, "[data-testid=confirm-button]")
    page.wait_for_selector(".flash-success")
    assert accounts.balance_units(user.id) == 10_000_000_000
    assert len(_books_exact(accounts, books, user.id)) == len(entries) + 1
    screenshot_checks(page.screenshot(path=str(tmp_path / "after.png"), full_page=True))


def test_usage_tables_and_csv_totals_equal_the_api(backend, app, accounts, gateway, page,
                                                   books, tmp_path):
    admin = accounts.make(admin=True, email="ops@example.com")
    ada = accounts.make(credit="30", email="ada@example.com")
    bob = accounts.make(credit="30", email="bob@example.com")
    _use_up_free_quota(app, ada.id)
    _use_up_free_quota(app, bob.id)
    for key, model in ((ada.key, "deepseek-chat"), (ada.key, "deepseek-reasoner"),
                       (bob.key, "deepseek-chat")):
        _chat(gateway, key, "Count the tokens [[fake: pieces=12]]", model)
    sign_in(page, gateway, admin.key)
    _go(page, "nav a[href$='/admin/usage']")
    page.wait_for_selector("table[data-testid=usage-account]")
    days = page.locator("svg.chart-cost rect.bar").count()
    assert 28 <= days <= 31
    assert page.locator("svg.chart-tokens rect.bar").count() == days
    screenshot_checks(page.screenshot(path=str(tmp_path / "usage.png"), full_page=True))

    status, api = _api(gateway, admin.key, "GET", "/v1/admin/usage")
    assert status == 200
    api_cost = sum(money(row["cost"]) for row in api["by_account"])
    assert api_cost > 0
    assert page.inner_text("[data-testid=total-cost-account]") == f"${api_cost}"
    for table, key in (("account", "by_account"), ("model", "by_model"), ("day", "by_day")):
        with page.expect_download() as download:
            page.click(f"[data-testid=csv-{table}]")
        header, rows, total = csv_rows(downloaded(download))
        assert header[0] == table and header[-1] == "cost_usd"
        assert len(rows) == len(api[key])
        for column, field in (("requests", "requests"), ("total_tokens", "total_tokens"),
                              ("failed_requests", "failed_requests")):
            index = header.index(column)
            assert int(total[index]) == sum(row[field] for row in api[key])
            assert int(total[index]) == sum(int(row[index]) for row in rows)
        assert money(total[-1]) == api_cost == sum(money(row[-1]) for row in rows)
        assert {row[0] for row in rows} == {str(row.get("account") or row.get("model") or
                                                row.get("date")) for row in api[key]}

    status, margin = _api(gateway, admin.key, "GET", "/v1/admin/margin?by=provider")
    assert status == 200
    _go(page, "a[href*='by=provider']")
    page.wait_for_selector("table[data-testid=margin]")
    with page.expect_download() as download:
        page.click("[data-testid=csv-margin]")
    header, rows, total = csv_rows(downloaded(download))
    assert header == ["provider", "requests", "revenue_usd", "upstream_cost_usd", "margin_usd"]
    assert int(total[1]) == margin["total"]["requests"]
    assert money(total[2]) == money(margin["total"]["revenue"])
    assert money(total[3]) == money(margin["total"]["upstream_cost"])
    assert money(total[4]) == money(margin["total"]["margin"])
    assert len(rows) == len(margin["data"])

    _go(page, "[data-testid=run-audit]")
    page.wait_for_selector("[data-testid=audit-result]")
    assert "no problems" in page.inner_text("[data-testid=audit-result]")
    assert books()[0] == 0
    screenshot_checks(page.screenshot(path=str(tmp_path / "audit.png")), min_height=600)


def test_accounts_keys_tier_and_state(sqlite_only, app, accounts, gateway, page, books,
                                      tmp_path):
    admin = accounts.make(admin=True, email="ops@example.com")
    sign_in(page, gateway, admin.key)
    screenshot_checks(page.screenshot(path=str(tmp_path / "accounts.png"), full_page=True))

    # Create an account with an opening credit: its first key is shown once and works.
    page.fill("#email", "new@example.com")
    page.select_option("#tier", "free")
    page.fill("#credit", "3")
    _go(page, "form[data-testid=create-account] button")
    page.wait_for_selector("[data-testid=new-secret]")
    first = page.inner_text("[data-testid=new-secret]").strip()
    account_id = int(re.search(r"Account (\d+)", page.inner_text(".page-head")).group(1))
    status, body = _api(gateway, first, "GET", "/v1/balance")
    assert (status, body["balance"]) == (200, Decimal("3"))
    assert _books_exact(accounts, books, account_id)[-1].amount_units == 3_000_000_000
    page.goto(gateway.url + f"/admin/accounts/{account_id}")

    # Tier, then disable and enable: the API sees each at once.
    page.select_option("#tier", "pro")
    _go(page, "form[data-testid=tier-form] button")
    page.wait_for_selector(".flash-success")
    assert page.inner_text("[data-testid=tier]") == "pro"
    assert _api(gateway, admin.key, "GET", f"/v1/admin/accounts/{account_id}")[1]["tier"] == "pro"
    _go(page, "form[data-testid=status-form] button")
    page.wait_for_selector(".flash-success")
    assert page.inner_text("[data-testid=state]") == "disabled"
    assert _api(gateway, first, "GET", "/v1/balance")[0] in (401, 403)
    _go(page, "form[data-testid=status-form] button")
    page.wait_for_selector(".flash-success")
    assert page.inner_text("[data-testid=state]") == "active"
    # (A worker that refused the key keeps refusing it for a while without Redis; the
    # account itself is enabled at once.)
    assert _api(gateway, admin.key, "GET",
                f"/v1/admin/accounts/{account_id}")[1]["disabled"] is False

    # A key with every option the API has.
    page.click("details summary")
    page.fill("#key-name", "ci-runner")
    page.select_option("#key-models", ["deepseek-chat"])
    page.fill("#key-rpm_limit", "7")
    page.fill("#key-tpm_limit", "7000")
    page.fill("#key-expires_in_days", "3")
    page.select_option("#key-role", "member")
    page.fill("#key-spend_caps-day", "1")
    page.fill("#key-spend_caps-month", "2.5")
    page.fill("#key-spend_caps-total", "5")
    _go(page, "form[data-testid=create-key] button")
    secret = page.inner_text("[data-testid=new-secret]").strip()
    assert secret.startswith("sk-")
    _, listed = _api(gateway, admin.key, "GET", f"/v1/admin/accounts/{account_id}/keys")
    made = next(k for k in listed["data"] if k["name"] == "ci-runner")
    assert made["models"] == ["deepseek-chat"] if "models" in made else True
    assert (made["rpm_limit"], made["tpm_limit"]) == (7, 7000)
    assert made["expires_at"]
    assert made["role"] == "member"
    assert made["spend_caps"] == {"day": 1, "month": Decimal("2.5"), "total": 5}
    _chat(gateway, secret)
    status, refused = _api(gateway, secret, "GET", "/v1/balance")  # a member key's limits
    assert (status, refused["error"]["code"]) == (403, "owner_key_required")
    # The account's page shows the role and the spend against each cap.
    row = page.locator("table[data-testid=keys] tbody tr", has_text="ci-runner")
    assert row.locator("[data-testid=key-role]").inner_text() == "member"
    caps = row.locator("[data-testid=key-caps]").inner_text()
    assert "of $1.00" in caps and "of $2.50" in caps and "of $5.00" in caps

    # The keys page shows its last use, role and caps; revoking it there stops it.
    _go(page, "nav a[href$='/admin/keys']")
    row = page.locator("table[data-testid=all-keys] tbody tr", has_text="ci-runner")
    assert row.locator("[data-testid=last-used]").inner_text() != "—"
    assert row.locator("[data-testid=key-role]").inner_text() == "member"
    assert "total $" in row.locator("[data-testid=key-caps]").inner_text()
    screenshot_checks(page.screenshot(path=str(tmp_path / "keys.png"), full_page=True),
                      min_height=500)
    with page.expect_navigation():
        row.locator("button", has_text="Revoke").click()
    assert "Revoked" in page.inner_text(".flash-success")
    assert _api(gateway, secret, "GET", "/v1/balance")[0] == 401


def test_codes_issued_once_with_csv_and_listed_by_state(sqlite_only, app, accounts, gateway,
                                                        page, books, tmp_path):
    admin = accounts.make(admin=True, email="ops@example.com")
    user = accounts.make(email="ada@example.com")
    sign_in(page, gateway, admin.key)
    _go(page, "nav a[href$='/admin/codes']")
    page.fill("#rc-amount", "2.50")
    page.fill("#rc-count", "3")
    page.fill("#rc-note", "meetup")
    _go(page, "form[data-testid=issue-redemption] button")
    page.wait_for_selector("[data-testid=issued]")
    shown = [c.strip() for c in page.locator("[data-testid=issued-codes] code").all_inner_texts()]
    assert len(shown) == 3 and all(c.startswith("silk-rc") for c in shown)
    screenshot_checks(page.screenshot(path=str(tmp_path / "issued.png"), full_page=True),
                      min_height=500)
    with page.expect_download() as download:
        page.click("[data-testid=issued-csv]")
    rows = csv_of(download)
    assert rows[0] == ["code", "amount_usd", "expires_at", "note"]
    assert [r[0] for r in rows[1:]] == shown
    assert {money(r[1]) for r in rows[1:]} == {Decimal("2.50")}

    status, body = _api(gateway, user.key, "POST", "/v1/topup", json={"code": shown[0]})
    assert status == 200 and body["credited"] == Decimal("2.5")
    _books_exact(accounts, books, user.id)
    page.goto(gateway.url + "/admin/codes?state=redeemed")
    assert page.locator("table[data-testid=redemption-codes] tbody tr").count() == 1
    _go(page, "nav[aria-label='Redemption code state'] a:text-is('unused')")
    page.wait_for_url(re.compile(r"state=unused"))
    assert page.locator("table[data-testid=redemption-codes] tbody tr").count() == 2

    page.fill("#inv-count", "2")
    page.fill("#inv-uses", "5")
    page.select_option("#inv-tier", "pro")
    _go(page, "form[data-testid=issue-invites] button")
    page.wait_for_selector("[data-testid=issued]")
    invites = [c.strip() for c in page.locator("[data-testid=issued-codes] code").all_inner_texts()]
    assert len(invites) == 2
    with page.expect_download() as download:
        page.click("[data-testid=issued-csv]")
    rows = csv_of(download)
    assert [r[0] for r in rows[1:]] == invites and {r[2] for r in rows[1:]} == {"pro"}
    page.goto(gateway.url + "/admin/codes?invite_state=usable")
    table = page.locator("table[data-testid=invite-codes] tbody tr")
    assert table.count() == 2 and "pro" in table.first.inner_text()
    screenshot_checks(page.screenshot(path=str(tmp_path / "codes.png"), full_page=True))


def test_tiers_and_prices(sqlite_only, app, accounts, gateway, page, tmp_path):
    admin = accounts.make(admin=True, email="ops@example.com")
    sign_in(page, gateway, admin.key)
    _go(page, "nav a[href$='/admin/tiers']")
    pricing = requests.get(gateway.url + "/v1/pricing", timeout=10).json()
    shown = page.locator("table[data-testid=catalogue] tbody tr[data-model]")
    assert shown.count() == len(pricing["models"])
    first = pricing["models"][0]
    row = page.locator(f"table[data-testid=catalogue] tr[data-model='{first['id']}']")
    assert str(first["input"]) in row.inner_text()
    page.fill("#tier-name", "startup")
    page.fill("#tier-discount", "12.5")
    page.fill("#tier-free", "250000")
    _go(page, "form[data-testid=tier-edit] button")
    page.wait_for_selector(".flash-success")
    assert "startup" in page.inner_text("table[data-testid=tiers]")
    _, tiers = _api(gateway, admin.key, "GET", "/v1/admin/tiers")
    startup = next(t for t in tiers["data"] if t["name"] == "startup")
    assert (startup["discount_percent"], startup["monthly_free_tokens"]) == (12.5, 250000) or (
        money(startup["discount_percent"]), startup["monthly_free_tokens"]) == (
        Decimal("12.5"), 250000)
    page.fill("#tier-name", "bad name!")
    page.fill("#tier-discount", "150")
    page.fill("#tier-free", "1")
    _go(page, "form[data-testid=tier-edit] button")
    page.wait_for_selector(".flash-error")
    screenshot_checks(page.screenshot(path=str(tmp_path / "tiers.png"), full_page=True))


def test_now_refreshes_without_reloading(sqlite_only, app, accounts, gateway, page, tmp_path):
    admin = accounts.make(admin=True, email="ops@example.com")
    user = accounts.make(credit="5", email="ada@example.com")
    sign_in(page, gateway, admin.key)
    _go(page, "nav a[href$='/admin/now']")
    page.wait_for_selector("#now[data-polls]")
    page.evaluate("window.consoleMarker = 'same page'")
    before = int(page.inner_text("[data-now=requests]"))
    for _ in range(3):
        _chat(gateway, user.key)
    # Functions, not strings: the page's CSP forbids evaluating a string.
    page.wait_for_function(
        "(n) => Number(document.querySelector('[data-now=requests]').textContent) >= n",
        arg=before + 3, timeout=20_000)
    page.wait_for_function(
        "() => document.querySelector('[data-now=rate]').textContent !== '—'",
        timeout=20_000)
    assert page.evaluate("window.consoleMarker") == "same page"  # not reloaded
    _, providers = _api(gateway, admin.key, "GET", "/v1/admin/providers")
    assert page.locator("table[data-testid=routes] tbody tr").count() == len(providers["routes"])
    assert page.locator("table[data-testid=provider-keys] tbody tr").count() == len(
        providers["keys"])
    assert "serving" in page.inner_text("table[data-testid=routes]")
    screenshot_checks(page.screenshot(path=str(tmp_path / "now.png"), full_page=True))


def test_non_admin_revoked_and_cross_site_are_refused(sqlite_only, app, accounts, gateway,
                                                      page, tmp_path):
    admin = accounts.make(admin=True, email="ops@example.com")
    other = accounts.make(admin=True, email="ops2@example.com")
    user = accounts.make(credit="5", email="ada@example.com")

    # A customer's key does not open the console.
    page.goto(gateway.url + "/admin/login")
    page.fill("#api_key", user.key)
    _go(page, "button[type=submit].primary")
    assert page.url.endswith("/admin/login")
    assert "not an admin" in page.inner_text(".flash-error")
    page.goto(gateway.url + "/admin/accounts")
    assert page.url.endswith("/admin/login")
    screenshot_checks(page.screenshot(path=str(tmp_path / "refused-login.png")))

    # An admin signed in whose key is then revoked can do nothing more.
    sign_in(page, gateway, other.key)
    page.goto(gateway.url + f"/admin/accounts/{user.id}")
    assert _api(gateway, admin.key, "DELETE", f"/v1/admin/keys/{other.key_id}")[0] == 200
    _go(page, "form[data-testid=status-form] button")
    page.wait_for_url(re.compile(r"/admin/login$"))
    assert accounts.row(user.id).disabled is False

    # A form on another site posting into a signed-in console is refused.
    sign_in(page, gateway, admin.key)
    evil = ("<html><body><form id=f method=post action='"
            f"{gateway.url}/admin/accounts/{user.id}/status'>"
            "<input name=disabled value=1><input name=csrf_token value=guess></form>"
            "<script>document.getElementById('f').submit()</script></body></html>")
    page.route("http://evil.example/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body=evil))
    with page.expect_response(re.compile(r"/status$")) as answer:
        page.goto("http://evil.example/attack")
    assert answer.value.status == 403
    assert "another site" in page.inner_text("[data-testid=refused]")
    assert accounts.row(user.id).disabled is False
    # The same post with the session's own cookie and token but another Origin: refused too.
    page.goto(gateway.url + f"/admin/accounts/{user.id}")
    token = page.locator("form[data-testid=status-form] input[name=csrf_token]").get_attribute(
        "value")
    forged = page.request.post(gateway.url + f"/admin/accounts/{user.id}/status",
                               form={"disabled": "1", "csrf_token": token},
                               headers={"Origin": "http://evil.example"})
    assert forged.status == 403
    assert accounts.row(user.id).disabled is False
