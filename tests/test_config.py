"""Settings from the environment: each kind read strictly, a bad one named in one line."""

import pytest


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("SILK_DB_POOL_SIZE", "abc", "a whole number"),
    ("SILK_RESERVATION_TTL", "1.5", "a whole number"),
    ("SILK_RESERVATION_TTL", "0", "a whole number of seconds, at least 1"),
    ("SILK_RESERVATION_TTL", "-5", "a whole number of seconds, at least 1"),
    ("SILK_IMAGE_TOKEN_ALLOWANCE", "-6000", "a whole number of tokens, at least 0"),
    ("SILK_BODY_READ_TIMEOUT", "soon", "a number"),
    ("SILK_DB_CONNECT_TIMEOUT", "nan", "a number"),
    ("SILK_OPEN_TOPUP", "maybe", "true or false"),
    ("SILK_OPEN_TOPUP", "on", "true or false"),
    ("SILK_DEFAULT_RPM", "ten", "a whole number"),
    ("SILK_ACCOUNT_CONCURRENCY", "0", "a whole number of at least 1, or unset"),
    ("SILK_ACCOUNT_MODEL_TPM", "-5", "a whole number of at least 1, or unset"),
    ("SILK_CONCURRENCY_LEASE", "1", "a number of seconds, at least 3"),
    ("SILK_ALERT_RETENTION_DAYS", "0", "a whole number of days, at least 1 (below 36500)"),
    ("SILK_ALERT_RETENTION_DAYS", "-3", "a whole number of days, at least 1 (below 36500)"),
    ("SILK_ALERT_RETENTION_DAYS", "1.5", "a whole number"),
    ("SILK_MAX_RETRY_AFTER", "0", "a number of seconds above 0, at most 86400"),
    ("SILK_MAX_RETRY_AFTER", "-1", "a number of seconds above 0, at most 86400"),
    ("SILK_MAX_RETRY_AFTER", "999999", "a number of seconds above 0, at most 86400"),
    ("SILK_UPSTREAM_MIN_TOKENS_PER_SECOND", "0", "a number of tokens a second above 0"),
    ("SILK_UPSTREAM_MAX_ANSWER_WAIT", "0", "a number of seconds above 0, at most 86400"),
    ("SILK_UPSTREAM_MAX_ANSWER_WAIT", "100000", "a number of seconds above 0, at most 86400"),
    ("SILK_TIERS", "{not json", "a JSON object"),
    ("SILK_MODELS", "[1, 2]", "a JSON object"),
    ("SILK_METRICS_ALLOW", "10.0.0.0/8, not-an-address", "addresses or CIDRs"),
    ("SILK_TRUSTED_PROXIES", "nginx.local", "addresses or CIDRs"),
])
def test_a_bad_setting_stops_the_gateway_in_one_line(monkeypatch, tmp_path, variable, value,
                                                     allowed):
    from silk import create_app
    from silk.config import ConfigError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    line = str(err.value)
    assert "\n" not in line
    assert f"{variable}={value!r}" in line and allowed in line


