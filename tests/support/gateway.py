"""Run the real gateway under gunicorn (gevent workers) in a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    """A gunicorn process serving `wsgi:app` from the project root."""

    def __init__(self, database_url: str, env: dict[str, str], *, workers: int = 2,
                 extra_args: tuple[str, ...] = (), log_path: Path | None = None,
                 migrated: bool = True):
        self.database_url = database_url
        self.migrated = migrated  # give the database its schema first, as `db upgrade` does
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "DATABASE_URL": database_url,
                    "SECRET_KEY": "gateway-test-secret"}
        self.env.pop("SILK_TEST_DBS", None)
        self.args = [sys.executable, "-m", "gunicorn", "wsgi:app", "-b", f"127.0.0.1:{self.port}",
                     "-w", str(workers), *extra_args]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Gateway:
        """Start gunicorn and wait until /healthz answers."""
        if self.migrated:
            from tests.support.databases import create_schema

            create_schema(self.database_url)
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway did not start in time")

    def worker_pids(self) -> list[int]:
        """Pids of gunicorn's worker processes."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self, graceful: bool = False) -> None:
        """Stop gunicorn: SIGTERM waits for open requests, SIGINT (default) does not."""
        if self.process is None or self.process.poll() is not None:
            return
        # Signal the master only (as systemd's KillMode=mixed does): it stops its workers, and
        # a signal to the group could land on a worker forked mid-reload and be lost.
        self.process.send_signal(signal.SIGTERM if graceful else signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
