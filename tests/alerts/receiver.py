"""A loopback webhook receiver: verifies signatures, can answer 500 or hang, drops repeats."""

from __future__ import annotations

import json
import ssl
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from silk.alerts import signing


class Receiver:
    """Records every delivery; `fail` answers 500 that many times; `hang_on` holds the
    first delivery of that event id until `release` is set."""

    def __init__(self, secret: str = "", host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.secret = secret
        self.fail = 0
        self.hang_on: str | None = None
        self.hung = threading.Event()  # the delivery to hang on arrived
        self.release = threading.Event()
        self.deliveries: list[dict] = []  # every arrival, repeats included
        self.hosts: list[str] = []  # the Host header of each arrival
        self.bad_signatures = 0
        self.accepted: dict[str, dict] = {}  # by id: what a receiver acts on, once
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                signed = signing.verify(receiver.secret, self.headers.get(signing.HEADER, ""),
                                        body)
                event = json.loads(body)
                with receiver._lock:
                    receiver.deliveries.append(event)
                    receiver.hosts.append(self.headers.get("Host", ""))
                    if not signed:
                        receiver.bad_signatures += 1
                    failing = receiver.fail > 0
                    if failing:
                        receiver.fail -= 1
                    hang = event["id"] == receiver.hang_on and not receiver.hung.is_set()
                if hang:
                    receiver.hung.set()
                    receiver.release.wait(60)
                    return  # the sender was killed meanwhile: nobody reads an answer
                if failing or not signed:
                    self.send_response(500 if failing else 401)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.accepted.setdefault(event["id"], event)  # repeats dropped by id
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}/hook"

    def counts(self) -> Counter:
        """How many times each event id arrived."""
        with self._lock:
            return Counter(event["id"] for event in self.deliveries)

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
