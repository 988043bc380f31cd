"""The deployment files an operator copies are valid and agree with each other."""

from __future__ import annotations

import configparser
import os
import re
import runpy
import shutil
import subprocess

import pytest

from silk.defaults import Defaults
from tests.ops.nginx import PROXY_SNIPPET, SITE, nginx_binary
from tests.support.gateway import ROOT

UNIT = ROOT / "deploy" / "systemd" / "silkgateway.service"
INSTALL = ROOT / ".ci" / "install-system-deps"


def load_gunicorn_conf(env: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """Run gunicorn.conf.py as gunicorn does; return its settings and the environment after."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
        return settings, dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def gunicorn_conf(tmp_path_factory):
    """gunicorn.conf.py's settings, loaded the way gunicorn loads them."""
    directory = tmp_path_factory.mktemp("prom")
    return load_gunicorn_conf({"PATH": os.environ.get("PATH", ""), "SECRET_KEY": "x",
                               "PROMETHEUS_MULTIPROC_DIR": str(directory)})[0]


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_site_config_passes_nginx_t(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=api.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    site = SITE.read_text()
    site = site.replace("/etc/letsencrypt/live/api.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/api.example.com/privkey.pem", str(key))
    site = site.replace("snippets/silkgateway-proxy.conf", str(PROXY_SNIPPET))
    site = re.sub(r"/var/log/nginx/", f"{tmp_path}/", site)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{ include {tmp_path}/site.conf; }}\n")
    result = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-e",
                             str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "[emerg]" not in result.stderr


def test_the_proxy_snippet_keeps_streams_flowing():
    snippet = PROXY_SNIPPET.read_text()
    assert "proxy_http_version 1.1;" in snippet
    assert 'proxy_set_header Connection "";' in snippet
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", snippet).group(1))
    # longer than the gateway's own waits: a stream's silence, a JSON answer's first byte
    assert read_timeout > Defaults.SILK_UPSTREAM_READ_TIMEOUT
    assert read_timeout > Defaults.SILK_UPSTREAM_MAX_ANSWER_WAIT
    assert "proxy_buffering off" not in snippet  # the app's X-Accel-Buffering does it
    assert "X-Forwarded-For" in snippet and "X-Forwarded-Proto" in snippet


def test_the_systemd_unit_reloads_gracefully(gunicorn_conf):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"].endswith("gunicorn wsgi:app")
    assert service["ExecReload"] == "/bin/kill -s HUP $MAINPID"
    assert service["KillMode"] == "mixed"  # TERM to the master only; it drains the workers
    assert int(service["TimeoutStopSec"]) > gunicorn_conf["graceful_timeout"]
    assert service["Type"] == "notify"
    assert "PROMETHEUS_MULTIPROC_DIR=/run/silkgateway/" in service["Environment"]
    assert service["RuntimeDirectory"] == "silkgateway"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # The documentation it names is a file of the checkout installed at /srv/silkgateway.
    page = unit["Unit"]["Documentation"].removeprefix("file:///srv/silkgateway/")
    assert (ROOT / page).is_file(), page


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_systemd_unit_verifies():
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True,
                            text=True, check=False)
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr


def test_gunicorn_conf_has_the_hooks_and_outlasts_nginx(gunicorn_conf):
    for hook in ("on_starting", "post_worker_init", "child_exit", "on_exit"):
        assert callable(gunicorn_conf[hook]), hook
    assert gunicorn_conf["worker_class"] == "gevent"
    nginx_idle = int(re.search(r"keepalive_timeout (\d+)s;", SITE.read_text()).group(1))
    assert gunicorn_conf["keepalive"] > nginx_idle  # nginx closes idle connections, not us


