"""A forgotten `db upgrade`: /readyz fails, the API and the commands say the schema is not
ready (in one line), on an empty database and on one a revision behind."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.conftest import upstream_env
from tests.support import databases

ROOT = Path(__file__).resolve().parents[2]
SECOND = '''"""A later revision: one more table."""
import sqlalchemy as sa
from alembic import op

revision = "0099_test"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("later_table", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("later_table")
'''


@pytest.fixture
def empty_database(backend, tmp_path):
    """A URL of a database with no schema at all."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
        return
    name = f"silk_empty_{uuid.uuid4().hex[:8]}"
    yield databases.postgres_database(name)
    databases.drop_postgres_database(name)


def _app(url, upstream, monkeypatch):
    from silk import create_app

    upstream_env(monkeypatch, upstream)
    return create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url,
                       "SILK_SWEEP_INTERVAL": 0})


def _upgrade(app, directory: str | None = None, revision: str = "head",
             down: bool = False) -> None:
    """`db upgrade` (or `db downgrade`) in this process; migrations/env.py's
    logging.fileConfig would silence every logger the later tests read, so their state is
    put back."""
    import logging

    from flask_migrate import downgrade, upgrade

    loggers = {name: logger.disabled for name, logger in logging.root.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        with app.app_context():
            (downgrade if down else upgrade)(
                directory=directory or app.extensions["migrate"].directory, revision=revision)
    finally:
        for name, disabled in loggers.items():
            logging.root.manager.loggerDict[name].disabled = disabled
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)


def _says_not_ready(text: str) -> None:
    assert "schema is not ready" in text and "behind the migrations" in text
    assert "silk db upgrade" in text and "flask --app app db upgrade" in text


