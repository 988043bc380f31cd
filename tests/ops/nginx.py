"""Run a real nginx in front of a test gateway, with the project's own proxy snippet."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import requests

from tests.support.gateway import ROOT, free_port

PROXY_SNIPPET = ROOT / "deploy" / "nginx" / "silkgateway-proxy.conf"
SITE = ROOT / "deploy" / "nginx" / "silkgateway.conf"

CONFIG = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    {upstream}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {snippet};
        }}
    }}
}}
"""


def site_upstream(port: int) -> str:
    """The deployed site's `upstream silkgateway` block, pointed at the test gateway."""
    block = re.search(r"^upstream silkgateway \{.*?^\}", SITE.read_text(), re.M | re.S)
    assert block, f"no upstream block in {SITE}"
    return re.sub(r"server 127\.0\.0\.1:\d+;", f"server 127.0.0.1:{port};", block.group(0))


def nginx_binary() -> str | None:
    """Path of the nginx program, or None where it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


class Nginx:
    """An nginx master in the foreground, proxying a loopback port to the gateway."""

    def __init__(self, prefix: Path, upstream_port: int):
        self.binary = nginx_binary()
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(CONFIG.format(prefix=prefix, port=self.port, snippet=PROXY_SNIPPET,
                                           upstream=site_upstream(upstream_port)))
        self.process: subprocess.Popen | None = None

    def _args(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf),
                "-e", str(self.prefix / "error.log"), *extra]

    def start(self, timeout: float = 10.0) -> Nginx:
        """Start nginx and wait until it proxies /healthz."""
        check = subprocess.run(self._args("-t"), capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(self._args("-g", "daemon off;"),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start in time")

    def reload(self) -> None:
        """`nginx -s reload`: new workers take new connections, old ones finish theirs."""
        result = subprocess.run(self._args("-s", "reload"), capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr

    def worker_pids(self) -> list[int]:
        """Pids of nginx's worker processes (old ones included while they drain)."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        """Stop nginx at once (SIGTERM is nginx's fast shutdown)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
