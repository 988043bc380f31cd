"""PostgreSQL's group-committed metering: a remembered account state never mis-prices."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from silk.errors import NotFound
from silk.pricing import Usage
from tests.chat.helpers import set_quota_left
from tests.metering.test_service import _reserve, _services


@pytest.fixture(autouse=True)
def _postgres_only(backend):
    if backend != "postgres":
        pytest.skip("PostgreSQL's channel; SQLite reserves under its write lock")


def _sql(app, statement: str, **params) -> None:
    """Change the account behind the gateway's back, as another process or host would."""
    engine, _, _ = _services(app)
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def _channel(app):
    from silk.metering import postgres

    engine, _, _ = _services(app)
    return postgres.channel(engine)


def test_a_tier_changed_elsewhere_prices_the_next_request(app, accounts):
    acct = accounts.make(tier="free", credit="1")
    set_quota_left(app, acct.id)
    assert _reserve(app, acct.id, "t1").tier.name == "free"
    assert _channel(app).snapshots[acct.id].tier == "free"  # remembered
    _sql(app, "UPDATE accounts SET tier = 'team' WHERE id = :id", id=acct.id)
    hold = _reserve(app, acct.id, "t2")
    assert hold.tier.name == "team"
    assert hold.quota_tokens == 1100  # team's larger quota covers the whole request
    engine, _, service = _services(app)
    settled = service.settle(engine, hold, service.Outcome(status="ok", usage=Usage(100, 10)))
    assert settled.charged_units == 0
    assert accounts.audit() == []


def test_money_added_elsewhere_is_seen_before_refusing(app, accounts):
    acct = accounts.make(credit="0.0003")  # 300,000 units; a hold is 294,000
    set_quota_left(app, acct.id)
    _reserve(app, acct.id, "m1")
    assert _channel(app).snapshots[acct.id].reserved_units == 294_000
    _sql(app, "UPDATE accounts SET balance_units = balance_units + 1000000 WHERE id = :id",
         id=acct.id)
    second = _reserve(app, acct.id, "m2")  # the remembered state says 6,000 left
    assert second.hold_units == 294_000
    assert accounts.row(acct.id).reserved_units == 2 * 294_000


def test_free_quota_returned_elsewhere_is_used_not_charged(app, accounts):
    """A remembered 'quota used up' must not make a request pay for tokens that are free."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    paid = _reserve(app, acct.id, "q1")
    assert paid.quota_tokens == 0 and paid.hold_units == 294_000
    _sql(app, "UPDATE accounts SET quota_used = 0 WHERE id = :id", id=acct.id)
    free = _reserve(app, acct.id, "q2")
    assert free.quota_tokens == 1100 and free.hold_units == 0


def test_free_quota_taken_elsewhere_is_not_promised_twice(app, accounts):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, left=5000)
    assert _reserve(app, acct.id, "p1").quota_tokens == 1100
    _sql(app, "UPDATE accounts SET quota_held = quota_held + 3500 WHERE id = :id", id=acct.id)
    hold = _reserve(app, acct.id, "p2")  # 400 free tokens are really left, not 3,900
    assert hold.quota_tokens == 400
    row = accounts.row(acct.id)
    assert row.quota_held == 1100 + 3500 + 400


def test_an_account_disabled_elsewhere_is_refused(app, accounts):
    acct = accounts.make(credit="1")
    _reserve(app, acct.id, "d1")
    _sql(app, "UPDATE accounts SET disabled = TRUE WHERE id = :id", id=acct.id)
    with pytest.raises(NotFound):
        _reserve(app, acct.id, "d2")


def test_a_failing_statement_fails_alone_in_its_batch(app, accounts):
    from silk.metering import postgres

    acct = accounts.make(credit="1")
    line = _channel(app)
    read = postgres.Queued(acct.id, postgres.READING, postgres.SNAPSHOT, {"account": acct.id})
    divide = postgres.Statement("silk_test_divide",
                                "SELECT CAST(NULL AS INTEGER), 1 / (%(account)s - %(account)s)")
    bad = postgres.Queued(acct.id, postgres.READING, divide, {"account": acct.id})
    answers = line._run([read, bad, read])
    assert answers[0].state.balance_units == 10**9
    assert isinstance(answers[1], DataError)
    assert answers[2] == answers[0]


def _lsn(app, function: str) -> int:
    engine, _, _ = _services(app)
    with engine.connect() as conn:
        return _lsn_value(conn.execute(text(f"SELECT {function}()")).scalar_one())


def _lsn_value(lsn: str) -> int:
    """A WAL position ('16/B374D848') as a number."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_a_charge_is_answered_once_the_wal_holding_it_is_on_disk(app, accounts):
    """A charging batch commits without waiting (its rows' locks end at once), and the
    exchange answers after a transaction of its own that writes to the WAL, whose commit
    waits for the flush: when a settlement returns, the server's flushed WAL reaches past
    the position that transaction reported, which is after the charge's commit record."""
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    hold = _reserve(app, acct.id, "w1")
    before = _lsn(app, "pg_current_wal_insert_lsn")
    engine, _, service = _services(app)
    settled = service.settle(engine, hold, service.Outcome(status="ok", usage=Usage(100, 10)))
    flushed = _lsn(app, "pg_current_wal_flush_lsn")
    reported = _channel(app).flushed_to
    assert settled.charged_units > 0
    assert reported is not None and _lsn_value(reported) > before
    assert flushed >= _lsn_value(reported)
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == settled.charged_units
    assert accounts.audit() == []


