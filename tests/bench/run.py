"""SilkGateway performance benchmark: one command that starts everything, measures, stops
everything, prints a Markdown table and writes JSON under tests/bench/results/.

    /work/venv/bin/python tests/bench/run.py                       # sqlite, postgres, litellm
    /work/venv/bin/python tests/bench/run.py --targets sqlite --quick

See tests/bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import procinfo  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
from targets import (  # noqa: E402
    BENCH,
    REPO,
    FakeUpstream,
    Gateway,
    LiteLLM,
    Portkey,
    Target,
    TargetError,
)

RESULTS = BENCH / "results"
DEFAULT_PROFILE = {"ttft_ms": 200.0, "chunks": 64, "gap_ms": 20.0}

FULL = {
    "startup_samples": 3,
    "warmup_s": 2.0,
    "lat_rounds": 6,
    "lat_per_round": 1000,
    "lat_round_max_s": 4.0,
    "lat_warmup": 100,
    "tp_duration_s": 10.0,
    "tp_warmup_s": 2.0,
    "tp_direct_duration_s": 5.0,
    "mem_streams": 500,
    "mem_hold_chunks": 60,
    "mem_hold_gap_ms": 250.0,
    "stream_sizes": [100, 500, 2000],
    "stream_deadline_s": 150.0,
    "quiet_wait_s": 30.0,
    "pause_s": 1.0,
    "budget_min": 25.0,
}
QUICK = {
    "startup_samples": 1,
    "warmup_s": 1.0,
    "lat_rounds": 2,
    "lat_per_round": 300,
    "lat_round_max_s": 2.0,
    "lat_warmup": 30,
    "tp_duration_s": 3.0,
    "tp_warmup_s": 1.0,
    "tp_direct_duration_s": 2.0,
    "mem_streams": 200,
    "mem_hold_chunks": 25,
    "mem_hold_gap_ms": 200.0,
    "stream_sizes": [100, 500, 2000],
    "stream_deadline_s": 20.0,
    "quiet_wait_s": 0.0,
    "pause_s": 0.5,
    "budget_min": 6.0,
}


def log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


class Budget:
    def __init__(self, minutes: float):
        self.end = time.monotonic() + minutes * 60

    def left(self) -> float:
        return self.end - time.monotonic()


# ---------------------------------------------------------------------------------------------
# running the load generator in its own process


def run_loadgen(python: str, argv: list[str], timeout: float, on_line=None) -> dict:
    cmd = [python, str(BENCH / "loadgen.py"), *argv]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    last = ""
    try:
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                last = line
            elif on_line:
                on_line(line)
        err = proc.stderr.read()
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not last:
        raise RuntimeError(f"loadgen {argv[:1]} failed ({proc.returncode}): {err[-1500:]}")
    return json.loads(last)


# ---------------------------------------------------------------------------------------------
# the phases


def _reference_min(args, s: dict) -> float:
    """Minutes the reference Portkey's phases add: for each gateway target, its c=1 phase
    and its c=32 burst before and after the target's, each followed by a pause."""
    if "portkey" not in args.targets or args.no_reference:
        return 0.0
    gateways = sum(1 for name in args.targets if name.split("-")[0] in ("sqlite", "postgres"))
    latency_s = s["lat_rounds"] * s["lat_round_max_s"] * 2 + 1.0  # target and direct
    burst_s = s["tp_warmup_s"] + s["tp_duration_s"] + 1.0
    return gateways * 2 * (latency_s + burst_s) / 60