# Every setting that becomes a timedelta, a date or a sleep, out of its range.
@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("SILK_ALERT_KEY_EXPIRY_DAYS", "99999999", "0 (no alert) or a whole number of days, "
                                               "below 36500"),
    ("SILK_ALERT_KEY_EXPIRY_DAYS", "-1", "0 (no alert) or a whole number of days"),
    ("SILK_RESPONSES_RETENTION_DAYS", "99999", "a whole number of days, at least 1 (below"),
    ("SILK_RESERVATION_TTL", "9999999999", "a whole number of seconds, at least 1, at most "
                                           "86400"),
    ("SILK_ALERT_LEASE", "1e12", "a number of seconds above 0, at most 86400"),
    ("SILK_ALERT_TIMEOUT", "1e12", "a number of seconds above 0, at most 86400"),
    ("SILK_ALERT_INTERVAL", "1e12", "0 (this process delivers none) or a number of seconds"),
    ("SILK_ALERT_RETRY_BASE", "-1", "a number of seconds from 0 to 86400"),
    ("SILK_CONCURRENCY_LEASE", "1e9", "a number of seconds, at least 3, at most 86400"),
    ("SILK_KEY_COOLDOWN", "1e12", "a number of seconds from 0 to 86400"),
    ("SILK_KEY_COOLDOWN", "-1", "a number of seconds from 0 to 86400"),
    ("SILK_ROUTE_REST", "1e12", "a number of seconds from 0 to 86400"),
    ("SILK_SWEEP_INTERVAL", "-1", "0 (no sweep in this process) or a number of seconds"),
    ("SILK_SWEEP_INTERVAL", "1e12", "0 (no sweep in this process) or a number of seconds"),
    ("SILK_KEY_CACHE_TTL", "1e12", "a number of seconds from 0 to 86400"),
    ("SILK_BODY_READ_TIMEOUT", "-1", "0 (no limit) or a number of seconds up to 86400"),
    ("SILK_UPSTREAM_CONNECT_TIMEOUT", "0", "a number of seconds above 0, at most 86400"),
    ("SILK_UPSTREAM_READ_TIMEOUT", "-5", "a number of seconds above 0, at most 86400"),
    ("SILK_DB_CONNECT_TIMEOUT", "0", "a number of seconds above 0, at most 86400"),
    ("SILK_DB_STATEMENT_TIMEOUT", "-1", "0 (no limit) or a number of seconds from 0.001"),
    ("SILK_DB_STATEMENT_TIMEOUT", "0.0001", "0 (no limit) or a number of seconds from 0.001"),
    ("SILK_CONSOLE_SESSION_HOURS", "0", "a number of hours above 0, at most 8760"),
    ("SILK_DASHBOARD_SESSION_HOURS", "0", "a number of hours above 0, at most 8760"),
    ("SILK_DASHBOARD_SESSION_HOURS", "1e12", "a number of hours above 0, at most 8760"),
    ("SILK_STREAM_PACE_MS", "5000", "a number of milliseconds from 0 to 1000"),
    ("SILK_STREAM_PACE_WHEN_LATE_MS", "-1", "a number of milliseconds from 0 to 1000"),
])
def test_a_duration_out_of_its_range_stops_the_gateway_in_one_line(monkeypatch, tmp_path,
                                                                   variable, value, allowed):
    """SILK_ALERT_KEY_EXPIRY_DAYS=99999999 started, then every key-expiry sweep and every
    alert delivery round raised OverflowError (a date past year 9999); other durations
    overflowed a lease or a report's date, or a negative one meant no wait at all."""
    test_a_bad_setting_stops_the_gateway_in_one_line(monkeypatch, tmp_path, variable, value,
                                                     allowed)


_MOST = {"SILK_ALERT_KEY_EXPIRY_DAYS": 36499, "SILK_ALERT_RETENTION_DAYS": 36499,
         "SILK_RESPONSES_RETENTION_DAYS": 36499, "SILK_RESERVATION_TTL": 86400,
         "SILK_ALERT_LEASE": 86400.0, "SILK_KEY_COOLDOWN": 86400.0,
         "SILK_ROUTE_REST": 86400.0, "SILK_ROUTE_FAILURES": 1}


@pytest.mark.parametrize("app_config", [_MOST])
def test_each_duration_at_its_most_still_works(app, client, accounts, upstream):
    """The largest value each range allows makes no date overflow: a chat request's hold,
    a key and a route resting (and reported), the key-expiry sweep, an alert round."""
    from silk.alerts.delivery import deliver_due
    from silk.alerts.service import key_expiry_chore
    from silk.extensions import db

    acct, admin = accounts.make(credit="1"), accounts.make(admin=True)
    upstream.enqueue("deepseek", status=503, times=2)
    failed = client.post("/v1/chat/completions", headers=acct.headers,
                         json={"model": "deepseek-chat", "stream": False,
                               "messages": [{"role": "user", "content": "hi"}]})
    assert failed.status_code == 503, failed.json
    shown = client.get("/v1/admin/providers", headers=admin.headers)
    assert shown.status_code == 200, shown.json
    assert {k["state"] for k in shown.json["keys"] if k["provider"] == "deepseek"} == {
        "resting"}
    with app.app_context():
        assert key_expiry_chore(36499)(db.engine) == 0
        assert deliver_due(db.engine, app.config) >= 0
    assert accounts.audit() == []


