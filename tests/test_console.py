"""The `silk` console script: every `flask silk` command and `silk db`, from any directory,
on the instance folder SILK_INSTANCE_PATH."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["silk"] == "silk.console:main"


@pytest.mark.slow
def test_silk_runs_from_any_directory(tmp_path):
    """`python -m silk` runs exactly what the installed `silk` script runs (console.main)."""
    instance = tmp_path / "instance"
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FLASK_APP")}
    env.update(SILK_INSTANCE_PATH=str(instance), PYTHONPATH=str(ROOT))

    def silk(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "silk", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    before = silk("audit")
    assert before.returncode == 1 and "Traceback" not in before.stderr
    assert before.stderr.count("\n") == 1 and "silk db upgrade" in before.stderr
    assert silk("db", "upgrade").returncode == 0
    assert (instance / "silk.db").exists()  # the instance folder, not the working directory
    made = silk("create-account", "ops@example.com", "--credit", "5", "--admin")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().splitlines()[-1].startswith("sk-")
    again = silk("create-account", "ops@example.com")
    assert again.returncode == 1 and "already exists" in again.stdout
    listed = silk("list-accounts")
    assert listed.returncode == 0 and "ops@example.com" in listed.stdout
    assert silk("audit").returncode == 0
    bad = subprocess.run([sys.executable, "-m", "silk", "audit"], cwd=elsewhere,
                         env={**env, "SILK_OPEN_TOPUP": "maybe"}, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "SILK_OPEN_TOPUP='maybe' is not allowed" in bad.stderr
    assert not list(elsewhere.iterdir())  # nothing written where it ran