@pytest.mark.parametrize(("server", "channel"), [
    ("off", "on"),  # commits that do not wait for the disk: the promise needs them to
    ("local", "local"), ("remote_apply", "remote_apply"),  # the operator's stronger choices
])
def test_a_charge_waits_for_the_disk_whatever_the_sessions_default(
        request, app_config, database_url, server, channel):
    """With synchronous_commit off for the role, database or server, the flush after a
    charge would not wait: the channel turns it on for its own session, and leaves a
    setting that waits at least for the local disk as it is."""
    from sqlalchemy.engine import make_url

    app_config["SQLALCHEMY_DATABASE_URI"] = make_url(database_url).update_query_dict(
        {"options": f"-c synchronous_commit={server}"}).render_as_string(hide_password=False)
    app = request.getfixturevalue("app")
    accounts = request.getfixturevalue("accounts")
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    hold = _reserve(app, acct.id, "sc1")
    engine, _, service = _services(app)
    with engine.connect() as conn:  # the app's other sessions keep the server's default
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == server
    session = _channel(app)._conn
    assert session.execute("SHOW synchronous_commit").fetchone()[0] == channel
    settled = service.settle(engine, hold, service.Outcome(status="ok", usage=Usage(100, 10)))
    flushed = _lsn(app, "pg_current_wal_flush_lsn")
    reported = _channel(app).flushed_to
    assert settled.charged_units > 0
    assert reported is not None and flushed >= _lsn_value(reported)
    assert accounts.audit() == []


@pytest.fixture
def limited_database(backend):
    """A database owned by a role that is no superuser and may not call the function the
    channel flushes with: EXECUTE revoked from PUBLIC in that database, as on a hardened
    server. Its URL, for that role."""
    import os

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from tests.support import databases

    name = f"silk_limited_{os.getpid()}"
    admin = create_engine(databases.PG_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))

    drop()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
        conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{name}"'))
    url = make_url(databases.PG_ADMIN_URL).set(database=name)
    inside = create_engine(url, isolation_level="AUTOCOMMIT")
    with inside.connect() as conn:
        conn.execute(text("REVOKE EXECUTE ON FUNCTION "
                          "pg_logical_emit_message(boolean, text, text) FROM PUBLIC"))
    inside.dispose()
    yield url.set(username=name).render_as_string(hide_password=False)
    drop()
    admin.dispose()


def test_a_session_that_may_not_flush_by_message_commits_charges_waiting(
        request, app_config, limited_database):
    """Where the function is revoked, a charging batch would commit and then fail on it,
    its client answered 503 though charged: the channel finds out when it connects, and
    commits charging batches itself with the wait for the disk."""
    from sqlalchemy.exc import ProgrammingError

    app_config["SQLALCHEMY_DATABASE_URI"] = limited_database
    app = request.getfixturevalue("app")
    accounts = request.getfixturevalue("accounts")
    engine, _, service = _services(app)
    with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
        conn.execute(text("SELECT pg_logical_emit_message(true, 'silk', 'probe')"))
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    holds = [_reserve(app, acct.id, f"nf{i}") for i in range(2)]
    assert _channel(app).flush_after_commit is False
    before = _lsn(app, "pg_current_wal_insert_lsn")
    for hold in holds:
        settled = service.settle(engine, hold, service.Outcome(status="ok",
                                                               usage=Usage(100, 10)))
        assert settled.charged_units > 0
    assert _lsn(app, "pg_current_wal_flush_lsn") > before  # the charges' commits waited
    assert _channel(app).flushed_to is None
    assert [r.status for r in accounts.usage_records(acct.id)] == ["ok", "ok"]
    assert accounts.audit() == []


def test_a_session_that_may_flush_by_message_says_so(app, accounts):
    acct = accounts.make(credit="1")
    _reserve(app, acct.id, "f1")
    assert _channel(app).flush_after_commit is True


def test_a_session_the_server_ended_is_replaced(app, accounts):
    acct = accounts.make(credit="1")
    _reserve(app, acct.id, "s1")
    pid = _channel(app)._conn.info.backend_pid
    _sql(app, "SELECT pg_terminate_backend(:pid, 5000)", pid=pid)  # waits until it is gone
    hold = _reserve(app, acct.id, "s2")
    assert _channel(app)._conn.info.backend_pid != pid
    assert hold.quota_tokens == 1100
    assert accounts.row(acct.id).quota_held == 2 * 1100


