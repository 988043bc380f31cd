"""A webhook receiver or SMTP server that answers a byte at a time cannot hold a delivery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a gevent-patched interpreter, as a gunicorn worker delivers: a loopback server that
# answers one byte every 0.3 s for 8 s (each byte well within the 1 s timeout of a read).
SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, socket, time
import gevent
from silk.alerts.delivery import Undelivered, post_webhook, send_email

def trickle(listener, answer):
    conn, _ = listener.accept()
    with conn:
        if answer.startswith(b"HTTP"):
            conn.recv(65536)  # the request
        try:
            for byte in answer:
                conn.sendall(bytes([byte]))
                gevent.sleep(0.3)
        except OSError:
            pass

def timed(start, send):
    listener = socket.create_server(("127.0.0.1", 0))
    server = gevent.spawn(trickle, listener, start)
    started = time.monotonic()
    try:
        send(listener.getsockname()[1])
        outcome = "delivered"
    except Undelivered as exc:
        outcome = str(exc)
    server.kill()
    listener.close()
    return {"outcome": outcome, "seconds": time.monotonic() - started}

slow = b"HTTP/1.1 204 No Content\\r\\nX-Pad: " + b"x" * 20 + b"\\r\\n\\r\\n"
webhook = timed(slow, lambda port: post_webhook(
    f"http://127.0.0.1:{port}/hook", "whsec_x", b"{}", "evt", allow_private=True, timeout=1))
config = {"SILK_SMTP_HOST": "127.0.0.1", "SILK_SMTP_SECURITY": "none",
          "SILK_ALERT_TIMEOUT": 1, "SILK_SMTP_FROM": "a@gateway.test"}
email = timed(b"220 " + b"x" * 30 + b"\\r\\n", lambda port: send_email(
    {**config, "SILK_SMTP_PORT": port}, "ops@gateway.test", "S",
    {"id": "evt", "type": "route_failing"}))
print(json.dumps({"webhook": webhook, "email": email}))
"""


def test_a_trickling_receiver_is_cut_off_at_the_alert_timeout():
    """SILK_ALERT_TIMEOUT bounds a whole delivery to a recipient, not each read of it: a
    receiver (or SMTP server) sending a byte just within each read's timeout held the
    worker's delivery, past the event's lease (another worker then sent it again and was
    held too), and every worker's in turn."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    for recipient in ("webhook", "email"):
        assert seen[recipient]["outcome"] != "delivered", seen
        assert seen[recipient]["outcome"].startswith(
            "webhook" if recipient == "webhook" else "e-mail"), seen
        assert seen[recipient]["seconds"] < 3, seen
