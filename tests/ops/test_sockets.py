"""Waiting on a socket in a gevent worker: an urgent waiter resumes first in its loop's turn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Two greenlets wait on two socket pairs; both become readable before the loop polls again.
# Without priorities libev resumes them in descriptor order, so the urgent waiter is put on
# the higher descriptor: it can only come first because it is urgent.
SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, socket, time
import gevent
from gevent.socket import wait_read
from silk.sockets import cooperative, waiters

assert cooperative()
low, low_peer = socket.socketpair()
high, high_peer = socket.socketpair()
assert high.fileno() > low.fileno()

def turn(wait_high):
    order = []
    def on_low():
        wait_read(low.fileno()); low.recv(1); order.append("low")
    def on_high():
        wait_high(high.fileno()); high.recv(1); order.append("high")
    waiting = [gevent.spawn(on_low), gevent.spawn(on_high)]
    gevent.sleep(0.01)
    high_peer.send(b"x"); low_peer.send(b"x")
    gevent.joinall(waiting)
    return order

urgent_read, urgent_write = waiters(urgent=True)
started = time.monotonic()
try:
    urgent_read(high.fileno(), 0.05)
    timed_out = False
except TimeoutError:
    timed_out = time.monotonic() - started >= 0.04
urgent_write(high.fileno(), 1)
print(json.dumps({"plain": [turn(wait_read) for _ in range(3)],
                  "urgent": [turn(urgent_read) for _ in range(3)],
                  "timed_out": timed_out}))
"""


def test_an_urgent_waiter_resumes_before_the_others_ready_in_the_same_turn():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [["low", "high"]] * 3  # what the test relies on
    assert seen["urgent"] == [["high", "low"]] * 3
    assert seen["timed_out"] is True
