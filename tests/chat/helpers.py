"""Small helpers for chat tests: expected costs computed independently, SSE reading."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal

from silk.defaults import MODELS, PROVIDERS
from tests.fakes.upstream import count_prompt_tokens

PRICES = {  # USD per million tokens, from the seed document
    "deepseek-chat": ("0.14", "0.28"), "deepseek-reasoner": ("0.55", "2.19"),
    "ark-code-latest": ("0.11", "0.43"), "doubao-seed-2.0-pro": ("0.11", "0.43"),
    "mimo-v2.5": ("0.10", "0.30"), "mimo-v2.5-pro": ("0.10", "0.30"),
}
DISCOUNTS = {"free": Decimal("0"), "pro": Decimal("0.10"), "team": Decimal("0.20")}
NANO = Decimal("0.000000001")


def expected_cost(model: str, prompt: int, completion: int, tier: str = "free") -> Decimal:
    """List price of the tokens less the tier discount, in USD (no free quota)."""
    price_in, price_out = (Decimal(p) for p in PRICES[model])
    subtotal = (prompt * price_in + completion * price_out) / Decimal(10**6)
    subtotal = subtotal.quantize(NANO, rounding=ROUND_HALF_UP)
    discount = (subtotal * DISCOUNTS[tier]).quantize(NANO, rounding=ROUND_HALF_UP)
    return subtotal - discount


def units(usd: Decimal) -> int:
    """USD to the gateway's integer units (nano-dollars)."""
    return int(usd / NANO)


def assert_charged_once(accounts, account_id: int, output: int,
                        cost: Decimal | None = None, credit: str = "1") -> None:
    """One request, ended ok with `output` tokens, charged once (at `cost` if given) after the
    account's top-up of `credit` USD, and the books audit clean."""
    [record] = accounts.usage_records(account_id)
    assert record.status == "ok" and record.completion_tokens == output
    ledger = [(e.kind, e.amount_units) for e in accounts.ledger(account_id)]
    assert [kind for kind, _ in ledger] == ["topup", "charge"]
    assert ledger[0][1] == units(Decimal(credit))
    if cost is not None:
        assert record.cost_units == units(cost)
        assert ledger[1][1] == -units(cost)
    assert accounts.audit() == []


def messages(text: str = "Hello there", directive: str = "") -> list[dict]:
    """A one-message conversation, optionally steering the fake upstream."""
    content = f"{text} [[fake: {directive}]]" if directive else text
    return [{"role": "user", "content": content}]


def prompt_tokens(msgs: list[dict]) -> int:
    """Prompt tokens the fake upstream will report."""
    return count_prompt_tokens(msgs)


def sse_events(raw: bytes) -> list:
    """Parse an SSE body into a list of decoded data payloads ('[DONE]' kept as a string)."""
    events = []
    for block in raw.decode().split("\n\n"):
        data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            payload = "\n".join(data)
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def strict_sse(raw: bytes) -> list[tuple[str | None, str]]:
    """An SSE body read as the spec reads it (and the anthropic SDK does): a line ends at CR,
    LF or CRLF; an event's data lines are joined with newlines; a line that is no field of
    the protocol is a fault here. (name, data) for each event with data."""
    events: list[tuple[str | None, str]] = []
    name, data = None, []
    for line in raw.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        else:
            assert line.startswith(":"), f"not an SSE field: {line!r}"
    return events


def set_quota_left(app, account_id: int, left: int = 0) -> None:
    """Mark this month's free quota as used up but for `left` tokens."""
    from silk.account.models import Account
    from silk.billing.tiers import tiers
    from silk.database import utcnow
    from silk.extensions import db
    from silk.metering.service import month_of

    with app.app_context():
        account = db.session.get(Account, account_id)
        quota = tiers()[account.tier].monthly_free_tokens
        account.quota_month, account.quota_used = month_of(utcnow()), quota - left
        db.session.commit()
        db.session.remove()


COMPAT_MODEL = "compat-reasoner"


def compat_config(monkeypatch, upstream, **flags) -> dict:
    """App config adding a provider an operator would (`SILK_PROVIDERS`): the fake's
    `compat`, an OpenAI-compatible server whose limit covers reasoning, with `flags` on its
    entry, and its model COMPAT_MODEL."""
    monkeypatch.setenv("COMPATX_BASE_URL", upstream.base_url("compat"))
    monkeypatch.setenv("COMPATX_API_KEY", "compat-good")
    compat = {"name": "Compat", "base_url": "http://127.0.0.1:9", "env": "COMPATX",
              "limit_field": "max_tokens", "limit_covers_reasoning": True, **flags}
    return {"SILK_PROVIDERS": {**PROVIDERS, "compat": compat},
            "SILK_MODELS": {**MODELS, COMPAT_MODEL: {
                "provider": "compat", "upstream": COMPAT_MODEL, "input": "0.55",
                "output": "2.19", "max_output_tokens": 4096}}}
