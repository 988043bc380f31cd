"""Lint and schema drift are part of the suite, so CI fails on them as on any test."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import databases
from tests.support.gateway import ROOT


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed beside this Python")
    result = subprocess.run([str(ruff), "check", "--output-format", "concise", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean():
    """Types, as pyproject.toml configures them: strict on metering and pricing."""
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_migrations_build_the_schema_and_match_the_models(backend, tmp_path):
    """`flask db upgrade` works on the backend and `flask db check` finds no drift."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'migrate.db'}"
    else:
        url = databases.postgres_database(f"silk_migrate_{os.getpid()}")
    env = {**os.environ, "DATABASE_URL": url}
    flask = [sys.executable, "-m", "flask", "--app", "app", "db"]
    try:
        for step in ("upgrade", "check", "downgrade", "upgrade"):
            args = [*flask, step] + (["base"] if step == "downgrade" else [])
            result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                                    check=False)
            assert result.returncode == 0, f"{step}: {result.stdout}{result.stderr}"
    finally:
        if backend == "postgres":
            databases.drop_postgres_database(f"silk_migrate_{os.getpid()}")
