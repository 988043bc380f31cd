"""Prices that change with time and size, end to end on both databases: a request pays the
band, tier and version in force when it was admitted, and its hold covers the dearest tier."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import pytest
from sqlalchemy import select

from silk.defaults import MODELS
from tests.chat.helpers import messages, prompt_tokens, set_quota_left

JSON = {"Accept": "application/json"}
PEAK = {"time_zone": "Asia/Shanghai", "holidays": ["2031-10-01"],
        "bands": [{"name": "peak", "days": "mon-fri", "hours": "09:00-18:00",
                   "input": "0.28", "output": "0.56"}]}
PRICED = {
    **MODELS,
    # The customer pays DeepSeek's peak doubling; the operator pays DeepSeek's own bands.
    "deepseek-chat": {**MODELS["deepseek-chat"], **PEAK,
                      "cost": {"input": "0.07", "output": "0.11", **PEAK,
                               "bands": [{"days": "mon-fri", "hours": "09:00-18:00",
                                          "input": "0.14", "output": "0.22"}]}},
    # Doubao's price by prompt length (a tier edge at 20 prompt tokens, to test it cheaply).
    "doubao-seed-2.0-pro": {**MODELS["doubao-seed-2.0-pro"],
                            "tiers": [{"max_prompt_tokens": 20, "input": "0.11",
                                       "output": "0.43"},
                                      {"input": "0.50", "output": "2.00"}]},
    # A price version that takes effect at 2031-03-03 12:00 UTC.
    "mimo-v2.5": {**MODELS["mimo-v2.5"],
                  "versions": [{"from": "2031-03-03T12:00:00+00:00", "input": "0.20",
                                "output": "0.60"}]},
}


class Clock:
    """The gateway's clock, moved by the test (silk.database.set_clock)."""

    now = datetime(2031, 3, 3)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    from silk.database import set_clock

    moved = Clock()
    set_clock(moved)
    yield moved
    set_clock(None)


@pytest.fixture
def app_config():
    return {"SILK_MODELS": PRICED}


def units(tokens: int, usd_per_million: str) -> Decimal:
    return tokens * Decimal(usd_per_million) * 1000


def rounded(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _last_record(app):
    from silk.extensions import db
    from silk.metering.service import USAGE

    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(select(USAGE).order_by(USAGE.c.id.desc()).limit(1)).one()


def _credit(app, account_id, usd):
    from silk.extensions import db
    from silk.metering.service import credit
    from silk.pricing import usd_to_units

    with app.app_context(), db.engine.begin() as conn:
        credit(conn, account_id, usd_to_units(usd), kind="topup", actor="test")


def _ask(client, acct, model, text="Hello there"):
    msgs = messages(text)
    response = client.post("/v1/chat/completions", headers={**acct.headers, **JSON},
                           json={"model": model, "messages": msgs})
    assert response.status_code == 200, response.json
    return prompt_tokens(msgs), response.json["usage"]["completion_tokens"]


@pytest.mark.parametrize("instant,peak", [
    (datetime(2031, 3, 3, 0, 59, 59), False),  # Monday 08:59:59 in Beijing
    (datetime(2031, 3, 3, 1, 0, 0), True),  # Monday 09:00:00
    (datetime(2031, 10, 1, 0, 59, 59), False),  # National Day (a Wednesday) 08:59:59
    (datetime(2031, 10, 1, 1, 0, 0), False),  # National Day 09:00:00: off-peak
])
def test_a_request_pays_the_band_in_force_when_admitted(app, client, accounts, upstream,
                                                        clock, instant, peak):
    clock.now = instant
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, 0)
    prompt, completion = _ask(client, acct, "deepseek-chat")
    record = _last_record(app)
    rates = ("0.28", "0.56") if peak else ("0.14", "0.28")
    cost = ("0.14", "0.22") if peak else ("0.07", "0.11")
    assert record.cost_units == rounded(units(prompt, rates[0]) + units(completion, rates[1]))
    assert record.upstream_cost_units == rounded(units(prompt, cost[0])
                                                 + units(completion, cost[1]))
    assert accounts.audit() == []


