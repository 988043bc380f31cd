"""Load with faults for a while, then count: served, failed cleanly, cents lost, memory growth.

Run outside CI, from the project root, with PostgreSQL and Redis up::

    python tests/reliability/soak.py --minutes 5

It starts its own fake upstream and two gateway instances (gunicorn, two gevent workers
each) on one PostgreSQL database and one Redis, drives mixed streaming and JSON traffic at
both, and injects faults all the while: broken, hung and garbled upstream answers, 429 and
5xx storms on one upstream key, refused connections, clients hanging up, workers killed
with SIGKILL (only on the second instance, so the first one's memory tells a clean story)
and database outages (the soak's database cut off for 1.5 s; with --pg-restart the whole
cluster is restarted instead). It exits 1 if any request failed uncleanly, any cent is
unaccounted for, or the books do not balance.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from tests.chat.helpers import expected_cost, set_quota_left, units  # noqa: E402
from tests.conftest import UPSTREAM_KEYS, upstream_env_dict  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402
from tests.reliability.helpers import (  # noqa: E402
    CHAT,
    block_database,
    body,
    cli,
    hang_up,
    raw_request,
)
from tests.support import databases  # noqa: E402
from tests.support.accounts import AccountMaker  # noqa: E402
from tests.support.gateway import Gateway  # noqa: E402

DIRECTIVES = [  # (weight, fault name or "" for none, directive)
    (60, "", "pieces={n} chunk_delay=0.005"),
    (5, "upstream cut", "pieces={n} cut_after=4"),
    (3, "upstream reset", "pieces={n} cut_after=3 rst=1"),
    (3, "upstream hang", "hang=1"),
    (3, "upstream stall", "pieces={n} chunk_delay=3"),
    (3, "upstream 500", "status=500"),
    (3, "upstream 503", "status=503"),
    (3, "upstream garbage", "garbage=1"),
    (3, "upstream no usage", "pieces={n} no_usage=1"),
    (3, "slow first token", "pieces={n} first_token_delay=1"),
]


class Tally:
    """Thread-safe counters of what happened."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes: Counter = Counter()
        self.faults: Counter = Counter()
        self.dirty: list[str] = []
        self.request_ids: dict[str, int] = {}
        self.kills: list[float] = []  # when a worker of the victim instance was killed

    def outcome(self, name: str, request_id: str | None = None, status: int = 0) -> None:
        with self.lock:
            self.outcomes[name] += 1
            if request_id:
                self.request_ids[request_id] = status

    def fault(self, name: str) -> None:
        with self.lock:
            self.faults[name] += 1

    def bad(self, what: str) -> None:
        with self.lock:
            self.dirty.append(what[:300])

    def killed_during(self, start: float, end: float) -> bool:
        """True if a worker was killed while a request was in flight."""
        with self.lock:
            return any(start <= moment <= end for moment in self.kills)


def classify(response: requests.Response, text: str, stream: bool) -> str:
    """served, a clean failure's code, or raise ValueError for an unclean answer."""
    if response.status_code >= 500 and response.status_code not in (502, 503, 504):
        raise ValueError(f"HTTP {response.status_code}: {text[:200]}")
    if response.status_code != 200:
        error = json.loads(text)["error"]
        if set(error) != {"message", "type", "param", "code"}:
            raise ValueError(f"bad envelope: {text[:200]}")
        return f"clean {response.status_code} {error['code']}"
    if not stream or not text.startswith(("data:", ":")):
        json.loads(text)["choices"]  # noqa: B018 - must be a whole completion
        return "served"
    if text.rstrip().endswith("data: [DONE]"):
        return "served"
    last = text.strip().split("\n\n")[-1]
    code = json.loads(last.removeprefix("data: "))["error"]["code"]
    return f"clean stream-error {code}"


def client(stop: threading.Event, urls: list[str], accounts: list, tally: Tally, seed: int):
    """One client loop: mostly ordinary requests, some steering the upstream into faults."""
    rnd = random.Random(seed)
    weights = [w for w, _, _ in DIRECTIVES]
    while not stop.is_set():
        acct = rnd.choice(accounts)
        url = rnd.choice(urls)
        stream = rnd.random() < 0.6
        _, fault, directive = rnd.choices(DIRECTIVES, weights)[0]
        payload = body(f"soak {rnd.random()}", directive.format(n=rnd.randint(5, 40)),
                       stream=stream, max_tokens=300)
        if fault:
            tally.fault(fault)
        if stream and rnd.random() < 0.04:
            tally.fault("client hang-up")
            hang_up_midway(url, acct.key, payload, rnd, tally)
            continue
        started = time.monotonic()
        try:
            response = requests.post(url + CHAT, json=payload, stream=stream, timeout=30,
                                     headers={"Authorization": f"Bearer {acct.key}"})
            text = response.text
            tally.outcome(classify(response, text, stream), response.headers.get("x-request-id"),
                          response.status_code)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if url == urls[-1] and tally.killed_during(started, time.monotonic()):
                tally.outcome("connection lost with its killed worker (intended)")
            else:
                where = "steady" if url == urls[0] else "victim"
                tally.bad(f"{type(exc).__name__} from {where} "
                          f"after {time.monotonic() - started:.1f}s: {exc} {payload}")
                tally.outcome("UNCLEAN")
        except (requests.RequestException, ValueError, KeyError) as exc:
            tally.bad(f"{type(exc).__name__}: {exc}")
            tally.outcome("UNCLEAN")


