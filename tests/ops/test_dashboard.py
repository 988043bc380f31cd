"""The dashboard through Flask's client: sign-in, CSRF, money shown, keys, codes."""

from __future__ import annotations

import re

import pytest

from tests.ops.helpers import csrf_from, sign_in


def _chat(client, key: str, text: str = "Hello dashboard"):
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "deepseek-chat", "stream": False,
                             "messages": [{"role": "user", "content": text}]})


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get("/dashboard/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/dashboard/login")
    page = client.get("/dashboard/login")
    assert page.status_code == 200
    assert 'name="api_key"' in page.text and 'type="password"' in page.text


def test_sign_in_shows_balance_tier_and_quota(client, accounts):
    user = accounts.make(tier="pro", credit="12.50")
    response = sign_in(client, user.key)
    assert response.status_code == 302
    page = client.get("/dashboard/")
    assert page.status_code == 200
    assert '>$12.50</p>' in page.text and 'data-testid="balance-exact">$12.50<' in page.text
    assert 'data-testid="tier">pro<' in page.text
    assert "10% discount" in page.text
    assert 'data-testid="quota-remaining">1,000,000<' in page.text
    assert "No requests yet" in page.text
    assert user.key not in page.text


def test_a_bad_key_is_refused_without_a_session(client, accounts):
    accounts.make()
    response = sign_in(client, "sk-" + "x" * 48)
    assert response.status_code == 401
    assert "not valid" in response.text
    assert client.get("/dashboard/").status_code == 302


def test_session_cookie_is_http_only_same_site_lax_and_secure_on_https(app, accounts):
    user = accounts.make(credit="1")
    plain = app.test_client()
    cookie = sign_in(plain, user.key).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    tls = app.test_client()
    page = tls.get("/dashboard/login", base_url="https://gateway.test")
    response = tls.post("/dashboard/login", base_url="https://gateway.test",
                        data={"api_key": user.key, "csrf_token": csrf_from(page.text)})
    assert "Secure" in response.headers["Set-Cookie"]


def test_posts_need_the_session_csrf_token(client, accounts):
    user = accounts.make(credit="1")
    client.get("/dashboard/login")
    refused = client.post("/dashboard/login", data={"api_key": user.key})
    assert refused.status_code == 400
    assert client.get("/dashboard/").status_code == 302
    sign_in(client, user.key)
    forged = client.post("/dashboard/keys", data={"name": "evil", "csrf_token": "guess"})
    assert forged.status_code == 400
    keys = client.get("/dashboard/keys").text
    assert "evil" not in keys


def test_cross_origin_posts_are_refused_even_with_a_token(client, accounts):
    user = accounts.make(credit="1")
    sign_in(client, user.key)
    token = csrf_from(client.get("/dashboard/keys").text)
    response = client.post("/dashboard/keys", data={"name": "evil", "csrf_token": token},
                           headers={"Origin": "https://attacker.example"})
    assert response.status_code == 403
    assert "evil" not in client.get("/dashboard/keys").text


def test_sign_in_replaces_the_csrf_token(client, accounts):
    user = accounts.make(credit="1")
    before = csrf_from(client.get("/dashboard/login").text)
    client.post("/dashboard/login", data={"api_key": user.key, "csrf_token": before})
    after = csrf_from(client.get("/dashboard/keys").text)
    assert after != before


def test_pages_carry_security_headers(client, accounts):
    sign_in(client, accounts.make().key)
    response = client.get("/dashboard/")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


def _use_up_free_quota(app, account_id: int) -> None:
    from sqlalchemy import update

    from silk.account.models import Account
    from silk.database import utcnow
    from silk.extensions import db

    with app.app_context():
        db.session.execute(update(Account).where(Account.id == account_id).values(
            quota_month=utcnow().strftime("%Y-%m"), quota_used=100_000))
        db.session.commit()


def test_usage_appears_in_the_chart_and_recent_requests(app, client, accounts):
    user = accounts.make(credit="5")
    _use_up_free_quota(app, user.id)
    assert _chat(client, user.key).status_code == 200
    assert _chat(client, user.key, "Once more please").status_code == 200
    sign_in(client, user.key)
    page = client.get("/dashboard/").text
    rows = re.findall(r"<tr>\s*<td>\d{4}-\d\d-\d\d \d\d:\d\d</td>", page)
    assert len(rows) == 2
    assert "deepseek-chat" in page
    heights = [float(h) for h in re.findall(r'class="bar"[^>]*height="([\d.]+)"', page)]
    assert len(heights) == 60  # 30 days of cost, 30 of tokens
    assert sum(1 for h in heights if h > 0) == 2  # today's bar in each chart
    assert "No usage in the last 30 days" not in page
    assert re.search(r'data-testid="month-cost" title="\$0\.0000\d+">&lt; \$0.01<', page)
    assert "Hello dashboard" not in page  # prompts are never shown


