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
    assert 'data-testid="balance">$12.50</p>' in page.text
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


@pytest.mark.parametrize("path", ["/dashboard/login", "/admin/login", "/register/"])
@pytest.mark.parametrize("origin", ["http://[", "https://[::1"])
def test_an_origin_python_cannot_split_is_refused_not_a_500(client, path, origin):
    """An unclosed IPv6 bracket made urlsplit raise in the form POSTs' origin checks."""
    response = client.post(path, data={"email": "a@example.com"}, headers={"Origin": origin})
    assert response.status_code == 403


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
    assert re.search(r'data-testid="month-cost">\$0\.0000\d+<', page)  # exact, below a cent
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


def test_the_session_lasts_what_the_environment_says(app, accounts, monkeypatch):
    """SILK_DASHBOARD_SESSION_HOURS was read only from the instance file (12 hours
    otherwise): not a setting, the environment could not shorten a session."""
    from silk import create_app
    from silk.extensions import db

    monkeypatch.setenv("SILK_DASHBOARD_SESSION_HOURS", "0.5")
    other = create_app({**app.config, "SILK_SWEEP_INTERVAL": 0})
    user = accounts.make(credit="1")
    shown = []
    for minutes in (29, 31):
        client = other.test_client()
        sign_in(client, user.key)
        with client.session_transaction() as session:
            session["since"] -= minutes * 60
        shown.append(client.get("/dashboard/").status_code)
    with other.app_context():
        db.engine.dispose()
    assert shown == [200, 302]


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
    assert 'data-testid="balance">$3.50<' in done.text
    again = client.post("/dashboard/redeem", data={"code": code, "csrf_token": token},
                        follow_redirects=True)
    assert "already been used" in again.text
    assert accounts.audit() == []


@pytest.mark.parametrize("value, text", [
    ("0", "$0.00"), ("10.5", "$10.50"), ("0.0000042", "$0.0000042"), ("1234.5", "$1,234.50"),
    ("42.749884656", "$42.749884656"), ("0.000115", "$0.000115"), ("1234.567", "$1,234.567"),
    ("999.999", "$999.999"), ("100.005", "$100.005"), ("0.000000001", "$0.000000001"),
    ("-2.5", "$-2.50"), ("12", "$12.00"), ("0.01", "$0.01")])
def test_money_is_never_shown_as_a_different_amount(value, text):
    """Exact to the cent at least, every sub-cent digit shown: never rounded, never floored."""
    from decimal import Decimal

    from silk.web.formats import units, usd

    assert usd(Decimal(value)) == text
    assert Decimal(text.lstrip("$").replace(",", "")) == Decimal(value)
    assert units(int(Decimal(value) * 10**9)) == text


def test_the_pages_format_money_in_one_place():
    """Every page writes money through silk.web.formats.usd (the dash_usd filter)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "silk"
    for path in [*root.glob("web/*.py"), *root.glob("templates/**/*.html")]:
        if path.name == "formats.py":
            continue  # the one place
        text = path.read_text()
        assert not re.search(r":,?\.[0-9]f", text), path
        assert "usd_short" not in text, path


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


def _key_with_scope(client, owner, **limits) -> tuple[str, int]:
    """A key of `owner`'s account made through the API with `limits`: (secret, id)."""
    body = client.post("/v1/keys", json={"name": "limited", **limits},
                       headers=owner.headers).json
    return body["key"], body["id"]


def _key_row(app, key_id: int):
    from silk.account.models import ApiKey
    from silk.extensions import db

    with app.app_context():
        key = db.session.get(ApiKey, key_id)
        db.session.remove()
        return key


def _made_id(page: str) -> int:
    return max(int(i) for i in re.findall(r'data-testid="revoke-(\d+)"', page))


LIMITED = {"models": ["deepseek-chat"], "rpm_limit": 2, "expires_in_days": 1}