def hang_up_midway(url: str, key: str, payload: dict, rnd: random.Random, tally: Tally):
    """A client that leaves before headers or after a few events."""
    sock = raw_request(url, key, json.dumps(payload).encode())
    try:
        sock.settimeout(10)
        if rnd.random() < 0.5:
            sock.recv(512)
        else:
            time.sleep(0.05)
    except OSError:
        pass
    hang_up(sock)
    tally.outcome("client hung up (intended)")


def injector(stop: threading.Event, fake: FakeUpstream, victim: Gateway, tally: Tally,
             interval: float, database_url: str, pg_restart: bool):
    """Every `interval` seconds, one process-level fault."""
    rnd = random.Random(7)
    kinds = ["kill worker", "upstream refuses", "429 storm on one key", "5xx storm on one key",
             "database restart (whole cluster)" if pg_restart else "database outage"]
    while not stop.wait(interval):
        kind = rnd.choice(kinds)
        try:
            inject(kind, fake, victim, tally, rnd, database_url)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be made is no result
            print(f"could not inject {kind}: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            tally.fault(kind)


def inject(kind: str, fake: FakeUpstream, victim: Gateway, tally: Tally, rnd: random.Random,
           database_url: str) -> None:
    """Make one process-level fault happen."""
    if kind == "kill worker":
        pids = victim.worker_pids()
        if not pids:
            raise RuntimeError("no worker to kill")
        with tally.lock:
            tally.kills.append(time.monotonic())
        os.kill(rnd.choice(pids), signal.SIGKILL)
    elif kind == "upstream refuses":
        fake.refuse()
        try:
            time.sleep(1.5)
        finally:
            fake.accept()
    elif kind == "429 storm on one key":
        fake.enqueue(key=rnd.choice(UPSTREAM_KEYS["deepseek"]), status=429, times=40,
                     retry_after="1")
    elif kind == "5xx storm on one key":
        fake.enqueue(key=rnd.choice(UPSTREAM_KEYS["deepseek"]), status=503, times=40)
    elif kind == "database outage":
        # This database's sessions are ended and refused for a while: a restart, as the
        # gateway sees it, that leaves everyone else on the server alone.
        name = make_url(database_url).database
        try:
            block_database(databases.PG_ADMIN_URL, name, allow=False)
            time.sleep(1.5)
        finally:
            block_database(databases.PG_ADMIN_URL, name, allow=True)
    else:
        restart_cluster()


def restart_cluster() -> None:
    """Crash the local PostgreSQL cluster (immediate stop) and start it until it runs."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]

    def ctl(*args: str) -> int:
        return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *args[:-1],
                               version, "main", args[-1]], check=False,
                              capture_output=True).returncode

    ctl("--mode", "immediate", "stop")
    time.sleep(1.0)
    for _ in range(120):  # it must not stay down, however slow the start
        ctl("start")
        if ctl("status") == 0:
            return
        time.sleep(1)


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def growth_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return 60 * cov / var if var else 0.0


def books(app, maker: AccountMaker, accounts: list, credits: dict, tally: Tally) -> dict:
    """Compare what the ledger, the usage records and the balances say; count cents lost."""
    from silk.extensions import db
    from silk.metering.models import Reservation, UsageRecord

    lost_units = 0
    mispriced = 0
    for acct in accounts:
        records = maker.usage_records(acct.id)
        balance = maker.balance_units(acct.id)
        charged = sum(r.cost_units for r in records)
        lost_units += abs(credits[acct.id] - charged - balance)
        ledger_charges = -sum(e.amount_units for e in maker.ledger(acct.id) if e.kind == "charge")
        lost_units += abs(ledger_charges - charged)
        for r in records:
            if r.cost_units + r.written_off_units != units(expected_cost(
                    r.model, r.prompt_tokens, r.completion_tokens)):
                mispriced += 1
    with app.app_context():
        open_holds = db.session.scalar(select(func.count(Reservation.id)).where(
            Reservation.state == "open"))
        records = {r.request_id: r for r in db.session.scalars(select(UsageRecord))}
        db.session.remove()
    seen = {rid: s for rid, s in tally.request_ids.items() if s in (200, 502, 503, 504)}
    missing = [rid for rid, s in seen.items() if rid not in records and s != 503]
    return {"lost_units": lost_units, "mispriced": mispriced, "open_holds": open_holds,
            "usage_records": len(records), "missing_records": len(missing),
            "swept": sum(1 for r in records.values() if r.status == "swept"),
            "audit": maker.audit()}


def ready_database(name: str) -> str:
    """A fresh PostgreSQL database, waiting out a server that is briefly full or down."""
    for attempt in range(60):
        try:
            return databases.postgres_database(name)
        except BaseException as exc:  # noqa: BLE001 - pytest.skip raises a BaseException
            if attempt == 59 or isinstance(exc, KeyboardInterrupt):
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--fault-interval", type=float, default=8.0,
                        help="seconds between process-level faults")
    parser.add_argument("--pg-restart", action="store_true",
                        help="restart the whole local PostgreSQL cluster instead of cutting "
                             "off the soak's database alone (disturbs everyone using it)")
    args = parser.parse_args()

    from silk import create_app
    from silk.extensions import db

    database_url = ready_database("silk_soak")
    redis_url = "redis://127.0.0.1:6379/12"
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SILK_IGNORE_ENV_DATABASE": True,
                      "SILK_SWEEP_INTERVAL": 0})
    with app.app_context():
        databases.reset_schema(db)
    maker = AccountMaker(app)
    accounts = [maker.make(credit="5") for _ in range(8)] + [maker.make(credit="0.003")
                                                             for _ in range(4)]
    credits = {a.id: units(Decimal(5) if i < 8 else Decimal("0.003"))
               for i, a in enumerate(accounts)}
    for acct in accounts:
        set_quota_left(app, acct.id)

    tally = Tally()
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    with FakeUpstream(keys=UPSTREAM_KEYS) as fake:
        env = {**upstream_env_dict(fake), "REDIS_URL": redis_url, "SILK_SWEEP_INTERVAL": "2",
               "SILK_UPSTREAM_READ_TIMEOUT": "2", "SILK_UPSTREAM_MAX_ANSWER_WAIT": "4",
               "SILK_KEY_COOLDOWN": "0.5"}
        steady = Gateway(database_url, env, workers=2, log_path=logs / "soak-steady.log")
        victim = Gateway(database_url, env, workers=2, log_path=logs / "soak-victim.log")
        steady.start()
        victim.start()
        try:
            stop = threading.Event()
            threads = [threading.Thread(target=client, args=(
                stop, [steady.url, victim.url], accounts, tally, i), daemon=True)
                for i in range(args.concurrency)]
            threads.append(threading.Thread(target=injector, args=(
                stop, fake, victim, tally, args.fault_interval, database_url, args.pg_restart),
                daemon=True))
            for thread in threads:
                thread.start()
            started = time.monotonic()
            memory: dict[int, list[tuple[float, float]]] = {p: [] for p in steady.worker_pids()}
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(5)
                now = time.monotonic() - started
                for pid in memory:
                    mb = rss_mb(pid)
                    if mb is not None:
                        memory[pid].append((now, mb))
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            elapsed = time.monotonic() - started
            time.sleep(4)  # let the sweepers settle holds of the last killed worker
        finally:
            steady.stop(graceful=True)
            victim.stop(graceful=True)
        swept_by_cli = cli(steady.env, "sweep").stdout.strip()
        result = books(app, maker, accounts, credits, tally)

    served = tally.outcomes["served"]
    clean = sum(v for k, v in tally.outcomes.items() if k.startswith("clean"))
    total = sum(tally.outcomes.values())
    print(f"duration: {elapsed:.0f} s with {args.concurrency} clients on 2 instances x 2 workers")
    print(f"requests: {total} ({total / elapsed:.1f}/s)")
    print(f"  served: {served}")
    print(f"  failed cleanly: {clean}")
    for name, count in sorted(tally.outcomes.items()):
        if name.startswith("clean"):
            print(f"    {name}: {count}")
    print(f"  clients that hung up on purpose: {tally.outcomes['client hung up (intended)']}")
    print(f"  connections lost with a killed worker: "
          f"{tally.outcomes['connection lost with its killed worker (intended)']}")
    print(f"  UNCLEAN failures: {tally.outcomes['UNCLEAN']} {tally.dirty[:5]}")
    print(f"faults injected: {sum(tally.faults.values())}")
    for name, count in sorted(tally.faults.items()):
        print(f"    {name}: {count}")
    print(f"usage records: {result['usage_records']} (swept after a worker was killed: "
          f"{result['swept']}); answered requests without a record: "
          f"{result['missing_records']}; open holds: {result['open_holds']}; "
          f"final CLI sweep: {swept_by_cli}")
    print(f"cents lost: {result['lost_units'] / 10**7:.7f} "
          f"(mispriced usage records: {result['mispriced']})")
    print(f"audit: {'ok' if not result['audit'] else result['audit']}")
    for pid, samples in memory.items():
        if len(samples) < 6:
            continue
        # A leak grows at a steady rate; warming up (pools, caches) slows down: compare halves.
        settled = [s for s in samples if s[0] >= 30]
        half = len(settled) // 2
        print(f"worker {pid} memory: {samples[0][1]:.1f} -> {samples[-1][1]:.1f} MB; growth "
              f"after a 30 s warm-up {growth_per_minute(settled):+.2f} MB/min (first half "
              f"{growth_per_minute(settled[:half]):+.2f}, second half "
              f"{growth_per_minute(settled[half:]):+.2f})")
    ok = (not tally.outcomes["UNCLEAN"] and result["lost_units"] == 0 and not result["mispriced"]
          and not result["audit"] and not result["open_holds"] and not result["missing_records"])
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