def test_an_empty_database_is_not_ready(empty_database, upstream, monkeypatch):
    app = _app(empty_database, upstream, monkeypatch)
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["schema"] == "behind migrations"
    _says_not_ready(ready.json["message"])
    assert client.get("/healthz").status_code == 200
    for answer in (client.get("/v1/models", headers={"Authorization": "Bearer sk-x"}),
                   client.post("/v1/chat/completions", json={"model": "deepseek-chat"}),
                   client.get("/v1/balance")):
        assert answer.status_code == 503
        assert answer.json["error"]["code"] == "schema_not_ready"
        _says_not_ready(answer.json["error"]["message"])
    result = app.test_cli_runner().invoke(args=["silk", "audit"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    _says_not_ready(lines[0])

    _upgrade(app)
    assert client.get("/readyz").json == {"status": "ok", "database": "ok", "schema": "ok"}
    assert client.get("/v1/models").status_code == 401  # on to the key check
    assert app.test_cli_runner().invoke(args=["silk", "audit"]).exit_code == 0


def test_a_database_one_revision_behind_is_not_ready(empty_database, upstream, monkeypatch,
                                                      tmp_path):
    """Migrations with a revision after the database's: not ready until upgraded."""
    from silk.ops import schema

    directory = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", directory)
    head = sorted(schema.head_revisions(str(ROOT / "migrations")))[0]
    (directory / "versions" / "0099_test.py").write_text(SECOND.format(down=head))
    app = _app(empty_database, upstream, monkeypatch)
    _upgrade(app, str(directory), head)
    app.extensions["silk.schema"] = schema.SchemaState(str(directory))
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert f"database at {head}, migrations at 0099_test" in ready.json["message"]
    assert client.get("/v1/balance").json["error"]["code"] == "schema_not_ready"
    _upgrade(app, str(directory))
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/balance").status_code == 401


def test_a_newer_schema_than_the_code_counts_as_ready(app, client):
    """A revision the code does not know is a release being rolled out: not behind."""
    from silk.extensions import db

    with app.app_context():
        databases.stamp_head(db.engine, ["ffff_from_the_future"])
    try:
        assert client.get("/readyz").status_code == 200
    finally:
        with app.app_context():
            databases.stamp_head(db.engine)


@pytest.mark.slow
def test_the_gateway_logs_pending_migrations_once(sqlite_only, empty_database, gateway_env,
                                                  tmp_path):
    import time

    import requests

    from tests.support.gateway import Gateway

    log = tmp_path / "gunicorn.log"
    with Gateway(empty_database, gateway_env, workers=2, log_path=log,
                 migrated=False) as running:
        assert requests.get(running.url + "/readyz", timeout=5).status_code == 503
        answer = requests.get(running.url + "/v1/models", timeout=5,
                              headers={"Authorization": "Bearer sk-x"})
        assert answer.status_code == 503
        _says_not_ready(answer.json()["error"]["message"])
        deadline = time.monotonic() + 10
        while "migrations at" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    text = log.read_text()
    start_lines = [line for line in text.splitlines() if '"logger":"silk.schema"' in line]
    assert len(start_lines) == 1, text
    _says_not_ready(start_lines[0])


def test_the_revisions_read_without_alembic_are_alembics(tmp_path):
    """Heads and known revisions, read from the files, match alembic's own reading: of the
    project's migrations, and of a copy with two branches (one annotated) and a merge."""
    from alembic.script import ScriptDirectory

    from silk.ops import schema

    directory = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", directory)
    versions = directory / "versions"
    head = sorted(schema.head_revisions(str(ROOT / "migrations")))[0]
    (versions / "0099_test.py").write_text(SECOND.format(down=head))
    (versions / "0098_other.py").write_text(
        SECOND.replace('revision = "0099_test"', 'revision: str = "0098_other"')
        .format(down=head))
    for stage in ("branched", "merged"):
        if stage == "merged":
            (versions / "0100_merge.py").write_text(
                '"""Merge."""\nrevision = "0100_merge"\n'
                'down_revision = ("0099_test", "0098_other")\n')
        alembic = ScriptDirectory(str(directory))
        assert schema.head_revisions(str(directory)) == frozenset(alembic.get_heads()), stage
        assert schema.known_revisions(str(directory)) == frozenset(
            rev.revision for rev in alembic.walk_revisions()), stage
        schema._graph.cache_clear()
    expected = frozenset(ScriptDirectory(str(ROOT / "migrations")).get_heads())
    assert schema.head_revisions(schema.MIGRATIONS) == expected


def test_the_server_imports_no_migration_tooling(tmp_path):
    """wsgi.py's app binds Flask-Migrate only when a `db` command runs: importing it loads
    no alembic, mako or pygments, yet `flask db` (which finds wsgi.py first) still works."""
    import subprocess
    import sys

    env = {"SILK_INSTANCE_PATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    probe = ("import sys, wsgi; print(sorted(m for m in ('alembic', 'mako', 'pygments', "
             "'flask_migrate') if m in sys.modules))")
    server = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert server.returncode == 0, server.stderr
    assert server.stdout.strip() == "[]"
    from silk.ops import schema

    [head] = schema.head_revisions(schema.MIGRATIONS)
    heads = subprocess.run([sys.executable, "-m", "flask", "db", "heads"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert heads.returncode == 0, heads.stderr
    assert heads.stdout.strip() == f"{head} (head)"


def test_a_migration_whose_revision_is_not_a_literal_is_an_error(tmp_path):
    """The reader never guesses a head: a revision it cannot read stops it."""
    from silk.ops import schema

    directory = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", directory)
    (directory / "versions" / "0099_test.py").write_text(
        SECOND.replace('revision = "0099_test"', 'REV = "0099_test"\nrevision = REV')
        .format(down="0008"))
    with pytest.raises(ValueError, match="0099_test.py: revision is not a literal"):
        schema.head_revisions(str(directory))


def test_the_upgrade_to_deleted_settlements_keeps_what_is_in_flight(empty_database, upstream,
                                                                    monkeypatch):
    """Revision 0009: the rows of settled holds go, open and swept holds stay, and no hold
    made afterwards takes the id of one that went (SQLite would give the largest id again)."""
    from sqlalchemy import text

    from silk.extensions import db

    app = _app(empty_database, upstream, monkeypatch)
    _upgrade(app, revision="0008")
    with app.app_context():
        with db.engine.begin() as conn:
            account = conn.execute(text(
                "INSERT INTO accounts (email, tier, is_admin, disabled, balance_units, "
                "reserved_units, quota_month, quota_used, quota_held, created_at) VALUES "
                "('a@example.com', 'free', false, false, 0, 0, '', 0, 0, '2026-12-01') "
                "RETURNING id")).scalar_one()
            ids = {state: conn.execute(text(
                "INSERT INTO reservations (account_id, request_id, model, hold_units, "
                "quota_tokens, prompt_estimate, state, worker, created_at, expires_at) "
                "VALUES (:account, :state, 'deepseek-chat', 0, 0, 0, :state, '', "
                "'2026-12-01', '2026-12-01') RETURNING id"),
                {"account": account, "state": state}).scalar_one()
                for state in ("open", "swept", "settled")}
        db.engine.dispose()
    _upgrade(app)
    with app.app_context():
        with db.engine.begin() as conn:
            kept = dict(conn.execute(text("SELECT state, id FROM reservations")).all())
            new = conn.execute(text(
                "INSERT INTO reservations (account_id, request_id, model, hold_units, "
                "quota_tokens, prompt_estimate, state, worker, created_at, expires_at) "
                "VALUES (:account, 'new', 'deepseek-chat', 0, 0, 0, 'open', '', "
                "'2026-12-01', '2026-12-01') RETURNING id"), {"account": account}).scalar_one()
        db.engine.dispose()
    assert kept == {"open": ids["open"], "swept": ids["swept"]}
    assert new > ids["settled"]


def test_reservations_carry_no_secondary_index(empty_database, upstream, monkeypatch):
    """Revision 0010: the table of holds in flight has only its primary key (every hold and
    settlement would write an index), and a downgrade gives the two indexes back."""
    from sqlalchemy import inspect

    from silk.extensions import db

    app = _app(empty_database, upstream, monkeypatch)

    def indexes() -> set[str]:
        with app.app_context():
            names = {index["name"] for index in inspect(db.engine).get_indexes("reservations")}
            db.engine.dispose()
        return names

    _upgrade(app)
    assert indexes() == set()
    _upgrade(app, revision="0009", down=True)
    assert indexes() == {"ix_reservations_account_id", "ix_reservations_state_expires"}


def test_a_downgrade_that_rebuilds_accounts_keeps_their_rows(empty_database, upstream,
                                                             monkeypatch):
    """Downgrading past 0007 rebuilds `accounts` on SQLite (copy, drop, rename) while keys,
    ledger entries and stored responses refer to it: every row stays, the upgrade back is
    audit-green, and the app's connections still enforce foreign keys afterwards."""
    from sqlalchemy import text

    from silk.extensions import db
    from tests.support.accounts import AccountMaker

    app = _app(empty_database, upstream, monkeypatch)
    _upgrade(app)
    account = AccountMaker(app).make(credit="5")
    answer = app.test_client().post("/v1/responses", headers=account.headers,
                                    json={"model": "deepseek-chat", "input": "hi"})
    assert answer.status_code == 200

    def rows() -> dict:
        with app.app_context():
            with db.engine.connect() as conn:
                found = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                         for table in ("accounts", "api_keys", "ledger_entries",
                                       "usage_records", "stored_responses")}
                found["balance"] = conn.execute(text(
                    "SELECT balance_units FROM accounts")).scalar()
            db.engine.dispose()
        return found

    before = rows()
    assert before["stored_responses"] == 1 and before["usage_records"] == 1
    _upgrade(app, revision="0006", down=True)
    assert rows() == before
    _upgrade(app)
    assert rows() == before
    with app.app_context():
        from silk.metering.audit import audit

        assert audit(db.engine) == []
        if db.engine.dialect.name == "sqlite":
            with db.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        db.engine.dispose()
