"""Node.js clients of the gateway (tests/clients/<name>/), installed from their lock files on use.

Each client pins its npm packages in a package.json and package-lock.json of its own; a bare
`pytest` on a clean clone installs them with `npm ci` the first time a test needs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parents[1] / "clients"


def install(name: str) -> Path:
    """tests/clients/<name>, with its node_modules installed (`npm ci`) if missing."""
    folder = CLIENTS / name
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed")
    if not (folder / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--prefix", str(folder), "--no-audit", "--no-fund"],
                       check=True, capture_output=True, timeout=600)
    return folder


def node_client_fixture(name: str):
    """A session fixture giving the folder of the installed client `name`."""

    @pytest.fixture(scope="session")
    def client_folder() -> Path:
        return install(name)

    return client_folder


def run_node(folder: Path, script: str, *args: str, timeout: float = 60) -> dict:
    """Run `node <script> args...` in the client's folder; its one JSON line of output."""
    done = subprocess.run(["node", script, *args], cwd=folder, capture_output=True, text=True,
                          timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"node failed: {done.stderr[-2000:]}"
    return json.loads(lines[-1])
