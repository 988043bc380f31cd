"""Nobody let in: operators apart, accounts apart, guessing and sign-up abuse slowed, sizes
bounded, upstream destinations fixed by the operator alone, and safe defaults.

These run in process on every database backend; test_security_gateway.py covers what only
a real gunicorn process can show (its logs, its HTTP parser).
"""

from __future__ import annotations

import json

import pytest

from tests.chat.helpers import messages
from tests.fakes.upstream import FakeUpstream
from tests.reliability.helpers import CHAT, fresh_window

JSON = {"Accept": "application/json"}


def _xff(address: str) -> dict:
    """Speak for a client address through the trusted local proxy (as nginx would)."""
    return {"X-Forwarded-For": address}


def _fill(rule, account_id: int, key_id: int) -> str:
    path = rule.rule
    for name in rule.arguments:
        value = {"account_id": account_id, "key_id": key_id}.get(name, "free")
        path = path.replace(f"<int:{name}>", str(value)).replace(f"<{name}>", str(value))
    return path


def test_admin_routes_are_for_admin_keys_only(app, client, accounts, upstream):
    user = accounts.make(credit="1")
    admin = accounts.make(admin=True)
    victim = accounts.make(credit="1")  # the paths name this account, so the admin's own
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/v1/admin")]
    assert len(rules) >= 15
    for rule in rules:
        path = _fill(rule, victim.id, victim.key_id)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            anonymous = client.open(path, method=method, json={})
            assert anonymous.status_code == 401, (method, path)
            refused = client.open(path, method=method, json={}, headers=user.headers)
            assert refused.status_code == 403, (method, path)
            assert refused.json["error"]["type"] == "permission_error"
            allowed = client.open(path, method=method, json={}, headers=admin.headers)
            assert allowed.status_code not in (401, 403), (method, path, allowed.json)
    # Refusals changed nothing: the user still works and has all its money.
    assert accounts.balance_units(user.id) == 10**9
    assert client.get("/v1/balance", headers=user.headers).status_code == 200


def test_one_account_can_never_read_or_spend_another(app, client, accounts, upstream):
    alice = accounts.make(credit="1")
    bob = accounts.make(credit="2")
    spent = client.post(CHAT, headers={**bob.headers, **JSON},
                        json={"model": "deepseek-chat", "messages": messages("bob's question")})
    assert spent.status_code == 200
    bob_balance = accounts.balance_units(bob.id)

    assert client.get("/v1/balance", headers=alice.headers).json["balance"] == 1
    assert client.get("/v1/usage", headers=alice.headers).json["requests"] == 0
    assert client.get("/v1/billing", headers=alice.headers).json["usage"]["requests"] == 0
    keys = client.get("/v1/keys", headers=alice.headers).json["data"]
    assert [k["id"] for k in keys] == [alice.key_id]
    revoke = client.delete(f"/v1/keys/{bob.key_id}", headers=alice.headers)
    assert revoke.status_code == 404  # not even told that the key exists
    steal = client.post("/v1/topup", headers=alice.headers,
                        json={"amount": 1, "account": bob.id})
    assert steal.status_code == 403
    for ref in (bob.id, "user2@example.com"):
        assert client.post("/v1/topup", headers=alice.headers,
                           json={"amount": -1, "account": ref}).status_code in (400, 403)
    # Alice spending from her key charges Alice alone, however the body is dressed up.
    dressed = client.post(CHAT, headers={**alice.headers, **JSON}, json={
        "model": "deepseek-chat", "messages": messages("hi"), "user": str(bob.id),
        "account": bob.id, "account_id": bob.id, "api_key": bob.key})
    assert dressed.status_code == 200
    assert accounts.balance_units(bob.id) == bob_balance
    assert len(accounts.usage_records(alice.id)) == 1 and len(accounts.usage_records(bob.id)) == 1
    assert client.get("/v1/balance", headers=bob.headers).status_code == 200  # still Bob's key
    assert accounts.audit() == []


