"""Shared fixtures: the app on SQLite and PostgreSQL, a real fake upstream, accounts, CLI."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support import databases
from tests.support.accounts import AccountMaker
from tests.support.client import ServerClient

UPSTREAM_KEYS = {"deepseek": ["sk-ds-good", "sk-ds-second"], "ark": ["ark-good"],
                 "mimo": ["mimo-good"]}


def pytest_addoption(parser):
    parser.addoption("--db", default=os.environ.get("SILK_TEST_DBS", "sqlite,postgres"),
                     help="comma-separated backends to run database tests on")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        backends = [b.strip() for b in metafunc.config.getoption("--db").split(",") if b.strip()]
        metafunc.parametrize("backend", backends, scope="session")


@pytest.fixture(scope="session")
def fake_upstream():
    """One loopback server speaking the DeepSeek, Ark and MiMo dialects for the session."""
    with FakeUpstream(keys=UPSTREAM_KEYS) as fake:
        yield fake


@pytest.fixture
def upstream(fake_upstream):
    """The fake upstream, reset to good behaviour for each test."""
    fake_upstream.reset()
    fake_upstream.clear()
    yield fake_upstream
    fake_upstream.reset()


@pytest.fixture(scope="session")
def database_url(backend, tmp_path_factory):
    """A URL for an empty database of the backend, created once per session."""
    if backend == "sqlite":
        yield "sqlite:///" + str(tmp_path_factory.mktemp("sqlite") / "silk.db")
        return
    name = f"silk_test_{os.getpid()}"
    yield databases.postgres_database(name)
    databases.drop_postgres_database(name)


def upstream_env(monkeypatch, fake: FakeUpstream, keys=None) -> None:
    """Point every provider at the fake upstream through the documented variables."""
    keys = keys or UPSTREAM_KEYS
    for provider, prefix in (("deepseek", "DEEPSEEK"), ("ark", "ARK"), ("mimo", "MIMO")):
        monkeypatch.setenv(f"{prefix}_BASE_URL", fake.base_url(provider))
        monkeypatch.setenv(f"{prefix}_API_KEY", ",".join(keys[provider]))


@pytest.fixture
def app_config():
    """Per-test overrides of the app configuration (tests may update it before `app`)."""
    return {}


@pytest.fixture
def app(database_url, upstream, monkeypatch, app_config):
    """A fresh app on an empty schema, its providers pointed at the fake upstream."""
    from silk import create_app
    from silk.extensions import db

    upstream_env(monkeypatch, upstream)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url,
              "SECRET_KEY": "test-" + uuid.uuid4().hex, "SILK_SWEEP_INTERVAL": 0,
              "SILK_KEY_COOLDOWN": 0.5, "SILK_UPSTREAM_READ_TIMEOUT": 5.0}
    config.update(app_config)
    application = create_app(config)
    application.test_client_class = ServerClient
    with application.app_context():
        databases.reset_schema(db)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    """Flask's test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Flask's CLI runner."""
    return app.test_cli_runner()


@pytest.fixture
def accounts(app):
    """Make accounts and keys through the real service (money via the ledger)."""
    return AccountMaker(app)


def upstream_env_dict(fake: FakeUpstream, keys=None) -> dict[str, str]:
    """The provider variables pointing at the fake upstream, for a gateway subprocess."""
    keys = keys or UPSTREAM_KEYS
    env = {}
    for provider, prefix in (("deepseek", "DEEPSEEK"), ("ark", "ARK"), ("mimo", "MIMO")):
        env[f"{prefix}_BASE_URL"] = fake.base_url(provider)
        env[f"{prefix}_API_KEY"] = ",".join(keys[provider])
    return env


@pytest.fixture
def gateway_env(upstream):
    """Environment for a gunicorn-run gateway; tests may add to it before `gateway`."""
    return {**upstream_env_dict(upstream), "SILK_SWEEP_INTERVAL": "0"}


@pytest.fixture
def gateway(app, database_url, gateway_env, tmp_path):
    """The real gateway under gunicorn with two gevent workers, on the test's database."""
    from tests.support.gateway import Gateway

    with Gateway(database_url, gateway_env, workers=2,
                 log_path=tmp_path / "gunicorn.log") as running:
        yield running
