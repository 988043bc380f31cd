"""The processes a benchmark run starts: the fake upstream, the gateway (SQLite or PostgreSQL)
and LiteLLM's proxy. Each one is started in its own session and stopped by its process group,
so that nothing it spawned outlives the run."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import procinfo

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]
LITELLM_SPEC = "litellm[proxy]==1.106.12"
LITELLM_VERSION = "1.106.12"
PORTKEY_VERSION = "1.15.2"
PORTKEY_SPEC = f"@portkey-ai/gateway@{PORTKEY_VERSION}"
DEAD_PROXY = "http://127.0.0.1:9"  # any accidental outbound HTTP(S) goes nowhere
SCRUB_PREFIXES = ("SILK_", "DEEPSEEK_", "ARK_", "MIMO_", "LITELLM_", "OPENAI_")
SCRUB_NAMES = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FLASK_APP")
PRIORITY: dict[str, int] = {}  # {"nice": N} set by the runner's --nice


def set_autogroup_nice(pid: int | str, nice: int) -> bool:
    """Give the scheduler autogroup of pid's session a nice value. With autogroups on
    (Linux's default for desktops and many VMs), CPU is shared between sessions first, so a
    process's own nice value does not count against other sessions' processes."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
        return True
    except OSError:
        return False


class TargetError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env() -> dict[str, str]:
    """The caller's environment, less anything that could configure a target behind our back,
    plus a proxy that makes any outbound HTTP(S) attempt fail (only loopback is exempt)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(SCRUB_PREFIXES) and k not in SCRUB_NAMES
    }
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[k] = DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    return env


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """Status of GET path on 127.0.0.1:port, or None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            s.sendall(req.encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            line = data.split(b"\r\n", 1)[0].split()
            return int(line[1]) if len(line) > 1 else None
    except (OSError, ValueError):
        return None


class Proc:
    """A child process in its own session, logging to a file."""

    def __init__(self, name: str, cmd: list[str], env: dict, cwd: Path, log: Path):
        self.name = name
        self.cmd = cmd
        self.log = log
        self._logf = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.t_spawn = time.monotonic()
        self.popen = subprocess.Popen(
            cmd,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if PRIORITY.get("nice"):
            set_autogroup_nice(self.popen.pid, PRIORITY["nice"])

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_http(self, port: int, path: str, timeout: float, interval: float = 0.01) -> float:
        """Seconds from spawn to the first 200 on path."""
        deadline = self.t_spawn + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise TargetError(
                    f"{self.name} exited with {self.popen.returncode}:\n" + self.log_tail()
                )
            if http_status(port, path, timeout=0.5) == 200:
                return time.monotonic() - self.t_spawn
            time.sleep(interval)
        raise TargetError(f"{self.name}: no 200 on {path} within {timeout}s:\n" + self.log_tail())

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # whatever else is left in its process group (a worker that outlived its master)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout=5)
        self._logf.close()


# ---------------------------------------------------------------------------------------------


class FakeUpstream:
    def __init__(self, python: str, logdir: Path):
        self.python = python
        self.logdir = logdir
        self.port = free_port()
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc(
            "fake-upstream",
            [self.python, str(BENCH / "fake_upstream.py"), "--port", str(self.port)],
            base_env(),
            BENCH,
            self.logdir / "fake_upstream.log",
        )
        self.proc.wait_http(self.port, "/healthz", timeout=20)

    def base(self, label: str) -> str:
        return f"http://127.0.0.1:{self.port}/{label}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf.split(b"\r\n\r\n", 1)[1])

    def stats(self) -> dict:
        return self._call("GET", "/_stats")

    def set_profile(self, **profile) -> dict:
        return self._call("POST", "/_profile", profile)

    def wait_idle(self, timeout: float = 10.0) -> int:
        """Wait until no stream is open upstream; return how many still are."""
        deadline = time.monotonic() + timeout
        open_now = self.stats()["open_streams"]
        while open_now and time.monotonic() < deadline:
            time.sleep(0.1)
            open_now = self.stats()["open_streams"]
        return open_now

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(grace=3)


# ---------------------------------------------------------------------------------------------


class Target:
    """What the runner needs from a server under test."""

    name = "?"
    kind = "?"
    health_path = "/healthz"
    chat_path = "/v1/chat/completions"

    def __init__(self, logdir: Path, upstream: FakeUpstream, workers: int):
        self.logdir = logdir
        self.upstream = upstream
        self.workers = workers
        self.port = free_port()
        self.proc: Proc | None = None
        self.key: str | None = None
        self.extra_headers: list[str] = []  # sent with every request (routing headers)
        self.streams_ok = True  # False when validation found that the target cannot stream
        self.info: dict = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.chat_path}"

    def prepare(self) -> None:
        pass

    def command(self) -> tuple[list[str], dict, Path]:
        raise NotImplementedError

    def start(self, timeout: float) -> float:
        """Start the server; seconds from spawn to the first 200 on the health path."""
        self.port = free_port()
        cmd, env, cwd = self.command()
        self.proc = Proc(self.name, cmd, env, cwd, self.logdir / f"{self.name}.log")
        return self.proc.wait_http(self.port, self.health_path, timeout)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None

    def root_pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def worker_pids(self) -> list[int]:
        return procinfo.worker_pids(self.root_pid()) if self.proc else []

    def all_pids(self) -> list[int]:
        return [self.root_pid(), *self.worker_pids()] if self.proc else []

    def cleanup(self) -> None:
        pass


class Gateway(Target):
    kind = "silkgateway"

    def __init__(
        self,
        db: str,
        logdir: Path,
        upstream: FakeUpstream,
        workers: int,
        python: str,
        redis_url: str | None,
        pg_base: str,
        accounts: int = 1,
    ):
        super().__init__(logdir, upstream, workers)
        self.db = db
        self.name = db
        self.python = python
        self.bindir = Path(python).parent
        self.redis_url = redis_url
        self.pg_base = pg_base.rstrip("/")
        self.tmpdir: str | None = None
        self.database_url = ""
        self.pg_dbname = "silk_bench"
        self.accounts = max(1, accounts)
        self.repo = REPO  # the checkout to run (surfaces.py runs an older one beside it)

    def env(self) -> dict[str, str]:
        env = base_env()
        env["DATABASE_URL"] = self.database_url
        env["SECRET_KEY"] = "silk-bench-" + secrets.token_hex(16)
        for provider in ("DEEPSEEK", "ARK", "MIMO"):
            env[f"{provider}_API_KEY"] = f"sk-bench-{provider.lower()}-upstream"
            env[f"{provider}_BASE_URL"] = self.upstream.base(
                self.name if provider == "DEEPSEEK" else f"{self.name}-{provider.lower()}"
            )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.repo != REPO:  # its own silk package, before the venv's editable install
            env["PYTHONPATH"] = str(self.repo)
        return env

    def _flask(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run a flask command against the target's database (logged); raise if it fails and
        `check` is set."""
        cmd = [str(self.bindir / "flask"), "--app", "app", *args]
        cp = subprocess.run(
            cmd,
            cwd=str(self.repo),
            env=self._env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        with open(self.logdir / f"{self.name}-setup.log", "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{cp.stdout}\n{cp.stderr}\nexit {cp.returncode}\n")
        if check and cp.returncode != 0:
            raise TargetError(
                f"{' '.join(args)} failed ({cp.returncode}):\n"
                f"{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}"
            )
        return cp

    def prepare(self) -> None:
        if not (self.bindir / "flask").exists() or not (self.bindir / "gunicorn").exists():
            raise TargetError(
                f"flask/gunicorn not found beside {self.python}: "
                "run with the gateway's venv (pip install -e .)"
            )
        if self.db == "sqlite":
            self.tmpdir = tempfile.mkdtemp(prefix="silk-bench-sqlite-")
            self.database_url = f"sqlite:///{self.tmpdir}/silk.db"
        else:
            self._recreate_pg()
            self.database_url = f"{self.pg_base}/{self.pg_dbname}"
        self._env = self.env()
        t0 = time.monotonic()
        self._flask("db", "upgrade")
        self.info["db_upgrade_s"] = round(time.monotonic() - t0, 3)
        # No free quota: every request is charged, so every settlement writes a ledger entry.
        self._flask("silk", "set-tier", "paid", "--discount-percent", "10", "--free-tokens", "0")
        keys = []
        for i in range(self.accounts):
            email = "bench@example.com" if i == 0 else f"bench{i}@example.com"
            cp = self._flask("silk", "create-account", email, "--tier", "paid", "--credit", "1000")
            lines = [ln.strip() for ln in cp.stdout.strip().splitlines() if ln.strip()]
            if not lines or not lines[-1].startswith("sk-"):
                raise TargetError(f"create-account printed no key on its last line: {cp.stdout!r}")
            keys.append(lines[-1])
        self.key = ",".join(keys)  # the load generator spreads connections over the keys
        self.info["accounts"] = self.accounts
        self.info["database_url"] = self.database_url
        self.info["redis"] = bool(self.redis_url)

    def _pg_admin(self, sql: str) -> None:
        url = self.pg_base.replace("postgresql+psycopg://", "postgresql://")
        cmd = ["psql", f"{url}/postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql]
        if shutil.which("psql"):
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if cp.returncode != 0:
                raise TargetError(f"psql failed: {cp.stderr}")
            return
        import psycopg  # the gateway's venv has it

        with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
            conn.execute(sql)

    def _recreate_pg(self) -> None:
        self._pg_admin(f"DROP DATABASE IF EXISTS {self.pg_dbname} WITH (FORCE)")
        self._pg_admin(f"CREATE DATABASE {self.pg_dbname}")

    BOOKS_SQL = (
        ("usage_records", "select count(*), 0 from usage_records"),
        (
            "charged_records",
            "select count(*), coalesce(sum(cost_units), 0) from usage_records where cost_units > 0",
        ),
        (
            "charges",
            "select count(*), coalesce(-sum(amount_units), 0) from ledger_entries "
            "where kind = 'charge'",
        ),
        (
            "open_reservations",
            "select count(*), coalesce(sum(hold_units), 0) from reservations where state = 'open'",
        ),
    )

    def _books_counts(self) -> dict:
        """Rows and units of what metering wrote, read straight from the database."""
        if self.db == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(f"{self.tmpdir}/silk.db", timeout=10)) as c:
                rows = [c.execute(sql).fetchone() for _, sql in self.BOOKS_SQL]
        else:
            import psycopg  # the gateway's venv has it

            url = self.pg_base.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(f"{url}/{self.pg_dbname}", autocommit=True) as c:
                rows = [c.execute(sql).fetchone() for _, sql in self.BOOKS_SQL]
        return {
            name: {"rows": int(r[0]), "units": int(r[1])}
            for (name, _), r in zip(self.BOOKS_SQL, rows, strict=True)
        }

    def books(self, settle_wait_s: float = 15.0) -> dict:
        """After the load: once nothing is in flight, what was metered, and the audit's verdict.

        Every request that reached the upstream must have a usage record, every charged one a
        ledger entry, no reservation may stay open, and `silk audit` must find each ledger
        summing to its balance.
        """
        deadline = time.monotonic() + settle_wait_s
        counts = self._books_counts()
        while counts["open_reservations"]["rows"] and time.monotonic() < deadline:
            time.sleep(0.2)
            counts = self._books_counts()
        cp = self._flask("silk", "audit", check=False)
        return {
            **counts,
            "audit_exit": cp.returncode,
            "audit_output": (cp.stdout + cp.stderr).strip()[-500:],
        }

    def command(self):
        cmd = [
            str(self.bindir / "gunicorn"),
            "wsgi:app",
            "-b",
            f"127.0.0.1:{self.port}",
            "-w",
            str(self.workers),
        ]
        return cmd, self._env, self.repo

    def cleanup(self) -> None:
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if self.db == "postgres":
            with contextlib.suppress(TargetError, OSError, subprocess.SubprocessError):
                self._pg_admin(f"DROP DATABASE IF EXISTS {self.pg_dbname} WITH (FORCE)")


class LiteLLM(Target):
    kind = "litellm"
    name = "litellm"
    health_path = "/health/liveliness"

    def __init__(self, logdir: Path, upstream: FakeUpstream, workers: int, venv: Path):
        super().__init__(logdir, upstream, workers)
        self.venv = venv

    def _env(self) -> dict[str, str]:
        env = base_env()
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # never fetch the cost map from the web
        env["LITELLM_LOG"] = "ERROR"
        env["LITELLM_TELEMETRY"] = "False"
        env["DISABLE_SCHEMA_UPDATE"] = "True"
        return env

    def installed_version(self) -> str | None:
        py = self.venv / "bin" / "python"
        if not py.exists():
            return None
        cp = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=60,
            env=self._env(),
        )
        return cp.stdout.strip() if cp.returncode == 0 else None

    def ensure_venv(self, log) -> None:
        if self.installed_version() == LITELLM_VERSION and (self.venv / "bin/litellm").exists():
            return
        log(f"installing {LITELLM_SPEC} into {self.venv} (one time, a few minutes)")
        if not (self.venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, timeout=300)
        env = dict(os.environ)  # pip needs the real network settings to reach the registry
        with open(self.logdir / "litellm-install.log", "ab") as f:
            subprocess.run(
                [str(self.venv / "bin" / "pip"), "install", "-q", LITELLM_SPEC],
                check=True,
                timeout=1500,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if self.installed_version() != LITELLM_VERSION:
            raise TargetError(f"litellm {LITELLM_VERSION} did not install into {self.venv}")

    def prepare(self) -> None:
        self.key = "sk-bench-" + secrets.token_hex(24)
        cfg = self.logdir / "litellm-config.yaml"
        cfg.write_text(
            "model_list:\n"
            "  - model_name: deepseek-chat\n"
            "    litellm_params:\n"
            "      model: openai/deepseek-v4-flash\n"
            f"      api_base: {self.upstream.base('litellm')}\n"
            "      api_key: sk-bench-litellm-upstream\n"
            "litellm_settings:\n"
            "  drop_params: true\n"
            "  telemetry: false\n"
            "general_settings:\n"
            f"  master_key: {self.key}\n"
        )
        self.config = cfg
        self.info["version"] = self.installed_version()
        self.info["config"] = (
            "deepseek-chat -> openai/deepseek-v4-flash at the fake upstream; "
            "master key auth, no database"
        )

    def command(self):
        cmd = [
            str(self.venv / "bin" / "litellm"),
            "--config",
            str(self.config),
            "--num_workers",
            str(self.workers),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
        ]
        return cmd, self._env(), self.logdir


class Portkey(Target):
    """Portkey's open-source gateway (Node.js, one process), routed to the fake upstream by
    headers: it meters nothing and keeps no database, the reference for the hot path alone."""

    kind = "portkey"
    name = "portkey"
    health_path = "/"

    def __init__(self, logdir: Path, upstream: FakeUpstream, prefix: Path, node: str = "node"):
        super().__init__(logdir, upstream, 1)
        self.prefix = prefix
        self.node = node

    @property
    def server_js(self) -> Path:
        return self.prefix / "node_modules/@portkey-ai/gateway/build/start-server.js"

    def installed_version(self) -> str | None:
        try:
            pkg = json.loads((self.server_js.parents[1] / "package.json").read_text())
        except (OSError, ValueError):
            return None
        return pkg.get("version")

    def ensure_installed(self, log) -> None:
        if self.installed_version() == PORTKEY_VERSION and self.server_js.exists():
            return
        log(f"installing {PORTKEY_SPEC} into {self.prefix} (one time)")
        self.prefix.mkdir(parents=True, exist_ok=True)
        with open(self.logdir / "portkey-install.log", "ab") as f:
            subprocess.run(
                ["npm", "install", "--save-exact", "--no-audit", "--no-fund",
                 "--prefix", str(self.prefix), PORTKEY_SPEC],
                check=True,
                timeout=900,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),  # npm needs the real network settings
            )
        if self.installed_version() != PORTKEY_VERSION:
            raise TargetError(f"{PORTKEY_SPEC} did not install into {self.prefix}")

    def prepare(self) -> None:
        # Portkey passes the client's key on to the provider: any key does for the fake.
        self.key = "sk-bench-portkey-upstream"
        self.extra_headers = [
            "x-portkey-provider: openai",
            f"x-portkey-custom-host: {self.upstream.base(self.name)}/v1",
        ]
        cp = subprocess.run([self.node, "--version"], capture_output=True, text=True, timeout=30)
        self.info["version"] = self.installed_version()
        self.info["node"] = cp.stdout.strip()
        self.info["config"] = (
            "x-portkey-provider: openai, x-portkey-custom-host: the fake upstream; "
            "no auth of its own, no database, one Node.js process"
        )

    def command(self):
        cmd = [self.node, str(self.server_js), f"--port={self.port}", "--headless"]
        return cmd, base_env(), self.logdir

    def worker_pids(self) -> list[int]:
        # one process serves everything (no cluster), so it is its own worker
        return [self.root_pid(), *procinfo.worker_pids(self.root_pid())] if self.proc else []

    def all_pids(self) -> list[int]:
        return self.worker_pids()
