"""The three surfaces side by side on one gateway, interleaved so machine load hits all alike.

    .venv/bin/python tests/bench/surfaces.py --db postgres
    .venv/bin/python tests/bench/surfaces.py --db postgres --baseline main   # A/B: main beside
    .venv/bin/python tests/bench/surfaces.py --db postgres --pg-log /var/log/postgresql/x.log

One gateway per checkout (this one, and with --baseline REV a copy of REV from `git archive`,
each with its own database), chat, messages and responses measured against every gateway:

* latency at concurrency 1: every target in alternating rounds (loadgen.py latency);
* requests/s at concurrency 32: short bursts, target after target, the order turned each
  round; the mean and median of each target's bursts;
* with --streams N: bursts of N streams opened at once (loadgen.py streams), target after
  target, the order turned each round, with a burst straight to the fake upstream first:
  each target's added TTFT p50, streams lost and workers' CPU seconds per burst;
* per request of each surface, sent one at a time: the gateway workers' CPU, PostgreSQL's
  transactions and rows (pg_stat_database, pg_stat_user_tables), and with --pg-log (a
  readable server log; needs superuser) the statements the server received, one line per
  round trip, as a separate phase with `log_statement = all` set on the run's database only.

Prints one JSON document and a short table. See tests/bench/README.md, "Surfaces side by side".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import procinfo  # noqa: E402
from run import _pg_connect, run_loadgen  # noqa: E402
from targets import REPO, FakeUpstream, Gateway  # noqa: E402

PATHS = {"chat": "/v1/chat/completions", "messages": loadgen.MESSAGES_PATH,
         "responses": loadgen.RESPONSES_PATH}
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def checkout(rev: str, into: Path) -> Path:
    """A copy of the repository at `rev` (tracked files only)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def url(gw: Gateway, surface: str) -> str:
    return f"http://127.0.0.1:{gw.port}{PATHS[surface]}"


def one(gw: Gateway, surface: str, n: int) -> None:
    """n non-streaming requests, one at a time, each checked for a 200."""
    body = loadgen.make_body("deepseek-chat", False, 128, url(gw, surface))
    conn = loadgen.BlockingConn(loadgen.Target(url(gw, surface), gw.key, body, False), 30.0)
    try:
        for _ in range(n):
            resp, _ = conn.request()
            if resp.status != 200:
                raise RuntimeError(f"{surface}: status {resp.status}")
    finally:
        conn.close()


def stream_bursts(targets: list, upstream: FakeUpstream, n: int, rounds: int) -> dict:
    """Bursts of n streams at once on every target, alternating; see the module docstring."""
    python = sys.executable
    direct = upstream.base("direct") + "/chat/completions"
    args = ["--n", str(n), "--deadline-s", "60"]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
    for rnd in range(rounds):
        for name, gw, surface in targets if rnd % 2 == 0 else reversed(targets):
            upstream.wait_idle(timeout=30)
            base = run_loadgen(python, ["streams", "--url", direct, *args], timeout=120)
            upstream.wait_idle(timeout=30)
            workers = gw.worker_pids()
            cpu0 = procinfo.cpu_seconds(workers)
            out = run_loadgen(python, ["streams", "--url", url(gw, surface), "--key", gw.key,
                                       *args], timeout=120)
            runs[name].append({
                "added_ttft_p50_ms": round(out["ttft_ms"]["p50"] - base["ttft_ms"]["p50"], 1),
                "lost": out["lost"],
                "worker_cpu_s": round(procinfo.cpu_seconds(workers) - cpu0, 2)})
    result = {}
    for name, bursts in runs.items():
        added = [b["added_ttft_p50_ms"] for b in bursts]
        result[name] = {"bursts": bursts, "added_ttft_p50_median_ms": statistics.median(added),
                        "worker_cpu_s_median": statistics.median(
                            b["worker_cpu_s"] for b in bursts),
                        "lost": sum(b["lost"] for b in bursts)}
    return result


