"""Turning benchmark results into goal checks, a Markdown report and profile summaries."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

GOALS = {
    "added_p50_c1_ms": ("added latency p50, c=1, non-streaming", "<", 1.5, "ms"),
    "rps_vs_litellm": ("req/s at c=32 vs LiteLLM", ">=", 4.0, "x"),
    "added_ttft_p50_100_ms": ("added TTFT p50, 100 streams at once", "<", 50.0, "ms"),
    "added_ttft_p50_500_ms": ("added TTFT p50, 500 streams at once", "<", 250.0, "ms"),
    "lost_2000": ("streams lost of 2000 at once", "==", 0, ""),
    "per_stream_kb": ("memory per open stream (USS, kB = 1000 B)", "<", 100.0, "kB"),
    "startup_s": ("start to first 200 on /healthz", "<", 2.0, "s"),
}


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def figures(res: dict) -> dict:
    """The goal-relevant figures of one target's results."""
    per = _get(res, "memory", "per_open_stream_bytes", "uss")
    return {
        "added_p50_c1_ms": _get(res, "latency_c1", "added_p50_ms"),
        "rps": _get(res, "throughput_c32", "target", "rps"),
        "added_ttft_p50_100_ms": _get(res, "streams", "100", "added_ttft_p50_ms"),
        "added_ttft_p50_500_ms": _get(res, "streams", "500", "added_ttft_p50_ms"),
        "lost_2000": _get(res, "streams", "2000", "target", "lost"),
        "per_stream_kb": round(per / 1000, 1) if per is not None else None,
        "startup_s": _get(res, "startup", "healthz_s_median"),
    }


def books_ok(b: dict) -> bool:
    """Whether a gateway's books after the run show every upstream request metered exactly."""
    return (
        b["usage_records"]["rows"] >= b["upstream_requests"]
        and b["charges"]["rows"] == b["charged_records"]["rows"]
        and b["charges"]["units"] == b["charged_records"]["units"]
        and b["open_reservations"]["rows"] == 0
        and b["audit_exit"] == 0
    )


def checks(results: dict) -> dict:
    targets = results.get("targets", {})
    lite_rps = _get(targets, "litellm", "throughput_c32", "target", "rps")
    out = {}
    for name, res in targets.items():
        if res.get("kind") != "silkgateway":
            continue
        fig = figures(res)
        fig["rps_vs_litellm"] = (
            round(fig["rps"] / lite_rps, 2) if fig["rps"] is not None and lite_rps else None
        )
        rows = {}
        for key, (label, op, limit, unit) in GOALS.items():
            v = fig.get(key)
            if v is None:
                passed = None
            elif op == "<":
                passed = v < limit
            elif op == ">=":
                passed = v >= limit
            else:
                passed = v == limit
            rows[key] = {
                "label": label,
                "value": v,
                "goal": f"{op} {limit:g} {unit}".strip(),
                "pass": passed,
            }
        out[name] = rows
    return out


# Issue 21's targets against Portkey's gateway (no metering), each a ratio within one run.
RSS_LIMIT_BYTES = 250_000_000  # workers' resident memory in all after 2000 streams


def _surface(name: str) -> tuple[str, str]:
    db, _, surface = name.partition("-")
    return db, surface or "chat"


