"""The shared hot path in one process, for repeatable profiles on a busy machine: the gateway's
WSGI app called directly (no gunicorn, no sockets on the client side) against the fake
upstream, every request authenticated, validated, reserved and charged like in production.

    python tests/bench/hotpath.py --db sqlite --n 2000                 # timing and books
    python tests/bench/hotpath.py --db sqlite --n 300 --surface messages
    python tests/bench/hotpath.py --db sqlite --n 600 --stream --gap-ms 1   # streams
    python tests/bench/hotpath.py --db sqlite --n 200 --surface messages --agent-turns 200
    python tests/bench/hotpath.py --db postgres --n 1500 --split       # wall time in parts
    SILK_HOTPATH_CALLGRIND=1 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \\
        python tests/bench/hotpath.py --db sqlite --n 200                 # instructions

Instruction counts do not depend on what else the machine runs. With SILK_HOTPATH_CALLGRIND
set, callgrind's counters are zeroed after the warm-up and dumped after the measured
requests (via ``callgrind_control``), so the ``summary:`` of the dump (``/tmp/cg.PID.1``)
divided by --n is the instructions of one request. On PostgreSQL the line also gives the
server's CPU per request (``db_cpu_ms_per_request``): what the answer waits for on top of the
worker's own CPU, besides the round trips and the flush of the charge's WAL record.
``--gap-ms`` paces the fake upstream's stream chunks (by default they come at once, which
measures a stream read in few pieces); the README of this directory says how the figures
were taken. gevent patches everything first, as in ``wsgi.py``, so the same transport and
database drivers run as under gunicorn.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import procinfo  # noqa: E402
from targets import REPO, FakeUpstream, Gateway  # noqa: E402

PATHS = {
    "chat": "/v1/chat/completions",
    "messages": loadgen.MESSAGES_PATH,
    "responses": loadgen.RESPONSES_PATH,
}


FIXTURE = REPO / "tests" / "messages" / "fixtures" / "claude-code-2.1.332-request.json"


def agent_body(path: str, turns: int, stream: bool) -> bytes:
    """A coding agent's request after `turns` tool calls, each with a 1 kB result: Claude
    Code's recorded request (12 tools, its system prompt) on /v1/messages, the same shape
    as chat messages and tools on /v1/chat/completions."""
    import orjson

    recorded = orjson.loads(FIXTURE.read_bytes())["body"]
    result = "def double(x):\n    return x * 2\n" * 32
    if path == PATHS["messages"]:
        body = {**recorded, "model": "deepseek-chat", "max_tokens": 128, "stream": stream}
        for i in range(turns):
            body["messages"] += [
                {"role": "assistant", "content": [
                    {"type": "text", "text": "I will read the module — then change it."},
                    {"type": "tool_use", "id": f"toolu_{i}", "name": "Read",
                     "input": {"file_path": f"/src/module_{i}.py"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": result}]}]
        return orjson.dumps(body)
    if path != PATHS["chat"]:
        raise SystemExit("--agent-turns is for the chat and messages surfaces")
    system = "\n".join(block["text"] for block in recorded["system"])
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": "Double every value in the modules."}]
    for i in range(turns):
        messages += [
            {"role": "assistant", "content": "I will read the module — then change it.",
             "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {
                 "name": "Read", "arguments": f'{{"file_path": "/src/module_{i}.py"}}'}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": result}]
    tools = [{"type": "function", "function": {"name": tool["name"],
                                               "description": tool["description"],
                                               "parameters": tool["input_schema"]}}
             for tool in recorded["tools"]]
    return orjson.dumps({"model": "deepseek-chat", "max_tokens": 128, "stream": stream,
                         "messages": messages, "tools": tools})


def environ_for(path: str, key: str, body: bytes) -> dict:
    """A WSGI environ like gunicorn's gevent worker builds for a keep-alive POST."""
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "HTTP_ACCEPT": "application/json",
        "HTTP_USER_AGENT": "silk-hotpath/1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def one(app, path: str, key: str, body: bytes) -> tuple[str, bytes]:
    status: list[str] = []

    def start_response(s, headers, exc_info=None):
        status.append(s)

    it = app(environ_for(path, key, body), start_response)
    try:
        data = b"".join(it)
    finally:
        close = getattr(it, "close", None)
        if close:
            close()
    return status[0], data


class Split:
    """A request's wall time in parts, cut where it waits on the database: the relay's call
    to reserve (the hold) and the meter's call to write (the charge) are timed by wrapping
    the two names where they are looked up, for the measured requests only."""

    PARTS = ("before_hold", "hold", "hold_to_charge", "charge", "after_charge", "total")

    def __init__(self) -> None:
        from silk.metering import meter
        from silk.relay import service

        self.marks: dict[str, float] = {}
        self.rows: list[tuple[float, ...]] = []
        service.reserve = self._timed(service.reserve, "hold")
        meter.write = self._timed(meter.write, "charge")

    def _timed(self, call, name: str):
        def timed(*args, **kwargs):
            self.marks[name] = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.marks[name + "_end"] = time.perf_counter()
        return timed

    def begin(self) -> None:
        self.marks = {"start": time.perf_counter()}

    def end(self) -> None:
        m = self.marks
        if "charge_end" in m and "hold_end" in m:
            m["end"] = time.perf_counter()
            points = ("start", "hold", "hold_end", "charge", "charge_end", "end")
            self.rows.append(tuple(m[b] - m[a] for a, b in itertools.pairwise(points))
                             + (m["end"] - m["start"],))

    def medians(self) -> dict[str, float]:
        import statistics

        return {part: round(statistics.median(row[i] for row in self.rows) * 1000, 3)
                for i, part in enumerate(self.PARTS)} if self.rows else {}


