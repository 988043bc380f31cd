"""Gunicorn settings for SilkGateway: gevent workers fit for thousands of long streams.

Command-line flags (-b, -w, ...) override these as usual. `kill -HUP <master>` reloads:
new workers start with fresh code and config while old ones finish their open streams
(up to graceful_timeout) before they exit.
"""

import multiprocessing
import os
import secrets
import shutil
import tempfile

bind = os.environ.get("SILK_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SILK_WORKERS", multiprocessing.cpu_count()))
worker_class = "gevent"
worker_connections = int(os.environ.get("SILK_WORKER_CONNECTIONS", 4000))
# A gevent worker notifies the arbiter from its own loop, so streams do not trip this;
# it only catches a worker whose loop is truly stuck.
timeout = 60
graceful_timeout = int(os.environ.get("SILK_GRACEFUL_TIMEOUT", 900))  # let streams finish
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
_INSTANCE_CFG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instance", "silk.cfg")
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


def on_starting(server):
    """Start metrics from zero (old files would count again); warn about a made-up secret."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))
    if os.environ.get(_SECRET_MADE):
        server.log.warning("SECRET_KEY is not set: using a random one until gunicorn stops "
                           "(dashboard sessions end with it). Set SECRET_KEY in production.")


def post_worker_init(worker):
    """Start this worker's reservation sweeper (settles holds of killed workers) and, with
    Redis, its subscriber to cache invalidations (revoked keys, disabled accounts, tiers)."""
    from silk.billing.tiers import tiers
    from silk.catalog import catalogue
    from silk.invalidation import start_subscriber
    from silk.metering.sweeper import start_sweeper
    from silk.responses.store import expire  # the sweep's chore: stored responses expire

    start_sweeper(worker.wsgi, tiers, lambda model: catalogue().price_of(model),
                  chores=(expire,))
    start_subscriber(worker.wsgi)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (open streams); its counters keep counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory if this master made it."""
    owned = os.environ.get(_OWNED_MARK)
    if owned and owned == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(owned, ignore_errors=True)
