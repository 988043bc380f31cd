"""Gunicorn settings for SilkGateway: gevent workers fit for thousands of long streams.

Command-line flags (-b, -w, ...) override these as usual. `kill -HUP <master>` reloads:
new workers start with fresh code and config while old ones finish their open requests
(up to graceful_timeout) before they exit.
"""

import json
import multiprocessing
import os
import secrets
import shutil
import sys
import tempfile

_ROOT = os.path.dirname(os.path.abspath(__file__))


def _stop(line: str) -> None:
    """Stop in one line on stderr, before any worker starts (no traceback, no retries)."""
    print(line, file=sys.stderr, flush=True)
    sys.exit(1)


def _whole(name: str, default: int, least: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = least - 1
    if value < least:
        _stop(f"SilkGateway cannot start: {name}={raw!r} is not allowed: use a whole "
              f"number of at least {least}")
    return value


def _check_settings() -> tuple[list[str], int]:
    """Read the gateway's settings once, in a forked child so that the master imports
    nothing its gevent workers must patch first; stop on a bad one, return the warnings and
    the seconds the longest JSON answer may take (silk.startup.longest_answer)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any of the master's hooks
        os.close(read)
        try:
            sys.path.insert(0, _ROOT)
            from silk.startup import report

            error, warnings, longest = report()
        except BaseException as err:  # noqa: BLE001 - anything is reported as one line
            error, warnings, longest = (f"SilkGateway cannot start: {type(err).__name__}: "
                                        f"{err}", [], 0)
        os.write(write, json.dumps({"error": error, "warnings": warnings,
                                    "longest": longest}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    result = json.loads(answer or b'{"error": "SilkGateway cannot start: the settings '
                                  b'check failed", "warnings": []}')
    if result["error"]:
        _stop(result["error"])
    return result["warnings"], result["longest"]


bind = os.environ.get("SILK_BIND", "127.0.0.1:8000")
workers = _whole("SILK_WORKERS", multiprocessing.cpu_count(), 1)
worker_class = "gevent"
worker_connections = _whole("SILK_WORKER_CONNECTIONS", 4000, 1)
# A gevent worker notifies the arbiter from its own loop, so streams do not trip this;
# it only catches a worker whose loop is truly stuck.
timeout = 60
keepalive = 75  # above nginx's default upstream keepalive_timeout of 60 s
backlog = 4096
accesslog = None  # the app logs one JSON line per request
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn >= 25.1 opens a control socket (for gunicornc) at one path per user unless told
# not to, so a second gateway on the host would take over the first's and gunicornc would
# drive the wrong one. Off unless SILK_CONTROL_SOCKET names this instance's own path (older
# gunicorn ignores both settings).
control_socket = os.environ.get("SILK_CONTROL_SOCKET", "")
control_socket_disable = not control_socket

# Prometheus multiprocess mode: every worker writes its metrics into files in this
# directory and /metrics adds them up. It must exist before a worker imports the app, so
# it is made here, in the master, while the config loads (again on each HUP: the variable
# is then already set and the same directory is kept, so counters survive a reload).
_OWNED_MARK = "SILK_METRICS_DIR_OWNED"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="silk-metrics-")
    os.environ[_OWNED_MARK] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


# Dashboard sessions are signed with SECRET_KEY, which production sets in the environment.
# Without one, each worker would invent its own and a session would work on one worker only,
# so the master makes one that all its workers share (sessions end when the master stops).
_INSTANCE_DIR = os.environ.get("SILK_INSTANCE_PATH") or os.path.join(_ROOT, "instance")
_INSTANCE_CFG = os.path.join(_INSTANCE_DIR, "silk.cfg")
_SECRET_MADE = "SILK_SECRET_KEY_GENERATED"


def _instance_sets_secret() -> bool:
    try:
        with open(_INSTANCE_CFG) as config:
            return "SECRET_KEY" in config.read()
    except OSError:
        return False


if not os.environ.get("SECRET_KEY") and not _instance_sets_secret():
    os.environ["SECRET_KEY"] = secrets.token_hex(32)
    os.environ[_SECRET_MADE] = "1"

_WARNINGS, _LONGEST_ANSWER = _check_settings()
# A stopped or reloaded worker finishes its open requests for this long, then is killed: by
# default long enough for the longest JSON answer (a provider may be silent until it is
# complete), and at least 15 minutes for streams, which end only when their provider stops.
graceful_timeout = _whole("SILK_GRACEFUL_TIMEOUT", max(900, _LONGEST_ANSWER), 0)


def _warn_of_a_short_grace(server) -> None:
    """Warn when a stopping worker would be killed while a JSON answer may still come."""
    grace = server.cfg.graceful_timeout
    if grace < _LONGEST_ANSWER:
        server.log.warning(
            f"SILK_GRACEFUL_TIMEOUT (--graceful-timeout) is {grace} s, below the longest "
            f"JSON answer's {_LONGEST_ANSWER} s (the larger of SILK_UPSTREAM_READ_TIMEOUT and "
            "SILK_UPSTREAM_MAX_ANSWER_WAIT, plus 60): a worker stopped or reloaded while a "
            "provider generates one is killed first, the provider bills the answer and the "
            "client is charged only the estimate. Unset it or raise it.")


def on_starting(server):
    """Start metrics from zero (old files would count again); warn about a made-up secret,
    a graceful timeout too short for a JSON answer, and what else the settings check found
    (a provider without a key)."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))
    if os.environ.get(_SECRET_MADE):
        server.log.warning("SECRET_KEY is not set: using a random one until gunicorn stops "
                           "(dashboard sessions end with it). Set SECRET_KEY in production.")
    _warn_of_a_short_grace(server)
    for warning in _WARNINGS:
        server.log.warning(warning)


def on_reload(server):
    """Warn again of a short graceful timeout: a reload reads instance/silk.cfg afresh."""
    _warn_of_a_short_grace(server)


def post_worker_init(worker):
    """Start this worker's reservation sweeper (settles holds of killed workers; its chores
    expire stored responses and ended abuse counts and write key-expiry alerts), its alert
    delivery and, with Redis, its subscriber to cache invalidations (revoked keys, disabled
    accounts, tiers), the trimmer that gives memory back after a burst, accepting a burst's
    connections by each worker's share of the queue, and the probe that paces stream reads
    while the event loop runs late (silk.relay.pace); once the schema is checked, freeze the
    startup heap (silk.ops.memory).
    Each reads the schema's state early; the master's first worker says once whether
    migrations are pending."""
    import threading

    from silk import abuse
    from silk.alerts.delivery import start_delivery
    from silk.alerts.service import key_expiry_chore
    from silk.billing.tiers import tiers
    from silk.catalog import catalogue
    from silk.invalidation import start_subscriber
    from silk.metering.sweeper import start_sweeper
    from silk.ops.accept import accept_shares
    from silk.ops.memory import freeze_startup, start_trimmer
    from silk.ops.schema import check_at_start
    from silk.relay.pace import start_probe
    from silk.responses.store import expire  # the sweep's chore: stored responses expire

    start_sweeper(worker.wsgi, tiers, lambda model, at: catalogue().price_of(model, at),
                  lambda model, at: catalogue().cost_of(model, at),
                  chores=(expire, abuse.expire, key_expiry_chore(
                      float(worker.wsgi.config["SILK_ALERT_KEY_EXPIRY_DAYS"]))))
    start_delivery(worker.wsgi)
    start_subscriber(worker.wsgi)

    def check_then_freeze() -> None:
        try:
            check_at_start(worker.wsgi, say=worker.age == 1)
        finally:  # the check done, what starting left lives as long as the worker
            freeze_startup()

    threading.Thread(target=check_then_freeze, daemon=True).start()
    _date_once_a_second()
    _write_in_one_send()
    _headers_with_the_body()
    accept_shares(worker.cfg.workers)
    start_trimmer()
    config = worker.wsgi.config
    start_probe(float(config["SILK_STREAM_PACE_MS"]) / 1000,
                float(config["SILK_STREAM_PACE_WHEN_LATE_MS"]) / 1000)


def _chunk(data: bytes) -> bytes:
    """One piece of a chunked body, framed as gunicorn frames it."""
    return b"%X\r\n%b\r\n" % (len(data), data)


def _write_in_one_send() -> None:
    """Write each piece of an answer with one send where the socket takes it all.

    gevent's sendall asks the kernel for the socket's buffer size on every call (one more
    system call per SSE event of every stream); a plain send is tried first, and sendall
    takes over only for what a full buffer left unsent, with the same errors and timeout.
    """
    from gunicorn import util

    def write(sock, data, chunked=False):
        if chunked:
            data = _chunk(data.encode("utf-8") if isinstance(data, str) else data)
        sent = sock.send(data)
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])

    util.write = write


