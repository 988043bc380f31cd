"""Load generator for the benchmark suite: raw sockets, HTTP/1.1 keep-alive, no HTTP library.

It runs in its own process and prints one JSON object (the result) as the last line of its
stdout. Modes:

* ``latency``: concurrency 1, blocking socket, one keep-alive connection per target;
  several targets are measured in alternating rounds so that they share the same moments
  of the run (``--target gw=http://127.0.0.1:8000/v1/chat/completions@sk-KEY``).
* ``throughput``: ``--concurrency C`` keep-alive connections in one ``epoll`` loop, each
  sending its next request as soon as the previous answer is complete, for ``--duration``
  seconds after a warm-up; reports requests/s and latency percentiles.
* ``streams``: ``--n N`` streaming requests, all connected at once from one ``epoll`` loop;
  reports completed streams, time to first token (the first SSE ``data:`` event with a
  ``delta``: surfaces such as Responses send events before the provider answers) percentiles,
  inter-chunk gaps, total stream time. ``--announce-open`` prints ``ALL_OPEN <s>`` once every
  stream has its first token (so that the caller can sample memory while all are open).

Only loopback addresses are accepted as targets. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import select
import socket
import sys
import time
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
perf = time.perf_counter

HEAD, BODY_CL, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, BODY_EOF, DONE = range(8)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an unsorted list (None when empty)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values: list[float], scale: float = 1000.0, nd: int = 3) -> dict:
    """p50/p90/p99/max/mean of seconds, expressed in ms by default."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(pct(values, 50) * scale, nd),
        "p90": round(pct(values, 90) * scale, nd),
        "p99": round(pct(values, 99) * scale, nd),
        "max": round(max(values) * scale, nd),
        "mean": round(sum(values) / len(values) * scale, nd),
    }


# ---------------------------------------------------------------------------------------------
# request building and response parsing


class Target:
    """A URL and the request bytes to send there. ``key`` may list several API keys,
    comma-separated: ``requests[i]`` then carries the i-th, and connection i uses
    ``requests[i % len(requests)]``. ``extra`` headers ("Name: value") are sent as well (a peer
    that routes by header, e.g. Portkey's ``x-portkey-provider``)."""

    def __init__(
        self, url: str, key: str | None, body: bytes, stream: bool, extra: tuple = ()
    ):
        u = urlsplit(url)
        if u.scheme != "http" or u.hostname not in LOOPBACK:
            raise SystemExit(f"refusing non-loopback target {url!r}")
        self.url = url
        self.addr = (u.hostname, u.port or 80)
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        headers = [
            f"POST {path} HTTP/1.1",
            f"Host: {u.hostname}:{self.addr[1]}",
            "User-Agent: silk-bench/1",
            "Content-Type: application/json",
            "Accept: " + ("text/event-stream" if stream else "application/json"),
            f"Content-Length: {len(body)}",
            *extra,
        ]
        keys = [k.strip() for k in (key or "").split(",") if k.strip()] or [None]
        self.requests = []
        for k in keys:
            h = [*headers, f"Authorization: Bearer {k}"] if k else headers
            self.requests.append(("\r\n".join(h) + "\r\n\r\n").encode() + body)
        self.request = self.requests[0]

    def request_for(self, i: int) -> bytes:
        return self.requests[i % len(self.requests)]


RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"


def make_body(model: str, stream: bool, max_tokens: int, url: str = "") -> bytes:
    """The request a URL's API expects: the same conversation as chat, Responses or Messages."""
    if url.endswith(MESSAGES_PATH):
        return json.dumps({
            "model": model,
            "system": "You are a terse assistant.",
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "stream": stream,
            "max_tokens": max_tokens,
        }, separators=(",", ":")).encode()
    if url.endswith(RESPONSES_PATH):
        return json.dumps({
            "model": model,
            "instructions": "You are a terse assistant.",
            "input": "Say hello in one short sentence.",
            "stream": stream,
            "max_output_tokens": max_tokens,
            "store": False,  # as Codex sends it; storing is measured apart, if at all
        }, separators=(",", ":")).encode()
    body: dict = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "stream": stream,
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


