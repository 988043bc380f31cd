"""Routes across providers: failover before the first byte, the served route named and
billed exactly (customer charge at the model's price, upstream cost at the route's), the
breaker resting a route that keeps failing and probing it again."""

from __future__ import annotations

import random
import time
import uuid
from decimal import ROUND_HALF_UP, Decimal

import pytest

from silk.defaults import MODELS, PROVIDERS
from tests.chat.helpers import messages, prompt_tokens, set_quota_left, sse_events

JSON = {"Accept": "application/json"}
DOWN = {"name": "Down", "base_url": "http://127.0.0.1:9", "env": "DOWNX",
        "limit_field": "max_tokens", "limit_covers_reasoning": True}
KEYLESS = {**DOWN, "name": "Keyless", "env": "KEYLESSX"}  # no KEYLESSX_API_KEY is set
ROUTED = {
    **MODELS,
    "routed": {"input": "0.20", "output": "0.40", "max_output_tokens": 1000,
               "routes": [
                   {"provider": "deepseek", "upstream": "deepseek-v4-flash",
                    "extra_body": {"thinking": {"type": "disabled"}},
                    "cost": {"input": "0.07", "output": "0.11"}},
                   {"provider": "mimo", "upstream": "mimo-v2.5", "name": "mimo-backup",
                    "cost": {"input": "0.05", "output": "0.15"}}]},
    "refused-first": {"input": "0.20", "output": "0.40", "max_output_tokens": 1000,
                      "routes": [{"provider": "down", "upstream": "gone"},
                                 {"provider": "ark", "upstream": "doubao-seed-2.0-pro"}]},
    "keyless-first": {"input": "0.20", "output": "0.40", "max_output_tokens": 1000,
                      "routes": [{"provider": "keyless", "upstream": "gone"},
                                 {"provider": "ark", "upstream": "doubao-seed-2.0-pro"}]},
}


@pytest.fixture
def app_config(monkeypatch):
    monkeypatch.setenv("DOWNX_API_KEY", "down-key")
    monkeypatch.delenv("KEYLESSX_API_KEY", raising=False)
    return {"SILK_MODELS": ROUTED, "SILK_PROVIDERS": {**PROVIDERS, "down": DOWN,
                                                      "keyless": KEYLESS},
            "SILK_ROUTE_FAILURES": 2, "SILK_ROUTE_REST": 2.0}


def units(tokens: int, usd_per_million: str) -> Decimal:
    return tokens * Decimal(usd_per_million) * 1000


def rounded(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _ask(client, acct, model="routed", text="Hello there", **extra):
    return client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                       json={"model": model, "messages": messages(text), **extra})


@pytest.mark.parametrize("fault", [{"status": 401}, {"status": 403}, {"status": 429},
                                   {"status": 500}, {"status": 503}])
def test_a_failing_route_fails_over_to_the_next(app, client, accounts, upstream, fault):
    app.extensions["silk.upstreams"]["deepseek"].timeout = (1.0, 0.5)
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, 0)
    upstream.enqueue("deepseek", times=2, **fault)  # both DeepSeek keys fail
    response = _ask(client, acct, max_tokens=50)
    assert response.status_code == 200, response.json
    assert response.headers["x-silk-provider"] == "mimo-backup"
    assert [r.provider for r in upstream.requests] == ["deepseek", "deepseek", "mimo"]
    sent = upstream.requests[-1].body
    assert sent["model"] == "mimo-v2.5" and "thinking" not in sent  # DeepSeek's extras stay
    assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent  # its own field
    [record] = accounts.usage_records(acct.id)
    prompt, completion = prompt_tokens(messages("Hello there")), record.completion_tokens
    assert (record.provider, record.route, record.upstream_model) == (
        "mimo", "mimo-backup", "mimo-v2.5")
    assert record.cost_units == rounded(units(prompt, "0.20") + units(completion, "0.40"))
    assert record.upstream_cost_units == rounded(units(prompt, "0.05")
                                                 + units(completion, "0.15"))
    assert accounts.audit() == []