def peer_checks(results: dict) -> list[dict]:
    """Per gateway target: ours against Portkey's (and our chat's) figures of the same run,
    with the issue's limits; pass is None when a figure is missing."""
    targets = results.get("targets", {})
    pk = targets.get("portkey") or {}
    rows: list[dict] = []

    def add(name, what, ours, ref, ratio, goal, passed):
        rows.append({"target": name, "what": what, "ours": ours, "ref": ref,
                     "ratio": ratio, "goal": goal, "pass": passed})

    for name, res in targets.items():
        if res.get("kind") != "silkgateway":
            continue
        db, surface = _surface(name)
        rps = _get(res, "throughput_c32", "target", "rps")
        # Portkey measured beside this target (a phase just before and one just after) when the
        # run kept a reference up; else the portkey target's figures, minutes apart.
        pk_rps = _get(res, "throughput_c32", "reference", "rps") or _get(
            pk, "throughput_c32", "target", "rps")
        pk_added = _get(res, "latency_c1", "reference", "added_p50_ms")
        if pk_added is None:
            pk_added = _get(pk, "latency_c1", "added_p50_ms")
        ratio = round(rps / pk_rps, 3) if rps and pk_rps else None
        if surface == "chat":
            add(name, "req/s c=32 vs Portkey", rps, pk_rps, ratio, ">= 1.00 x",
                None if ratio is None else ratio >= 1.0)
        else:
            chat = _get(targets, db, "throughput_c32", "target", "rps")
            r_chat = round(rps / chat, 3) if rps and chat else None
            add(name, "req/s c=32 vs Portkey", rps, pk_rps, ratio, "(report)", None)
            add(name, f"req/s c=32 vs our chat ({db})", rps, chat, r_chat, ">= 0.85 x",
                None if r_chat is None else r_chat >= 0.85)
        added = _get(res, "latency_c1", "added_p50_ms")
        if db == "sqlite":
            r_lat = round(added / pk_added, 3) if added is not None and pk_added else None
            add(name, "added p50 c=1 vs Portkey, ms", added, pk_added, r_lat, "<= Portkey's",
                None if added is None or pk_added is None else added <= pk_added)
        else:
            r_lat = round(added / pk_added, 3) if added is not None and pk_added else None
            add(name, "added p50 c=1, ms (Portkey's)", added, pk_added, r_lat, "<= 1.5 ms",
                None if added is None else added <= 1.5)
        t500 = _get(res, "streams", "500", "added_ttft_p50_ms")
        add(name, "500 streams: added TTFT p50, ms", t500, None, None, "< 150 ms",
            None if t500 is None else t500 < 150)
        lost = _get(res, "streams", "2000", "target", "lost")
        t2k = _get(res, "streams", "2000", "added_ttft_p50_ms")
        add(name, "2000 streams: lost", lost, None, None, "== 0",
            None if lost is None else lost == 0)
        add(name, "2000 streams: added TTFT p50, ms", t2k, None, None, "< 1000 ms",
            None if t2k is None else t2k < 1000)
        rss = _get(res, "streams", "2000", "workers_after", "rss")
        add(name, "workers RSS after 2000 streams, MB", None if rss is None else
            round(rss / 1e6, 1), None, None, "< 250 MB",
            None if rss is None else rss < RSS_LIMIT_BYTES)
        soak = _get(res, "soak", "growth_bytes", "rss")
        if soak is not None:
            add(name, "soak: workers RSS growth after warm-up, MB", round(soak / 1e6, 1),
                None, None, "(report; ~0)", None)
    return rows


