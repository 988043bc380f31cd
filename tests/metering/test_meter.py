"""The Meter turns a request's events into exactly one settlement, however the request ends."""

from __future__ import annotations

from decimal import Decimal

import pytest

from silk.pricing import Price, Usage

PRICE = Price(Decimal("0.14"), Decimal("0.28"))  # deepseek-chat: units per token 140 / 280
CACHED = Price(Decimal("0.14"), Decimal("0.28"), Decimal("0.014"))  # a cache hit: 14 units
PROMPT_ESTIMATE = 30


def _meter(app, account_id: int, request_id: str, settled: list, price: Price = PRICE):
    from silk.billing.tiers import tiers
    from silk.extensions import db
    from silk.metering.meter import Meter
    from silk.metering.service import reserve

    with app.app_context():
        engine = db.engine
        hold = reserve(engine, tiers(), account_id=account_id, key_id=None,
                       request_id=request_id, model="deepseek-chat", price=price,
                       prompt_worst=100, max_output=50, prompt_estimate=PROMPT_ESTIMATE,
                       ttl_seconds=60)
    return Meter(engine, hold, provider="deepseek", stream=True,
                 surface="messages", on_settled=lambda meter, outcome: settled.append(outcome))


def _account(app, accounts):
    from tests.chat.helpers import set_quota_left

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    return acct


def _settled_once(accounts, acct, settled: list, bill):
    """One usage record, one charge (or none), nothing still held, the books balanced."""
    [record] = accounts.usage_records(acct.id)
    charges = [e.amount_units for e in accounts.ledger(acct.id) if e.kind == "charge"]
    assert charges == ([-record.cost_units] if record.cost_units else [])
    assert accounts.row(acct.id).reserved_units == 0
    assert accounts.balance_units(acct.id) == 10**9 - record.cost_units
    assert bill.settlement.charged_units == record.cost_units
    assert len(settled) == 1
    assert accounts.audit() == []
    return record


@pytest.mark.parametrize(("how", "status", "http_status"), [
    ("done", "ok", 200), ("cut", "cut", 502), ("client_gone", "client_closed", 499),
    ("timeout", "timeout", 502), ("upstream_error", "upstream_error", 502),
    ("error", "error", 500)])
def test_a_reported_usage_is_billed_once_however_the_request_ends(
        app, accounts, how, status, http_status):
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, f"meter-{how}", settled)
    meter.first_token("deepseek-v4-flash")
    meter.delivered(3)
    meter.usage_seen(Usage(40, 12), 0)
    meter.usage_seen(Usage(40, 20), 5)  # a later count, grown
    bill = meter.ended(how)
    # Every later ending, from any path, returns the first bill and settles nothing more.
    assert meter.ended("done") is bill and meter.ended("error") is bill
    assert meter.refused(502) is bill and meter.failed() is bill
    record = _settled_once(accounts, acct, settled, bill)
    assert (record.status, record.http_status) == (status, http_status)
    assert (record.prompt_tokens, record.completion_tokens) == (40, 20)
    assert record.reasoning_tokens == 5
    assert record.cost_units == 40 * 140 + 20 * 280
    assert record.upstream_model == "deepseek-v4-flash" and record.ttft_ms is not None
    assert record.surface == "messages"  # the label the surface gave, as given
    assert (bill.usage, bill.estimated, bill.as_reported) == (Usage(40, 20), False, True)


@pytest.mark.parametrize("how", ["cut", "client_gone", "timeout", "error"])
def test_delivered_text_without_usage_is_billed_by_estimate(app, accounts, how):
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, f"estimate-{how}", settled)
    meter.first_token("deepseek-v4-flash")
    meter.delivered(4)
    meter.delivered(0)  # a chunk with an empty delta still counts as delivered
    meter.delivered(3)
    bill = meter.ended(how)
    record = _settled_once(accounts, acct, settled, bill)
    assert record.estimated and bill.estimated and not bill.as_reported
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_ESTIMATE, 7)
    assert record.cost_units == PROMPT_ESTIMATE * 140 + 7 * 280


@pytest.mark.parametrize("how", ["cut", "timeout", "upstream_error", "error"])
def test_nothing_delivered_is_charged_nothing(app, accounts, how):
    """The provider (or the gateway) failed before any output: nobody chose to stop."""
    acct = _account(app, accounts)
    settled: list = []
    bill = _meter(app, acct.id, f"nothing-{how}", settled).ended(how)
    record = _settled_once(accounts, acct, settled, bill)
    assert record.cost_units == 0 and bill.usage is None and bill.cost_usd == 0


@pytest.mark.parametrize("how,status", [("client_gone", "client_closed"),
                                        ("revoked", "revoked")])