def test_brute_force_from_one_address_is_slowed(app, client, accounts):
    acct = accounts.make(credit="1")
    limit = app.config["SILK_AUTH_FAILURES_PER_MINUTE"]
    assert limit and limit <= 100  # on by default
    attacker, bystander = _xff("203.0.113.7"), _xff("198.51.100.4")
    fresh_window(10)  # failures are counted in fixed one-minute windows
    for _ in range(5):  # no key at all is a mistake, not a guess: it does not count
        assert client.get("/v1/balance", headers=attacker).status_code == 401
    statuses = [client.get("/v1/balance", headers={
        **attacker, "Authorization": f"Bearer sk-guess{i:040d}"}).status_code
        for i in range(limit + 5)]
    assert statuses[:limit] == [401] * limit and set(statuses[limit:]) == {429}
    # Once blocked, even a right key is refused: a guesser learns nothing more.
    blocked = client.get("/v1/balance", headers={**attacker, **acct.headers})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) <= 61
    assert blocked.json["error"]["code"] == "too_many_failed_authentications"
    assert client.get("/v1/balance", headers={**bystander, **acct.headers}).status_code == 200


def test_failed_key_counts_are_shared_through_redis(app, accounts, redis_url):
    """Two app instances (standing in for two hosts) block a guesser together."""
    from silk import create_app
    from silk.extensions import db
    from silk.redislimits import RedisLimiter

    other = create_app({**app.config, "SILK_SWEEP_INTERVAL": 0})
    for instance in (app, other):
        instance.extensions["silk.limiter"] = RedisLimiter(redis_url)
    limit = app.config["SILK_AUTH_FAILURES_PER_MINUTE"]
    clients = [app.test_client(), other.test_client()]
    guesser = {**_xff("203.0.113.99"), "Authorization": "Bearer sk-wrong-but-plausible-key"}
    fresh_window(10)
    statuses = [clients[i % 2].get("/v1/balance", headers=guesser).status_code
                for i in range(limit + 2)]
    with other.app_context():
        db.engine.dispose()
    assert statuses[:limit] == [401] * limit and statuses[limit:] == [429, 429]


def test_failed_key_counts_are_shared_through_the_database(app, accounts):
    """Without Redis, two app instances on one database (standing in for two workers) block a
    guesser together, whether it guesses on the API, the dashboard's or the console's sign-in,
    and count sign-ups together."""
    from silk import create_app
    from silk.extensions import db
    from tests.ops.helpers import csrf_from

    app.config.update(SILK_AUTH_FAILURES_PER_MINUTE=4, SILK_REGISTRATION="open",
                      SILK_REGISTRATION_PER_HOUR=2)
    admin = accounts.make(admin=True)
    other = create_app({**app.config, "SILK_SWEEP_INTERVAL": 0})
    first, second = app.test_client(), other.test_client()
    guesser = _xff("203.0.113.98")
    wrong = "sk-wrong-but-plausible-key"

    def sign_in(client, page: str, key: str) -> int:
        token = csrf_from(client.get(page, headers=guesser).text)
        return client.post(page, headers=guesser,
                           data={"api_key": key, "csrf_token": token}).status_code

    fresh_window(10)
    statuses = [first.get("/v1/balance", headers={**guesser, "Authorization": f"Bearer {wrong}"}
                          ).status_code,
                sign_in(second, "/dashboard/login", wrong),
                sign_in(first, "/admin/login", wrong),
                sign_in(second, "/admin/login", wrong),
                sign_in(second, "/dashboard/login", wrong),  # the fifth, in the other worker
                sign_in(second, "/admin/login", admin.key),  # blocked: even the right key
                sign_in(first, "/admin/login", wrong)]
    fresh_window(2, window=3600)
    signups = [client.post("/v1/register", headers=_xff("192.0.2.60"),
                           json={"email": f"bot{i}@example.com"}).status_code
               for i, client in enumerate((first, second, first))]
    with other.app_context():
        db.engine.dispose()
    assert statuses == [401, 401, 401, 401, 429, 429, 429]
    assert signups == [201, 201, 429]