def peer_markdown(results: dict) -> list[str]:
    rows = results.get("peer_checks") or []
    if not rows:
        return []
    pk = results.get("targets", {}).get("portkey") or {}
    beside = any(_get(r, "throughput_c32", "reference", "rps")
                 for r in results.get("targets", {}).values())
    note = (
        "Portkey measured beside each target: a second Portkey stayed up all run; its c=1 "
        "added p50 and its c=32 req/s are each the mean of a phase just before the target's "
        "and one just after"
        if beside
        else "Portkey's figures from this run"
        if pk.get("throughput_c32")
        else "Portkey was not measured in this run: its columns are empty"
    )
    out = [
        "",
        "## Against Portkey's gateway (issue 21's targets, ratios within this run)",
        "",
        f"{note}. Ratio = ours / reference; *miss* means the target was not met in this run "
        "(on a shared machine, read the CPU table first).",
        "",
        "| target | figure | ours | reference | ratio | goal | |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = {True: "pass", False: "**miss**", None: ""}[r["pass"]]
        out.append(
            f"| {r['target']} | {r['what']} | {_f(r['ours'])} | {_f(r['ref'])} | "
            f"{_f(r['ratio'], 3)} | {r['goal']} | {mark} |"
        )
    return out


# ---------------------------------------------------------------------------------------------


def _f(v, nd=2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _pair(a, b, nd=2) -> str:
    if a is None and b is None:
        return "–"
    return f"{_f(a, nd)} / {_f(b, nd)}"


def _mib(b) -> str:
    return "–" if b is None else f"{b / 1048576:.1f}"


def markdown(results: dict) -> str:
    meta = results.get("meta", {})
    m = meta.get("machine", {})
    targets = results.get("targets", {})
    names = list(targets)
    lite_rps = _get(targets, "litellm", "throughput_c32", "target", "rps")
    lines = [
        f"# SilkGateway benchmark, {meta.get('date', '?')} ({meta.get('mode', '?')} run, "
        f"{meta.get('duration_s', '?')} s)",
        "",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs, "
        f"{m.get('mem_total_gib', '?')} GiB, Linux {m.get('kernel', '?')}, "
        f"Python {m.get('python', '?')}. Commit `{(meta.get('commit') or '?')[:12]}`. "
        f"{meta.get('workers', '?')} workers per server; load generator, fake upstream and "
        f"servers share the same cores. Redis: {'on' if meta.get('redis') else 'off'}.",
        "Fake upstream streams: first chunk after 200 ms, then 64 chunks 20 ms apart, usage "
        "chunk, [DONE]. 'direct' = same load sent straight to the fake upstream in the same "
        "run; 'added' = target minus direct.",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(label: str, fn) -> None:
        cells = []
        for n in names:
            try:
                cells.append(fn(targets[n]))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row(
        "start → first 200 on health path, s (samples)",
        lambda r: ", ".join(_f(x, 2) for x in r["startup"]["healthz_s"]),
    )
    row(
        "start → first chat answer, s",
        lambda r: ", ".join(_f(x, 2) for x in r["startup"]["first_answer_s"]),
    )
    row(
        "c=1 latency p50 / p99, ms",
        lambda r: _pair(r["latency_c1"]["target"]["p50"], r["latency_c1"]["target"]["p99"], 3),
    )
    row(
        "c=1 direct p50 / p99, ms",
        lambda r: _pair(r["latency_c1"]["direct"]["p50"], r["latency_c1"]["direct"]["p99"], 3),
    )
    row(
        "**c=1 added p50 / p99, ms**",
        lambda r: _pair(r["latency_c1"]["added_p50_ms"], r["latency_c1"]["added_p99_ms"], 3),
    )
    row(
        "c=1 PostgreSQL work per request: commits / rows inserted / updated",
        lambda r: " / ".join(
            _f(r["latency_c1"]["pg_per_request"][k], 1)
            for k in ("commits", "rows_inserted", "rows_updated")
        ),
    )
    row(
        "PostgreSQL server alone: UPDATE+COMMIT / the same after a 2 ms pause / SELECT 1 p50, ms",
        lambda r: " / ".join(
            _f(r["pg_commit_probe"][k]["p50"], 3)
            for k in ("update_commit_ms", "update_commit_after_pause_ms", "select1_roundtrip_ms")
        ),
    )
    row(
        "disk beside the SQLite file: 8 kB write+fdatasync / the same after a 2 ms pause p50, ms",
        lambda r: _pair(
            r["flush_probe"]["back_to_back_ms"]["p50"],
            r["flush_probe"]["after_pause_ms"]["p50"],
            3,
        ),
    )
    row(
        "Portkey measured beside it: c=1 added p50, ms / c=32 req/s",
        lambda r: _pair(r["latency_c1"]["reference"]["added_p50_ms"],
                        r["throughput_c32"]["reference"]["rps"], 3),
    )
    row("c=1 ratio p50 (target / direct)", lambda r: _f(r["latency_c1"]["ratio_p50"], 1) + "x")
    row("**c=32 req/s**", lambda r: _f(r["throughput_c32"]["target"]["rps"], 0))
    row("c=32 direct req/s", lambda r: _f(r["throughput_c32"]["direct"]["rps"], 0))
    row("c=32 ratio to direct", lambda r: _f(r["throughput_c32"]["ratio_to_direct"], 3))
    row(
        "**c=32 ratio to LiteLLM**",
        lambda r: _f(r["throughput_c32"]["target"]["rps"] / lite_rps, 2) + "x",
    )
    row(
        "c=32 latency p50 / p99, ms",
        lambda r: _pair(
            r["throughput_c32"]["target"]["latency_ms"]["p50"],
            r["throughput_c32"]["target"]["latency_ms"]["p99"],
            1,
        ),
    )
    row("c=32 errors", lambda r: _errs(r["throughput_c32"]["target"]["errors"]))
    sizes = sorted({int(k) for r in targets.values() for k in (r.get("streams") or {})})
    for n in sizes:
        k = str(n)

        def s(r, key=k):
            return r["streams"][key]

        row(
            f"**{n} streams: completed / lost**",
            lambda r, s=s: (
                f"{s(r)['target']['completed']} / {s(r)['target']['lost']}"
                + _res(s(r)["target"]["results"])
            ),
        )
        row(
            f"{n} streams: TTFT p50 / p99, ms",
            lambda r, s=s: _pair(
                s(r)["target"]["ttft_ms"]["p50"], s(r)["target"]["ttft_ms"]["p99"], 0
            ),
        )
        row(
            f"{n} streams: direct TTFT p50 / p99, ms",
            lambda r, s=s: _pair(
                s(r)["direct"]["ttft_ms"]["p50"], s(r)["direct"]["ttft_ms"]["p99"], 0
            ),
        )
        row(
            f"**{n} streams: added TTFT p50 / p99, ms**",
            lambda r, s=s: _pair(s(r)["added_ttft_p50_ms"], s(r)["added_ttft_p99_ms"], 0),
        )
        row(
            f"{n} streams: worst inter-chunk gap, ms (direct)",
            lambda r, s=s: (
                f"{_f(s(r)['target']['max_gap_ms'].get('max'), 0)} "
                f"({_f(s(r)['direct']['max_gap_ms'].get('max'), 0)})"
            ),
        )
        row(
            f"{n} streams: p50 of per-stream worst gap, ms",
            lambda r, s=s: _f(s(r)["target"]["max_gap_ms"].get("p50"), 0),
        )
        row(
            f"{n} streams: workers RSS after the burst, MiB",
            lambda r, s=s: _mib(s(r)["workers_after"]["rss"]),
        )
        row(
            f"{n} streams: last stream done after, s",
            lambda r, s=s: _f(s(r)["target"]["wall_s"], 1),
        )
    row(
        "memory idle, workers RSS / PSS / USS, MiB",
        lambda r: " / ".join(
            _mib(r["memory"]["idle"]["workers"][x]) for x in ("rss", "pss", "uss")
        ),
    )
    row(
        "memory with N open streams, RSS / PSS / USS, MiB",
        lambda r: (
            " / ".join(_mib(r["memory"]["open"]["workers"][x]) for x in ("rss", "pss", "uss"))
            + f" (N={r['memory']['open']['upstream_open_streams']})"
        ),
    )
    row(
        "**per open stream, USS / RSS, kB**",
        lambda r: _pair(
            r["memory"]["per_open_stream_bytes"]["uss"] / 1000,
            r["memory"]["per_open_stream_bytes"]["rss"] / 1000,
            1,
        ),
    )
    row(
        "memory after streams closed, USS, MiB",
        lambda r: _mib(r["memory"]["after"]["workers"]["uss"]),
    )
    row("master/main process RSS, MiB", lambda r: _mib(r["memory"]["idle"]["root"]["rss"]))
    row(
        "soak: workers RSS after warm-up → end, MiB (minutes)",
        lambda r: (
            f"{_mib(r['soak']['after_warmup']['workers']['rss'])} → "
            f"{_mib(r['soak']['end']['workers']['rss'])} ({_f(r['soak']['minutes'], 1)} min)"
        ),
    )

    chk = results.get("checks") or {}
    if chk:
        gw = list(chk)
        lines += [
            "",
            "## Goals (SilkGateway, with full metering)",
            "",
            "| goal | limit | " + " | ".join(gw) + " |",
            "|---|---|" + "---|" * len(gw),
        ]
        for key, (label, _op, _limit, _unit) in GOALS.items():
            cells = []
            for g in gw:
                c = chk[g][key]
                mark = {True: "PASS", False: "FAIL", None: "n/a"}[c["pass"]]
                cells.append(f"{_f(c['value'])} {mark}")
            lines.append(f"| {label} | {chk[gw[0]][key]['goal']} | " + " | ".join(cells) + " |")

    lines += peer_markdown(results)

    books = {n: r["books"] for n, r in targets.items() if r.get("books")}
    if books:
        lines += [
            "",
            "## Books after the run",
            "",
            "Read from the target's database once nothing was in flight. Every request that "
            "reached the upstream must have a usage record, every charged record a ledger "
            "entry of the same amount, no reservation may stay open, and `silk audit` must "
            "find every ledger summing to its balance.",
            "",
            "| target | upstream requests | usage records | charged (USD) | ledger charges (USD) "
            "| open reservations | audit | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for n, b in books.items():
            lines.append(
                f"| {n} | {b['upstream_requests']} | {b['usage_records']['rows']} | "
                f"{b['charged_records']['rows']} ({b['charged_records']['units'] / 1e9:.6f}) | "
                f"{b['charges']['rows']} ({b['charges']['units'] / 1e9:.6f}) | "
                f"{b['open_reservations']['rows']} | "
                f"{'ok' if b['audit_exit'] == 0 else 'FAILED'} | "
                f"{'PASS' if books_ok(b) else 'FAIL'} |"
            )

    lines += [
        "",
        "## CPU seconds used during each phase",
        "",
        "target (+ its PostgreSQL backends) / fake upstream / load generator / other processes "
        "on the machine; wall seconds. A large 'other' means something outside the benchmark "
        "competed for the cores and that phase's figures are disturbed.",
        "",
        "| phase | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def cpu_cell(ph: dict) -> str:
        db = f" (+{_f(ph['db_cpu_s'], 1)} db)" if "db_cpu_s" in ph else ""
        return (
            f"{_f(ph['target_cpu_s'], 1)}{db} / {_f(ph['upstream_cpu_s'], 1)} / "
            f"{_f(ph.get('loadgen_cpu_s'), 1)} / {_f(ph.get('other_cpu_s'), 1)}; "
            f"{_f(ph['wall_s'], 1)}"
        )

    row("c=1 latency (target and direct)", lambda r: cpu_cell(r["latency_c1"]["cpu"]))
    row("c=32 throughput", lambda r: cpu_cell(r["throughput_c32"]["cpu"]))
    for n in sizes:
        row(f"{n} streams", lambda r, k=str(n): cpu_cell(r["streams"][k]["cpu"]))

    pg_rows = []
    for n, r in targets.items():
        phases = [("c=32", _get(r, "throughput_c32", "pg_activity"))]
        phases += [(f"{k} streams", _get(r, "streams", k, "pg_activity")) for k in map(str, sizes)]
        for phase, act in phases:
            if act:
                top = list(act["avg_connections"].items())[:5]
                cells = ", ".join(f"{k} {v:g}" for k, v in top)
                pg_rows.append(f"| {n} | {phase} | {act['peak_connections']} | {cells} |")
    if pg_rows:
        lines += [
            "",
            "## PostgreSQL connections of the gateway during a phase",
            "",
            "Average number of the gateway's connections by `state | wait_event_type:wait_event`"
            " (pg_stat_activity every 100 ms). *idle in transaction | Client:ClientRead* = "
            "the gateway holds a transaction (and its row locks) open while doing something else;"
            " *active | Lock:transactionid* = waiting for another transaction's row lock.",
            "",
            "| target | phase | peak conns | average by state |",
            "|---|---|---|---|",
            *pg_rows,
        ]

    errs = [(n, e) for n, r in targets.items() for e in r.get("errors", [])]
    if errs:
        lines += ["", "## Errors", ""] + [f"- {n}: {e[:300]}" for n, e in errs]
    prof = [(n, r["profile"]) for n, r in targets.items() if r.get("profile")]
    for n, p in prof:
        for phase, d in p.items():
            if not isinstance(d, dict) or "top_self" not in d:
                continue
            lines += ["", f"## py-spy, {n}, {phase}: top frames by own samples", ""]
            for frame, share in d["top_self"][:10]:
                lines.append(f"- {share:5.1f}%  `{frame}`")
    lines.append("")
    return "\n".join(lines)


def _errs(d: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items()) if d else "none"


def _res(d: dict) -> str:
    other = {k: v for k, v in d.items() if k != "ok"}
    return f" ({_errs(other)})" if other else ""


# ---------------------------------------------------------------------------------------------
# py-spy collapsed stacks

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    f = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in f:
            f = f.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({f}:{m.group('line')})"


def _module(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    f = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in f:
            f = f.split(marker, 1)[1]
            break
    return f


def summarize_collapsed(files: list[Path]) -> dict:
    """Self and inclusive shares of frames (and self share by file) over py-spy raw output."""
    own: Counter = Counter()
    incl: Counter = Counter()
    silk: Counter = Counter()
    by_file: Counter = Counter()
    total = 0
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            if "_WorkerGreenlet.run" in stack and "Queue.get" in stack:
                continue  # an idle thread of gevent's native thread pool (with --idle)
            frames = [_short(f) for f in stack.split(";") if f]
            if not frames:
                continue
            # drop the thread marker py-spy puts first ("process 123:..." / "thread (0x..)")
            total += n
            own[frames[-1]] += n
            by_file[_module(stack.split(";")[-1])] += n
            for f in set(frames):
                incl[f] += n
            # the gateway's own functions, lines merged: where its requests spend their time
            for f in {re.sub(r":\d+\)$", ")", f) for f in frames}:
                if f.split(" (", 1)[-1].startswith("silk/"):
                    silk[f] += n
    if not total:
        return {"total": 0, "self": [], "inclusive": [], "by_file": [], "silk": []}

    def share(c: Counter, k: int):
        return [(f, round(100.0 * v / total, 1)) for f, v in c.most_common(k)]

    return {
        "total": total,
        "self": share(own, 40),
        "inclusive": share(incl, 60),
        "by_file": share(by_file, 30),
        "silk": share(silk, 40),
    }


def format_profile(summary: dict) -> str:
    out = [f"samples: {summary['total']}", "", "== own time (leaf frame) =="]
    out += [f"{s:5.1f}%  {f}" for f, s in summary["self"]]
    out += ["", "== own time by file =="]
    out += [f"{s:5.1f}%  {f}" for f, s in summary["by_file"]]
    out += ["", "== inclusive, gateway code (silk/) only =="]
    out += [f"{s:5.1f}%  {f}" for f, s in summary["silk"]]
    out += ["", "== inclusive (frame anywhere on the stack) =="]
    out += [f"{s:5.1f}%  {f}" for f, s in summary["inclusive"]]
    return "\n".join(out) + "\n"