class _Held:
    """A socket stand-in that keeps what is written to it (the headers, held back)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def send(self, data, flags=0) -> int:
        self.data.append(bytes(data))
        return len(data)

    def sendall(self, data, flags=0) -> None:
        self.data.append(bytes(data))


def _headers_with_the_body() -> None:
    """Send a response's status line and headers in the same send as its first body bytes.

    gunicorn sends the headers with a send of their own, then the body: a JSON answer went
    out in two segments, and a client woken by the first was woken again for the second.
    The headers a write with body bytes makes are held (gunicorn's own, written to a
    stand-in socket) and go out with that write's bytes, framed as gunicorn frames them. A
    response that sends no body bytes sends its headers when it closes, as before; a file
    sent with sendfile sends its own.
    """
    from gunicorn import util
    from gunicorn.http import wsgi

    response = wsgi.Response
    if not hasattr(response, "_emit_body"):  # before gunicorn 27 the body had no such step
        return
    send_headers, write, emit_body, close = (response.send_headers, response.write,
                                             response._emit_body, response.close)

    def holding_write(self, arg):
        self._silk_hold = bool(arg) and not self.headers_sent and not getattr(
            self, "_omits_body", False)
        write(self, arg)

    def held_send_headers(self):
        if self.headers_sent or not getattr(self, "_silk_hold", False):
            send_headers(self)
            return
        self._silk_hold = False
        sock, self.sock = self.sock, _Held()
        try:
            send_headers(self)
        finally:
            held, self.sock = self.sock, sock
        self._silk_headers = b"".join(held.data)

    def emit_with_headers(self, data):
        headers = self.__dict__.pop("_silk_headers", None)
        if headers is None:
            emit_body(self, data)
            return
        util.write(self.sock, headers + (_chunk(data) if self.chunked else data))

    def closing(self):
        headers = self.__dict__.pop("_silk_headers", None)
        if headers is not None:  # a write that sent no body after all
            util.write(self.sock, headers)
        close(self)

    response.write = holding_write
    response.send_headers = held_send_headers
    response._emit_body = emit_with_headers
    response.close = closing


def _date_once_a_second() -> None:
    """Format gunicorn's Date header once a second, not once per response: the header has
    whole seconds, and email.utils.formatdate was 2-3 % of a worker's CPU under load."""
    import time

    from gunicorn import util

    original = util.http_date
    last: list = [-1, ""]  # the second formatted last, and its text: one entry, no more

    def http_date(timestamp=None):
        if timestamp is not None:
            return original(timestamp)
        now = int(time.time())
        if now != last[0]:
            last[:] = [now, original(now)]
        return last[1]

    util.http_date = http_date


def child_exit(server, worker):
    """Drop a dead worker's live gauges (open streams); its counters keep counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory if this master made it."""
    owned = os.environ.get(_OWNED_MARK)
    if owned and owned == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(owned, ignore_errors=True)
