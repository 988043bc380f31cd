"""The console's guard and bad input, through Flask's client: who may sign in, what a POST
needs, and that bad input is a page saying why, never a 500."""

from __future__ import annotations

import re

import pytest


def _token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _sign_in(client, key: str):
    token = _token(client.get("/admin/login").text)
    return client.post("/admin/login", data={"api_key": key, "csrf_token": token})


@pytest.fixture
def operator(client, accounts):
    """A console session of an admin; returns (admin, the session's CSRF token)."""
    admin = accounts.make(admin=True, email="ops@example.com")
    answer = _sign_in(client, admin.key)
    assert answer.status_code == 302 and answer.location.endswith("/admin/accounts")
    return admin, _token(client.get("/admin/accounts").text)


def test_anonymous_visitors_are_sent_to_sign_in(client):
    for path in ("/admin/", "/admin/accounts", "/admin/usage", "/admin/now", "/admin/keys"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.location.endswith("/admin/login"), path
    answer = client.get("/admin/now.json")
    assert answer.status_code == 401
    assert set(answer.json["error"]) == {"message", "type", "param", "code"}
    assert client.get("/admin/usage.csv").status_code == 302


def test_a_customer_key_is_refused(client, accounts):
    user = accounts.make(email="ada@example.com")
    answer = _sign_in(client, user.key)
    assert answer.status_code == 403 and "not an admin" in answer.text
    assert client.get("/admin/accounts").status_code == 302


def test_unknown_and_revoked_keys_are_refused(client, accounts):
    admin = accounts.make(admin=True)
    assert _sign_in(client, "sk-not-a-key").status_code == 401
    with client.application.app_context():
        from silk.account.service import revoke_key

        revoke_key(admin.key_id)
    assert _sign_in(client, admin.key).status_code == 401


def test_a_session_ends_when_the_key_is_revoked_or_the_admin_right_removed(app, client,
                                                                             accounts, operator):
    admin, token = operator
    user = accounts.make(email="ada@example.com")
    from sqlalchemy import update

    from silk.account.models import Account
    from silk.extensions import db

    with app.app_context():
        db.session.execute(update(Account).where(Account.id == admin.id).values(is_admin=False))
        db.session.commit()
    answer = client.post(f"/admin/accounts/{user.id}/status",
                         data={"disabled": "1", "csrf_token": token})
    assert answer.status_code == 302 and answer.location.endswith("/admin/login")
    assert accounts.row(user.id).disabled is False


def test_posts_need_the_session_token_and_this_origin(client, accounts, operator):
    _, token = operator
    user = accounts.make(email="ada@example.com")
    path = f"/admin/accounts/{user.id}/status"
    assert client.post(path, data={"disabled": "1"}).status_code == 400
    assert client.post(path, data={"disabled": "1", "csrf_token": "guess"}).status_code == 400
    answer = client.post(path, data={"disabled": "1", "csrf_token": token},
                         headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403 and "another site" in answer.text
    assert accounts.row(user.id).disabled is False
    assert client.post(path, data={"disabled": "1", "csrf_token": token},
                       headers={"Origin": "http://localhost"}).status_code == 302
    assert accounts.row(user.id).disabled is True


def test_sign_in_keeps_the_dashboard_session_apart(client, accounts, operator):
    _, token = operator
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/accounts").status_code == 302


def test_pages_carry_security_headers(client, operator):
    answer = client.get("/admin/accounts")
    policy = answer.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(("path", "form"), [
    ("/admin/accounts/{id}/credit", {"kind": "topup", "amount": "abc", "note": "x"}),
    ("/admin/accounts/{id}/credit", {"kind": "topup", "amount": "NaN", "note": "x"}),
    ("/admin/accounts/{id}/credit", {"kind": "topup", "amount": "1.001", "note": "x"}),
    ("/admin/accounts/{id}/credit", {"kind": "refund", "amount": "-1", "note": "x"}),
    ("/admin/accounts/{id}/credit", {"kind": "gift", "amount": "1", "note": "x"}),
    ("/admin/accounts/{id}/credit", {"kind": "topup", "amount": "1", "note": ""}),
    ("/admin/accounts/{id}/credit", {"kind": "topup", "amount": "1e400", "note": "x"}),
    ("/admin/accounts/{id}/credit/confirm", {"kind": "topup", "amount": "1", "note": "x"}),
    ("/admin/accounts/{id}/tier", {"tier": "platinum"}),
    ("/admin/accounts/{id}/keys", {"rpm_limit": "-3"}),
    ("/admin/accounts/{id}/keys", {"models": "no-such-model"}),
    ("/admin/accounts/{id}/keys", {"expires_at": "tomorrow"}),
    ("/admin/accounts/{id}/keys", {"role": "admin"}),
    ("/admin/accounts/{id}/keys", {"spend_caps.day": "lots"}),
    ("/admin/accounts/{id}/keys", {"spend_caps.total": "-1"}),
    ("/admin/accounts", {"email": "not-an-email"}),
    ("/admin/accounts", {"email": "x@example.com", "credit": "-5"}),
    ("/admin/codes/redemption", {"amount": "0"}),
    ("/admin/codes/redemption", {"amount": "1", "count": "5000"}),
    ("/admin/codes/invites", {"count": "1", "uses": "0"}),
    ("/admin/codes/invites", {"count": "1", "tier": "platinum"}),
    ("/admin/tiers", {"name": "x", "discount_percent": "101", "monthly_free_tokens": "0"}),
    ("/admin/tiers", {"name": "x", "discount_percent": "1", "monthly_free_tokens": "many"}),
])
def test_bad_input_is_shown_not_a_500(client, accounts, operator, path, form):
    _, token = operator
    user = accounts.make(credit="1", email="ada@example.com")
    before = accounts.balance_units(user.id)
    answer = client.post(path.format(id=user.id), data={**form, "csrf_token": token},
                         follow_redirects=True)
    assert answer.status_code < 500
    assert "flash-error" in answer.text or 'data-testid="error"' in answer.text
    assert accounts.balance_units(user.id) == before
    assert accounts.audit() == []


@pytest.mark.parametrize("path", ["/admin/usage?month=2026-13", "/admin/usage.csv?table=x",
                                  "/admin/margin.csv?by=colour", "/admin/accounts/999999",
                                  "/admin/codes?state=lost", "/admin/accounts?page=x",
                                  "/admin/accounts?q=\u00b2", "/admin/keys?account=\u2460",
                                  "/admin/accounts?q=99999999999999999999",
                                  "/admin/keys?account=99999999999999999999",
                                  "/admin/accounts/99999999999999999999"])
def test_bad_queries_are_shown_not_a_500(client, operator, path):
    answer = client.get(path, follow_redirects=True)
    assert answer.status_code < 500
    assert answer.mimetype == "text/html"


@pytest.mark.parametrize(("path", "form"), [
    ("/admin/accounts/{huge}/credit", {"kind": "topup", "amount": "1", "note": "x"}),
    ("/admin/accounts/{huge}/credit/confirm", {"kind": "topup", "amount": "1", "note": "x",
                                               "token": "t"}),
    ("/admin/accounts/{huge}/keys", {"name": "k"}),
    ("/admin/accounts/{huge}/status", {"disabled": "1"}),
    ("/admin/accounts/{huge}/tier", {"tier": "pro"}),
    ("/admin/keys/{huge}/revoke", {}),
    ("/admin/accounts/{id}/keys", {"name": "k", "rpm_limit": "999999999999"}),
    ("/admin/accounts/{id}/keys", {"name": "k\x00"}),
])
def test_values_no_column_holds_are_the_consoles_page_not_the_apis_json(client, accounts,
                                                                         operator, path, form):
    """An id past 64 bits (or, on PostgreSQL, a limit past 32 bits or a NUL in a name) is
    refused by the database itself; on a console page that is still the console's page."""
    _, token = operator
    user = accounts.make(credit="1", email="ada@example.com")
    answer = client.post(path.format(id=user.id, huge=2**66), data={**form, "csrf_token": token},
                         follow_redirects=True)
    assert answer.status_code < 500
    assert answer.mimetype == "text/html", answer.get_data()[:300]
    assert accounts.balance_units(user.id) == 1_000_000_000
    assert accounts.audit() == []


def test_the_key_form_makes_a_member_key_with_caps_shown_in_the_tables(client, accounts,
                                                                       operator):
    from silk.account.models import ApiKey
    from silk.extensions import db

    _, token = operator
    user = accounts.make(credit="1", email="team@example.com")
    answer = client.post(f"/admin/accounts/{user.id}/keys", data={
        "name": "ci", "role": "member", "spend_caps.day": "0.5", "spend_caps.total": "12",
        "csrf_token": token})
    assert answer.status_code == 201, answer.text
    with client.application.app_context():
        key = db.session.scalars(db.select(ApiKey).where(ApiKey.account_id == user.id,
                                                         ApiKey.name == "ci")).one()
        assert (key.role, key.cap_day_units, key.cap_month_units, key.cap_total_units) == (
            "member", 500_000_000, None, 12_000_000_000)
        db.session.remove()
    for page in (client.get(f"/admin/accounts/{user.id}").text, client.get("/admin/keys").text):
        assert '<td data-testid="key-role">member</td>' in page
        assert "day $0.00 of $0.50" in page and "total $0.00 of $12.00" in page
        assert "month $0.00 <span class=\"muted\">(no cap)</span>" in page


def test_the_key_form_carries_every_key_option_of_the_api():
    from silk.account.schemas import key_create_schema
    from silk.operator.forms import KEY_FIELDS

    assert {field.name for field in KEY_FIELDS} == set(key_create_schema.fields)


def test_accounts_are_searched_and_paged(client, accounts, operator):
    for n in range(30):
        accounts.make(email=f"page{n:02d}@example.com")
    first = client.get("/admin/accounts?q=page")
    assert first.text.count("@example.com</a>") == 25 and 'rel="next"' in first.text
    second = client.get("/admin/accounts?q=page&page=2")
    assert second.text.count("@example.com</a>") == 5 and 'rel="prev"' in second.text
    assert "page29@example.com" in second.text and 'rel="next"' not in second.text
    target = accounts.make(email="ada@example.com")
    by_id = client.get(f"/admin/accounts?q={target.id}")
    assert by_id.text.count("@example.com</a>") == 1 and "ada@example.com" in by_id.text


def test_reviewing_a_credit_writes_nothing_until_confirmed(client, accounts, operator):
    _, token = operator
    user = accounts.make(credit="1", email="ada@example.com")
    entries = len(accounts.ledger(user.id))
    review = client.post(f"/admin/accounts/{user.id}/credit",
                         data={"kind": "topup", "amount": "4", "note": "n", "csrf_token": token})
    assert review.status_code == 200 and "$5.00" in review.text
    assert len(accounts.ledger(user.id)) == entries
    assert accounts.balance_units(user.id) == 1_000_000_000


@pytest.mark.parametrize(("path", "form"), [
    ("/admin/accounts/{id}/credit", {"kind": "topup", "amount": "1,50", "note": "x"}),
    ("/admin/accounts/{id}/credit", {"kind": "adjustment", "amount": "-0,5", "note": "x"}),
    ("/admin/accounts/{id}/credit", {"kind": "topup", "amount": "1,5,0", "note": "x"}),
    ("/admin/accounts", {"email": "x@example.com", "credit": "2,50"}),
    ("/admin/codes/redemption", {"amount": "2,50", "count": "3"}),
    ("/admin/tiers", {"name": "promo", "discount_percent": "7,5", "monthly_free_tokens": "0"}),
])
def test_a_decimal_comma_is_refused_not_read_as_a_hundred_times_more(client, accounts,
                                                                    operator, path, form):
    """"1,50" is one and a half in much of the world: a comma that is not a thousands
    separator is refused, never dropped (which read it as 150 and wrote it unconfirmed)."""
    from silk.billing.models import RedemptionCode, TierRecord
    from silk.extensions import db

    _, token = operator
    user = accounts.make(credit="1", email="ada@example.com")
    answer = client.post(path.format(id=user.id), data={**form, "csrf_token": token},
                         follow_redirects=True)
    assert answer.status_code < 500
    assert "flash-error" in answer.text and "such as 12.50" in answer.text
    assert accounts.balance_units(user.id) == 1_000_000_000
    with client.application.app_context():
        assert db.session.scalars(db.select(RedemptionCode)).all() == []
        assert db.session.get(TierRecord, "promo") is None
        assert "x@example.com" not in client.get("/admin/accounts?q=x@").text
        db.session.remove()
    assert accounts.audit() == []


def test_a_thousands_separator_is_still_read(client, accounts, operator):
    _, token = operator
    user = accounts.make(email="ada@example.com")
    review = client.post(f"/admin/accounts/{user.id}/credit", data={
        "kind": "topup", "amount": "$1,234.50", "note": "wire", "csrf_token": token})
    assert review.status_code == 200 and "$1,234.50" in review.text


def test_issued_codes_and_their_csv_show_plain_amounts(client, operator):
    """A $10 code reads 10 on the page and in the CSV handed out, never 1E+1."""
    import base64
    import csv
    import io

    _, token = operator
    answer = client.post("/admin/codes/redemption",
                         data={"amount": "10", "count": "2", "csrf_token": token})
    assert answer.status_code == 201, answer.text
    assert answer.text.count("<td>10</td>") == 2 and "<td>1E+1</td>" not in answer.text
    url = re.search(r'href="data:text/csv;base64,([^"]+)"', answer.text).group(1)
    rows = list(csv.reader(io.StringIO(base64.b64decode(url).decode())))
    assert rows[0][:2] == ["code", "amount_usd"]
    assert [row[1] for row in rows[1:]] == ["10", "10"]


def test_csv_money_is_written_without_exponents():
    from decimal import Decimal

    from silk.operator.csvout import text
    from silk.pricing import units_to_usd

    written = text(("key", "cost_usd"), [("a", units_to_usd(100 * 10**9)),
                                         ("b", units_to_usd(1_250_000_000_000)),
                                         ("c", units_to_usd(18_774))])
    assert written.splitlines()[1:] == ["a,100", "b,1250", "c,0.000018774"]
    assert Decimal("1E+2") == units_to_usd(100 * 10**9)  # what str() would have written


@pytest.fixture
def open_registration(app_config):
    app_config["SILK_REGISTRATION"] = "open"
    return app_config


def test_a_customers_email_is_never_a_formula_in_the_usage_csv(open_registration, client,
                                                               operator):
    """A sign-up's email is the customer's text: in the CSV the operator opens in a
    spreadsheet it stays text, never a formula (a cell starting =, +, - or @)."""
    import csv
    import io

    emails = ("=1+2@example.com", "+1-2@example.com", "-2+3@example.com")
    for email in emails:
        answer = client.post("/v1/register", json={"email": email})
        assert answer.status_code == 201, answer.text
        chat = client.post("/v1/chat/completions",
                           headers={"Authorization": f"Bearer {answer.json['api_key']}"},
                           json={"model": "deepseek-chat", "stream": False,
                                 "messages": [{"role": "user", "content": "Hi"}]})
        assert chat.status_code == 200, chat.text
    rows = list(csv.reader(io.StringIO(client.get("/admin/usage.csv?table=account").text)))
    cells = [row[0] for row in rows[1:-1]]
    assert sorted(cells) == sorted("'" + email for email in emails)
    assert all(row[-1][0].isdigit() for row in rows[1:])  # the money stays numbers


def test_csv_cells_that_a_spreadsheet_would_run_are_written_as_text():
    import csv
    import io
    from decimal import Decimal

    from silk.operator.csvout import text

    written = text(("key", "margin_usd"), [("=HYPERLINK(1)", Decimal("-0.5")),
                                           ("@SUM(A1)", -2), ("\tx", 0), ("\rx", 0),
                                           ("plain", 1)])
    cells = list(csv.reader(io.StringIO(written, newline="")))[1:]
    assert [row[0] for row in cells] == ["'=HYPERLINK(1)", "'@SUM(A1)", "'\tx", "'\rx", "plain"]
    assert [row[1] for row in cells] == ["-0.5", "-2", "0", "0", "1"]


def _replayed(app, cookie: str):
    """The accounts page with a copy of a session cookie, as whoever copied it would ask."""
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    return thief.get("/admin/accounts")


def test_a_copied_console_cookie_stops_working_at_sign_out(app, client, accounts, operator):
    admin, token = operator
    copied = client.get_cookie("session").value
    assert _replayed(app, copied).status_code == 200
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert _replayed(app, copied).status_code == 302
    assert _sign_in(client, admin.key).status_code == 302  # the key signs in again
    assert _replayed(app, copied).status_code == 302


@pytest.mark.parametrize("how", ["revoked", "expired", "disabled", "disabled-enabled",
                                 "demoted"])
def test_a_copied_console_cookie_stops_working_when_the_admin_key_ends(app, client, accounts,
                                                                       operator, how):
    from sqlalchemy import update

    from silk.account.models import Account
    from silk.extensions import db
    from tests.ops.test_dashboard import _end_by

    admin, _ = operator
    copied = client.get_cookie("session").value
    assert _replayed(app, copied).status_code == 200
    if how == "demoted":
        with app.app_context():
            db.session.execute(update(Account).where(Account.id == admin.id)
                               .values(is_admin=False))
            db.session.commit()
            db.session.remove()
    else:
        _end_by(app, admin, how)
    assert _replayed(app, copied).status_code == 302
    assert client.get("/admin/accounts").status_code == 302


def test_a_dashboard_sign_out_ends_the_console_session_it_clears(app, client, operator):
    from tests.ops.helpers import csrf_from

    copied = client.get_cookie("session").value
    token = csrf_from(client.get("/dashboard/login").text)
    assert client.post("/dashboard/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/accounts").status_code == 302
    assert _replayed(app, copied).status_code == 302


@pytest.mark.parametrize("whose", ["the admin's", "another account's"])
def test_a_dashboard_sign_in_keeps_the_console_session(app, client, accounts, operator, whose):
    """A dashboard sign-in cleared the whole cookie: the console session left this browser
    but not the server, so a copy of the cookie kept it for hours and no sign-out here could
    end it any more. A sign-in now ends nothing and drops nothing: the console session
    stays, and the dashboard's sign-out ends it, copies included."""
    from tests.ops.helpers import csrf_from, sign_in

    admin, _ = operator
    key = admin.key if whose == "the admin's" else accounts.make(email="user@example.com").key
    copied = client.get_cookie("session").value
    assert sign_in(client, key).status_code == 302
    assert client.get("/dashboard/").status_code == 200
    assert client.get("/admin/accounts").status_code == 200
    token = csrf_from(client.get("/dashboard/").text)
    assert client.post("/dashboard/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/accounts").status_code == 302
    assert _replayed(app, copied).status_code == 302