def test_a_row_locked_elsewhere_delays_only_its_own_requests(app, accounts, monkeypatch):
    """A lock held outside metering fails that account's requests in bounded time (503)."""
    import time

    from sqlalchemy.exc import OperationalError

    from silk.errors import database_unavailable
    from silk.metering import postgres

    monkeypatch.setattr(postgres, "LOCK_TIMEOUT", 0.3)
    stuck, free = accounts.make(credit="1"), accounts.make(credit="1")
    _channel(app).close()  # the next connection takes the short lock timeout
    engine, _, _ = _services(app)
    with engine.connect() as other:
        other.execute(text("SELECT 1 FROM accounts WHERE id = :id FOR UPDATE"), {"id": stuck.id})
        started = time.monotonic()
        with pytest.raises(OperationalError) as raised:
            _reserve(app, stuck.id, "l1")
        assert time.monotonic() - started < 3
        assert database_unavailable(raised.value)  # answered 503, retryable
        assert _reserve(app, free.id, "l2").reservation_id
        other.rollback()
    assert _reserve(app, stuck.id, "l3").reservation_id


@pytest.fixture
def stalling_app(app, database_url):
    """A second app on the same database through a proxy the test can freeze."""
    from sqlalchemy.engine import make_url

    from silk import create_app
    from silk.extensions import db
    from tests.support.tcpproxy import FreezableProxy

    url = make_url(database_url)
    with FreezableProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        proxied = create_app({
            "TESTING": True, "SECRET_KEY": "stall", "SILK_SWEEP_INTERVAL": 0,
            "SQLALCHEMY_DATABASE_URI": url.set(host="127.0.0.1", port=proxy.port)
            .render_as_string(hide_password=False),
            "SILK_DB_STATEMENT_TIMEOUT": 1.0, "SILK_DB_CONNECT_TIMEOUT": 2})
        proxied.proxy = proxy
        yield proxied
        proxy.close()  # before disposing: closing its sessions must not wait on the proxy
        with proxied.app_context():
            db.engine.dispose()


def test_a_stalled_database_fails_metering_in_bounded_time(stalling_app, accounts):
    """A server that accepts bytes and never answers: each metering call gives up after
    SILK_DB_STATEMENT_TIMEOUT (or the connect timeout) as 'database unavailable'."""
    import time

    from sqlalchemy.exc import OperationalError

    from silk.errors import database_unavailable

    acct = accounts.make(credit="1")
    engine, _, service = _services(stalling_app)
    with stalling_app.app_context():
        hold = _reserve(stalling_app, acct.id, "warm")  # the channel is connected
        stalling_app.proxy.freeze()
        for attempt in ("stalled", "reconnect"):  # an open session, then a new one
            started = time.monotonic()
            with pytest.raises(OperationalError) as raised:
                _reserve(stalling_app, acct.id, attempt)
            assert time.monotonic() - started < 4, attempt
            assert database_unavailable(raised.value)
        started = time.monotonic()
        with pytest.raises(OperationalError):
            service.settle(engine, hold, service.Outcome(status="ok", usage=Usage(10, 1)))
        assert time.monotonic() - started < 4
        stalling_app.proxy.thaw()
        settled = service.settle(engine, hold, service.Outcome(status="ok", usage=Usage(10, 1)))
    assert settled is not None  # the hold it kept is settled once the server answers
    assert accounts.audit() == []


def test_a_stalled_database_is_a_503_to_the_client(stalling_app, accounts, upstream):
    import time

    acct = accounts.make(credit="1")
    client = stalling_app.test_client()
    request = {"model": "deepseek-chat", "max_tokens": 5, "stream": False,
               "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=request,
                       headers=acct.headers).status_code == 200  # the key is now cached
    stalling_app.proxy.freeze()
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=request, headers=acct.headers)
    assert time.monotonic() - started < 4
    assert response.status_code == 503, response.get_data()[:300]
    assert response.json["error"]["code"] == "database_unavailable"
    assert response.headers["retry-after"]
    assert len(upstream.requests) == 1  # nothing was sent without a hold


def test_every_postgres_session_has_a_statement_timeout_and_keepalives(app, accounts):
    from silk.extensions import db

    acct = accounts.make(credit="1")
    _reserve(app, acct.id, "t")
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "10s"
        params = conn.connection.driver_connection.info.get_parameters()
        assert params["keepalives"] == "1" and params["connect_timeout"] == "5"
    channel_conn = _channel(app)._conn
    assert channel_conn.execute("SHOW statement_timeout").fetchone()[0] == "10s"
    assert channel_conn.info.get_parameters()["tcp_user_timeout"] == "30000"
