"""A provider's silence is bounded per wait by one timer per answer (silk.upstream.silence).

In a gevent worker the upstream socket has no timeout of its own; these tests prove the
bound holds where it matters: on a real socket pair, a single wait past the limit raises
TimeoutError in the waiting greenlet, waits that are each shorter never do (however long
the answer takes in all), time spent between waits (a slow client) is never counted, and
an answer left between waits leaves no timer behind. The transport's own tests are then run
again in a gevent-patched interpreter, where every read timeout goes through Silence.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import gevent
import gevent.socket
import pytest

from silk.upstream.silence import Silence

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pair():
    left, right = gevent.socket.socketpair()
    left.settimeout(None)  # as the transport leaves it in a gevent worker
    yield left, right
    left.close()
    right.close()


def _send_later(sock, delays: list[float]) -> gevent.Greenlet:
    def send():
        for delay in delays:
            gevent.sleep(delay)
            sock.sendall(b"x")
    return gevent.spawn(send)


def test_one_wait_past_the_limit_is_a_timeout_in_the_waiting_greenlet(pair):
    left, _right = pair
    silence = Silence(0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        gevent.spawn(silence.wait, left.recv, 10).get(timeout=5)
    assert 0.19 <= time.monotonic() - started < 0.6
    assert silence._timer is None  # it fired and was not started again


def test_waits_each_shorter_than_the_limit_never_time_out(pair):
    left, right = pair
    silence = Silence(0.6)  # each wait 0.4 s short of it: a loaded machine's pauses fit
    sender = _send_later(right, [0.2] * 5)  # 1 s in all, never 0.6 s of silence
    received = b""
    while len(received) < 5:
        received += silence.wait(left.recv, 10)
    silence.stop()
    sender.get(timeout=5)
    assert received == b"x" * 5
    assert silence._timer is None


def test_time_between_waits_is_not_silence(pair):
    left, right = pair
    silence = Silence(0.5)
    sender = _send_later(right, [0.05, 0.4])
    assert silence.wait(left.recv, 10) == b"x"
    gevent.sleep(1.0)  # a slow client: the greenlet is elsewhere, well past the limit
    assert silence._timer is None  # the timer found no wait in progress and stopped
    assert silence.wait(left.recv, 10) == b"x"  # sent meanwhile: read at once, no error
    silence.stop()
    sender.get(timeout=5)


def test_a_wait_that_starts_late_in_the_timers_period_gets_its_whole_limit(pair):
    left, right = pair
    silence = Silence(1.0)
    _send_later(right, [0.0]).get(timeout=5)
    assert silence.wait(left.recv, 10) == b"x"  # starts the timer
    gevent.sleep(0.6)  # the next wait begins 0.6 s into the timer's 1 s
    # 0.6 s of silence: within the limit, though past what is left of the timer's period
    # (0.4 s), with 0.4 s to spare for a loaded machine's pauses.
    sender = _send_later(right, [0.6])
    assert silence.wait(left.recv, 10) == b"x"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        silence.wait(left.recv, 10)
    assert 0.99 <= time.monotonic() - started < 1.8
    sender.get(timeout=5)


def test_stop_leaves_no_timer():
    silence = Silence(5)
    left, right = gevent.socket.socketpair()
    try:
        right.sendall(b"x")
        assert silence.wait(left.recv, 10) == b"x"
        assert silence._timer is not None
        silence.stop()
        assert silence._timer is None
    finally:
        left.close()
        right.close()


@pytest.mark.slow
def test_the_transport_keeps_its_promises_under_gevent():
    """test_transport*.py again in a gevent-patched interpreter, as gunicorn's workers run.

    There the upstream socket has no timeout and each read timeout is Silence's.
    """
    script = ("from gevent import monkey; monkey.patch_all()\n"
              "import sys, pytest\n"
              "from silk.sockets import cooperative\n"
              "assert cooperative()\n"
              "sys.exit(pytest.main(['tests/upstream/test_transport.py',"
              " 'tests/upstream/test_transport_tls.py', '-q', '-p', 'no:cacheprovider']))\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