@pytest.mark.parametrize("form", [
    {},  # no limits asked for: the session key's limits are inherited
    {"models": ["deepseek-chat", "mimo-v2.5"]},
    {"models": "mimo-v2.5"},
    {"rpm_limit": "3"},
    {"rpm_limit": "1", "models": "deepseek-reasoner"},
    {"expires_in_days": "2"},
])
def test_a_limited_key_cannot_make_a_wider_key_in_the_dashboard(app, client, accounts, form):
    owner = accounts.make(credit="1")
    secret, limited_id = _key_with_scope(client, owner, **LIMITED)
    limited = _key_row(app, limited_id)
    sign_in(client, secret)
    token = csrf_from(client.get("/dashboard/keys").text)
    made = client.post("/dashboard/keys", data={"name": "wide", "csrf_token": token, **form})
    if not form:
        assert made.status_code == 200
        child = _key_row(app, _made_id(made.text))
        assert child.allowed_models == ["deepseek-chat"]
        assert child.rpm_limit == 2 and child.tpm_limit is None
        assert child.expires_at == limited.expires_at
        return
    assert made.status_code == 403, made.text
    assert 'class="flash flash-error"' in made.text and "may not" in made.text
    assert 'data-testid="new-secret"' not in made.text
    listed = client.get("/v1/keys", headers=owner.headers).json["data"]
    assert [k["id"] for k in listed] == [limited_id, owner.key_id]


def test_a_limited_key_may_make_a_narrower_key_in_the_dashboard(app, client, accounts):
    owner = accounts.make(credit="1")
    secret, _ = _key_with_scope(client, owner, models=["deepseek-chat", "mimo-v2.5"],
                                rpm_limit=5, expires_in_days=2)
    sign_in(client, secret)
    token = csrf_from(client.get("/dashboard/keys").text)
    made = client.post("/dashboard/keys", data={
        "name": "narrow", "csrf_token": token, "models": "mimo-v2.5", "rpm_limit": "4",
        "tpm_limit": "100", "expires_in_days": "1"})
    assert made.status_code == 200
    child = _key_row(app, _made_id(made.text))
    assert (child.allowed_models, child.rpm_limit, child.tpm_limit) == (["mimo-v2.5"], 4, 100)


def test_a_limited_key_cannot_revoke_the_owners_key_in_the_dashboard(app, client, accounts):
    owner = accounts.make(credit="1")
    secret, limited_id = _key_with_scope(client, owner, **LIMITED)
    child = client.post("/v1/keys", json={"name": "child"},
                        headers={"Authorization": f"Bearer {secret}"}).json
    sibling, sibling_id = child["key"], child["id"]  # its limits are the session key's
    sign_in(client, secret)
    token = csrf_from(client.get("/dashboard/keys").text)
    refused = client.post(f"/dashboard/keys/{owner.key_id}/revoke", data={"csrf_token": token},
                          follow_redirects=True)
    assert "may not revoke a key with wider access" in refused.text
    assert _key_row(app, owner.key_id).revoked_at is None
    assert client.get("/v1/balance", headers=owner.headers).status_code == 200
    # A key no wider than the session's may go.
    client.post(f"/dashboard/keys/{sibling_id}/revoke", data={"csrf_token": token})
    assert client.get("/v1/balance", headers={"Authorization": f"Bearer {sibling}"}
                      ).status_code == 401
    assert _key_row(app, limited_id).revoked_at is None


def test_the_owners_key_can_still_make_and_revoke_any_key(app, client, accounts):
    owner = accounts.make(credit="1")
    secret, limited_id = _key_with_scope(client, owner, **LIMITED)
    sign_in(client, owner.key)
    token = csrf_from(client.get("/dashboard/keys").text)
    made = client.post("/dashboard/keys", data={"name": "wide", "csrf_token": token,
                                                "rpm_limit": "1000", "expires_in_days": "30"})
    assert made.status_code == 200
    child = _key_row(app, _made_id(made.text))
    assert (child.allowed_models, child.rpm_limit) == (None, 1000)
    unlimited = client.post("/dashboard/keys", data={"name": "open", "csrf_token": token})
    child = _key_row(app, _made_id(unlimited.text))
    assert (child.allowed_models, child.rpm_limit, child.expires_at) == (None, None, None)
    client.post(f"/dashboard/keys/{limited_id}/revoke", data={"csrf_token": token})
    assert client.get("/v1/balance", headers={"Authorization": f"Bearer {secret}"}
                      ).status_code == 401


