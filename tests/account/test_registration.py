"""Registration: /register/ (HTML) and POST /v1/register (JSON), open, invite or closed."""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def admin(accounts):
    return accounts.make(admin=True)


def invite(client, admin, **body) -> str:
    response = client.post("/v1/admin/invite-codes", json=body, headers=admin.headers)
    assert response.status_code == 201, response.json
    return response.json["data"][0]["code"]


def register(client, **body):
    return client.post("/v1/register", json=body)


def test_invite_code_is_the_default_mode(client, admin):
    assert client.get("/v1/register").json["registration"] == "invite"
    response = register(client, email="new@example.com")
    assert response.status_code == 400
    assert response.json["error"]["param"] == "invite_code"
    assert response.json["error"]["code"] == "invite_required"


def test_an_invite_creates_a_free_account_and_shows_its_key_once(client, admin, accounts):
    code = invite(client, admin)
    response = register(client, email="New@Example.com", invite_code=code)
    assert response.status_code == 201
    body = response.json
    assert (body["email"], body["tier"], body["balance"]) == ("new@example.com", "free", 0)
    secret = body["api_key"]
    assert secret.startswith("sk-") and len(secret) >= 43
    assert body["key"]["prefix"] == secret[:len(body["key"]["prefix"])]
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/balance", headers=headers).json == {"balance": 0, "currency": "USD"}
    listed = client.get("/v1/keys", headers=headers).get_data(as_text=True)
    assert secret not in listed
    # The code had one use.
    again = register(client, email="second@example.com", invite_code=code)
    assert again.status_code == 400
    assert again.json["error"]["code"] == "invalid_invite"


def test_an_invite_may_carry_a_tier(client, admin):
    code = invite(client, admin, tier="pro", uses=2)
    assert register(client, email="a@example.com", invite_code=code).json["tier"] == "pro"
    assert register(client, email="b@example.com", invite_code=code).json["tier"] == "pro"
    assert register(client, email="c@example.com", invite_code=code).status_code == 400


@pytest.mark.parametrize("body, param", [
    ({}, "email"), ({"email": "not-an-email"}, "email"), ({"email": 7}, "email"),
    ({"email": "a@example.com", "invite_code": 5}, "invite_code"),
    ({"email": "a@example.com", "tier": "team"}, "tier"),
])
def test_bad_registrations_are_400s(client, admin, body, param):
    response = register(client, **body)
    assert response.status_code == 400
    assert response.json["error"]["param"] == param


def test_an_email_registers_once_and_the_invite_is_kept(client, admin, accounts):
    code = invite(client, admin, uses=1)
    taken = accounts.make(email="taken@example.com")
    response = register(client, email="TAKEN@example.com", invite_code=code)
    assert response.status_code == 409
    assert accounts.row(taken.id).email == "taken@example.com"
    # The failed sign-up did not use up the invite.
    assert register(client, email="fresh@example.com", invite_code=code).status_code == 201


