"""A loopback forward proxy: CONNECT tunnels and absolute-form requests, recording each target.

`routes` maps an address the proxy is asked for to the loopback address it really connects
to, so a test can send to a public address and land on a local receiver only through it.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from urllib.parse import urlsplit


class Proxy:
    """Records `targets` ("CONNECT host:port" or "POST http://...") and the
    Proxy-Authorization header of each request."""

    def __init__(self, routes: dict[str, str]) -> None:
        self.routes = routes
        self.targets: list[str] = []
        self.authorizations: list[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Proxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                return
            head += data
        head, rest = head.split(b"\r\n\r\n", 1)
        line, *fields = head.decode("latin-1").split("\r\n")
        method, target, version = line.split(" ")
        kept = [f for f in fields if not f.lower().startswith("proxy-")]
        self.targets.append(f"{method} {target}")
        self.authorizations += [f.split(":", 1)[1].strip() for f in fields
                                if f.lower().startswith("proxy-authorization:")]
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((self.routes.get(host, host), int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute form: sent on in origin form, the client's Host kept
            url = urlsplit(target)
            upstream = socket.create_connection((self.routes.get(url.hostname, url.hostname),
                                                 url.port or 80))
            path = url.path + (f"?{url.query}" if url.query else "")
            upstream.sendall("\r\n".join([f"{method} {path} {version}", *kept]).encode("latin-1")
                             + b"\r\n\r\n" + rest)
        with upstream:
            other = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            other.start()
            _pipe(client, upstream)
            other.join(5)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until `source` ends, then end `sink`'s writing side."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