@pytest.mark.parametrize("counted", [False, True])
def test_a_client_that_left_before_any_output_pays_the_prompt(app, accounts, how, status,
                                                              counted):
    """The provider had taken the request (it answered): a client that hangs up, or whose
    key was revoked, before the first token pays the prompt it sent, at the provider's
    count if it came, else at its estimate; never any output."""
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, f"left-{how}-{counted}", settled)
    if counted:  # the prompt's count came first (a provider that reports it early)
        meter.prompt_seen(Usage(PROMPT_ESTIMATE + 5, 0))
    bill = meter.ended(how)
    record = _settled_once(accounts, acct, settled, bill)
    prompt = PROMPT_ESTIMATE + 5 if counted else PROMPT_ESTIMATE
    assert (record.status, record.prompt_tokens, record.completion_tokens) == (
        status, prompt, 0)
    assert record.estimated and record.cost_units == prompt * 140


@pytest.mark.parametrize("end", ["refused", "failed"])
def test_a_request_the_upstream_never_answered_releases_its_hold_whole(app, accounts, end):
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, f"released-{end}", settled)
    bill = meter.refused(503) if end == "refused" else meter.failed()
    record = _settled_once(accounts, acct, settled, bill)
    assert record.cost_units == 0 and bill.usage is None
    assert (record.status, record.http_status) == (
        ("upstream_error", 503) if end == "refused" else ("error", 500))


def test_counts_beyond_the_hold_are_billed_capped(app, accounts):
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, "capped", settled)
    meter.usage_seen(Usage(40, 10**6), 0)
    bill = meter.ended("done")
    record = _settled_once(accounts, acct, settled, bill)
    assert (record.prompt_tokens, record.completion_tokens) == (40, 50)  # the output bound
    assert bill.usage == Usage(40, 50) and not bill.as_reported
    assert record.written_off_units == (10**6 - 50) * 280


@pytest.mark.parametrize("counted", [None, 0, 45, 60])
def test_an_estimate_beyond_the_output_bound_is_capped_not_written_off(app, accounts,
                                                                        counted):
    """Output the gateway estimated (a stream cut before its count, or text after the
    provider's last count) past the bound sent upstream is no loss: the provider made at
    most the bound. It is billed at the bound and nothing is written off; a provider's own
    count past it (60 here) is capped and written off as ever."""
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, f"over-{counted}", settled)
    meter.first_token("deepseek-v4-flash")
    if counted is not None:
        meter.usage_seen(Usage(40, counted), 0)
    meter.delivered(500)  # "!!!!..." counts a token a mark; a tokenizer merges them
    bill = meter.ended("cut")
    record = _settled_once(accounts, acct, settled, bill)
    assert record.estimated and record.completion_tokens == 50  # the output bound
    assert (record.written_off_units > 0) == (counted == 60)


def test_the_bill_carries_the_reasoning_charged(app, accounts):
    """Reasoning is part of the output billed: a report of more reasoning than output is
    billed (and told) at the output, not as the provider wrote it."""
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, "reasoned", settled)
    meter.usage_seen(Usage(40, 30), 45)
    bill = meter.ended("done")
    record = _settled_once(accounts, acct, settled, bill)
    assert record.reasoning_tokens == bill.reasoning_tokens == 30
    assert bill.usage == Usage(40, 30) and not bill.as_reported


def test_a_report_below_an_earlier_one_lowers_no_count(app, accounts):
    """Each count billed is the largest reported; the output delivered after the largest
    output count is no count's, so it is estimated on top of it, not taken from a lower one."""
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, "lowered", settled)
    meter.first_token("deepseek-v4-flash")
    meter.delivered(3)
    meter.usage_seen(Usage(40, 20, 10), 5)
    meter.delivered(4)
    meter.usage_seen(Usage(30, 5, 12), 1)  # below the first but for its cache hits
    bill = meter.ended("done")
    record = _settled_once(accounts, acct, settled, bill)
    # The cache hits are the first's: they split its prompt, the larger.
    assert (record.prompt_tokens, record.completion_tokens, record.cache_hit_tokens,
            record.reasoning_tokens) == (40, 24, 10, 5)
    assert record.estimated and bill.usage == Usage(40, 24, 10) and not bill.as_reported
    assert bill.reasoning_tokens == 5
    assert record.cost_units == 40 * 140 + 24 * 280  # PRICE prices a cache hit as input


def test_cache_hits_reported_early_discount_no_later_count(app, accounts):
    """A cache hit lowers the bill, so it is not a count to bill at its largest: the prompt
    is split into hits and misses as the report of the largest prompt count (the last such)
    splits it. A first report of every prompt token as a hit (a bug, or a lie), then the
    provider's final count of none, is billed the final count, not the first's discount."""
    acct = _account(app, accounts)
    settled: list = []
    meter = _meter(app, acct.id, "early-hits", settled, price=CACHED)
    meter.first_token("deepseek-v4-flash")
    meter.usage_seen(Usage(40, 0, 40), 0)
    meter.delivered(20)
    meter.usage_seen(Usage(40, 20, 0), 0)
    bill = meter.ended("done")
    record = _settled_once(accounts, acct, settled, bill)
    assert (record.prompt_tokens, record.completion_tokens, record.cache_hit_tokens) == (40, 20, 0)
    assert record.cost_units == 40 * 140 + 20 * 280
    assert bill.usage == Usage(40, 20, 0) and bill.as_reported and not record.estimated