def test_a_route_silent_after_taking_the_request_is_not_tried_again(app, client, accounts,
                                                                    upstream):
    """No second provider generates what the first may be generating: the client gets the
    timeout, the route's breaker counts it as a failure."""
    app.extensions["silk.upstreams"]["deepseek"].timeout = (1.0, 0.5)
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", times=2, delay=1.5)  # past the read timeout and the 0.5 s
    response = _ask(client, acct, max_tokens=5)  # 5 tokens add for a JSON answer
    assert response.status_code == 504, response.json
    assert response.json["error"]["code"] == "upstream_timeout"
    assert [r.provider for r in upstream.requests] == ["deepseek"]
    assert app.extensions["silk.breakers"].get("deepseek/deepseek-v4-flash").failures == 1
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == 0 and record.upstream_cost_units == 0
    assert accounts.audit() == []


def test_failing_over_keeps_a_json_answer_within_its_one_wait(app, client, accounts,
                                                             upstream):
    """A JSON answer may wait `first_byte_wait` for its body to begin, what
    SILK_GRACEFUL_TIMEOUT assumes (plus 60 s): a route slow to fail (both keys' 503 after
    0.45 s each) and then a slow next one (0.9 s, within a wait of its own) took 1.8 s where
    1.2 s were allowed, so a stopping worker was killed mid-answer. The wait is the
    request's across keys and routes: the next route gets what is left of it.

    Here the same at 2.5 times the scale (3 s allowed, 4.2 s taken), so that a loaded
    machine's pauses, in the fake provider too, leave each step a second of slack."""
    for name in ("deepseek", "mimo"):
        client_ = app.extensions["silk.upstreams"][name]
        client_.timeout, client_.max_answer_wait = (1.0, 0.4), 3.0
    wait = app.extensions["silk.upstreams"]["deepseek"].first_byte_wait(50)
    assert wait == 3.0
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", times=2, status=503, delay=1.1)
    upstream.enqueue("mimo", delay=2.0)  # within a wait of its own, not within what is left
    response = _ask(client, acct, max_tokens=50)
    assert response.status_code == 504, response.json
    assert response.json["error"]["code"] == "upstream_timeout"
    assert [r.provider for r in upstream.requests] == ["deepseek", "deepseek", "mimo"]
    # Timed as the provider saw it, from the first try until MiMo was left waiting: the
    # request's own work before and after (its key, hold and settlement) is not the wait.
    [gone] = upstream.wait_for(lambda: upstream.disconnects, timeout=5)
    assert gone.provider == "mimo"
    took = gone.time - upstream.requests[0].time
    assert wait - 0.05 < took < wait + 0.8  # it took 4.2 s
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == 0 and record.upstream_cost_units == 0
    assert accounts.audit() == [] and accounts.row(acct.id).reserved_units == 0
    # What is left is enough for a route that answers in it.
    upstream.enqueue("deepseek", times=2, status=503, delay=0.7)
    upstream.enqueue("mimo", delay=0.7)
    response = _ask(client, acct, max_tokens=50)
    assert response.status_code == 200, response.json
    assert response.headers["x-silk-provider"] == "mimo-backup"
    assert accounts.audit() == []