class Resp:
    """Incremental HTTP/1.1 response parser; with ``sse`` it also times SSE ``data:`` events."""

    __slots__ = (
        "buf",
        "state",
        "left",
        "status",
        "close",
        "sse",
        "sse_buf",
        "keep_body",
        "body",
        "events",
        "t_head",
        "t_first",
        "t_token",
        "t_last",
        "t_end",
        "max_gap",
        "done_marker",
        "usage",
        "error_event",
    )

    def __init__(self, sse: bool = False, keep_body: bool = False):
        self.buf = bytearray()
        self.state = HEAD
        self.left = 0
        self.status = 0
        self.close = False
        self.sse = sse
        self.sse_buf = bytearray()
        self.keep_body = keep_body
        self.body = bytearray()
        self.events = 0
        self.t_head = self.t_first = self.t_token = self.t_last = self.t_end = None
        self.max_gap = 0.0
        self.done_marker = False
        self.usage = False
        self.error_event = None

    def feed(self, data: bytes, now: float) -> bool:
        """Feed received bytes; True once the response is complete."""
        buf = self.buf
        buf += data
        while True:
            st = self.state
            if st == HEAD:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(buf) > 65536:
                        raise ValueError("response head too large")
                    return False
                self._head(bytes(buf[:i]), now)
                del buf[: i + 4]
                if self.state == DONE:
                    self.t_end = now
                    return True
            elif st == BODY_CL:
                take = min(self.left, len(buf))
                if take:
                    self._body(bytes(buf[:take]), now)
                    del buf[:take]
                    self.left -= take
                if self.left == 0:
                    self.state = DONE
                    self.t_end = now
                    return True
                return False
            elif st == CHUNK_SIZE:
                i = buf.find(b"\r\n")
                if i < 0:
                    return False
                size = int(bytes(buf[:i]).split(b";", 1)[0].strip(), 16)
                del buf[: i + 2]
                if size == 0:
                    self.state = TRAILER
                else:
                    self.state = CHUNK_DATA
                    self.left = size
            elif st == CHUNK_DATA:
                take = min(self.left, len(buf))
                if take == 0:
                    return False
                self._body(bytes(buf[:take]), now)
                del buf[:take]
                self.left -= take
                if self.left == 0:
                    self.state = CHUNK_CRLF
            elif st == CHUNK_CRLF:
                if len(buf) < 2:
                    return False
                del buf[:2]
                self.state = CHUNK_SIZE
            elif st == TRAILER:
                i = buf.find(b"\r\n")
                if i < 0:
                    return False
                del buf[: i + 2]
                if i == 0:
                    self.state = DONE
                    self.t_end = now
                    return True
            elif st == BODY_EOF:
                if buf:
                    self._body(bytes(buf), now)
                    buf.clear()
                return False
            else:  # DONE: extra bytes would be a pipelining error; ignore
                return True

    def eof(self, now: float) -> bool:
        """The peer closed; True if that completes the response (close-delimited body)."""
        if self.state == BODY_EOF:
            self.state = DONE
            self.t_end = now
            return True
        return self.state == DONE

    def _head(self, head: bytes, now: float) -> None:
        self.t_head = now
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        self.status = int(parts[1])
        version = parts[0]
        self.close = version != b"HTTP/1.1"
        length = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                if value == b"close":
                    self.close = True
                elif value == b"keep-alive":
                    self.close = False
        if chunked:
            self.state = CHUNK_SIZE
        elif length is not None:
            self.left = length
            self.state = BODY_CL if length else DONE
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self.state = DONE
        else:
            self.state = BODY_EOF
            self.close = True

    def _body(self, data: bytes, now: float) -> None:
        if self.keep_body and len(self.body) < 4096:
            self.body += data[: 4096 - len(self.body)]
        if not self.sse:
            return
        sb = self.sse_buf
        sb += data
        if b"\r" in data:
            sb[:] = sb.replace(b"\r\n", b"\n")
        while True:
            j = sb.find(b"\n\n")
            if j < 0:
                break
            ev = bytes(sb[:j])
            del sb[: j + 2]
            for line in ev.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue  # comments (": ping"), event:, id:, retry:
                payload = line[5:].strip()
                if payload == b"[DONE]" or payload == b'{"type":"message_stop"}' or (
                        payload.startswith(b'{"type":"response.completed"')):
                    self.done_marker = True
                    if payload == b"[DONE]":
                        continue
                self.events += 1
                if self.t_first is None:
                    self.t_first = now
                else:
                    gap = now - self.t_last
                    if gap > self.max_gap:
                        self.max_gap = gap
                self.t_last = now
                if self.t_token is None and b'"delta"' in payload:
                    # the first event carrying output (chat's first chunk, Messages'
                    # content_block_delta, Responses' output_text.delta): events a surface
                    # sends before the provider answers (response.created) are not a token
                    self.t_token = now
                if b'"prompt_tokens"' in payload or b'"input_tokens"' in payload:
                    self.usage = True
                if payload.startswith((b'{"error"', b'{"type":"error"')) and (
                        self.error_event is None):
                    self.error_event = payload[:300].decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# latency: concurrency 1, blocking sockets, alternating rounds over targets


