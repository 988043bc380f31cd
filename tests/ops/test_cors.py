"""CORS for browser clients: off by default, /v1/* only, never with credentials; and a real
page on another origin calling the gateway in headless Chromium."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

APP = "https://app.example"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}


@pytest.fixture
def cors_app(app_config):
    app_config["SILK_CORS_ORIGINS"] = f"{APP}, http://localhost:5173"
    return app_config


def _exposed(response) -> set[str]:
    return {h.strip().lower() for h in
            response.headers.get("Access-Control-Expose-Headers", "").split(",")}


def test_cors_is_off_by_default(client, accounts):
    acct = accounts.make()
    answer = client.get("/v1/models", headers={**acct.headers, "Origin": APP})
    assert answer.status_code == 200
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Origin" not in client.options(
        "/v1/chat/completions", headers=PREFLIGHT).headers


def test_an_allowed_origin_gets_preflight_and_exposed_headers(cors_app, client, accounts):
    acct = accounts.make(credit="1")
    pre = client.options("/v1/chat/completions", headers=PREFLIGHT)
    assert pre.status_code == 200
    assert pre.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    allowed = pre.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "x-stainless-os"} <= {
        h.strip() for h in allowed.split(",")}
    assert "Access-Control-Allow-Credentials" not in pre.headers
    # A preflight carries no key: admin routes answer it too (the call itself is guarded).
    assert client.options("/v1/admin/accounts", headers=PREFLIGHT).status_code == 200
    assert client.get("/v1/admin/accounts", headers={"Origin": APP}).status_code == 401

    answer = client.post("/v1/chat/completions", json={
        "model": "deepseek-chat", "stream": False,
        "messages": [{"role": "user", "content": "hi"}]}, headers={**acct.headers, "Origin": APP})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    assert {"x-request-id", "x-silk-cost", "retry-after"} <= _exposed(answer)
    assert "Origin" in answer.headers.get("Vary", "")


def test_other_origins_and_the_dashboard_get_no_cors(cors_app, client, accounts):
    acct = accounts.make()
    evil = {**PREFLIGHT, "Origin": "https://evil.example"}
    assert "Access-Control-Allow-Origin" not in client.options(
        "/v1/chat/completions", headers=evil).headers
    assert "Access-Control-Allow-Origin" not in client.get(
        "/v1/models", headers={**acct.headers, "Origin": "https://evil.example"}).headers
    for path in ("/dashboard/login", "/register/"):
        page = client.get(path, headers={"Origin": APP})
        assert "Access-Control-Allow-Origin" not in page.headers


@pytest.fixture
def cors_anyone(app_config):
    app_config["SILK_CORS_ORIGINS"] = "*"
    return app_config


def test_a_wildcard_shares_the_api_without_credentials(cors_anyone, client):
    pre = client.options("/v1/models", headers={**PREFLIGHT, "Origin": "https://any.example"})
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in pre.headers


@pytest.mark.parametrize("spec", ["app.example", "https://app.example/path", "ftp://x"])
def test_a_bad_origin_list_stops_the_gateway(spec, tmp_path):
    from silk import create_app
    from silk.config import ConfigError

    with pytest.raises(ConfigError, match="SILK_CORS_ORIGINS=.* is not allowed"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db",
                    "SILK_CORS_ORIGINS": spec})



@pytest.mark.parametrize("origin, host, same", [
    ("https://gw.example:8443", "gw.example", True), ("http://gw.example", "gw.example:80", True),
    ("https://evil.example", "gw.example", False), ("null", "gw.example", False),
    ("null", ":80", False), ("null", "", False), ("http://[", "gw.example", False)])
def test_same_host_compares_host_names_and_an_opaque_origin_names_none(origin, host, same):
    """The form POSTs' origin rule (dashboard, console, registration): `null` matched a
    Host that names no host name either (None == None)."""
    from silk.cors import same_host

    assert same_host(origin, host) is same

PAGE = b"""<!doctype html><html><head><title>client</title></head><body>another site</body>
</html>"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


def _page_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


CALL = """async ([url, key]) => {
  try {
    const r = await fetch(url + "/v1/chat/completions", {method: "POST",
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
      body: JSON.stringify({model: "deepseek-chat", stream: false,
                            messages: [{role: "user", content: "hello from a page"}]})});
    const body = await r.json();
    return {status: r.status, cost: r.headers.get("x-silk-cost"),
            id: r.headers.get("x-request-id"), usage: body.usage};
  } catch (e) { return {error: String(e)}; }
}"""


@pytest.mark.slow
def test_a_page_on_another_origin_calls_the_gateway(sqlite_only, app, accounts, gateway_env,
                                                    page, request):
    from tests.ops.test_dashboard_browser import _use_up_free_quota

    allowed, refused = _page_server(), _page_server()
    try:
        allowed_origin = f"http://127.0.0.1:{allowed.server_port}"
        gateway_env["SILK_CORS_ORIGINS"] = allowed_origin
        gateway = request.getfixturevalue("gateway")
        acct = accounts.make(tier="pro", credit="1")
        _use_up_free_quota(app, acct.id)
        before = accounts.balance_units(acct.id)

        page.goto(allowed_origin + "/")
        result = page.evaluate(CALL, [gateway.url, acct.key])
        assert result.get("status") == 200, result
        assert float(result["cost"]) == result["usage"]["cost"] > 0
        assert len(result["id"]) == 32
        charged = before - accounts.balance_units(acct.id)
        assert charged > 0

        page.goto(f"http://127.0.0.1:{refused.server_port}/")
        result = page.evaluate(CALL, [gateway.url, acct.key])
        assert "Failed to fetch" in result.get("error", ""), result
        # The preflight failed, so the call itself never ran: nothing more was charged.
        assert before - accounts.balance_units(acct.id) == charged
    finally:
        allowed.shutdown()
        refused.shutdown()