def test_a_stopping_worker_outlasts_the_longest_json_answer(tmp_path):
    """A JSON answer may be silent for SILK_UPSTREAM_MAX_ANSWER_WAIT: a worker stopped or
    reloaded meanwhile must be given that long and a margin, or the provider bills an answer
    the client never gets and the hold is swept at its estimate."""
    base = {"PATH": os.environ.get("PATH", ""), "SECRET_KEY": "x",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    default = load_gunicorn_conf(base)[0]["graceful_timeout"]
    assert default >= Defaults.SILK_UPSTREAM_MAX_ANSWER_WAIT + 60
    longer = load_gunicorn_conf({**base, "SILK_UPSTREAM_MAX_ANSWER_WAIT": "2400"})[0]
    assert longer["graceful_timeout"] >= 2400 + 60
    shorter = load_gunicorn_conf({**base, "SILK_UPSTREAM_MAX_ANSWER_WAIT": "60"})[0]
    assert shorter["graceful_timeout"] == 900  # streams still get their 15 minutes


def test_a_graceful_timeout_below_the_longest_answer_is_warned_of(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # on_starting clears it
    settings = load_gunicorn_conf({"PATH": os.environ.get("PATH", ""), "SECRET_KEY": "x",
                                   "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
                                   "SILK_GRACEFUL_TIMEOUT": "300"})[0]
    assert settings["graceful_timeout"] == 300  # the operator's choice stands

    class Log:
        said: list[str] = []

        def warning(self, line, *args):
            self.said.append(line % args if args else line)

    class Server:  # gunicorn's arbiter as on_starting sees it: its log and its settings
        log = Log()
        cfg = type("Cfg", (), {"graceful_timeout": 300})()

    settings["on_starting"](Server())
    assert any("SILK_GRACEFUL_TIMEOUT" in line and "1860" in line for line in Log.said), \
        Log.said
    Log.said.clear()
    Server.cfg.graceful_timeout = 1860  # e.g. --graceful-timeout on the command line
    settings["on_starting"](Server())
    assert not any("SILK_GRACEFUL_TIMEOUT" in line for line in Log.said), Log.said


def test_the_install_script_is_valid_bash():
    assert INSTALL.stat().st_mode & 0o111
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_gunicorn_conf_shares_one_made_up_secret_and_a_metrics_dir():
    settings, env = load_gunicorn_conf({"PATH": os.environ.get("PATH", "")})
    assert len(env["SECRET_KEY"]) == 64 and env["SILK_SECRET_KEY_GENERATED"] == "1"
    made = env["PROMETHEUS_MULTIPROC_DIR"]
    assert os.path.isdir(made) and env["SILK_METRICS_DIR_OWNED"] == made
    _, again = load_gunicorn_conf(env)  # a HUP reloads the file: the same secret and dir
    assert again["SECRET_KEY"] == env["SECRET_KEY"]
    assert again["PROMETHEUS_MULTIPROC_DIR"] == made
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings["on_exit"](None)
    assert not os.path.exists(made)
    _, given = load_gunicorn_conf({"PATH": "", "SECRET_KEY": "operator-secret",
                                   "PROMETHEUS_MULTIPROC_DIR": made})
    assert given["SECRET_KEY"] == "operator-secret" and "SILK_SECRET_KEY_GENERATED" not in given
    assert "SILK_METRICS_DIR_OWNED" not in given
    os.rmdir(made)


def test_the_instance_example_is_a_configuration_the_gateway_starts_with(tmp_path):
    """instance/silk.cfg.example, copied as silk.cfg, loads and passes the start-up checks."""
    from flask import Flask

    from silk.config import load_config

    shutil.copy(ROOT / "instance" / "silk.cfg.example", tmp_path / "silk.cfg")
    app = Flask("silk", instance_path=str(tmp_path), instance_relative_config=True)
    load_config(app, {"SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path / "x.db")})
    assert app.config["SILK_REGISTRATION"] == "invite"
    assert "deepseek-chat" in app.config["SILK_MODELS"]
    assert (ROOT / "instance" / "README.md").is_file()