@pytest.mark.parametrize("words,dear", [(16, False), (17, True)])
def test_a_prompt_just_under_or_over_a_length_tier(app, client, accounts, upstream, clock,
                                                   words, dear):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, 0)
    prompt, completion = _ask(client, acct, "doubao-seed-2.0-pro",
                              " ".join(["word"] * words))
    assert prompt == words + 4 and (prompt > 20) == dear  # 20 tokens: cheap; 21: dear
    rates = ("0.50", "2.00") if dear else ("0.11", "0.43")
    record = _last_record(app)
    assert record.cost_units == rounded(units(prompt, rates[0]) + units(completion, rates[1]))
    assert accounts.audit() == []


def test_the_hold_covers_the_dearest_tier_the_prompt_could_reach(app, client, accounts,
                                                                  upstream, clock):
    acct = accounts.make(credit="0.0001")
    set_quota_left(app, acct.id, 0)
    body = {"model": "doubao-seed-2.0-pro", "messages": messages("Hi"), "max_tokens": 100}
    # 100 output tokens cost $0.000043 at the short prompt's tier, but the prompt bound
    # (every byte a token) reaches the dear tier, where they may cost $0.0002: the hold is
    # sized there, and the balance cannot cover it.
    refused = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json=body)
    assert refused.status_code == 402
    held = Decimal(refused.json["error"]["message"].split("$")[1].split(" ")[0])
    assert held >= Decimal("0.0002")
    _credit(app, acct.id, "0.0002")
    served = client.post("/v1/chat/completions", headers={**acct.headers, **JSON}, json=body)
    assert served.status_code == 200, served.json
    prompt, completion = prompt_tokens(body["messages"]), served.json["usage"]["completion_tokens"]
    record = _last_record(app)  # the short prompt pays the cheap tier all the same
    assert record.cost_units == rounded(units(prompt, "0.11") + units(completion, "0.43"))
    assert accounts.audit() == []


def test_a_price_version_changes_between_two_requests(app, client, accounts, upstream, clock):
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id, 0)
    clock.now = datetime(2031, 3, 3, 11, 59, 59)
    prompt, completion = _ask(client, acct, "mimo-v2.5")
    before = _last_record(app)
    clock.now = datetime(2031, 3, 3, 12, 0, 0)
    _ask(client, acct, "mimo-v2.5")
    after = _last_record(app)
    assert before.cost_units == rounded(units(prompt, "0.10") + units(completion, "0.30"))
    assert after.cost_units == rounded(units(prompt, "0.20") + units(completion, "0.60"))
    assert accounts.audit() == []


def test_pricing_shows_bands_and_tiers_in_the_documented_shape(client, clock):
    clock.now = datetime(2031, 3, 3, 1, 0, 0)
    models = {m["id"]: m for m in client.get("/v1/pricing").json["models"]}
    chat = models["deepseek-chat"]
    assert (chat["input"], chat["output"]) == (0.28, 0.56)  # in force now: the peak
    assert chat["time_zone"] == "Asia/Shanghai" and chat["holidays"] == ["2031-10-01"]
    assert chat["bands"] == [{"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"],
                              "hours": "09:00-18:00", "input": 0.28, "output": 0.56}]
    doubao = models["doubao-seed-2.0-pro"]
    assert (doubao["input"], doubao["output"]) == (0.11, 0.43)
    assert doubao["tiers"] == [{"max_prompt_tokens": 20, "input": 0.11, "output": 0.43},
                               {"max_prompt_tokens": None, "input": 0.5, "output": 2.0}]
    assert models["mimo-v2.5"]["versions"] == [{"from": "2031-03-03T12:00:00+00:00",
                                                "input": 0.2, "output": 0.6}]
    flat = models["ark-code-latest"]
    assert set(flat) == {"id", "provider", "input", "output", "unit", "available"}  # as documented