@pytest.mark.parametrize("field, value", [("rpm_limit", "two"), ("tpm_limit", "-1"),
                                          ("expires_in_days", "0"), ("models", "no-such")])
def test_bad_create_key_fields_are_shown_not_500s(client, accounts, field, value):
    owner = accounts.make(credit="1")
    sign_in(client, owner.key)
    token = csrf_from(client.get("/dashboard/keys").text)
    made = client.post("/dashboard/keys", data={"csrf_token": token, field: value})
    assert made.status_code == 400
    assert f"Invalid &#39;{field}&#39;" in made.text


@pytest.mark.parametrize("path, form", [
    ("/dashboard/keys/99999999999999999999/revoke", {}),
    ("/dashboard/keys", {"rpm_limit": "999999999999"}),  # past PostgreSQL's integer column
    ("/dashboard/keys", {"name": "ci\x00"}),             # PostgreSQL's text holds no NUL
])
def test_values_no_column_holds_are_a_dashboard_page_not_the_apis_json(client, accounts,
                                                                        path, form):
    owner = accounts.make(credit="1")
    sign_in(client, owner.key)
    token = csrf_from(client.get("/dashboard/keys").text)
    answer = client.post(path, data={"csrf_token": token, **form}, follow_redirects=True)
    assert answer.status_code < 500
    assert answer.mimetype == "text/html", answer.get_data()[:300]
    assert client.get("/dashboard/keys").status_code == 200  # the session goes on


def _replayed(app, cookie: str, path: str = "/dashboard/"):
    """GET `path` with a copy of a session cookie, as whoever copied it would send it."""
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    return thief.get(path)


def _end_by(app, user, how: str) -> None:
    """End `user`'s key or account by `how`, outside the session being tested."""
    from datetime import timedelta

    from sqlalchemy import update

    from silk.account import service
    from silk.account.models import ApiKey
    from silk.billing.tiers import tiers
    from silk.database import utcnow
    from silk.extensions import db

    with app.app_context():
        if how == "revoked":
            service.revoke_key(user.key_id)
        elif how == "expired":
            db.session.execute(update(ApiKey).where(ApiKey.id == user.key_id)
                               .values(expires_at=utcnow() - timedelta(seconds=1)))
            db.session.commit()
        else:  # disabled, then (for "disabled-enabled") enabled again
            service.update_account(user.id, known_tiers=tiers(), disabled=True)
            if how == "disabled-enabled":
                service.update_account(user.id, known_tiers=tiers(), disabled=False)
        db.session.remove()


def test_a_copied_session_cookie_stops_working_at_sign_out(app, client, accounts):
    user = accounts.make()
    sign_in(client, user.key)
    copied = client.get_cookie("session").value
    assert _replayed(app, copied).status_code == 200
    token = csrf_from(client.get("/dashboard/").text)
    assert client.post("/dashboard/logout", data={"csrf_token": token}).status_code == 302
    assert _replayed(app, copied).status_code == 302
    sign_in(client, user.key)  # a new session with the same key works; the copy stays out
    assert client.get("/dashboard/").status_code == 200
    assert _replayed(app, copied).status_code == 302


@pytest.mark.parametrize("how", ["revoked", "expired", "disabled", "disabled-enabled"])
def test_a_copied_session_cookie_stops_working_when_its_key_or_account_ends(app, client,
                                                                             accounts, how):
    user = accounts.make()
    sign_in(client, user.key)
    copied = client.get_cookie("session").value
    assert _replayed(app, copied).status_code == 200
    _end_by(app, user, how)
    assert _replayed(app, copied).status_code == 302
    assert client.get("/dashboard/").status_code == 302