class Runner:
    def __init__(self, args, settings: dict, logdir: Path):
        self.args = args
        self.s = settings
        self.logdir = logdir
        self.python = args.python
        extra = 0.0
        if not args.budget_min:
            extra = args.soak_min * len(args.targets) + _reference_min(args, settings)
        self.budget = Budget((args.budget_min or settings["budget_min"]) + extra)
        self.upstream = FakeUpstream(self.python, logdir)
        # With Portkey among the targets, a second Portkey stays up all run and is measured
        # beside each gateway target (see start_reference): the machine's speed drifts
        # within minutes, so the ratios use the reference of the same moment.
        self.reference: Portkey | None = None

    # -- helpers
    def direct_url(self) -> str:
        return self.upstream.base("direct") + "/chat/completions"

    def groups(self, t: Target) -> dict:
        groups = {"target": t.all_pids, "upstream": self.upstream.pids}
        if isinstance(t, Gateway) and t.db == "postgres":
            groups["db"] = lambda: procinfo.postgres_backends(t.pg_dbname)
        return groups

    def cpu_meter(self, t: Target) -> procinfo.CpuMeter:
        return procinfo.CpuMeter(self.groups(t))

    def quiet(self, t: Target, res: dict, phase: str) -> None:
        """Wait (bounded) until other processes leave the CPUs alone; record what was seen."""
        limit = self.s["quiet_wait_s"]
        if self.args.nice < 0:
            limit = min(limit, 2.0)  # the benchmark has priority: others only use idle time
        deadline = time.monotonic() + limit
        load = procinfo.foreign_load(self.groups(t), 0.5)
        waited = 0.5
        while load > self.args.quiet_cores and time.monotonic() < deadline:
            load = procinfo.foreign_load(self.groups(t), 1.0)
            waited += 1.0
        res.setdefault("foreign_load_before", {})[phase] = {
            "cores": round(load, 2),
            "waited_s": round(waited, 1),
        }
        if load > self.args.quiet_cores:
            log(
                f"{t.name}: {phase}: other processes keep {load:.2f} cores busy; "
                "figures may be disturbed"
            )

    def first_answer(self, t: Target) -> tuple[int, str]:
        body = loadgen.make_body("deepseek-chat", False, 128, t.url)
        conn = loadgen.BlockingConn(
            loadgen.Target(t.url, t.key, body, False, tuple(t.extra_headers)), timeout=30
        )
        try:
            r, _ = conn.request(keep_body=True)
        finally:
            conn.close()
        return r.status, bytes(r.body).decode("utf-8", "replace")

    def start_target(self, t: Target, res: dict) -> None:
        timeout = 180.0 if t.kind == "litellm" else 60.0
        samples, firsts = [], []
        n = self.s["startup_samples"] if t.kind == "silkgateway" else 1
        for i in range(n):
            healthz = t.start(timeout)
            status, _ = self.first_answer(t)
            first = time.monotonic() - t.proc.t_spawn
            samples.append(round(healthz, 3))
            firsts.append(round(first, 3) if status == 200 else None)
            if i < n - 1:
                t.stop()
                time.sleep(0.5)
        res["startup"] = {
            "healthz_s": samples,
            "healthz_s_median": sorted(samples)[len(samples) // 2],
            "first_answer_s": firsts,
            "health_path": t.health_path,
        }
        log(f"{t.name}: up, first 200 on {t.health_path} after {samples} s")

    def validate(self, t: Target, res: dict) -> None:
        status, body = self.first_answer(t)
        ok_ns = status == 200
        try:
            doc = json.loads(body)
            if "content" in doc:  # an Anthropic Message
                text, used = doc["content"][0]["text"], doc["usage"]["output_tokens"]
            elif "output" in doc:  # a Response
                text = doc["output"][0]["content"][0]["text"]
                used = doc["usage"]["total_tokens"]
            else:
                text = doc["choices"][0]["message"]["content"]
                used = doc["usage"]["total_tokens"]
            ok_ns = ok_ns and bool(text) and used > 0
        except (ValueError, KeyError, IndexError, TypeError):
            ok_ns = False
        body_s = loadgen.make_body("deepseek-chat", True, 128, t.url)
        conn = loadgen.BlockingConn(
            loadgen.Target(t.url, t.key, body_s, True, tuple(t.extra_headers)), timeout=30
        )
        try:
            sock_resp = _stream_once(conn)
        finally:
            conn.close()
        ok_s = (
            sock_resp.status == 200
            and sock_resp.done_marker
            and sock_resp.events >= 64
            and sock_resp.usage
        )
        res["validation"] = {
            "non_stream_ok": ok_ns,
            "stream_ok": ok_s,
            "non_stream_sample": body[:400],
            "stream_events": sock_resp.events,
            "stream_usage_chunk": sock_resp.usage,
        }
        if ok_ns and not ok_s and t.kind == "portkey":
            # Portkey 1.15.2 answers streams with an error on Node 20 (undici's immutable
            # response headers, Portkey-AI/gateway#1389): keep its non-streaming figures.
            t.streams_ok = False
            res["validation"]["stream_sample"] = _stream_text(t)[:300]
            log(f"{t.name}: streaming does not work here; only non-streaming figures")
            return
        if not (ok_ns and ok_s):
            raise TargetError(f"{t.name} does not answer correctly: {res['validation']}")

    def warmup(self, t: Target, res: dict) -> None:
        out = run_loadgen(
            self.python,
            [
                "throughput",
                "--url",
                t.url,
                *_client_args(t),
                "--concurrency",
                "8",
                "--duration",
                str(self.s["warmup_s"]),
                "--warmup-s",
                "0",
            ],
            timeout=self.s["warmup_s"] + 60,
        )
        res["warmup"] = {"rps": out["rps"], "errors": out["errors"]}

    def latency(self, t: Target, res: dict) -> None:
        is_pg = isinstance(t, Gateway) and t.db == "postgres"
        if is_pg:
            res["pg_commit_probe"] = pg_commit_probe(self.args.pg_base, t.pg_dbname)
        if isinstance(t, Gateway) and t.db == "sqlite" and t.tmpdir:
            res["flush_probe"] = flush_probe(t.tmpdir)  # beside the database file
        self.quiet(t, res, "latency")
        pg0 = pg_counters(self.args.pg_base, t.pg_dbname) if is_pg else None
        # Portkey's own phase just before the target's and just after, apart from it: Node's
        # background threads (V8's garbage collector) would share the cores with the target.
        ref = self.reference if t.kind == "silkgateway" else None
        before = self._beside(ref, self._latency_phase) if ref is not None else None
        if before is not None:
            time.sleep(1.0)
        meter = self.cpu_meter(t).start()
        out = self._latency_phase(t)
        cpu = _cpu_done(meter.stop(), out["loadgen_cpu_s"])
        after = None
        if ref is not None:
            time.sleep(1.0)
            after = self._beside(ref, self._latency_phase)
        tgt, direct = out["targets"]["target"], out["targets"]["direct"]
        a, b = tgt["latency_ms"], direct["latency_ms"]
        res["latency_c1"] = {
            "target": a,
            "direct": b,
            "target_errors": tgt["errors"],
            "added_p50_ms": _sub(a.get("p50"), b.get("p50")),
            "added_p99_ms": _sub(a.get("p99"), b.get("p99")),
            "ratio_p50": _div(a.get("p50"), b.get("p50")),
            "cpu": cpu,
        }
        if before is not None and after is not None:
            added = [_sub(o["targets"]["target"]["latency_ms"].get("p50"),
                          o["targets"]["direct"]["latency_ms"].get("p50")) for o in (before, after)]
            res["latency_c1"]["reference"] = {
                "name": ref.name, "added_p50_before_ms": added[0], "added_p50_after_ms": added[1],
                "added_p50_ms": None if None in added else round((added[0] + added[1]) / 2, 3)}
        if pg0:
            time.sleep(1.0)  # let PostgreSQL publish its counters
            pg1 = pg_counters(self.args.pg_base, t.pg_dbname)
            sent = a.get("n", 0) + self.s["lat_warmup"] + sum(tgt["errors"].values())
            if pg1 and sent:
                res["latency_c1"]["pg_per_request"] = {
                    k: round((pg1[k] - pg0[k]) / sent, 2) for k in pg1
                }
        log(f"{t.name}: c=1 p50 {a.get('p50')} ms (direct {b.get('p50')} ms)")

    @staticmethod
    def _beside(ref: Target, phase) -> dict | None:
        """A phase of the reference Portkey; its failure costs only the ratio, not the
        gateway target's own figures (they then fall back to the portkey target's)."""
        try:
            out = phase(ref)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            log(f"{ref.name}: phase failed ({exc})")
            return None
        errors = out.get("errors") or out.get("targets", {}).get("target", {}).get("errors") or {}
        if any(errors.values()) or not out.get("rps", 1):  # a failing Portkey is no yardstick
            log(f"{ref.name}: phase had errors ({errors}); not used")
            return None
        return out

    def _latency_phase(self, t: Target) -> dict:
        """Concurrency 1: rounds alternating between `t` and the fake upstream direct."""
        return run_loadgen(
            self.python,
            [
                "latency",
                "--target",
                f"target={t.url}@{t.key or ''}",
                *[f"--target-header=target={h}" for h in t.extra_headers],
                "--target",
                f"direct={self.direct_url()}",
                "--rounds",
                str(self.s["lat_rounds"]),
                "--per-round",
                str(self.s["lat_per_round"]),
                "--round-max-s",
                str(self.s["lat_round_max_s"]),
                "--warmup",
                str(self.s["lat_warmup"]),
                "--max-seconds",
                "150",
            ],
            timeout=200,
        )

    def throughput(self, t: Target, res: dict) -> None:
        self.quiet(t, res, "throughput")
        ref = self.reference if t.kind == "silkgateway" else None
        before = None
        if ref is not None:  # Portkey's burst just before the target's and just after
            before = self._beside(ref, self._throughput_target)
            self.quiet(t, res, "throughput")  # Node's background threads done with the cores
        meter = self.cpu_meter(t).start()
        with PgWaits(t, self.args.pg_base) as pg:
            tgt = self._throughput_target(t)
        cpu = meter.stop()
        after = None
        if ref is not None:
            time.sleep(0.5)
            after = self._beside(ref, self._throughput_target)
        time.sleep(0.5)
        direct = run_loadgen(
            self.python,
            [
                "throughput",
                "--url",
                self.direct_url(),
                "--concurrency",
                "32",
                "--duration",
                str(self.s["tp_direct_duration_s"]),
                "--warmup-s",
                "0.5",
            ],
            timeout=self.s["tp_direct_duration_s"] + 60,
        )
        res["throughput_c32"] = {
            "target": tgt,
            "direct": direct,
            "ratio_to_direct": _div(tgt["rps"], direct["rps"]),
            "cpu": _cpu_done(cpu, tgt["loadgen_cpu_s"]),
            "pg_activity": pg.result(),
        }
        beside = ""
        if ref is not None and before is not None and after is not None:
            res["throughput_c32"]["reference"] = {
                "name": ref.name, "rps": round((before["rps"] + after["rps"]) / 2, 1),
                "rps_before": before["rps"], "rps_after": after["rps"],
                "errors": {"before": before["errors"], "after": after["errors"]}}
            beside = f", Portkey before and after it {before['rps']} and {after['rps']} req/s"
        log(f"{t.name}: c=32 {tgt['rps']} req/s (direct {direct['rps']} req/s{beside})")

    def _throughput_target(self, t: Target) -> dict:
        return run_loadgen(
            self.python,
            [
                "throughput",
                "--url",
                t.url,
                *_client_args(t),
                "--concurrency",
                "32",
                "--duration",
                str(self.s["tp_duration_s"]),
                "--warmup-s",
                str(self.s["tp_warmup_s"]),
            ],
            timeout=self.s["tp_duration_s"] + self.s["tp_warmup_s"] + 90,
        )

    def memory(self, t: Target, res: dict) -> None:
        if not t.streams_ok:
            res["memory"] = {"skipped": "the target does not stream"}
            return
        n = self.s["mem_streams"]
        chunks = self.s["mem_hold_chunks"]
        gap = self.s["mem_hold_gap_ms"]
        hold_s = 0.1 + chunks * gap / 1000.0
        self.upstream.wait_idle()
        time.sleep(1.5)
        idle = _mem(t)
        samples: list[dict] = []
        all_open = threading.Event()

        def sampler() -> None:
            all_open.wait(timeout=hold_s * 0.6)
            time.sleep(1.0)
            for _ in range(3):
                m = _mem(t)
                m["upstream_open_streams"] = self.upstream.stats()["open_streams"]
                m["all_open"] = all_open.is_set()
                samples.append(m)
                time.sleep(0.3)

        self.upstream.set_profile(ttft_ms=100, chunks=chunks, gap_ms=gap)
        th = threading.Thread(target=sampler, daemon=True)
        try:
            th.start()
            out = run_loadgen(
                self.python,
                [
                    "streams",
                    "--url",
                    t.url,
                    *_client_args(t),
                    "--n",
                    str(n),
                    "--expect-events",
                    str(chunks),
                    "--announce-open",
                    "--deadline-s",
                    str(hold_s + 60),
                ],
                timeout=hold_s + 120,
                on_line=lambda line: all_open.set() if line.startswith("ALL_OPEN") else None,
            )
            th.join(timeout=hold_s + 10)
        finally:
            self.upstream.set_profile(**DEFAULT_PROFILE)
        self.upstream.wait_idle()
        time.sleep(2.0)
        after = _mem(t)
        opened = [s for s in samples if s["upstream_open_streams"] > 0]
        best = max(opened, key=lambda s: s["upstream_open_streams"]) if opened else None
        per_stream = None
        if best:
            k = best["upstream_open_streams"]
            per_stream = {
                m: round((best["workers"][m] - idle["workers"][m]) / k)
                for m in ("rss", "pss", "uss")
            }
        res["memory"] = {
            "streams_requested": n,
            "hold_profile": {"ttft_ms": 100, "chunks": chunks, "gap_ms": gap},
            "idle": idle,
            "open": best,
            "samples": samples,
            "after": after,
            "per_open_stream_bytes": per_stream,
            "streams_result": {k: out[k] for k in ("completed", "lost", "results", "ttft_ms")},
        }
        if per_stream:
            log(
                f"{t.name}: {best['upstream_open_streams']} open streams, "
                f"{per_stream['uss'] / 1000:.1f} kB USS per stream"
            )

    def streams(self, t: Target, res: dict) -> None:
        res.setdefault("streams", {})
        if not t.streams_ok:
            res["streams_skipped"] = "the target does not stream"
            return
        deadline = self.s["stream_deadline_s"]
        for n in self.s["stream_sizes"]:
            if self.budget.left() < deadline + 30:
                res["streams"][str(n)] = {"skipped": "time budget"}
                continue
            self.upstream.wait_idle(timeout=30)
            time.sleep(self.s["pause_s"])
            direct = run_loadgen(
                self.python,
                [
                    "streams",
                    "--url",
                    self.direct_url(),
                    "--n",
                    str(n),
                    "--deadline-s",
                    str(deadline),
                ],
                timeout=deadline + 60,
            )
            self.upstream.wait_idle(timeout=30)
            self.quiet(t, res, f"streams{n}")
            meter = self.cpu_meter(t).start()
            with PgWaits(t, self.args.pg_base) as pg:
                tgt = run_loadgen(
                    self.python,
                    [
                        "streams",
                        "--url",
                        t.url,
                        *_client_args(t),
                        "--n",
                        str(n),
                        "--deadline-s",
                        str(deadline),
                    ],
                    timeout=deadline + 60,
                )
            cpu = meter.stop()
            self.upstream.wait_idle(timeout=30)
            time.sleep(1.0)
            after = _mem(t)  # the workers once this burst is over
            a, b = tgt["ttft_ms"], direct["ttft_ms"]
            res["streams"][str(n)] = {
                "workers_after": after["workers"],
                "target": tgt,
                "direct": direct,
                "added_ttft_p50_ms": _sub(a.get("p50"), b.get("p50")),
                "added_ttft_p99_ms": _sub(a.get("p99"), b.get("p99")),
                "cpu": _cpu_done(cpu, tgt["loadgen_cpu_s"]),
                "pg_activity": pg.result(),
            }
            log(
                f"{t.name}: {n} streams: {tgt['completed']} completed, TTFT p50 "
                f"{a.get('p50')} ms (direct {b.get('p50')}), worst gap "
                f"{tgt['max_gap_ms'].get('max')} ms"
            )

    def soak(self, t: Target, res: dict) -> None:
        """--soak-min N: N minutes of mixed load (c=16 non-streaming, and a burst of 100
        streams each cycle when the target streams), the workers' memory sampled after every
        cycle; growth = end minus the sample after warm-up (the first fifth, at most 2 min)."""
        total_s = self.args.soak_min * 60.0
        cycle_s = min(30.0, max(5.0, total_s / 4))
        warm_s = min(120.0, max(cycle_s, total_s / 5))
        t0 = time.monotonic()
        samples: list[dict] = []
        warm: dict | None = None
        errors: dict[str, int] = {}
        requests = lost = 0
        while time.monotonic() - t0 < total_s and self.budget.left() > cycle_s + 30:
            tp = run_loadgen(
                self.python,
                ["throughput", "--url", t.url, *_client_args(t), "--concurrency", "16",
                 "--duration", str(cycle_s * 0.7), "--warmup-s", "0"],
                timeout=cycle_s + 60,
            )
            requests += tp.get("requests_ok", 0)
            for k, v in tp.get("errors", {}).items():
                errors[k] = errors.get(k, 0) + v
            if t.streams_ok:
                st = run_loadgen(
                    self.python,
                    ["streams", "--url", t.url, *_client_args(t), "--n", "100",
                     "--deadline-s", "30"],
                    timeout=90,
                )
                lost += st.get("lost", 0)
            self.upstream.wait_idle(timeout=30)
            m = _mem(t)
            m["t_s"] = round(time.monotonic() - t0, 1)
            samples.append(m)
            if warm is None and m["t_s"] >= warm_s:
                warm = m
        end = samples[-1] if samples else None
        res["soak"] = {
            "minutes": self.args.soak_min,
            "cycle_s": cycle_s,
            "after_warmup": warm,
            "end": end,
            "growth_bytes": (
                {k: end["workers"][k] - warm["workers"][k] for k in ("rss", "pss", "uss")}
                if warm and end
                else None
            ),
            "rss_series_mib": [
                [s_["t_s"], round(s_["workers"]["rss"] / 1048576, 1)] for s_ in samples
            ],
            "requests": requests,
            "streams_lost": lost,
            "errors": errors,
        }
        if warm and end:
            log(
                f"{t.name}: soak {self.args.soak_min} min: workers RSS "
                f"{warm['workers']['rss'] / 1048576:.1f} MiB after warm-up, "
                f"{end['workers']['rss'] / 1048576:.1f} MiB at the end"
            )

    def profile(self, t: Target, res: dict) -> None:
        pyspy = ensure_pyspy(self.logdir)
        if not pyspy:
            res["profile"] = {"error": "py-spy unavailable"}
            return
        out = {}
        key = _client_args(t)
        tp = ["throughput", "--url", t.url, *key, "--warmup-s", "0.5", "--duration"]
        plan = [
            ("c1", [*tp, "6", "--concurrency", "1"], 6),
            ("c32", [*tp, "6", "--concurrency", "32"], 6),
            (
                f"streams{self.args.profile_streams}",
                ["streams", "--url", t.url, *key, "--n", str(self.args.profile_streams)],
                5,
            ),
        ]
        for phase, argv, dur in plan:
            self.upstream.wait_idle(timeout=30)
            procs = []
            for pid in t.worker_pids():
                f = self.logdir / f"pyspy-{t.name}-{phase}-{pid}.txt"
                cmd = [pyspy, "record", "--nonblocking", "-r", "250", "-d", str(dur)]
                if self.args.profile_idle:
                    cmd.append("--idle")  # keep samples where the worker sleeps in a syscall
                cmd += ["-f", "raw", "-o", str(f), "-p", str(pid)]
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append((f, p))
            time.sleep(0.3)
            lg = run_loadgen(self.python, argv, timeout=120)
            for _, p in procs:
                try:
                    p.wait(timeout=dur + 30)
                except subprocess.TimeoutExpired:
                    p.kill()
            files = [f for f, _ in procs if f.exists()]
            summary = report.summarize_collapsed(files)
            (self.logdir / f"pyspy-{t.name}-{phase}-summary.txt").write_text(
                report.format_profile(summary)
            )
            out[phase] = {
                "files": [str(f) for f in files],
                "top_self": summary["self"][:15],
                "top_inclusive": summary["inclusive"][:25],
                "gateway_inclusive": summary["silk"][:25],
                "loadgen": {k: lg.get(k) for k in ("rps", "completed", "ttft_ms")},
            }
            log(f"{t.name}: profiled {phase} -> {self.logdir}")
        res["profile"] = out

    # -- one target from start to stop
    def run_target(self, t: Target) -> dict:
        res: dict = {"kind": t.kind, "errors": []}
        phases = [
            ("validate", self.validate),
            ("warmup", self.warmup),
            ("latency", self.latency),
            ("throughput", self.throughput),
            ("memory", self.memory),
            ("streams", self.streams),
        ]
        if self.args.soak_min > 0:
            phases.append(("soak", self.soak))
        if (self.args.profile or self.args.profile_idle) and t.kind == "silkgateway":
            phases.append(("profile", self.profile))
        try:
            log(f"{t.name}: preparing")
            t.prepare()
            res["info"] = t.info
            stats_start = self.upstream.stats()
            self.start_target(t, res)
            stats0 = self.upstream.stats()
            for name, fn in phases:
                if self.budget.left() < 20:
                    res["errors"].append(f"{name}: skipped, out of time budget")
                    continue
                try:
                    fn(t, res)
                except Exception as exc:  # noqa: BLE001 - record and go on with the next phase
                    res["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
                    log(f"{t.name}: phase {name} failed: {exc}")
                    (self.logdir / f"{t.name}-{name}-error.txt").write_text(traceback.format_exc())
                    if name == "validate":
                        break
            stats1 = self.upstream.stats()
            res["upstream_requests"] = _label_delta(stats0, stats1, t.name)
            res["upstream_broken_streams"] = stats1["streams_broken"] - stats0["streams_broken"]
            if isinstance(t, Gateway):
                self.books(t, res, stats_start)
        except Exception as exc:  # noqa: BLE001
            res["errors"].append(f"start: {type(exc).__name__}: {exc}")
            log(f"{t.name}: failed to start: {exc}")
        finally:
            t.stop()
            t.cleanup()
        return res

    def books(self, t: Gateway, res: dict, stats_start: dict) -> None:
        """Check the books once the load is over (see report.books_ok)."""
        try:
            books = t.books()
        except Exception as exc:  # noqa: BLE001 - record it; the figures still stand
            res["errors"].append(f"books: {type(exc).__name__}: {exc}")
            return
        sent = _label_delta(stats_start, self.upstream.stats(), t.name)
        books["upstream_requests"] = sum(d["requests"] for d in sent.values())
        res["books"] = books
        verdict = "ok" if report.books_ok(books) else "NOT OK"
        log(
            f"{t.name}: books {verdict}: {books['usage_records']['rows']} usage records for "
            f"{books['upstream_requests']} upstream requests, audit exit {books['audit_exit']}"
        )

    def start_reference(self) -> None:
        """Portkey kept up beside the gateway targets (when Portkey is one of the targets)."""
        if "portkey" not in self.args.targets or self.args.no_reference:
            return
        ref = Portkey(self.logdir, self.upstream, Path(self.args.portkey_dir))
        ref.name = "reference-portkey"
        self.reference = ref  # stopped by run()'s finally, even if interrupted while starting
        try:
            ref.ensure_installed(log)
            ref.prepare()
            ref.start(timeout=30)
        except Exception as exc:  # noqa: BLE001 - the run goes on with the run-wide figures
            log(f"{ref.name}: not started ({exc}); ratios use the portkey target's figures")
            ref.stop()
            self.reference = None
            return
        log(f"{ref.name}: up on port {ref.port}, measured beside each gateway target")

    def run(self) -> dict:
        results: dict = {"targets": {}}
        self.upstream.start()
        try:
            self.start_reference()
            for name in self.args.targets:
                t = self.make_target(name)
                if t is None:
                    continue
                if self.budget.left() < 60:
                    results["targets"][name] = {"errors": ["skipped: out of time budget"]}
                    continue
                results["targets"][name] = self.run_target(t)
            results["upstream_final_stats"] = self.upstream.stats()
        finally:
            if self.reference is not None:
                self.reference.stop()
            self.upstream.stop()
        return results

    def make_target(self, name: str) -> Target | None:
        a = self.args
        if name in ("sqlite", "postgres", "sqlite-responses", "postgres-responses",
                    "sqlite-messages", "postgres-messages"):
            # <db>-responses, <db>-messages: the same gateway through another surface.
            t = Gateway(
                name.partition("-")[0],
                self.logdir,
                self.upstream,
                a.workers,
                self.python,
                a.redis_url if a.redis else None,
                a.pg_base,
                accounts=a.accounts,
            )
            if name.endswith("-responses"):
                t.name, t.chat_path = name, loadgen.RESPONSES_PATH
            if name.endswith("-messages"):
                t.name, t.chat_path = name, loadgen.MESSAGES_PATH
            return t
        if name == "litellm":
            t = LiteLLM(self.logdir, self.upstream, a.workers, Path(a.litellm_venv))
            t.ensure_venv(log)
            return t
        if name == "portkey":
            t = Portkey(self.logdir, self.upstream, Path(a.portkey_dir))
            t.ensure_installed(log)
            return t
        raise SystemExit(f"unknown target {name!r}")


def _stream_text(t: Target) -> str:
    """The raw answer to one streaming request (for the report, when a target fails it)."""
    body = loadgen.make_body("deepseek-chat", True, 128, t.url)
    conn = loadgen.BlockingConn(
        loadgen.Target(t.url, t.key, body, True, tuple(t.extra_headers)), timeout=30
    )
    try:
        r = _stream_once(conn)
        return f"status {r.status}, {r.events} events"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def _client_args(t: Target) -> list[str]:
    """The load generator's options for a target's key(s) and routing headers."""
    out = ["--key", t.key] if t.key else []
    for h in t.extra_headers:
        out.append(f"--header={h}")
    return out


def _stream_once(conn: loadgen.BlockingConn) -> loadgen.Resp:
    """One streaming request on a blocking connection (for validation)."""
    conn._connect()
    r = loadgen.Resp(sse=True)
    conn.sock.sendall(conn.target.request)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = conn.sock.recv(65536)
        now = time.perf_counter()
        if not data:
            r.eof(now)
            break
        if r.feed(data, now):
            break
    return r


class PgWaits:
    """Samples pg_stat_activity for the gateway's database while a phase runs: how many of
    its connections are busy, waiting on a lock, or idle inside a transaction (the gateway
    holds a transaction open while it does something else)."""

    def __init__(self, t: Target, pg_base: str, interval: float = 0.1):
        self.enabled = isinstance(t, Gateway) and t.db == "postgres"
        self.dbname = getattr(t, "pg_dbname", "")
        self.url = pg_base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        self.interval = interval
        self.counts: dict[str, int] = {}
        self.samples = 0
        self.peak_connections = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PgWaits:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            import psycopg
        except ImportError:
            return
        # For a connection idle inside a transaction, its last statement says whose it is.
        sql = (
            "select coalesce(state, '?'), coalesce(wait_event_type, '-'), "
            "coalesce(wait_event, '-'), case when state like 'idle in transaction%%' "
            "then ' (last: ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 60) || ')' "
            "else '' end, count(*) from pg_stat_activity "
            "where datname = %s and pid <> pg_backend_pid() group by 1, 2, 3, 4"
        )
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                while not self._stop.is_set():
                    total = 0
                    for state, wtype, wevent, last, n in conn.execute(sql, (self.dbname,)):
                        key = f"{state} | {wtype}:{wevent}{last}"
                        self.counts[key] = self.counts.get(key, 0) + n
                        total += n
                    self.samples += 1
                    self.peak_connections = max(self.peak_connections, total)
                    self._stop.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            self.counts[f"sampler error: {exc}"] = 0

    def result(self) -> dict | None:
        if not self.enabled or not self.samples:
            return None
        avg = {k: round(v / self.samples, 2) for k, v in self.counts.items()}
        return {
            "samples": self.samples,
            "peak_connections": self.peak_connections,
            "avg_connections": dict(sorted(avg.items(), key=lambda kv: -kv[1])),
        }


def _pg_connect(pg_base: str, dbname: str):
    import psycopg  # in the gateway's venv

    url = pg_base.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(f"{url}/{dbname}", autocommit=True, connect_timeout=5)


def pg_counters(pg_base: str, dbname: str) -> dict | None:
    """Cumulative transaction and row counters of one database (pg_stat_database)."""
    try:
        with _pg_connect(pg_base, "postgres") as conn:
            row = conn.execute(
                "select xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched "
                "from pg_stat_database where datname = %s",
                (dbname,),
            ).fetchone()
    except Exception:  # noqa: BLE001 - diagnostics only
        return None
    if not row:
        return None
    keys = ("commits", "rollbacks", "rows_inserted", "rows_updated", "rows_fetched")
    return dict(zip(keys, row, strict=True))


PAUSE_S = 0.002  # about a fast upstream call: the disk idles that long between two flushes


def _back_to_back_and_paused(step, n: int) -> tuple[list[float], list[float]]:
    """Seconds of `step(i)`, n times back to back, then n times each after PAUSE_S."""
    times: list[float] = []
    paused: list[float] = []
    for pause, into in ((0.0, times), (PAUSE_S, paused)):
        for i in range(n):
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            step(i)
            into.append(time.perf_counter() - t0)
    return times, paused


def pg_commit_probe(pg_base: str, dbname: str, n: int = 200) -> dict | None:
    """What this PostgreSQL server gives a client: one-row UPDATE + COMMIT, n times, from a
    plain blocking connection (no gevent, no SQLAlchemy), back to back and after a pause of
    PAUSE_S each (as a charge at concurrency 1 follows its hold: on some virtual disks the
    first flush after an idle moment costs ten times more)."""
    try:
        with _pg_connect(pg_base, dbname) as conn:
            conn.execute("create table if not exists bench_probe (id int primary key, v int)")
            conn.execute("insert into bench_probe values (1, 0) on conflict do nothing")
            conn.autocommit = False

            def commit(_i: int) -> None:
                conn.execute("update bench_probe set v = v + 1 where id = 1")
                conn.commit()

            times, paused = _back_to_back_and_paused(commit, n)
            rt = []
            for _ in range(n):
                t0 = time.perf_counter()
                conn.execute("select 1").fetchone()
                rt.append(time.perf_counter() - t0)
            conn.rollback()
            conn.autocommit = True
            conn.execute("drop table bench_probe")
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return {"error": str(exc)}
    return {
        "update_commit_ms": loadgen.summary(times),
        "update_commit_after_pause_ms": loadgen.summary(paused),
        "select1_roundtrip_ms": loadgen.summary(rt),
    }


def flush_probe(directory: str, n: int = 200) -> dict:
    """What this machine's disk gives a commit: write 8 kB into a file in `directory` and
    fdatasync it, n times back to back and n times after a pause of PAUSE_S each."""
    path = os.path.join(directory, f"bench-flush-probe-{os.getpid()}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:  # diagnostics only
        return {"error": str(exc)}
    try:
        os.write(fd, b"\0" * (1 << 20))
        os.fsync(fd)

        def flush(i: int) -> None:
            os.pwrite(fd, b"x" * 8192, (i % 128) * 8192)
            os.fdatasync(fd)

        times, paused = _back_to_back_and_paused(flush, n)
        return {"back_to_back_ms": loadgen.summary(times),
                "after_pause_ms": loadgen.summary(paused)}
    finally:
        os.close(fd)
        os.unlink(path)


def _cpu_done(cpu: dict, loadgen_cpu: float | None) -> dict:
    """Add the load generator's CPU and what the rest of the machine used meanwhile."""
    own = cpu.pop("_own_s", 0.0) + (loadgen_cpu or 0.0)
    cpu["loadgen_cpu_s"] = loadgen_cpu
    cpu["other_cpu_s"] = round(max(0.0, cpu["machine_busy_s"] - own), 3)
    return cpu


def _mem(t: Target) -> dict:
    workers = t.worker_pids()
    return {
        "workers": procinfo.memory_sum(workers),
        "root": procinfo.memory(t.root_pid()),
        "worker_pids": workers,
    }


def _sub(a, b):
    return round(a - b, 3) if a is not None and b is not None else None


def _div(a, b):
    return round(a / b, 3) if a is not None and b else None


def _label_delta(s0: dict, s1: dict, label: str) -> dict:
    out = {}
    for lab, d in s1["by_label"].items():
        if lab == label or lab.startswith(label + "-"):
            base = s0["by_label"].get(lab, {})
            out[lab] = {k: v - base.get(k, 0) for k, v in d.items()}
    return out


def ensure_pyspy(logdir: Path) -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    venv = Path(os.environ.get("SILK_BENCH_TOOLS_VENV", "/work/bench-tools-venv"))
    exe = venv / "bin" / "py-spy"
    if exe.exists():
        return str(exe)
    log(f"installing py-spy into {venv}")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        with open(logdir / "pyspy-install.log", "ab") as f:
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "py-spy"],
                check=True,
                timeout=600,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"py-spy install failed: {exc}")
        return None
    return str(exe) if exe.exists() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SilkGateway benchmark (see tests/bench/README.md)")
    ap.add_argument(
        "--targets",
        default="sqlite,postgres,litellm",
        help="comma-separated: sqlite, postgres, litellm, and the gateway through another "
        "surface: sqlite-responses, postgres-responses (POST /v1/responses), sqlite-messages, "
        "postgres-messages (POST /v1/messages)",
    )
    ap.add_argument("--quick", action="store_true", help="shorter phases (~2-3 minutes)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes per server")
    ap.add_argument("--stream-sizes", help="e.g. 100,500,2000 (default from the mode)")
    ap.add_argument("--redis", action="store_true", help="give the gateway REDIS_URL")
    ap.add_argument(
        "--accounts",
        type=int,
        default=1,
        help="gateway accounts (one key each) the load is spread over; 1 = every request "
        "bills the same account, the worst case for row locks",
    )
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument(
        "--pg-base",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL; the run (re)creates database silk_bench there",
    )
    ap.add_argument(
        "--litellm-venv", default=os.environ.get("SILK_BENCH_LITELLM_VENV", "/work/litellm-venv")
    )
    ap.add_argument(
        "--no-reference",
        action="store_true",
        help="with portkey among the targets: do not keep a second Portkey up to measure "
        "beside each gateway target (the ratios then use the portkey target's figures)",
    )
    ap.add_argument(
        "--portkey-dir",
        default=os.environ.get("SILK_BENCH_PORTKEY_DIR", "/work/portkey"),
        help="npm prefix Portkey's gateway is installed into (outside the repository)",
    )
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the gateway's venv (default: this one)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also profile the gateway workers with py-spy (extra phases)",
    )
    ap.add_argument(
        "--profile-streams",
        type=int,
        default=500,
        help="with --profile: how many streams the profiled stream burst opens",
    )
    ap.add_argument(
        "--profile-idle",
        action="store_true",
        help="with --profile: keep py-spy's idle samples too (shows where workers block)",
    )
    ap.add_argument(
        "--soak-min",
        type=float,
        default=0.0,
        help="after the measured phases, N minutes of mixed load per target; reports the "
        "workers' RSS after warm-up and at the end (growth)",
    )
    ap.add_argument("--budget-min", type=float, help="hard time budget in minutes")
    ap.add_argument(
        "--quiet-cores",
        type=float,
        default=0.25,
        help="before each phase, wait (bounded) until other processes use less",
    )
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority for the whole benchmark (negative needs root): on a "
        "machine shared with other work, e.g. -10 keeps it from disturbing the figures, "
        "at the cost of slowing that other work while the benchmark runs",
    )
    args = ap.parse_args(argv)
    if args.nice:
        os.nice(args.nice)  # children (targets, load generator, fake upstream) inherit it
        # each server runs in its own session, so its scheduler autogroup needs it too
        targets.PRIORITY["nice"] = args.nice
        targets.set_autogroup_nice("self", args.nice)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    settings = dict(QUICK if args.quick else FULL)
    if args.stream_sizes:
        settings["stream_sizes"] = [int(x) for x in args.stream_sizes.split(",") if x.strip()]

    try:
        import gevent  # noqa: F401
    except ImportError:
        raise SystemExit(
            "run this with the gateway's venv python (it needs gevent), e.g. "
            "/work/venv/bin/python tests/bench/run.py"
        ) from None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < 2 * max(settings["stream_sizes"]) + 256:
        log(f"warning: RLIMIT_NOFILE is {nofile}; large stream counts may fail")

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out)
    logdir = out_dir / f"logs-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    meta = {
        "date": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": procinfo.machine(),
        "commit": procinfo.repo_commit(REPO),
        "settings": settings,
        "workers": args.workers,
        "targets": args.targets,
        "redis": args.redis,
        "accounts": args.accounts,
        "nice": args.nice,
        "nofile": nofile,
        "fake_upstream_stream_profile": DEFAULT_PROFILE,
        "logs": str(logdir),
    }
    log(f"logs in {logdir}")
    runner = Runner(args, settings, logdir)
    results = runner.run()
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    results["meta"] = meta
    results["checks"] = report.checks(results)
    results["peer_checks"] = report.peer_checks(results)
    md = report.markdown(results)
    json_path = out_dir / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str))
    (out_dir / f"bench-{stamp}.md").write_text(md)
    print(md)
    log(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