def test_create_a_key_shows_it_once_and_it_works(client, accounts):
    user = accounts.make(credit="1")
    sign_in(client, user.key)
    token = csrf_from(client.get("/dashboard/keys").text)
    created = client.post("/dashboard/keys", data={"name": "laptop", "csrf_token": token})
    assert created.status_code == 200
    secret = re.search(r'data-testid="new-secret">(sk-[^<]+)<', created.text).group(1)
    assert client.get("/v1/balance", headers={"Authorization": f"Bearer {secret}"}).json == {
        "balance": 1, "currency": "USD"}
    listing = client.get("/dashboard/keys").text
    assert "laptop" in listing and secret not in listing and secret[:10] in listing


def test_revoke_a_key_stops_it_and_revoking_your_own_signs_out(client, accounts):
    user = accounts.make(credit="1")
    sign_in(client, user.key)
    token = csrf_from(client.get("/dashboard/keys").text)
    created = client.post("/dashboard/keys", data={"name": "spare", "csrf_token": token})
    secret = re.search(r'data-testid="new-secret">(sk-[^<]+)<', created.text).group(1)
    spare_id = int(re.findall(r'data-testid="revoke-(\d+)"', created.text)[0])
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/balance", headers=headers).status_code == 200
    revoked = client.post(f"/dashboard/keys/{spare_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 302
    assert client.get("/v1/balance", headers=headers).status_code == 401
    assert "revoked" in client.get("/dashboard/keys").text
    own = client.post(f"/dashboard/keys/{user.key_id}/revoke", data={"csrf_token": token})
    assert own.headers["Location"].endswith("/dashboard/login")
    assert client.get("/dashboard/").status_code == 302


def test_cannot_revoke_another_accounts_key(client, accounts):
    user, other = accounts.make(), accounts.make()
    sign_in(client, user.key)
    token = csrf_from(client.get("/dashboard/keys").text)
    client.post(f"/dashboard/keys/{other.key_id}/revoke", data={"csrf_token": token})
    assert client.get("/v1/balance", headers=other.headers).status_code == 200


def test_a_session_ends_when_its_key_is_revoked_elsewhere(app, client, accounts):
    from silk.account.service import revoke_key

    user = accounts.make()
    sign_in(client, user.key)
    assert client.get("/dashboard/").status_code == 200
    with app.app_context():
        revoke_key(user.key_id)
    assert client.get("/dashboard/").status_code == 302


def test_redeem_a_code_adds_to_the_balance_once(app, client, accounts):
    from silk.billing.codes import issue_codes

    user = accounts.make(credit="1")
    with app.app_context():
        code = issue_codes(2_500_000_000)[0].code
    sign_in(client, user.key)
    token = csrf_from(client.get("/dashboard/").text)
    done = client.post("/dashboard/redeem", data={"code": code, "csrf_token": token},
                       follow_redirects=True)
    assert "$2.50 was added" in done.text
    assert 'data-testid="balance-exact">$3.50<' in done.text
    again = client.post("/dashboard/redeem", data={"code": code, "csrf_token": token},
                        follow_redirects=True)
    assert "already been used" in again.text
    assert accounts.audit() == []


@pytest.mark.parametrize("value, short", [("0", "$0.00"), ("42.749884656", "$42.74"),
                                          ("0.000115", "< $0.01"), ("1234.567", "$1,234.56")])
def test_short_usd_never_rounds_up(value, short):
    from decimal import Decimal

    from silk.web.formats import usd_short

    assert usd_short(Decimal(value)) == short


@pytest.mark.parametrize("value, text", [("0", "$0.00"), ("10.5", "$10.50"),
                                         ("0.0000042", "$0.0000042"), ("1234.5", "$1,234.50")])
def test_usd_format(value, text):
    from decimal import Decimal

    from silk.web.formats import usd

    assert usd(Decimal(value)) == text


@pytest.fixture
def strict_auth(app_config):
    """Block an address after three failed key checks a minute."""
    app_config["SILK_AUTH_FAILURES_PER_MINUTE"] = 3


def test_guessing_keys_at_sign_in_is_limited_like_the_api(strict_auth, client, accounts):
    user = accounts.make()
    statuses = [sign_in(client, "sk-" + "g" * 48).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert "Too many failed" in sign_in(client, user.key).text  # even a good key waits
    assert client.get("/v1/models", headers=user.headers).status_code == 429
