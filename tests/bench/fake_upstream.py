"""A fast, fake OpenAI-compatible upstream for the benchmark suite.

Any ``POST .../chat/completions`` is answered, whatever the path prefix, so that one process
can serve several callers on distinct bases (``http://127.0.0.1:P/direct``,
``http://127.0.0.1:P/sqlite``...) and count them apart. The first path segment is the label
under which a request is counted.

* non-streaming: an immediate DeepSeek-shaped JSON body with ``usage``.
* streaming: response headers at once, then ``chunks`` SSE chunks, the first ``ttft_ms``
  after the request, the next ones ``gap_ms`` apart, then (when the request asked for
  ``stream_options.include_usage``) a usage chunk, then ``data: [DONE]``.

The streams are not driven by one greenlet each: a single scheduler greenlet keeps a heap
of due frames and writes them with non-blocking ``send`` calls, so a stream costs one
syscall per chunk and no greenlet switch. A frame that does not fit in the socket buffer
is handed to a writer greenlet for that stream.

Control endpoints (not part of any API):

* ``GET /_stats``   counters as JSON (per label, open streams, peak open streams, errors)
* ``POST /_profile`` ``{"ttft_ms": 200, "chunks": 64, "gap_ms": 20}`` sets the stream profile
* ``POST /_reset``  zeroes the counters
* ``GET /healthz``  200

Run: ``python fake_upstream.py --port 18000``; prints ``READY <port>`` when listening.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import resource
import signal
import sys
import time

import gevent
from gevent.event import Event
from gevent.server import StreamServer

try:  # orjson is a dependency of the gateway, so it is in its venv; json is the fallback.
    import orjson

    def _loads(data: bytes):
        return orjson.loads(data)

    def _dumps(obj) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover

    def _loads(data: bytes):
        return json.loads(data)

    def _dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


PROMPT_TOKENS = 21
MAX_HEAD = 65536
MAX_BODY = 8 * 1024 * 1024

PROFILE = {"ttft_ms": 200.0, "chunks": 64, "gap_ms": 20.0}

STATS: dict = {}


def reset_stats() -> None:
    STATS.clear()
    STATS.update(
        {
            "by_label": {},
            "open_streams": 0,
            "peak_open_streams": 0,
            "streams_started": 0,
            "streams_completed": 0,
            "streams_broken": 0,
            "non_stream": 0,
            "bad_requests": 0,
            "connections": 0,
            "include_usage_requested": 0,
        }
    )


reset_stats()


def _count(label: str, key: str) -> None:
    d = STATS["by_label"].setdefault(label, {"requests": 0, "streams": 0, "non_stream": 0})
    d["requests"] += 1
    d[key] += 1


# ---------------------------------------------------------------------------------------------
# response bodies, built once per (model, profile) and cached

_cache: dict = {}
_ids = itertools.count(1)


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _usage(chunks: int) -> dict:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": chunks,
        "total_tokens": PROMPT_TOKENS + chunks,
        "prompt_tokens_details": {"cached_tokens": 0},
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": PROMPT_TOKENS,
    }


def non_stream_response(model: str, keep_alive: bool) -> bytes:
    key = ("ns", model, keep_alive)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    n = 64
    body = _dumps(
        {
            "id": "chatcmpl-fake-0001",
            "object": "chat.completion",
            "created": 1760000000,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "tok " * n},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(n),
        }
    )
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: %s\r\n\r\n" % (len(body), b"keep-alive" if keep_alive else b"close")
    )
    _cache[key] = head + body
    return _cache[key]


def stream_frames(model: str, chunks: int, include_usage: bool) -> list[bytes]:
    """The chunked-encoded frames of one stream: ``chunks`` entries; the last one also
    carries the usage chunk (if asked), ``[DONE]`` and the chunked terminator."""
    key = ("s", model, chunks, include_usage)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    base = {
        "id": "chatcmpl-fake-0002",
        "object": "chat.completion.chunk",
        "created": 1760000000,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    frames = []
    for i in range(chunks):
        delta = {"content": "tok "}
        if i == 0:
            delta = {"role": "assistant", "content": "tok "}
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": "stop" if i == chunks - 1 else None,
        }
        payload = b"data: " + _dumps({**base, "choices": [choice]}) + b"\n\n"
        frames.append(_chunked(payload))
    tail = b""
    if include_usage:
        tail += _chunked(
            b"data: " + _dumps({**base, "choices": [], "usage": _usage(chunks)}) + b"\n\n"
        )
    tail += _chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    if frames:
        frames[-1] = frames[-1] + tail
    else:
        frames.append(tail)
    _cache[key] = frames
    return frames


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)


# ---------------------------------------------------------------------------------------------
# the stream scheduler


class Stream:
    __slots__ = ("sock", "frames", "index", "t0", "gap", "pending", "writing", "done", "broken")

    def __init__(self, sock, frames, t0, gap):
        self.sock = sock
        self.frames = frames
        self.index = 0
        self.t0 = t0
        self.gap = gap
        self.pending = bytearray()
        self.writing = False
        self.done = Event()
        self.broken = False


class Scheduler:
    def __init__(self):
        self.heap: list = []
        self.seq = itertools.count()
        self.wake = Event()
        self.head_due = float("inf")

    def add(self, stream: Stream, due: float) -> None:
        heapq.heappush(self.heap, (due, next(self.seq), stream))
        if due < self.head_due:
            self.wake.set()

    def run(self) -> None:
        heap = self.heap
        clock = time.monotonic
        while True:
            if not heap:
                self.head_due = float("inf")
                self.wake.clear()
                self.wake.wait()
                continue
            due = heap[0][0]
            now = clock()
            if due > now:
                self.head_due = due
                self.wake.clear()
                self.wake.wait(timeout=due - now)
                continue
            self.head_due = float("inf")
            # send everything that is due now
            while heap and heap[0][0] <= now:
                _, _, st = heapq.heappop(heap)
                self._emit(st)
                if not st.broken and st.index < len(st.frames):
                    heapq.heappush(heap, (st.t0 + st.gap * st.index, next(self.seq), st))

    def _emit(self, st: Stream) -> None:
        if st.broken or st.index >= len(st.frames):
            return
        frame = st.frames[st.index]
        st.index += 1
        last = st.index >= len(st.frames)
        if st.writing:
            st.pending += frame
        else:
            try:
                sent = st.sock._sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._broken(st)
                return
            if sent < len(frame):
                st.pending += frame[sent:]
                st.writing = True
                gevent.spawn(self._drain, st)
        if last and not st.writing:
            self._finish(st)

    def _drain(self, st: Stream) -> None:
        try:
            while st.pending:
                data = bytes(st.pending)
                st.pending.clear()
                st.sock.sendall(data)
        except OSError:
            self._broken(st)
            return
        st.writing = False
        if st.index >= len(st.frames):
            self._finish(st)

    def _finish(self, st: Stream) -> None:
        if st.done.is_set():
            return
        STATS["streams_completed"] += 1
        STATS["open_streams"] -= 1
        st.done.set()

    def _broken(self, st: Stream) -> None:
        if st.done.is_set():
            return
        st.broken = True
        st.index = len(st.frames)
        STATS["streams_broken"] += 1
        STATS["open_streams"] -= 1
        st.done.set()


SCHED = Scheduler()


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 connection handling


def _json_response(obj, status: bytes = b"200 OK") -> bytes:
    body = _dumps(obj)
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


def handle(sock, _addr) -> None:
    STATS["connections"] += 1
    buf = b""
    try:
        while True:
            # ---- request head
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
                if len(buf) > MAX_HEAD:
                    return
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            try:
                method, path, version = lines[0].split(b" ", 2)
            except ValueError:
                return
            length = 0
            keep_alive = version == b"HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection":
                    v = value.strip().lower()
                    if v == b"close":
                        keep_alive = False
                    elif v == b"keep-alive":
                        keep_alive = True
                elif name == b"transfer-encoding":
                    return  # chunked request bodies are not used by any client here
            if length > MAX_BODY:
                return
            while len(buf) < length:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            path = path.split(b"?", 1)[0]

            if method == b"POST" and path.endswith(b"/chat/completions"):
                if not serve_chat(sock, path, body, keep_alive):
                    return
            elif path == b"/_stats":
                sock.sendall(_json_response({**STATS, "profile": PROFILE}))
            elif path == b"/_profile" and method == b"POST":
                try:
                    update = _loads(body) if body else {}
                    for k in ("ttft_ms", "gap_ms"):
                        if k in update:
                            PROFILE[k] = float(update[k])
                    if "chunks" in update:
                        PROFILE["chunks"] = max(1, int(update["chunks"]))
                except (ValueError, TypeError):
                    sock.sendall(_json_response({"error": "bad profile"}, b"400 Bad Request"))
                    continue
                sock.sendall(_json_response(PROFILE))
            elif path == b"/_reset" and method == b"POST":
                reset_stats()
                sock.sendall(_json_response({"ok": True}))
            elif path in (b"/healthz", b"/health"):
                sock.sendall(_json_response({"ok": True}))
            else:
                sock.sendall(_json_response({"error": {"message": "not found"}}, b"404 Not Found"))
            if not keep_alive:
                return
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def serve_chat(sock, path: bytes, body: bytes, keep_alive: bool) -> bool:
    """Answer one chat completion; False when the connection must close."""
    t0 = time.monotonic()
    label = path.strip(b"/").split(b"/", 1)[0].decode("latin-1") or "root"
    try:
        req = _loads(body)
        model = str(req.get("model") or "fake-model")
        stream = bool(req.get("stream", False))
        opts = req.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
    except (ValueError, TypeError, AttributeError):
        STATS["bad_requests"] += 1
        sock.sendall(
            _json_response(
                {"error": {"message": "bad json", "type": "invalid_request_error"}},
                b"400 Bad Request",
            )
        )
        return keep_alive
    if not stream:
        _count(label, "non_stream")
        STATS["non_stream"] += 1
        sock.sendall(non_stream_response(model, keep_alive))
        return keep_alive

    _count(label, "streams")
    if include_usage:
        STATS["include_usage_requested"] += 1
    frames = stream_frames(model, int(PROFILE["chunks"]), include_usage)
    sock.sendall(STREAM_HEAD)
    STATS["streams_started"] += 1
    STATS["open_streams"] += 1
    STATS["peak_open_streams"] = max(STATS["peak_open_streams"], STATS["open_streams"])
    ttft = PROFILE["ttft_ms"] / 1000.0
    gap = PROFILE["gap_ms"] / 1000.0
    # frame i is due at t0 + ttft + i * gap; Stream keeps t0' = t0 + ttft - gap ... so that
    # the scheduler can compute due = t0' + gap * index with index counting sent frames.
    st = Stream(sock, frames, t0 + ttft - gap, gap)
    SCHED.add(st, t0 + ttft)
    st.done.wait()
    return not st.broken and keep_alive


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--ttft-ms", type=float, default=PROFILE["ttft_ms"])
    ap.add_argument("--chunks", type=int, default=PROFILE["chunks"])
    ap.add_argument("--gap-ms", type=float, default=PROFILE["gap_ms"])
    ap.add_argument("--backlog", type=int, default=4096)
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("the fake upstream only listens on loopback")
    PROFILE.update(ttft_ms=args.ttft_ms, chunks=max(1, args.chunks), gap_ms=args.gap_ms)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    gevent.spawn(SCHED.run)
    server = StreamServer((args.host, args.port), handle, backlog=args.backlog)
    server.init_socket()
    port = server.socket.getsockname()[1]
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    print(f"READY {port}", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