@pytest.mark.parametrize("shared", ["database", "redis"])
def test_an_ipv6_client_is_limited_by_its_64(app, accounts, request, shared):
    """Every home connection has an IPv6 /64 (2^64 addresses): counted per address, each
    guess and sign-up from a new one was a first. A /64 counts as one client, an IPv4-mapped
    address as its IPv4 one, and an address that is no IP (a unix socket's peer, nginx's
    "unix:") as its text, with Redis and without."""
    if shared == "redis":
        from silk.redislimits import RedisLimiter

        app.extensions["silk.limiter"] = RedisLimiter(request.getfixturevalue("redis_url"))
    app.config.update(SILK_AUTH_FAILURES_PER_MINUTE=3, SILK_REGISTRATION="open",
                      SILK_REGISTRATION_PER_HOUR=2)
    acct = accounts.make(credit="1")
    client = app.test_client()
    wrong = {"Authorization": "Bearer sk-wrong-but-plausible-key"}

    def balance(headers: dict, **kw) -> int:
        return client.get("/v1/balance", headers=headers, **kw).status_code

    fresh_window(10)
    sixty_four = [balance({**_xff(f"2001:db8:7:8::{i}"), **wrong}) for i in range(1, 5)]
    sixty_four += [balance({**_xff("2001:db8:7:8:ffff:1:2:3"), **acct.headers}),
                   balance({**_xff("2001:db8:7:9::1"), **acct.headers})]  # the next /64
    mapped = [balance({**_xff(a), **wrong}) for a in ("::ffff:198.51.100.70", "198.51.100.70",
                                                      "::ffff:198.51.100.70", "198.51.100.70")]
    named = [balance({**_xff("unix:"), **wrong}) for _ in range(4)]
    unix = [balance(wrong, environ_base={"REMOTE_ADDR": ""}) for _ in range(4)]
    fresh_window(2, window=3600)
    signups = [client.post("/v1/register", headers=_xff(f"2001:db8:7:a:{i}::1"),
                           json={"email": f"v6bot{i}@example.com"}).status_code
               for i in range(3)]
    assert sixty_four == [401, 401, 401, 429, 429, 200]
    assert mapped == named == unix == [401, 401, 401, 429]
    assert signups == [201, 201, 429]


@pytest.mark.parametrize("outage", ["database", "redis"])
def test_abuse_limits_count_in_the_worker_when_the_shared_count_fails(app, accounts, outage):
    """When the database (or Redis) cannot count a failed key check or a sign-up, the worker
    counts it in its memory instead of letting it through uncounted: while the shared count
    fails (here its table is gone, or nothing listens at Redis's address), no free guesses."""
    from sqlalchemy import text

    from silk.extensions import db
    from silk.redislimits import RedisLimiter

    app.config.update(SILK_AUTH_FAILURES_PER_MINUTE=3, SILK_REGISTRATION="open",
                      SILK_REGISTRATION_PER_HOUR=2)
    client = app.test_client()
    guesser = {**_xff("203.0.113.120"), "Authorization": "Bearer sk-wrong-but-plausible-key"}
    if outage == "redis":
        app.extensions["silk.limiter"] = RedisLimiter("redis://127.0.0.1:1/0")  # nobody there
    with app.app_context(), db.engine.begin() as conn:
        if outage == "database":
            conn.execute(text("ALTER TABLE abuse_counts RENAME TO abuse_counts_away"))
    try:
        fresh_window(10)
        statuses = [client.get("/v1/balance", headers=guesser).status_code for _ in range(5)]
        fresh_window(2, window=3600)
        signups = [client.post("/v1/register", headers=_xff("192.0.2.120"),
                               json={"email": f"outage{i}@example.com"}).status_code
                   for i in range(3)]
    finally:
        with app.app_context(), db.engine.begin() as conn:
            if outage == "database":
                conn.execute(text("ALTER TABLE abuse_counts_away RENAME TO abuse_counts"))
    assert statuses == [401, 401, 401, 429, 429]
    assert signups == [201, 201, 429]