class TestOpen:
    @pytest.fixture
    def app_config(self, request, app_config):
        app_config["SILK_REGISTRATION"] = "open"
        if "untrusted" in request.node.name:
            app_config["SILK_TRUSTED_PROXIES"] = "192.0.2.1"
        return app_config

    def test_open_registration_needs_no_code(self, client):
        assert client.get("/v1/register").json["invite_code_required"] is False
        response = register(client, email="open@example.com")
        assert response.status_code == 201
        assert response.json["tier"] == "free"

    def test_sign_ups_are_rate_limited_per_client_address(self, app, client):
        app.config["SILK_REGISTRATION_PER_HOUR"] = 2
        here = {"X-Forwarded-For": "203.0.113.9"}
        for i in range(2):
            response = client.post("/v1/register", json={"email": f"r{i}@example.com"},
                                   headers=here)
            assert response.status_code == 201
        response = client.post("/v1/register", json={"email": "r3@example.com"}, headers=here)
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.json["error"]["type"] == "rate_limit_error"
        # Another address is counted on its own.
        response = client.post("/v1/register", json={"email": "r4@example.com"},
                               headers={"X-Forwarded-For": "198.51.100.7"})
        assert response.status_code == 201

    def test_forwarded_for_is_ignored_from_an_untrusted_peer(self, app_config, app, client):
        # The test client's loopback peer is not in this trusted list.
        assert app_config["SILK_TRUSTED_PROXIES"] == "192.0.2.1"
        app.config["SILK_REGISTRATION_PER_HOUR"] = 1
        first = client.post("/v1/register", json={"email": "x1@example.com"},
                            headers={"X-Forwarded-For": "203.0.113.1"})
        second = client.post("/v1/register", json={"email": "x2@example.com"},
                             headers={"X-Forwarded-For": "203.0.113.2"})
        assert (first.status_code, second.status_code) == (201, 429)

    def test_the_page_creates_an_account_and_shows_the_key(self, client):
        page = client.get("/register/")
        assert page.status_code == 200
        assert 'name="email"' in page.get_data(as_text=True)
        assert 'name="invite_code"' not in page.get_data(as_text=True)
        response = client.post("/register/", data={"email": "web@example.com"})
        assert response.status_code == 201
        assert response.headers["Cache-Control"] == "no-store"
        html = response.get_data(as_text=True)
        secret = re.search(r'id="api-key"[^>]*>(sk-[^<]+)<', html).group(1)
        assert client.get("/v1/balance", headers={"Authorization": f"Bearer {secret}"}
                          ).status_code == 200

    def test_the_page_shows_errors_and_refuses_other_sites(self, client):
        response = client.post("/register/", data={"email": "nope"})
        assert response.status_code == 400
        assert "email" in response.get_data(as_text=True)
        response = client.post("/register/", data={"email": "x@example.com"},
                               headers={"Origin": "https://evil.example"})
        assert response.status_code == 403

    def test_the_page_refuses_an_opaque_origin(self, app, client):
        """A sandboxed frame or a no-referrer page on another site posts `Origin: null`:
        it was let through, so any site could sign its visitors up with emails it chose."""
        from sqlalchemy import func, select

        from silk.account.models import Account
        from silk.extensions import db

        response = client.post("/register/", data={"email": "forged@example.com"},
                               headers={"Origin": "null"})
        assert response.status_code == 403
        with app.app_context():
            assert db.session.scalar(select(func.count()).select_from(Account).where(
                Account.email == "forged@example.com")) == 0

    def test_the_page_sends_its_origin_on_its_own_posts(self, client):
        """As its template's meta tag says: under the header's no-referrer a browser that
        honours only the header posts the page's own form with `Origin: null`."""
        assert client.get("/register/").headers["Referrer-Policy"] == "same-origin"

    def test_the_page_compares_host_names_as_the_dashboard_does(self, client):
        """Behind nginx (`Host $host` drops the port) on a non-default port the browser's
        Origin carries a port the app never sees: a sign-up there was refused."""
        response = client.post("/register/", data={"email": "port@example.com"},
                               headers={"Host": "gw.example",
                                        "Origin": "https://gw.example:8443"})
        assert response.status_code == 201
        refused = client.post("/register/", data={"email": "other@example.com"},
                              headers={"Host": "gw.example",
                                       "Origin": "https://evil.example:8443"})
        assert refused.status_code == 403


class TestClosed:
    @pytest.fixture
    def app_config(self, app_config):
        app_config["SILK_REGISTRATION"] = "closed"
        return app_config

    def test_closed_registration_refuses_everyone(self, client, admin):
        code = invite(client, admin)
        response = register(client, email="c@example.com", invite_code=code)
        assert response.status_code == 403
        assert response.json["error"]["code"] == "registration_closed"
        page = client.get("/register/")
        assert "closed" in page.get_data(as_text=True)
        assert 'name="email"' not in page.get_data(as_text=True)
        assert client.post("/register/", data={"email": "c@example.com"}).status_code == 403

    def test_closed_registration_counts_nothing(self, app, client):
        """A closed registration creates nothing, so it counts nothing: each POST wrote an
        abuse counter that lasted an hour, and past the hourly limit said 429, not closed."""
        from sqlalchemy import func, select

        from silk.abuse import COUNTS
        from silk.extensions import db

        app.config["SILK_REGISTRATION_PER_HOUR"] = 1
        codes = [register(client, email=f"c{i}@example.com").json["error"]["code"]
                 for i in range(3)]
        codes.append(register(client, email="not an address").json["error"]["code"])
        pages = [client.post("/register/", data={"email": "c@example.com"}).status_code
                 for _ in range(2)]
        with app.app_context():
            rows = db.session.scalar(select(func.count()).select_from(COUNTS))
        assert codes == ["registration_closed"] * 4
        assert pages == [403, 403] and rows == 0


def test_the_invite_page_asks_for_a_code(client, admin):
    page = client.get("/register/").get_data(as_text=True)
    assert 'name="invite_code"' in page
    code = invite(client, admin)
    response = client.post("/register/", data={"email": "w@example.com", "invite_code": code})
    assert response.status_code == 201
    bad = client.post("/register/", data={"email": "v@example.com", "invite_code": "wrong"})
    assert bad.status_code == 400
    assert "not valid" in bad.get_data(as_text=True)