@pytest.mark.parametrize("variable", ["SILK_ALERT_TIMEOUT", "SILK_ALERT_LEASE"])
def test_an_alert_timeout_or_lease_of_0_stops_the_gateway(monkeypatch, tmp_path, variable):
    """A timeout of 0 (read as "none") made every delivery round raise before it recorded
    an attempt, so events stayed pending forever; a lease of 0 let every worker claim one."""
    from silk import create_app
    from silk.config import ConfigError

    monkeypatch.setenv(variable, "0")
    with pytest.raises(ConfigError, match=f"{variable}='0' is not allowed: use a number of "
                                          "seconds above 0"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True),
    ("false", False), ("False", False), ("0", False), ("no", False), (" NO ", False),
])
def test_booleans_accept_true_false_1_0_yes_no(monkeypatch, tmp_path, value, expected):
    from silk import create_app

    monkeypatch.setenv("SILK_OPEN_TOPUP", value)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    assert app.config["SILK_OPEN_TOPUP"] is expected


def test_numbers_lists_and_json_are_read(monkeypatch, tmp_path):
    from silk import create_app

    monkeypatch.setenv("SILK_DB_POOL_SIZE", " 12 ")
    monkeypatch.setenv("SILK_BODY_READ_TIMEOUT", "2.5")
    monkeypatch.setenv("SILK_DEFAULT_RPM", "60")
    monkeypatch.setenv("SILK_ACCOUNT_MODEL_CONCURRENCY", "4")
    monkeypatch.setenv("SILK_TIERS", '{"free": {"discount_percent": "5", '
                                     '"monthly_free_tokens": 7}}')
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    assert app.config["SILK_DB_POOL_SIZE"] == 12
    assert app.config["SILK_BODY_READ_TIMEOUT"] == 2.5
    assert app.config["SILK_DEFAULT_RPM"] == 60
    assert app.config["SILK_ACCOUNT_MODEL_CONCURRENCY"] == 4
    assert app.config["SILK_TIERS"]["free"]["monthly_free_tokens"] == 7


def test_a_bad_setting_in_the_instance_file_is_named(tmp_path):
    from silk import create_app
    from silk.config import ConfigError

    with pytest.raises(ConfigError, match=r"SILK_DB_POOL_SIZE='8' is not allowed: use a whole"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db",
                    "SILK_DB_POOL_SIZE": "8"})
    with pytest.raises(ConfigError, match="SILK_OPEN_TOPUP='yes'"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db",
                    "SILK_OPEN_TOPUP": "yes"})


def test_reasoning_streamed_is_checked_and_cautious_when_left_out(tmp_path):
    """A provider that leaves reasoning_streamed out is taken to hide its reasoning (a
    client's hang-up then reads its stream to the provider's usage); the built-ins stream
    theirs; anything but true or false stops the gateway."""
    from silk import create_app
    from silk.config import ConfigError
    from silk.defaults import PROVIDERS

    url = f"sqlite:///{tmp_path}/x.db"
    added = {"name": "Added", "base_url": "http://127.0.0.1:9", "env": "ADDEDX"}
    app = create_app({"SQLALCHEMY_DATABASE_URI": url,
                      "SILK_PROVIDERS": {**PROVIDERS, "added": added}})
    providers = app.extensions["silk.catalogue"].providers
    assert not providers["added"].reasoning_streamed
    assert all(providers[pid].reasoning_streamed for pid in ("deepseek", "ark", "mimo"))
    with pytest.raises(ConfigError, match="provider 'added': reasoning_streamed must be true "
                                          "or false"):
        create_app({"SQLALCHEMY_DATABASE_URI": url, "SILK_PROVIDERS": {
            **PROVIDERS, "added": {**added, "reasoning_streamed": "no"}}})


@pytest.mark.slow
@pytest.mark.parametrize(("variable", "value", "line"), [
    ("SILK_DB_POOL_SIZE", "abc", "SILK_DB_POOL_SIZE='abc' is not allowed: use a whole number"),
    ("SILK_WORKERS", "abc", "SILK_WORKERS='abc' is not allowed: use a whole number of at"),
    ("SILK_OPEN_TOPUP", "maybe", "SILK_OPEN_TOPUP='maybe' is not allowed: use true or false"),
])
def test_gunicorn_says_it_once_without_a_traceback(tmp_path, variable, value, line):
    import os
    import subprocess
    import sys

    from tests.support.gateway import ROOT, free_port

    env = {**os.environ, variable: value, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "wsgi:app", "-w", "2", "-b",
                           f"127.0.0.1:{free_port()}"], cwd=ROOT, env=env, timeout=60,
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert done.stderr.count(line) == 1, done.stderr
    assert "Traceback" not in done.stderr and "Booting worker" not in done.stderr