def test_abuse_counts_fit_any_address_and_ended_windows_are_swept(app):
    import time

    from silk.abuse import COUNTS, DatabaseHits, expire
    from silk.extensions import db

    long_name = "authfail:" + "2001:db8::1," * 500  # whatever a proxy's header said
    with app.app_context():
        hits = DatabaseHits()
        fresh_window(5)
        assert [hits.hit(long_name, 5, 60) for _ in range(2)] == [1, 2]
        with db.engine.begin() as conn:
            conn.execute(COUNTS.insert().values(name="ended", count=9,
                                                ends_at=int(time.time()) - 1))
        assert expire(db.engine) == 1
        assert hits.hit(long_name, 5, 60) == 3  # the live window is kept


def test_a_failed_key_check_is_counted_on_the_only_connection_it_holds(app):
    """Counting a failure in the database takes a connection: the request must not hold
    another meanwhile, or as many concurrent guesses as the pool has connections would each
    hold one and wait for a second (the pool's 30 s), stalling the worker, uncounted."""
    from sqlalchemy import event

    from silk.extensions import db
    from tests.ops.helpers import csrf_from

    app.config.update(SILK_AUTH_FAILURES_PER_MINUTE=50)
    held = {"now": 0, "most": 0}

    def checkout(*_):
        held["now"] += 1
        held["most"] = max(held["most"], held["now"])

    def checkin(*_):
        held["now"] -= 1

    with app.app_context():
        engine = db.engine
    client = app.test_client()
    fresh_window(5)
    statuses = []
    for page in ("/admin/login", "/dashboard/login"):
        token = csrf_from(client.get(page).text)
        held["most"] = 0
        event.listen(engine, "checkout", checkout)
        event.listen(engine, "checkin", checkin)
        try:
            statuses.append(client.post(page, data={"api_key": "sk-wrong-guess",
                                                    "csrf_token": token}).status_code)
        finally:
            event.remove(engine, "checkout", checkout)
            event.remove(engine, "checkin", checkin)
        statuses.append(held["most"])
    assert statuses == [401, 1, 401, 1]


def test_registration_abuse_is_slowed(app, client, accounts, upstream):
    from silk.account.service import create_key

    app.config.update(SILK_REGISTRATION="open", SILK_REGISTRATION_PER_HOUR=3)
    acct = accounts.make(credit="1")
    with app.app_context():
        limited = create_key(acct.id, name="rpm", rpm_limit=100).secret
    statuses = []
    fresh_window(10, window=3600)  # sign-ups are counted in fixed one-hour windows
    for i in range(5):
        statuses.append(client.post("/v1/register", headers=_xff("192.0.2.50"),
                                    json={"email": f"bot{i}@example.com"}).status_code)
        # Rate-limited traffic in between must not reset the hourly sign-up counter.
        client.post(CHAT, headers={"Authorization": f"Bearer {limited}", **JSON},
                    json={"model": "deepseek-chat", "messages": messages()})
    assert statuses == [201, 201, 201, 429, 429]
    page = client.post("/register/", headers=_xff("192.0.2.50"),
                       data={"email": "html-bot@example.com"})
    assert page.status_code == 429  # the HTML twin shares the same counter
    other = client.post("/v1/register", headers=_xff("192.0.2.51"),
                        json={"email": "person@example.com"})
    assert other.status_code == 201


