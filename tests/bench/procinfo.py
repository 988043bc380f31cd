"""Process and machine facts read from /proc: process trees, memory (RSS/PSS/USS), CPU time."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ppid_map() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        rest = data[data.rfind(b")") + 2 :].split()
        out[int(entry)] = int(rest[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for p, pp in _ppid_map().items():
        children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def worker_pids(root: int) -> list[int]:
    """The processes that serve requests under a server's main process: its descendants,
    less helpers such as multiprocessing's resource tracker."""
    return [p for p in descendants(root) if "resource_tracker" not in cmdline(p)]


def memory(pid: int) -> dict[str, int]:
    """rss, pss, uss (private clean + dirty) in bytes, from smaps_rollup when the kernel has it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {}
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
        return {
            "rss": fields.get("Rss", 0),
            "pss": fields.get("Pss", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
        }
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    return {"rss": rss, "pss": rss, "uss": rss}
    except OSError:
        pass
    return {"rss": 0, "pss": 0, "uss": 0}


def memory_sum(pids: list[int]) -> dict[str, int]:
    total = {"rss": 0, "pss": 0, "uss": 0, "procs": 0}
    for p in pids:
        m = memory(p)
        if m["rss"]:
            total["procs"] += 1
            for k in ("rss", "pss", "uss"):
                total[k] += m[k]
    return total


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by the given live processes."""
    return sum(_cpu_ticks(p) or 0 for p in pids) / CLK_TCK


def system_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def postgres_backends(dbname: str) -> list[int]:
    """PostgreSQL server processes serving connections to dbname (found by their title)."""
    needle = f" {dbname} "
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            cmd = cmdline(int(entry))
            if cmd.startswith("postgres: ") and needle in cmd:
                out.append(int(entry))
    return out


class CpuMeter:
    """CPU seconds used by groups of processes between start() and stop(), and by the whole
    machine. A group is a callable returning its pids, asked again at stop() so that
    processes born during the interval count (from their birth)."""

    def __init__(self, groups: dict):
        self.groups = groups
        self.t0 = 0.0
        self.c0: dict[str, dict[int, int]] = {}
        self.sys0 = 0.0

    def start(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.sys0 = system_busy_seconds()
        self.c0 = {k: {p: _cpu_ticks(p) or 0 for p in fn()} for k, fn in self.groups.items()}
        return self

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        out = {"wall_s": round(wall, 3)}
        own = 0.0
        for k, fn in self.groups.items():
            ticks = 0
            for p in set(fn()) | set(self.c0[k]):
                now = _cpu_ticks(p)
                if now is not None:
                    ticks += now - self.c0[k].get(p, 0)
            out[f"{k}_cpu_s"] = round(ticks / CLK_TCK, 3)
            own += ticks / CLK_TCK
        out["machine_busy_s"] = round(system_busy_seconds() - self.sys0, 3)
        out["_own_s"] = round(own, 3)
        return out


def foreign_load(groups: dict, seconds: float = 1.0) -> float:
    """Cores kept busy by processes outside the given groups over a short window."""
    m = CpuMeter(groups).start()
    time.sleep(seconds)
    r = m.stop()
    return max(0.0, (r["machine_busy_s"] - r["_own_s"]) / max(r["wall_s"], 1e-6))


def machine() -> dict:
    info = {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    with contextlib.suppress(AttributeError, OSError):
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        info["somaxconn"] = int(Path("/proc/sys/net/core/somaxconn").read_text())
    return info


def repo_commit(repo: Path) -> str | None:
    """The checked-out commit, read from .git files (no git command is run)."""
    git = repo / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        p = git / ref
        if p.exists():
            return p.read_text().strip()
        packed = git / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        return None
    return None