def callgrind(cmd: str) -> None:
    """Ask callgrind (when this runs under it) to dump its counters now."""
    if os.environ.get("SILK_HOTPATH_CALLGRIND"):
        os.system(f"callgrind_control -{cmd} {os.getpid()} >/dev/null 2>&1")  # noqa: S605


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--surface", choices=tuple(PATHS), default="chat")
    ap.add_argument("--n", type=int, default=1000, help="measured requests")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    ap.add_argument("--stream", action="store_true", help="streaming requests instead")
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="the fake upstream's wait before and between stream chunks")
    ap.add_argument("--agent-turns", type=int, metavar="N",
                    help="send a coding agent's request after N tool calls (chat, messages)")
    ap.add_argument("--store", action="store_true",
                    help="Responses with store true, as the openai SDKs send it by default")
    ap.add_argument("--cprofile", metavar="FILE",
                    help="write cProfile's statistics of the measured requests (call counts)")
    ap.add_argument("--split", action="store_true",
                    help="time each request's parts around its hold and its charge "
                         "(non-streaming): medians in `split_ms`")
    args = ap.parse_args(argv)
    if args.split and args.stream:
        raise SystemExit("--split is for non-streaming requests (a stream settles on close)")

    logdir = Path(tempfile.mkdtemp(prefix="silk-hotpath-"))
    upstream = FakeUpstream(sys.executable, logdir)
    upstream.start()
    # Streams at full speed unless asked otherwise: this measures the gateway's work per
    # stream, not the pacing of a real model.
    upstream.set_profile(ttft_ms=args.gap_ms, gap_ms=args.gap_ms)
    gw = Gateway(args.db, logdir, upstream, 1, sys.executable, None, args.pg_base)
    gw.pg_dbname = f"silk_hotpath_{os.getpid()}"
    try:
        gw.prepare()
        os.environ.update(gw._env)
        os.chdir(REPO)
        from silk import create_app

        app = create_app()
        path = PATHS[args.surface]
        body = loadgen.make_body("deepseek-chat", args.stream, 128, path)
        if args.agent_turns is not None:
            body = agent_body(path, args.agent_turns, args.stream)
        if args.store:
            if b'"store":false' not in body:
                raise SystemExit("--store is for /v1/responses")
            body = body.replace(b'"store":false', b'"store":true')
        for _ in range(args.warmup):
            s, data = one(app, path, gw.key, body)
            if not s.startswith("200"):
                raise SystemExit(f"warm-up request failed: {s} {data[:300]!r}")
        # Read outside what callgrind and cProfile count: finding the backends walks /proc.
        server = procinfo.CpuMeter({"db": lambda: procinfo.postgres_backends(
            gw.pg_dbname)} if args.db == "postgres" else {}).start()
        split = Split() if args.split else None
        callgrind("z")  # zero callgrind's counters: only the measured requests count
        profiler = cProfile.Profile() if args.cprofile else None
        if profiler:
            profiler.enable()
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        bad = 0
        for _ in range(args.n):
            if split:
                split.begin()
            s, _data = one(app, path, gw.key, body)
            if split:
                split.end()
            bad += not s.startswith("200")
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - t0
        callgrind("d")  # dump: the file holds the measured requests' instructions only
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
        db_cpu = server.stop().get("db_cpu_s")
        time.sleep(0.5)  # let the last settlements land before the books are read
        books = gw.books()
        out = {
            "db": args.db,
            "surface": args.surface,
            "stream": args.stream,
            "n": args.n,
            "failed": bad,
            "cpu_ms_per_request": round(cpu / max(1, args.n) * 1000, 4),
            "wall_ms_per_request": round(wall / max(1, args.n) * 1000, 4),
            # The PostgreSQL server's processes for this database (the metering channel's
            # and the pool's), from /proc in clock ticks of 10 ms: --n 1000 or more.
            "db_cpu_ms_per_request": None if db_cpu is None else round(
                db_cpu / max(1, args.n) * 1000, 3),
            "usage_records": books["usage_records"]["rows"],
            "audit_exit": books["audit_exit"],
        }
        if split:
            out["split_ms"] = split.medians()
        print(json.dumps(out))
        return 1 if bad or books["audit_exit"] else 0
    finally:
        upstream.stop()
        gw.cleanup()


if __name__ == "__main__":
    sys.exit(main())