class BlockingConn:
    def __init__(self, target: Target, timeout: float):
        self.target = target
        self.timeout = timeout
        self.sock = None
        self.reconnects = 0

    def _connect(self) -> None:
        s = socket.create_connection(self.target.addr, timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.reconnects += 1

    def request(self, keep_body: bool = False) -> tuple[Resp, float]:
        if self.sock is None:
            self._connect()
        sock = self.sock
        r = Resp(keep_body=keep_body)
        t0 = perf()
        try:
            sock.sendall(self.target.request)
            while True:
                data = sock.recv(65536)
                now = perf()
                if not data:
                    r.eof(now)
                    self.close()
                    break
                if r.feed(data, now):
                    break
        except OSError:
            self.close()
            raise
        if r.close:
            self.close()
        end = r.t_end if r.t_end is not None else perf()
        return r, end - t0

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def run_latency(args) -> dict:
    targets = []
    for spec in args.target:
        name, _, rest = spec.partition("=")
        url, _, key = rest.partition("@")
        body = make_body(args.model, False, args.max_tokens, url)
        hdrs = tuple(h for n, _, h in (x.partition("=") for x in args.target_header) if n == name)
        conn = BlockingConn(Target(url, key or None, body, False, hdrs), args.timeout)
        targets.append((name, conn))
    out: dict = {"mode": "latency", "targets": {}}
    lat: dict[str, list[float]] = {name: [] for name, _ in targets}
    errors: dict[str, dict] = {name: {} for name, _ in targets}
    samples: dict[str, str] = {}
    t_start = perf()
    hard_deadline = t_start + args.max_seconds
    for name, conn in targets:  # warm-up, not counted
        for i in range(args.warmup):
            if perf() > hard_deadline:
                break
            try:
                r, _ = conn.request(keep_body=(i == 0))
                if i == 0:
                    samples[name] = f"{r.status} " + bytes(r.body[:600]).decode("utf-8", "replace")
            except OSError as exc:
                errors[name][type(exc).__name__] = errors[name].get(type(exc).__name__, 0) + 1
    for rnd in range(args.rounds):
        order = targets if rnd % 2 == 0 else list(reversed(targets))
        for name, conn in order:
            round_deadline = min(perf() + args.round_max_s, hard_deadline)
            for _ in range(args.per_round):
                if perf() > round_deadline:
                    break
                try:
                    r, dt = conn.request()
                except OSError as exc:
                    k = type(exc).__name__
                    errors[name][k] = errors[name].get(k, 0) + 1
                    continue
                if r.status == 200:
                    lat[name].append(dt)
                else:
                    k = f"status_{r.status}"
                    errors[name][k] = errors[name].get(k, 0) + 1
    for name, conn in targets:
        out["targets"][name] = {
            "latency_ms": summary(lat[name]),
            "errors": errors[name],
            "connections_opened": conn.reconnects,
            "sample": samples.get(name, ""),
        }
        conn.close()
    out["wall_s"] = round(perf() - t_start, 3)
    return out


# ---------------------------------------------------------------------------------------------
# epoll machinery shared by throughput and streams


class Conn:
    __slots__ = ("sock", "fd", "resp", "t0", "out", "connected", "result", "req")

    def __init__(self, req: bytes = b""):
        self.req = req
        self.sock = None
        self.fd = -1
        self.resp = None
        self.t0 = 0.0
        self.out = b""
        self.connected = False
        self.result = None


def nb_connect(addr, ep, conn: Conn, now: float) -> bool:
    s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sock = s
    conn.fd = s.fileno()
    conn.t0 = now
    conn.connected = False
    rc = s.connect_ex(addr)
    if rc not in (0, errno.EINPROGRESS):
        s.close()
        conn.result = f"connect_{errno.errorcode.get(rc, rc)}"
        return False
    ep.register(conn.fd, select.EPOLLOUT)
    return True


def nb_send(ep, conn: Conn) -> str | None:
    """Send what is pending; returns an error name or None."""
    try:
        n = conn.sock.send(conn.out)
    except BlockingIOError:
        n = 0
    except OSError as exc:
        return f"send_{errno.errorcode.get(exc.errno, exc.errno)}"
    conn.out = conn.out[n:]
    ep.modify(conn.fd, select.EPOLLOUT if conn.out else select.EPOLLIN)
    return None


def nb_close(ep, conn: Conn) -> None:
    if conn.sock is None:
        return
    with contextlib.suppress(OSError, ValueError):
        ep.unregister(conn.fd)
    with contextlib.suppress(OSError):
        conn.sock.close()
    conn.sock = None


def run_throughput(args) -> dict:
    body = make_body(args.model, False, args.max_tokens, args.url)
    target = Target(args.url, args.key, body, False, tuple(args.header))
    ep = select.epoll()
    conns: dict[int, Conn] = {}
    lat: list[float] = []
    errors: dict[str, int] = {}
    counted = 0
    completed_total = 0
    reconnects = 0
    t_begin = perf()
    t_measure = t_begin + args.warmup_s
    t_stop = t_measure + args.duration
    hard_stop = t_stop + args.timeout
    pool: list[Conn] = [Conn(target.request_for(i)) for i in range(args.concurrency)]

    def start(conn: Conn, now: float) -> None:
        nonlocal reconnects
        if conn.sock is None:
            if not nb_connect(target.addr, ep, conn, now):
                errors[conn.result] = errors.get(conn.result, 0) + 1
                return
            reconnects += 1
            conns[conn.fd] = conn
        conn.resp = Resp()
        conn.t0 = now
        conn.out = conn.req
        if conn.connected:
            err = nb_send(ep, conn)
            if err:
                errors[err] = errors.get(err, 0) + 1
                drop(conn)

    def drop(conn: Conn) -> None:
        conns.pop(conn.fd, None)
        nb_close(ep, conn)
        conn.connected = False

    now = perf()
    for c in pool:
        start(c, now)
    active = True
    while True:
        now = perf()
        if now >= hard_stop:
            break
        if now >= t_stop:
            active = False
            if not conns:
                break
        events = ep.poll(0.05)
        now = perf()
        for fd, ev in events:
            conn = conns.get(fd)
            if conn is None:
                continue
            if not conn.connected:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    k = f"connect_{errno.errorcode.get(err, err)}"
                    errors[k] = errors.get(k, 0) + 1
                    drop(conn)
                    continue
                conn.connected = True
            if ev & select.EPOLLOUT:
                err = nb_send(ep, conn)
                if err:
                    errors[err] = errors.get(err, 0) + 1
                    drop(conn)
                continue
            try:
                data = conn.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError as exc:
                k = f"recv_{errno.errorcode.get(exc.errno, exc.errno)}"
                errors[k] = errors.get(k, 0) + 1
                drop(conn)
                continue
            r = conn.resp
            if data:
                try:
                    complete = r.feed(data, now)
                except ValueError:
                    errors["bad_response"] = errors.get("bad_response", 0) + 1
                    drop(conn)
                    continue
            else:
                complete = r.eof(now)
                if not complete:
                    errors["eof"] = errors.get("eof", 0) + 1
                    drop(conn)
                    if active:
                        start(conn, now)
                    continue
            if not complete:
                continue
            completed_total += 1
            if r.status != 200:
                k = f"status_{r.status}"
                errors[k] = errors.get(k, 0) + 1
            elif t_measure <= conn.t0 and r.t_end <= t_stop:
                counted += 1
                lat.append(r.t_end - conn.t0)
            if r.close or not data:
                drop(conn)
            if active:
                start(conn, now)
            else:
                drop(conn)
    for c in list(conns.values()):
        drop(c)
    ep.close()
    return {
        "mode": "throughput",
        "url": args.url,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "requests_ok": counted,
        "rps": round(counted / args.duration, 1),
        "latency_ms": summary(lat),
        "errors": errors,
        "responses_total": completed_total,
        "connections_opened": reconnects,
    }


def run_streams(args) -> dict:
    body = make_body(args.model, True, args.max_tokens, args.url)
    target = Target(args.url, args.key, body, True, tuple(args.header))
    ep = select.epoll()
    n = args.n
    conns: dict[int, Conn] = {}
    allc: list[Conn] = []
    failed_connect = 0
    t_begin = perf()
    deadline = t_begin + args.deadline_s
    for i in range(n):
        c = Conn(target.request_for(i))
        c.resp = Resp(sse=True)
        c.out = c.req
        allc.append(c)
        if nb_connect(target.addr, ep, c, perf()):
            conns[c.fd] = c
        else:
            failed_connect += 1
    t_all_started = perf()
    open_first = 0  # streams that have their first event (or have failed)
    announced = not args.announce_open
    finished = failed_connect
    t_all_open = None

    def finish(conn: Conn, result: str) -> None:
        nonlocal finished, open_first
        if conn.result is None:
            conn.result = result
            finished += 1
            if conn.resp.t_first is None:
                open_first += 1
        conns.pop(conn.fd, None)
        nb_close(ep, conn)

    open_first += failed_connect
    while finished < n:
        now = perf()
        if now >= deadline:
            break
        events = ep.poll(0.05)
        now = perf()
        for fd, ev in events:
            conn = conns.get(fd)
            if conn is None:
                continue
            if not conn.connected:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    finish(conn, f"connect_{errno.errorcode.get(err, err)}")
                    continue
                conn.connected = True
            if ev & select.EPOLLOUT:
                err = nb_send(ep, conn)
                if err:
                    finish(conn, err)
                continue
            try:
                data = conn.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError as exc:
                finish(conn, f"recv_{errno.errorcode.get(exc.errno, exc.errno)}")
                continue
            r = conn.resp
            had_first = r.t_first is not None
            try:
                complete = r.feed(data, now) if data else r.eof(now)
            except ValueError:
                finish(conn, "bad_response")
                continue
            if not had_first and r.t_first is not None:
                open_first += 1
            if complete:
                if r.status != 200:
                    finish(conn, f"status_{r.status}")
                elif r.error_event:
                    finish(conn, "error_event")
                elif not r.done_marker:
                    finish(conn, "no_done")
                elif r.events < args.expect_events:
                    finish(conn, "short")
                else:
                    finish(conn, "ok")
            elif not data:
                finish(conn, "eof_early")
        if not announced and open_first >= n:
            announced = True
            t_all_open = perf() - t_begin
            print(f"ALL_OPEN {t_all_open:.3f}", flush=True)
    t_end = perf()
    for c in list(conns.values()):
        finish(c, "timeout")
    ep.close()

    ok = [c for c in allc if c.result == "ok"]
    results: dict[str, int] = {}
    for c in allc:
        k = c.result or "connect_failed"
        results[k] = results.get(k, 0) + 1
    ttft = [c.resp.t_token - c.t0 for c in allc if c.resp.t_token is not None]
    first_event = [c.resp.t_first - c.t0 for c in allc if c.resp.t_first is not None]
    gaps = [c.resp.max_gap for c in ok]
    total = [c.resp.t_end - c.t0 for c in ok if c.resp.t_end is not None]
    head = [c.resp.t_head - c.t0 for c in allc if c.resp.t_head is not None]
    errs = [c.resp.error_event for c in allc if c.resp.error_event][:3]
    if args.dump:
        def ms(t: float | None) -> float | None:
            return None if t is None else round((t - t_begin) * 1000, 3)
        with open(args.dump, "w") as f:
            for c in allc:
                f.write(json.dumps({"t0": ms(c.t0), "head": ms(c.resp.t_head),
                                    "token": ms(c.resp.t_token), "result": c.result}) + "\n")
    return {
        "mode": "streams",
        "url": args.url,
        "n": n,
        "completed": len(ok),
        "lost": n - len(ok),
        "results": results,
        "usage_seen": sum(1 for c in ok if c.resp.usage),
        "events_min": min((c.resp.events for c in ok), default=0),
        "ttft_ms": summary(ttft),
        "first_event_ms": summary(first_event),
        "head_ms": summary(head),
        "max_gap_ms": summary(gaps),
        "stream_total_ms": summary(total),
        "connect_loop_ms": round((t_all_started - t_begin) * 1000, 1),
        "all_open_s": t_all_open,
        "wall_s": round(t_end - t_begin, 3),
        "error_samples": errs,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deepseek-chat")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=30.0)
    sub = ap.add_subparsers(dest="mode", required=True)

    p = sub.add_parser("latency")
    p.add_argument("--target", action="append", required=True, help="NAME=URL[@KEY]")
    p.add_argument(
        "--target-header", action="append", default=[], help="NAME=Header: value (repeatable)"
    )
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--per-round", type=int, default=500)
    p.add_argument("--round-max-s", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--max-seconds", type=float, default=120.0)

    p = sub.add_parser("throughput")
    p.add_argument("--url", required=True)
    p.add_argument("--key")
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup-s", type=float, default=1.0)

    p = sub.add_parser("streams")
    p.add_argument("--url", required=True)
    p.add_argument("--key")
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--deadline-s", type=float, default=60.0)
    p.add_argument("--expect-events", type=int, default=64)
    p.add_argument("--announce-open", action="store_true")
    p.add_argument("--dump", help="write each stream's times (JSON lines, ms from the burst's "
                   "start: connect, head, first token) to this file")

    args = ap.parse_args(argv)
    nofile = raise_nofile()
    if args.mode == "streams" and nofile < args.n + 64:
        raise SystemExit(f"RLIMIT_NOFILE {nofile} too low for {args.n} streams")
    cpu0 = os.times()
    if args.mode == "latency":
        out = run_latency(args)
    elif args.mode == "throughput":
        out = run_throughput(args)
    else:
        out = run_streams(args)
    cpu1 = os.times()
    out["loadgen_cpu_s"] = round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 3)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
