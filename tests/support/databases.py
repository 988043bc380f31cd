"""Test databases: a PostgreSQL database per session, and a clean schema per test."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("SILK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def postgres_database(name: str) -> str:
    """Create (or recreate) database `name` and return its URL; skip if no server."""
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("SILK_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    return _pg_url(name)


def drop_postgres_database(name: str) -> None:
    """Drop a database made by postgres_database."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def reset_schema(db) -> None:
    """Empty every table (creating them the first time, stamped with the migrations' head
    as `db upgrade` leaves them), so each test starts clean."""
    engine = db.engine
    db.metadata.create_all(engine)
    stamp_head(engine)
    tables = list(reversed(db.metadata.sorted_tables))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


def stamp_head(engine, revisions=None) -> None:
    """Record in alembic_version that the schema is at the migrations' head (or `revisions`),
    as `flask db upgrade` would."""
    from silk.ops.schema import MIGRATIONS, head_revisions

    wanted = set(revisions if revisions is not None else head_revisions(MIGRATIONS))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS alembic_version "
                          "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        current = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
        if current != wanted:
            conn.execute(text("DELETE FROM alembic_version"))
            for revision in sorted(wanted):
                conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})


def create_schema(url: str) -> None:
    """Give the database at `url` the schema at the migrations' head, as `db upgrade` would
    (tables that exist are kept)."""
    from sqlalchemy import create_engine

    from silk import models  # noqa: F401 - every table on the metadata
    from silk.extensions import db

    engine = create_engine(url)
    try:
        db.metadata.create_all(engine)
        stamp_head(engine)
    finally:
        engine.dispose()