def table_counters(gw: Gateway) -> dict:
    """Cumulative counters of the run's database and its tables."""
    with _pg_connect(PG_BASE, gw.pg_dbname) as conn:
        db = conn.execute(
            "select xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched "
            "from pg_stat_database where datname = current_database()").fetchone()
        out = dict(zip(("commits", "rollbacks", "rows_inserted", "rows_updated",
                        "rows_fetched"), db, strict=True))
        for name, seq, idx, ins, upd in conn.execute(
                "select relname, seq_scan, coalesce(idx_scan, 0), n_tup_ins, n_tup_upd "
                "from pg_stat_user_tables"):
            for key, value in (("seq_scan", seq), ("idx_scan", idx), ("ins", ins),
                               ("upd", upd)):
                out[f"{name}.{key}"] = value
    return out


def per_request(gw: Gateway, surface: str, n: int, pg: bool) -> dict:
    """Worker CPU and (PostgreSQL) counters per request of one surface, sent one at a time."""
    workers = gw.worker_pids()
    before = table_counters(gw) if pg else {}
    cpu0 = procinfo.cpu_seconds(workers)
    one(gw, surface, n)
    out: dict = {"worker_cpu_ms": round((procinfo.cpu_seconds(workers) - cpu0) / n * 1000, 3)}
    if pg:
        time.sleep(11)  # an idle backend publishes its counters within 10 s
        after = table_counters(gw)
        out["pg"] = {k: round((after[k] - before.get(k, 0)) / n, 2) for k in after
                     if after[k] != before.get(k, 0)}
    return out


