"""Gunicorn settings for SilkGateway: gevent workers fit for thousands of long streams.

Command-line flags (-b, -w, ...) override these as usual.
"""

import multiprocessing
import os

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


def post_worker_init(worker):
    """Start this worker's reservation sweeper (settles holds of killed workers)."""
    from silk.metering.sweeper import start_sweeper

    start_sweeper(worker.wsgi)
