"""Many parallel requests against a small balance, served by gunicorn with two gevent workers.

The balance must never go below zero, every admitted request must be settled exactly once,
and the books must balance at the end, on SQLite and on PostgreSQL alike.
"""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.chat.helpers import set_quota_left
from tests.support.gateway import ROOT

pytestmark = pytest.mark.slow


def _call(url, key, i):
    stream = i % 2 == 0
    body = {"model": "deepseek-chat", "max_tokens": 1000, "stream": stream,
            "messages": [{"role": "user",
                          "content": f"race {i} [[fake: pieces=8 chunk_delay=0.01]]"}]}
    response = requests.post(url + "/v1/chat/completions", json=body, timeout=30, stream=stream,
                             headers={"Authorization": f"Bearer {key}"})
    text = response.text
    return response.status_code, text


def test_parallel_requests_never_overdraw(app, gateway, accounts, upstream, database_url):
    acct = accounts.make(tier="free", credit="0.001")  # a hold of ~$0.0003 fits three times
    set_quota_left(app, acct.id)
    minimum_balance = []

    def watch():
        minimum_balance.append(accounts.balance_units(acct.id))

    with ThreadPoolExecutor(max_workers=40) as pool:
        futures = [pool.submit(_call, gateway.url, acct.key, i) for i in range(120)]
        for _ in range(10):
            watch()
        results = [f.result() for f in futures]

    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 402}, statuses
    served = statuses.count(200)
    print(f"served={served} refused={statuses.count(402)}")
    assert served > 0 and statuses.count(402) > 0
    for status, text in results:
        if status == 200 and text.startswith("data:"):
            assert text.rstrip().endswith("data: [DONE]")
    records = accounts.usage_records(acct.id)
    assert len(records) == served  # one usage record per admitted request, no more
    assert all(r.status == "ok" for r in records)
    charged = sum(r.cost_units for r in records)
    final = accounts.row(acct.id)
    assert final.balance_units == 1_000_000 - charged >= 0
    assert final.reserved_units == 0
    assert min(minimum_balance) >= 0
    assert accounts.audit() == []

    audit = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "silk", "audit"],
                           cwd=ROOT, env={**gateway.env}, capture_output=True, text=True,
                           check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