def logged_statements(gw: Gateway, logfile: Path, surfaces: list[str], n: int) -> dict:
    """The statements the server logged for n requests of each surface (log_statement = all
    on the run's database, for this phase only; the gateway is restarted around it)."""
    with _pg_connect(PG_BASE, "postgres") as conn:
        conn.execute(f"alter database {gw.pg_dbname} set log_statement = 'all'")
    gw.stop()
    gw.start(60)
    out = {}
    try:
        one(gw, "chat", 3)  # connections opened, caches warm, before counting
        for surface in surfaces:
            one(gw, surface, 2)
            start = logfile.stat().st_size
            one(gw, surface, n)
            time.sleep(0.5)
            with open(logfile, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
            mine = [line for line in text.splitlines()
                    if f"@{gw.pg_dbname} LOG:" in line
                    and ("statement:" in line or "execute" in line)]
            kinds: dict[str, int] = {}
            for line in mine:  # one line a round trip; its statements without their values
                sql = re.sub(r"\s+", " ", line.split("LOG:", 1)[1]).strip()
                sql = re.sub(r"\([^;]*\)", "(...)", re.sub(r"'[^']*'", "?", sql))[:160]
                kinds[sql] = kinds.get(sql, 0) + 1
            out[surface] = {"round_trips_per_request": round(len(mine) / n, 2),
                            "statements": {k: round(v / n, 2) for k, v in kinds.items()}}
    finally:
        with _pg_connect(PG_BASE, "postgres") as conn:
            conn.execute(f"alter database {gw.pg_dbname} reset log_statement")
        gw.stop()
        gw.start(60)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    ap.add_argument("--baseline", help="also run this git revision's gateway (A/B)")
    ap.add_argument("--surfaces", default="chat,messages,responses")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=300)
    ap.add_argument("--bursts", type=int, default=4, help="c=32 bursts per target (0: skip)")
    ap.add_argument("--burst-s", type=float, default=3.0)
    ap.add_argument("--streams", default="",
                    help="comma-separated burst sizes for the streams phase (empty: skip)")
    ap.add_argument("--stream-rounds", type=int, default=4)
    ap.add_argument("--per-request", type=int, default=200,
                    help="requests per surface for the CPU and counter phase (0: skip)")
    ap.add_argument("--pg-log", type=Path, help="the server's log file, readable here")
    ap.add_argument("--out", type=Path, help="write the JSON here too")
    args = ap.parse_args(argv)
    surfaces = args.surfaces.split(",")
    python = sys.executable
    pg = args.db == "postgres"
    logdir = Path(tempfile.mkdtemp(prefix="silk-surfaces-"))
    upstream = FakeUpstream(python, logdir)
    gateways: dict[str, Gateway] = {}
    result: dict = {"db": args.db, "workers": args.workers, "baseline": args.baseline,
                    "commit": procinfo.repo_commit(REPO), "logdir": str(logdir)}
    copy = None
    upstream.start()
    try:
        checkouts = {"new": REPO}
        if args.baseline:
            copy = Path(tempfile.mkdtemp(prefix="silk-baseline-"))
            checkouts = {"old": checkout(args.baseline, copy), **checkouts}
        for label, repo in checkouts.items():
            gw = Gateway(args.db, logdir, upstream, args.workers, python, None, PG_BASE)
            gw.name, gw.repo = label, repo
            gw.pg_dbname = f"silk_bench_surfaces_{os.getpid()}_{label}"
            gw.prepare()
            gw.start(60)
            gateways[label] = gw
            one(gw, "chat", 1)
        targets = [(f"{label}-{s}", gw, s) for label, gw in gateways.items() for s in surfaces]
        log(f"up: {', '.join(name for name, _, _ in targets)}; logs in {logdir}")
        for _, gw, surface in targets:  # warm-up: every path once at concurrency 8
            run_loadgen(python, ["throughput", "--url", url(gw, surface), "--key", gw.key,
                                 "--concurrency", "8", "--duration", "1", "--warmup-s", "0"],
                        timeout=60)

        out = run_loadgen(python, [
            "latency", *[a for name, gw, s in targets
                         for a in ("--target", f"{name}={url(gw, s)}@{gw.key}")],
            "--rounds", str(args.rounds), "--per-round", str(args.per_round),
            "--round-max-s", "10", "--warmup", "50", "--max-seconds", "600"], timeout=900)
        result["latency_c1_ms"] = {name: out["targets"][name]["latency_ms"]
                                   for name, _, _ in targets}
        log("latency: " + ", ".join(f"{n} p50 {v.get('p50')}"
                                    for n, v in result["latency_c1_ms"].items()))

        bursts: dict[str, list[float]] = {name: [] for name, _, _ in targets}
        for rnd in range(args.bursts):
            for name, gw, surface in targets if rnd % 2 == 0 else reversed(targets):
                tp = run_loadgen(python, [
                    "throughput", "--url", url(gw, surface), "--key", gw.key,
                    "--concurrency", "32", "--duration", str(args.burst_s),
                    "--warmup-s", "0.5"], timeout=args.burst_s + 60)
                bursts[name].append(tp["rps"])
        if args.bursts:
            result["rps_c32"] = {name: {"bursts": v, "mean": round(statistics.mean(v), 1),
                                        "median": round(statistics.median(v), 1)}
                                 for name, v in bursts.items()}
            log("c=32: " + ", ".join(f"{n} {v['mean']}"
                                     for n, v in result["rps_c32"].items()))

        for n in [int(x) for x in args.streams.split(",") if x]:
            bursts = stream_bursts(targets, upstream, n, args.stream_rounds)
            result.setdefault("streams", {})[str(n)] = bursts
            log(f"{n} streams: " + ", ".join(
                f"{name} +{v['added_ttft_p50_median_ms']} ms, {v['worker_cpu_s_median']} s CPU,"
                f" {v['lost']} lost" for name, v in bursts.items()))

        if args.per_request:
            time.sleep(11)  # the counters of the phases before are published first
            result["per_request"] = {name: per_request(gw, s, args.per_request, pg)
                                     for name, gw, s in targets}
        if pg and args.pg_log:
            result["statements"] = {label: logged_statements(gw, args.pg_log, surfaces, 20)
                                    for label, gw in gateways.items()}
        result["books"] = {label: gw.books() for label, gw in gateways.items()}
    finally:
        for gw in gateways.values():
            gw.stop()
            gw.cleanup()
        upstream.stop()
        if copy:
            shutil.rmtree(copy, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