def test_request_sizes_are_bounded(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit and limit <= 16 * 1024 * 1024
    huge = json.dumps({"model": "deepseek-chat", "messages": messages("x" * limit)})
    assert client.post(CHAT, headers=acct.headers, data=huge,
                       content_type="application/json").status_code == 413
    deep = "[" * 100_000 + "]" * 100_000
    assert client.post(CHAT, headers=acct.headers, data=deep,
                       content_type="application/json").status_code == 400
    many = {"model": "deepseek-chat", "messages": messages() * 10_001}
    assert client.post(CHAT, headers=acct.headers, json=many).status_code == 400
    long_key = {"Authorization": "Bearer sk-" + "a" * 5000}
    assert client.get("/v1/balance", headers=long_key).status_code == 401
    assert upstream.requests == [] and accounts.usage_records(acct.id) == []


def test_upstream_destination_comes_only_from_configuration(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    with FakeUpstream() as evil:
        lure = evil.base_url("deepseek")
        response = client.post(
            CHAT + "?base_url=" + lure,
            headers={**acct.headers, **JSON, "X-Forwarded-Host": "127.0.0.1:1",
                     "X-Base-Url": lure, "Host": f"127.0.0.1:{evil.port}"},
            json={"model": "deepseek-chat", "messages": messages("where do I go?"),
                  "base_url": lure, "api_base": lure, "baseURL": lure, "url": lure,
                  "endpoint": lure, "extra_headers": {"Host": "evil"}})
        for model in (lure, "../../admin", "http://127.0.0.1:1/v1", "deepseek-chat/../x"):
            wrong = client.post(CHAT, headers={**acct.headers, **JSON},
                                json={"model": model, "messages": messages()})
            assert wrong.status_code == 404
        assert evil.requests == []
    assert response.status_code == 200
    [sent] = upstream.requests
    assert sent.path == "/deepseek/chat/completions" and sent.key in ("sk-ds-good",
                                                                       "sk-ds-second")
    assert sent.body["base_url"] == lure  # passed through, harmlessly: the provider's concern
    with app.app_context():
        configured = app.extensions["silk.upstreams"]["deepseek"].url
    assert configured == upstream.chat_url("deepseek")


def test_upstream_calls_ignore_proxies_in_the_environment(client, accounts, upstream,
                                                          monkeypatch):
    acct = accounts.make(credit="1")
    with FakeUpstream() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                     "all_proxy"):
            monkeypatch.setenv(name, proxy.base_url("deepseek"))
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        response = client.post(CHAT, headers={**acct.headers, **JSON},
                               json={"model": "deepseek-chat", "messages": messages()})
        assert proxy.requests == []  # a provider key never goes to a proxy nobody configured
    assert response.status_code == 200
    assert len(upstream.requests) == 1


def test_secure_defaults(app):
    from silk.defaults import Defaults
    from silk.ops.network import DEFAULT_METRICS_ALLOW, DEFAULT_TRUSTED_PROXIES, parse_networks

    assert Defaults.SILK_REGISTRATION == "invite"
    assert Defaults.SILK_OPEN_TOPUP is False
    assert Defaults.MAX_CONTENT_LENGTH and Defaults.MAX_CONTENT_LENGTH <= 16 * 1024 * 1024
    assert Defaults.SILK_AUTH_FAILURES_PER_MINUTE
    assert Defaults.SILK_REGISTRATION_PER_HOUR
    assert DEFAULT_TRUSTED_PROXIES == "127.0.0.1,::1"  # X-Forwarded-For believed from nginx
    assert all(net.is_private for net in parse_networks(DEFAULT_METRICS_ALLOW))
    assert Defaults.SILK_KEY_CACHE_TTL <= 30  # a revoked key stops working within seconds
    assert Defaults.SECRET_KEY is None  # never a constant: random per process, or from env
    with open("gunicorn.conf.py") as conf:
        assert 'bind = os.environ.get("SILK_BIND", "127.0.0.1:8000")' in conf.read()


def test_errors_never_show_internals(app, client, accounts):
    acct = accounts.make(credit="1")

    @app.get("/v1/_boom")
    def _boom():
        raise RuntimeError("secret internals: /etc/passwd sk-live-123")

    response = client.get("/v1/_boom", headers=acct.headers)
    assert response.status_code == 500
    assert response.json["error"]["message"] == "Internal error."
    assert b"secret internals" not in response.data
