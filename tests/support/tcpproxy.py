"""A loopback TCP proxy that can freeze: it stops passing bytes on, but closes nothing.

That is a server that has stalled (a hung process, a frozen VM, a partition behind a
middlebox): the gateway's connections stay open, its bytes are accepted, and no answer
ever comes. A reset or a refused connection would be a different, easier failure.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class FreezableProxy:
    """Forward 127.0.0.1:<port> to `target` until `freeze()`; `thaw()` passes bytes again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        """Stop forwarding in both directions; connections stay open and new ones are
        accepted (by the kernel's backlog) but never reach the target."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._stopping.set()
        self._flowing.set()
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FreezableProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            self._flowing.wait()
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.05)
                if not ready or not self._flowing.is_set():
                    continue
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except (OSError, ValueError):  # ValueError: the listener was closed
                continue
            with self._lock:
                self._sockets += [client, upstream]
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._stopping.is_set():
                self._flowing.wait()
                ready, _, _ = select.select(list(peers), [], [], 0.05)
                if not self._flowing.is_set():
                    continue  # frozen: what arrived waits, unread
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # ValueError: closed by close()
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
