"""The Meter: what happened to one request in, exactly one settlement out.

The relay reports events (first token, usage seen, text delivered, how the request ended);
only the Meter turns them into a bill, so what a request costs is decided here, the same way
whichever API surface the client spoke. Settling runs once, however many paths end a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.engine import Engine

from silk.errors import database_unavailable
from silk.metering.service import Decision, Hold, Outcome, Settlement, decide, keep, write
from silk.pricing import Price, Tiered, Usage

log = logging.getLogger("silk.meter")

# Pauses between settlement attempts while the database is unreachable; after them the
# settlement is journaled and written when the database answers (silk.metering.keeper).
_SETTLE_RETRY_PAUSES = (0.2, 0.5, 1.0)

# How a request that reached the upstream's answer ended: (status recorded, HTTP status).
ENDINGS = {
    "done": ("ok", 200),  # the upstream finished its answer
    "cut": ("cut", 502),  # the upstream's stream broke off
    "timeout": ("timeout", 502),  # the upstream went silent past the read timeout
    "upstream_error": ("upstream_error", 502),  # the upstream reported an error mid-stream
    "client_gone": ("client_closed", 499),  # the client left before the end
    "revoked": ("revoked", 401),  # the key was revoked or expired, or its account disabled
    "error": ("error", 500),  # the gateway failed while relaying
}

# Endings (recorded statuses) the client's side chose, after the provider took the prompt.
_LEFT = frozenset(("client_closed", "revoked"))


@dataclass(frozen=True, slots=True)
class Bill:
    """What a request was billed, for the surface to tell its client."""

    usage: Usage | None  # the counts charged (capped at the hold); None when nothing was
    estimated: bool  # the counts are the gateway's estimate: no usable usage came
    as_reported: bool  # the provider's own counts were charged unchanged
    settlement: Settlement | None
    reasoning_tokens: int = 0  # of usage.completion_tokens, as charged

    @property
    def cost_usd(self) -> Decimal | int:
        """The amount charged, in USD (0 when nothing was written)."""
        return self.settlement.cost_usd if self.settlement else 0

    def charge_note(self, prompt: str = "input", output: str = "output") -> str:
        """What a broken or failed answer was charged, in words for its error message (the
        surface names the two counts as its clients know them)."""
        if self.usage is None:
            return " Nothing was charged."
        # The provider's count is of all it made: where a left or revoked stream was read
        # on to it, more than reached the client.
        basis = ("an estimate of what was delivered" if self.estimated
                 else "the provider's count of its answer")
        return (f" Charged ${Decimal(self.cost_usd):f} for {basis} "
                f"({self.usage.prompt_tokens} {prompt} and {self.usage.completion_tokens} "
                f"{output} tokens).")


def _largest(before: Usage, now: Usage) -> Usage:
    """Each count at the larger of two reports; the prompt split into cache hits (and
    writes) as the report with the larger prompt count (the later of equals) splits it,
    since a hit is a discount: the larger of two splits would take back what the later
    count charged."""
    split = now if now.prompt_tokens >= before.prompt_tokens else before
    return Usage(split.prompt_tokens,
                 max(before.completion_tokens, now.completion_tokens),
                 split.cache_hit_tokens, split.cache_write_tokens)


class Meter:
    """One request's bookkeeping: the relay's events, and settling exactly once."""

    def __init__(self, engine: Engine, hold: Hold, *, provider: str, stream: bool,
                 surface: str = "", cost: Price | Tiered | None = None,
                 on_settled: Callable[[Meter, Outcome], None] | None = None,
                 on_ended: Callable[[Meter], None] | None = None):
        self.engine = engine
        self.hold = hold
        self.provider = provider
        self.stream = stream
        self.surface = surface
        self.cost = cost  # the serving route's upstream price
        self.route = ""  # the route that served, once one answered
        self.on_settled = on_settled  # once the settlement is written or journaled
        self.on_ended = on_ended  # once the request ended, whether or not it was written
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.upstream_model = ""
        self.usage: Usage | None = None  # the largest counts the upstream reported
        # The upstream's last report, when it holds every largest count: billed unchanged,
        # the provider's own usage object tells the client what it paid.
        self.reported: Usage | None = None
        # The prompt's counts, when the upstream reported them before the output's (an
        # Anthropic stream's message_start): billed instead of the estimate if no usage came.
        self.prompt_counted: Usage | None = None
        self.reasoning_tokens = 0
        self.delivered_tokens = 0  # estimated from the text the client received
        # delivered_tokens when the provider first reported the largest output count: what
        # came after, its count lacks.
        self.counted_through = 0
        self.delivered_any = False
        # The provider bills reasoning it never streams (silk.defaults.PROVIDERS'
        # reasoning_streamed): only its usage counts it.
        self.hides_reasoning = False
        # Set once nothing more reaches the client (it left, or its key was revoked) while
        # the upstream is read on to its usage: how the request ends, however that does.
        self.ending: str | None = None
        # Settled without the provider's count on a provider that hides its reasoning: the
        # reasoning it bills was not charged, at an amount nobody reported.
        self.reasoning_unknown = False
        self.billed: Usage | None = None
        self.estimated = False
        self.settlement: Settlement | None = None
        self.bill: Bill | None = None

    @property
    def finished(self) -> bool:
        """True once the request is settled (or its settlement was handed to the sweep)."""
        return self.bill is not None

    def served_by(self, provider: str, route: str, cost: Price | Tiered | None) -> None:
        """A route answered: the request is its provider's, at its upstream price."""
        self.provider, self.route, self.cost = provider, route, cost

    def first_token(self, upstream_model: str) -> None:
        """The upstream's answer began to arrive, from this upstream model."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.upstream_model = upstream_model

    def usage_seen(self, usage: Usage, reasoning_tokens: int) -> None:
        """The upstream reported its counts: each count billed is the largest reported
        (cache hits: those of the largest prompt count, see `_largest`).

        A provider's counts only grow as its answer does, so a report below an earlier one
        (a bug, or a lie) takes back nothing the earlier one counted and was delivered; one
        that repeats the largest output count counts nothing delivered since that count
        first came (a stale count repeated: the output after it is still uncounted).
        """
        before = self.usage
        if before is None or usage.completion_tokens > before.completion_tokens:
            self.counted_through = self.delivered_tokens
        largest = usage if before is None else _largest(before, usage)
        own = largest == usage and reasoning_tokens >= self.reasoning_tokens
        self.usage = usage if own else largest
        self.reported = usage if own else None
        self.reasoning_tokens = max(self.reasoning_tokens, reasoning_tokens)

    def prompt_seen(self, prompt: Usage) -> None:
        """The upstream reported the prompt's counts (no output count yet)."""
        self.prompt_counted = prompt

    def delivered(self, tokens: int) -> None:
        """Output reached the client: `tokens` estimated from its text (may be 0); once the
        client left, nothing more reaches it."""
        if self.ending is not None:
            return
        self.delivered_tokens += tokens
        self.delivered_any = True

    def left(self, how: str = "client_gone") -> None:
        """Nothing more reaches the client (it is gone, or its key no longer serves), and
        the upstream is read on for its usage: what comes now is not delivered, and however
        the upstream ends, the request ended as `how` (the first such ending)."""
        if self.ending is None:
            self.ending = how

    def ended(self, how: str) -> Bill:
        """The request ended as `how` (a key of ENDINGS): bill what was delivered."""
        status, http_status = ENDINGS[self.ending or how]
        return self._settle(status, http_status, billable=True)

    def refused(self, http_status: int) -> Bill:
        """The upstream refused, or answered nothing usable: the hold is released whole."""
        return self._settle("upstream_error", http_status, billable=False)

    def timed_out(self) -> Bill:
        """The upstream's answer did not come in time (the client gets a 504): nothing was
        delivered, so the hold is released whole, and the record says it was a timeout."""
        return self._settle("timeout", 504, billable=False)

    def failed(self) -> Bill:
        """The gateway failed before the upstream answered: the hold is released whole."""
        return self._settle("error", 500, billable=False)

    def _settle(self, status: str, http_status: int, billable: bool) -> Bill:
        """Settle the hold with what is known now; later calls return the first bill."""
        if self.bill is not None:
            return self.bill
        try:
            return self._settle_once(status, http_status, billable)
        finally:
            if self.on_ended is not None:
                self.on_ended(self)

    def _settle_once(self, status: str, http_status: int, billable: bool) -> Bill:
        answered = billable  # the upstream answered: it may have billed reasoning it hid
        estimated = False
        usage = self.usage
        # A request the client's side ended once the provider had taken it (the client
        # left, its key was revoked or expired) pays for the prompt whether or not any
        # output reached it: leaving before the first token (during a long prompt's
        # keep-alives) must not make the prompt free, nor warm the provider's cache for
        # free. A provider (or the gateway) that fails before any output is paid nothing.
        if usage is None and billable and (self.delivered_any or status in _LEFT):
            # The output is the gateway's estimate, at most the bound sent upstream: the
            # provider made no more, so an estimate above it is no loss to write off (the
            # prompt's estimate is within its bound already). The prompt is the provider's
            # count if it came, else the estimate too.
            prompt = self.prompt_counted
            output = min(self.delivered_tokens, self.hold.output_bound)
            usage = (Usage(prompt.prompt_tokens, output, prompt.cache_hit_tokens,
                           prompt.cache_write_tokens)
                     if prompt is not None
                     else Usage(self.hold.prompt_estimate, output))
            estimated = True
        elif usage is not None and billable and self.delivered_tokens > self.counted_through:
            # Output came after the provider's last count (one sent before the answer, or a
            # count followed by more text): its estimate is added to the count, up to the
            # bound (a count beyond it is the provider's, capped and written off by decide).
            uncounted = self.delivered_tokens - self.counted_through
            completion = max(usage.completion_tokens,
                             min(usage.completion_tokens + uncounted, self.hold.output_bound))
            usage = Usage(usage.prompt_tokens, completion, usage.cache_hit_tokens,
                          usage.cache_write_tokens)
            estimated = True
        billable = billable and usage is not None
        self.billed, self.estimated = usage, estimated
        # Its reasoning is not in the estimate, and the hold's bound is no count of it: the
        # client pays what is known (the output may have held no reasoning at all; with no
        # output delivered, nothing), and the unknown is counted (silk.ops.metrics) rather
        # than lost without a trace.
        self.reasoning_unknown = answered and self.hides_reasoning and self.usage is None
        elapsed = time.perf_counter() - self.started
        first = self.first_token_at
        outcome = Outcome(
            status=status, http_status=http_status, usage=usage,
            reasoning_tokens=self.reasoning_tokens, estimated=estimated, billable=billable,
            upstream_model=self.upstream_model, provider=self.provider, stream=self.stream,
            surface=self.surface, cost_price=self.cost, route=self.route,
            latency_ms=int(elapsed * 1000),
            ttft_ms=int((first - self.started) * 1000) if first else None)
        decision = decide(self.hold, outcome)  # pure: the client hears the real cost
        if billable:  # counts beyond the hold are capped: the billed ones are counted
            if decision.usage != usage:
                self.billed = decision.usage
            outcome.reasoning_tokens = decision.values["reasoning_tokens"]
        written = self._write(decision)
        reasoning = decision.values["reasoning_tokens"]
        as_reported = (self.reported is not None and self.billed is self.reported
                       and reasoning == self.reasoning_tokens)
        self.bill = Bill(self.billed, estimated, as_reported and not estimated,
                         self.settlement, reasoning)
        if written and self.on_settled:
            self.on_settled(self, outcome)
        return self.bill

    def _write(self, decision: Decision) -> bool:
        """Write the decision, retrying an unreachable database, then journaling it.

        False when the write failed otherwise: the sweep settles the hold later.
        """
        for pause in (*_SETTLE_RETRY_PAUSES, None):
            try:
                # Safe to repeat: write claims the hold and charges in one transaction.
                self.settlement = write(self.engine, decision)
                return True
            except Exception as exc:  # noqa: BLE001 - the sweep settles a hold we could not
                if not database_unavailable(exc):
                    log.exception("settlement failed; the sweep will settle it",
                                  extra={"fields": {"request_id": self.hold.request_id}})
                    return False
                if pause is None:
                    log.warning("database unavailable: settlement journaled",
                                extra={"fields": {"request_id": self.hold.request_id}})
                    self.settlement = keep(self.engine, decision, self.hold)
                    return True
                time.sleep(pause)
        return False
