"""A burst of requests with one capped key, across two gunicorn instances on one database.

Every request holds its worst case against the key's cap in the reservation that checks the
balance; whichever instance and worker admits it, the key's spend plus its open holds never
pass the cap, and after the burst the cap's counters and the balance are exact (audit).
"""

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.chat.helpers import set_quota_left
from tests.support.gateway import ROOT, Gateway

pytestmark = pytest.mark.slow

CAP_UNITS = 2_000_000  # $0.002: about six holds of a 1,000-token request at once


def _call(url, key, i):
    stream = i % 2 == 0
    body = {"model": "deepseek-chat", "max_tokens": 1000, "stream": stream,
            "messages": [{"role": "user",
                          "content": f"burst {i} [[fake: pieces=8 chunk_delay=0.02]]"}]}
    response = requests.post(url + "/v1/chat/completions", json=body, timeout=60,
                             stream=stream, headers={"Authorization": f"Bearer {key}"})
    return response.status_code, response.text


def _key(app, key_id):
    from silk.account.models import ApiKey
    from silk.extensions import db

    with app.app_context():
        key = db.session.get(ApiKey, key_id)
        db.session.refresh(key)
        db.session.remove()
        return key


def test_a_capped_key_never_passes_its_cap_across_two_instances(
        app, client, gateway, gateway_env, accounts, upstream, database_url, tmp_path):
    owner = accounts.make(credit="1")
    set_quota_left(app, owner.id)
    made = client.post("/v1/keys", headers=owner.headers, json={
        "name": "burst", "role": "member", "spend_caps": {"total": "0.002"}}).json
    key_id, secret = made["id"], made["key"]
    seen = []
    running = threading.Event()

    def watch():
        while not running.is_set():
            key = _key(app, key_id)
            seen.append(key.spent_total_units + key.held_units)

    with Gateway(database_url, gateway_env, workers=2,
                 log_path=tmp_path / "second.log") as second:
        urls = [gateway.url, second.url]
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(max_workers=40) as pool:
                results = list(pool.map(lambda i: _call(urls[i % 2], secret, i), range(120)))
        finally:
            running.set()
            watcher.join()

    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 402}, statuses
    served, refused = statuses.count(200), statuses.count(402)
    print(f"served={served} refused={refused} most held+spent={max(seen)}")
    assert served > 0 and refused > 0
    for status, text in results:
        if status == 402:
            assert "key_budget_exceeded" in text and "total spend cap" in text
    assert max(seen) <= CAP_UNITS

    records = [r for r in accounts.usage_records(owner.id) if r.key_id == key_id]
    assert len(records) == served and all(r.status == "ok" for r in records)
    charged = sum(r.cost_units for r in records)
    key = _key(app, key_id)
    assert (key.held_units, key.spent_total_units) == (0, charged)
    assert charged <= CAP_UNITS
    row = accounts.row(owner.id)
    assert (row.balance_units, row.reserved_units) == (10**9 - charged, 0)
    assert accounts.audit() == []
    audit = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "silk", "audit"],
                           cwd=ROOT, env={**gateway.env}, capture_output=True, text=True,
                           check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
