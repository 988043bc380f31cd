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


@pytest.mark.parametrize("variable", ["SILK_ALERT_TIMEOUT", "SILK_ALERT_LEASE"])
def test_an_alert_timeout_or_lease_of_0_stops_the_gateway(monkeypatch, tmp_path, variable):
    """A timeout of 0 (read as "none") made every delivery round raise before it recorded
    an attempt, so events stayed pending forever; a lease of 0 let every worker claim one."""
    from silk import create_app
    from silk.config import ConfigError

    monkeypatch.setenv(variable, "0")
    with pytest.raises(ConfigError, match=f"{variable} must be a number of seconds above 0"):
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