def test_a_refused_connection_fails_over_to_the_next_route(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = _ask(client, acct, model="refused-first")
    assert response.status_code == 200, response.json
    assert response.headers["x-silk-provider"] == "ark/doubao-seed-2.0-pro"
    [record] = accounts.usage_records(acct.id)
    assert (record.provider, record.route) == ("ark", "ark/doubao-seed-2.0-pro")
    assert accounts.audit() == []


def test_a_model_another_route_can_serve_is_listed_and_served(app, client, accounts, upstream):
    """A model whose first route's provider has no key is still served by its next route,
    so /v1/models lists it, GET /v1/models/{id} shows it and /v1/pricing says available."""
    acct = accounts.make(credit="1")
    listed = {m["id"] for m in client.get("/v1/models", headers=acct.headers).json["data"]}
    assert "keyless-first" in listed
    shown = client.get("/v1/models/keyless-first", headers=acct.headers)
    assert shown.status_code == 200 and shown.json["id"] == "keyless-first"
    prices = {m["id"]: m["available"] for m in client.get("/v1/pricing").json["models"]}
    assert prices["keyless-first"] is True
    response = _ask(client, acct, model="keyless-first")
    assert response.status_code == 200, response.json
    assert response.headers["x-silk-provider"] == "ark/doubao-seed-2.0-pro"
    [record] = accounts.usage_records(acct.id)
    assert (record.provider, record.route) == ("ark", "ark/doubao-seed-2.0-pro")
    assert accounts.audit() == []


def test_the_first_route_serves_when_it_answers(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, 0)
    response = _ask(client, acct)
    assert response.headers["x-silk-provider"] == "deepseek/deepseek-v4-flash"
    assert upstream.requests[-1].body["thinking"] == {"type": "disabled"}
    [record] = accounts.usage_records(acct.id)
    prompt, completion = record.prompt_tokens, record.completion_tokens
    assert record.upstream_cost_units == rounded(units(prompt, "0.07")
                                                 + units(completion, "0.11"))
    assert record.cost_units == rounded(units(prompt, "0.20") + units(completion, "0.40"))


def test_no_route_is_tried_after_the_first_byte(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = client.post("/v1/chat/completions", headers=acct.headers, json={
        "model": "routed", "stream": True, "messages": messages("Hi", "cut_after=3")})
    sse_events(response.data)
    assert response.headers["x-silk-provider"] == "deepseek/deepseek-v4-flash"
    assert [r.provider for r in upstream.requests] == ["deepseek"]
    [record] = accounts.usage_records(acct.id)
    assert record.status == "cut" and record.route == "deepseek/deepseek-v4-flash"
    assert accounts.audit() == []


def test_a_client_error_is_not_retried_on_another_route(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", status=400)
    assert _ask(client, acct).status_code == 400
    assert [r.provider for r in upstream.requests] == ["deepseek"]
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == 0 and record.upstream_cost_units == 0
    assert accounts.audit() == []


def test_every_route_failing_costs_nothing(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    upstream.enqueue("deepseek", times=2, status=500)
    upstream.enqueue("mimo", status=503)
    response = _ask(client, acct)
    assert response.status_code in (502, 503)
    assert "x-silk-provider" not in response.headers
    [record] = accounts.usage_records(acct.id)
    assert record.cost_units == 0 and record.upstream_cost_units == 0
    assert accounts.audit() == []


def test_the_breaker_rests_a_failing_route_then_probes_it(app, client, runner, accounts,
                                                        upstream):
    acct = accounts.make(credit="1")
    admin = accounts.make(admin=True)
    for _ in range(2):  # two failures in a row (SILK_ROUTE_FAILURES=2) open the breaker
        upstream.enqueue("deepseek", times=2, status=503)
        assert _ask(client, acct).headers["x-silk-provider"] == "mimo-backup"
    shown = client.get("/v1/admin/providers", headers=admin.headers).json
    [route] = [r for r in shown["routes"]
                if (r["model"], r["route"]) == ("routed", "deepseek/deepseek-v4-flash")]
    assert route["state"] == "resting" and route["resting_until"]
    assert route["recent_failures"] == 2
    out = runner.invoke(args=["silk", "providers"])
    assert out.exit_code == 0 and "route mimo-backup" in out.output
    # Resting: DeepSeek is not tried at all.
    before = len(upstream.requests)
    assert _ask(client, acct).headers["x-silk-provider"] == "mimo-backup"
    assert [r.provider for r in upstream.requests[before:]] == ["mimo"]
    # After the rest, one request probes DeepSeek; its answer closes the breaker.
    time.sleep(2.1)
    assert _ask(client, acct).headers["x-silk-provider"] == "deepseek/deepseek-v4-flash"
    shown = client.get("/v1/admin/providers", headers=admin.headers).json
    [route] = [r for r in shown["routes"]
                if (r["model"], r["route"]) == ("routed", "deepseek/deepseek-v4-flash")]
    assert route["state"] == "serving" and route["latency_ms"]["p50"] is not None
    assert {k["provider"] for k in shown["keys"]} >= {"deepseek", "mimo", "ark"}
    from silk.ops import metrics

    text, _ = metrics.render()
    assert b'silk_route_resting{route="deepseek/deepseek-v4-flash"} 0.0' in text
    assert (b'silk_route_latency_seconds_count{result="failed",'
            b'route="deepseek/deepseek-v4-flash"}') in text
    assert b'silk_route_latency_seconds_count{result="ok",route="mimo-backup"}' in text
    assert (b'silk_route_failovers_total{model="routed",reason="upstream_unavailable",'
            b'route="deepseek/deepseek-v4-flash"}') in text
    assert accounts.audit() == []


def test_a_failed_probe_rests_the_route_again():
    from silk.upstream.breaker import Breakers

    board = Breakers(threshold=1, rest=0.05)
    breaker = board.get("r")
    breaker.failed(0.1)
    assert breaker.resting() and not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failed(0.1)
    assert breaker.state().state == "resting"
    time.sleep(0.06)
    assert breaker.allow()
    breaker.succeeded(0.01)
    assert breaker.state().state == "serving" and not breaker.resting()


def test_a_rest_is_shared_through_redis():
    from silk.upstream.breaker import Breakers

    prefix = f"silk:test:{uuid.uuid4().hex}:"
    one = Breakers(1, 5.0, "redis://127.0.0.1:6379/0", prefix=prefix)
    other = Breakers(1, 5.0, "redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        one.redis.ping()
    except Exception:  # noqa: BLE001
        pytest.skip("no Redis at 127.0.0.1:6379")
    assert not other.get("r").resting()
    one.get("r").failed(0.1)
    other.get("r")._shared_checked = 0.0  # its once-a-second look at Redis is due
    assert other.get("r").resting()
    one.redis.delete(prefix + "r")


def test_weights_spread_requests_and_order_keeps_the_list():
    from silk.catalog.catalogue import Route
    from silk.relay.routes import ordered

    a, b, c = Route("a", "p", "m", weight=3), Route("b", "p", "m", weight=1), Route(
        "c", "p", "m", weight=0)
    rng = random.Random(7)
    firsts = [ordered((a, b, c), rng)[0].name for _ in range(4000)]
    assert 0.7 < firsts.count("a") / 4000 < 0.8 and "c" not in firsts
    assert all(ordered((a, b, c), rng)[-1] is c for _ in range(50))
    plain = (Route("x", "p", "m"), Route("y", "p", "m"))
    assert ordered(plain) == list(plain)


@pytest.mark.parametrize("routes,fragment", [
    ([], "non-empty"),
    ([{"provider": "nowhere"}], "provider 'nowhere'"),
    ([{"provider": "mimo", "weight": -1}], "weight"),
    ([{"provider": "mimo", "extra_body": {"max_tokens": 5}}], "output limit"),
    ([{"provider": "mimo", "cost": {"input": "x", "output": "1"}}], "cost: input price"),
])
def test_bad_routes_fail_at_start_naming_the_route(routes, fragment, tmp_path):
    from silk import create_app
    from silk.config import ConfigError

    models = {"m": {"input": "1", "output": "1", "max_output_tokens": 5, "routes": routes}}
    with pytest.raises(ConfigError) as err:
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db",
                    "SILK_MODELS": models})
    assert fragment in str(err.value)
