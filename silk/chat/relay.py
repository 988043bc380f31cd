"""The relay: turn a validated request into an upstream call, stream it back, settle once.

Data walks one way: plan -> reserve -> upstream -> client -> settle. The stream generator
holds no database connection; settlement opens its own short transaction when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal

import orjson
import requests
from sqlalchemy.engine import Engine

from silk.catalog.catalogue import Model, Provider
from silk.chat.tokens import DeliveredText, prompt_bound, prompt_estimate
from silk.errors import InvalidRequest, UpstreamError, database_unavailable
from silk.metering.service import Hold, Outcome, Settlement, decide, keep, write
from silk.ops import metrics
from silk.pricing import Usage
from silk.sse import DONE, DONE_EVENT, MAX_EVENT, SSEParser, encode_comment, encode_data
from silk.upstream.client import UpstreamClient
from silk.upstream.dialects import scrub, stream_error_event
from silk.validation import nests_deeper

log = logging.getLogger("silk.relay")
_READ_SIZE = 65536
# An answer nested deeper than this could not be written back to the client (orjson writes
# 255 levels at most): it is refused as a bad response before anything is charged.
_MAX_ANSWER_DEPTH = 250
# Pauses between settlement attempts while the database is unreachable; after them the
# settlement is journaled and written when the database answers (silk.metering.keeper).
_SETTLE_RETRY_PAUSES = (0.2, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything decided before the upstream is called."""

    model: Model
    body: bytes
    stream: bool
    client_wants_usage: bool
    prompt_bound: int
    prompt_estimate: int
    max_output: int


# The output limits a client may send; the provider receives only the one it obeys.
LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")


def make_plan(model: Model, provider: Provider, request: dict, *, stream: bool,
              image_allowance: int) -> Plan:
    """Rewrite the client's body for the upstream and bound what it can cost.

    The bound reserved is the bound sent: one limit, in the field the provider obeys
    (silk.defaults.PROVIDERS), times the choices asked for. Where that field leaves the chain
    of thought unbounded, the route's reasoning budget is reserved too, or thinking is off.
    """
    body = dict(request)
    limit = _client_limit(body, model)
    body["model"] = model.upstream
    body.update(model.extra_body)  # the catalogue's route is the operator's word
    for name in LIMIT_FIELDS:
        body.pop(name, None)
    reasoning = 0
    if model.thinking and not provider.limit_covers_reasoning:
        if model.reasoning_budget:
            reasoning = model.reasoning_budget
        else:  # nothing would bound the thinking: there is none
            body.pop("reasoning_effort", None)
            body.update(provider.thinking_off)
    body[provider.limit_field] = limit
    choices = body.get("n") or 1
    client_wants_usage = False
    if stream:
        options = body.get("stream_options")
        client_wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        body["stream"] = True
        # Only what the gateway understands: the final usage, which it bills from.
        body["stream_options"] = {"include_usage": True}
    else:
        body["stream"] = False
        body.pop("stream_options", None)
    bound = prompt_bound(body, image_allowance)
    return Plan(model=model, body=orjson.dumps(body), stream=stream,
                client_wants_usage=client_wants_usage, prompt_bound=bound,
                prompt_estimate=prompt_estimate(body, bound),
                max_output=(limit + reasoning) * choices)


def _client_limit(body: dict, model: Model) -> int:
    """The client's output limit (either field, or both if equal), within the model's maximum."""
    given = {name: body[name] for name in LIMIT_FIELDS if body.get(name) is not None}
    if len(set(given.values())) > 1:
        raise InvalidRequest(
            f"max_tokens is {given['max_tokens']} but max_completion_tokens is "
            f"{given['max_completion_tokens']}: send one limit, or the same value in both.",
            param="max_tokens")
    for name, limit in given.items():
        if limit > model.max_output_tokens:
            raise InvalidRequest(f"{name} is {limit}, above this model's maximum of "
                                 f"{model.max_output_tokens}.", param=name)
        return limit
    return model.max_output_tokens


def usage_from(data: Mapping | None) -> tuple[Usage, int] | None:
    """Read an OpenAI-style usage object (with DeepSeek's cache fields); None if absent.

    A usage object that is not made of whole numbers counts as absent: the request is then
    billed from an estimate, never failed for what the provider sent.
    """
    if not isinstance(data, Mapping):
        return None
    try:
        prompt = int(data.get("prompt_tokens") or 0)
        completion = int(data.get("completion_tokens") or 0)
        hit = data.get("prompt_cache_hit_tokens")
        if hit is None:
            hit = _mapping(data.get("prompt_tokens_details")).get("cached_tokens") or 0
        reasoning = _mapping(data.get("completion_tokens_details")).get("reasoning_tokens") or 0
        usage = Usage(prompt, completion, int(hit))
        if min(prompt, completion, usage.cache_hit_tokens) < 0:
            return None
        return usage, int(reasoning)
    except (TypeError, ValueError):
        return None


def _mapping(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}


class Meter:
    """One request's bookkeeping: what arrived, what was delivered, and settling exactly once."""

    def __init__(self, engine: Engine, hold: Hold, plan: Plan, provider: str,
                 on_settled=None):
        self.engine = engine
        self.hold = hold
        self.plan = plan
        self.provider = provider
        self.on_settled = on_settled
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.usage: Usage | None = None
        self.reasoning_tokens = 0
        self.reported_usage: dict | None = None  # the provider's own usage object, last seen
        self.usage_chunk: dict | None = None  # the provider's last usage-only chunk
        self.stream_id: str | None = None
        self.upstream_model = ""
        self.delivered = DeliveredText()
        self.delivered_any = False
        self.settlement: Settlement | None = None
        self.billed: Usage | None = None
        self.estimated = False
        self.finished = False

    def finish(self, status: str, *, http_status: int = 200,
               billable: bool = True) -> Settlement | None:
        """Settle the hold with what is known now; later calls return the first result."""
        if self.finished:
            return self.settlement
        self.finished = True
        estimated = False
        usage = self.usage
        if usage is None and billable and self.delivered_any:
            usage = Usage(self.plan.prompt_estimate, self.delivered.tokens)
            estimated = True
        billable = billable and usage is not None
        self.billed, self.estimated = usage, estimated
        elapsed = time.perf_counter() - self.started
        outcome = Outcome(
            status=status, http_status=http_status, usage=usage,
            reasoning_tokens=self.reasoning_tokens, estimated=estimated, billable=billable,
            upstream_model=self.upstream_model, provider=self.provider, stream=self.plan.stream,
            latency_ms=int(elapsed * 1000),
            ttft_ms=int((self.first_token - self.started) * 1000) if self.first_token else None)
        decision = decide(self.hold, outcome)  # pure: the client hears the real cost
        if billable:  # counts beyond the hold are capped: the billed ones are counted
            if decision.usage != usage:
                self.billed = decision.usage
            outcome.reasoning_tokens = decision.values["reasoning_tokens"]
        for pause in (*_SETTLE_RETRY_PAUSES, None):
            try:
                # Safe to repeat: write claims the hold and charges in one transaction.
                self.settlement = write(self.engine, decision)
                break
            except Exception as exc:  # noqa: BLE001 - the sweep settles a hold we could not
                if not database_unavailable(exc):
                    log.exception("settlement failed; the sweep will settle it",
                                  extra={"fields": {"request_id": self.hold.request_id}})
                    return None
                if pause is None:
                    log.warning("database unavailable: settlement journaled",
                                extra={"fields": {"request_id": self.hold.request_id}})
                    self.settlement = keep(self.engine, decision, self.hold)
                    break
                time.sleep(pause)
        if self.on_settled:
            self.on_settled(self, outcome)
        return self.settlement

    def usage_fields(self) -> dict:
        """The usage object billed, for a client: the provider's, or an estimate marked so."""
        cost = self.settlement.cost_usd if self.settlement else 0
        if self.reported_usage is not None and self.billed is self.usage and not self.estimated:
            return {**self.reported_usage, "cost": cost}
        usage = self.billed or Usage(0, 0)
        return {"prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens, "estimated": self.estimated,
                "cost": cost}


def complete(client: UpstreamClient, meter: Meter) -> tuple[dict, Settlement | None]:
    """Run a non-streaming request to the end and settle it."""
    response = client.open(meter.plan.body, stream=False)
    try:
        raw = response.content
        data = orjson.loads(raw)
        if not isinstance(data, dict) or "choices" not in data:
            raise ValueError("not a chat completion")
        if raw.count(b"{") + raw.count(b"[") > _MAX_ANSWER_DEPTH and nests_deeper(
                data, _MAX_ANSWER_DEPTH):
            raise ValueError("nested deeper than the answer can be written back")
    except (requests.RequestException, ValueError):
        meter.finish("upstream_error", http_status=502, billable=False)
        raise UpstreamError("The provider sent an incomplete or invalid response.",
                            code="upstream_bad_response") from None
    finally:
        response.close()
    meter.first_token = time.perf_counter()
    meter.upstream_model = str(data.get("model") or meter.plan.model.upstream)
    parsed = usage_from(data.get("usage"))
    if parsed:
        meter.usage, meter.reasoning_tokens = parsed
    else:
        choices = data["choices"] if isinstance(data["choices"], list) else []
        meter.delivered.add_chunk({"choices": [
            {"delta": choice.get("message")} for choice in choices if isinstance(choice, dict)]})
        meter.delivered_any = True
    settlement = meter.finish("ok")
    if not parsed:
        data["usage"] = meter.usage_fields()
    data["usage"]["cost"] = settlement.cost_usd if settlement else 0
    return data, settlement


class RelayStream:
    """The response body of a stream: iterates the relay, and settles even if never iterated.

    A WSGI server calls `close()` when the client is gone; a generator closed before it
    started runs no `finally`, so the hold and the upstream connection are released here.
    """

    def __init__(self, client_response: requests.Response, meter: Meter,
                 max_event: int = MAX_EVENT):
        self._response = client_response
        self._meter = meter
        self._events = _relay(client_response, meter, max_event)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        """End the stream now: stop relaying, settle if nobody did, close the upstream."""
        self._events.close()
        if not self._meter.finished:
            self._meter.finish("client_closed", http_status=499)
            self._response.close()


def _relay(client_response: requests.Response, meter: Meter,
           max_event: int = MAX_EVENT) -> Iterator[bytes]:
    """Relay upstream SSE events as they arrive; settle in `finally`, however the stream ends."""
    parser = SSEParser(max_event)
    raw = client_response.raw
    status, error = "cut", None
    done = False
    metrics.stream_opened(meter.hold.model)
    try:
        while not done:
            try:
                chunk = raw.read1(_READ_SIZE)
                events = parser.feed(chunk)  # EventTooLarge (a ValueError) is a cut
            except (requests.Timeout, TimeoutError):
                status, error = "timeout", ("The provider stopped sending in time.",
                                            "upstream_timeout")
                break
            except (requests.RequestException, OSError, ValueError):
                error = ("The provider ended the stream early.", "upstream_stream_cut")
                break
            if not chunk:
                error = ("The provider ended the stream early.", "upstream_stream_cut")
                break
            for kind, payload in events:
                if kind == "comment":
                    yield encode_comment(payload)
                    continue
                if payload == DONE:
                    done = True
                    break
                try:
                    out = _observe(meter, payload)
                except _UpstreamReportedError as exc:
                    status, error = "upstream_error", (str(exc), "upstream_error")
                    break
                if out is not None:
                    yield out
            if error:
                break
        if done:
            meter.finish("ok")
            if meter.plan.client_wants_usage:
                yield encode_data(_usage_chunk(meter))
            yield DONE_EVENT
        else:
            meter.finish(status, http_status=502)
            yield encode_data(_error_event(meter, *error))
    except GeneratorExit:
        meter.finish("client_closed", http_status=499)
        raise
    finally:
        # Settle before anything else that could be interrupted (closing the upstream may
        # wait a moment for the rest of its answer).
        if not meter.finished:  # an unexpected exception inside this generator
            meter.finish("error", http_status=500)
        client_response.close()
        metrics.stream_closed(meter.hold.model)


class _UpstreamReportedError(Exception):
    """The provider sent an error event inside a stream."""


def _usage_chunk(meter: Meter) -> bytes:
    """The one usage chunk a client asked for: sent at the end, after settling, with the cost.

    It is the provider's own last usage chunk with the cost added, unless that cannot be
    written back (nested past orjson's limit): then the gateway's plain one with the counts.
    """
    ours = {"id": meter.stream_id or f"chatcmpl-{meter.hold.request_id}",
            "object": "chat.completion.chunk", "created": int(time.time()),
            "model": meter.upstream_model, "choices": []}
    if meter.usage_chunk is not None and not meter.estimated:
        try:
            return orjson.dumps({**meter.usage_chunk, "usage": meter.usage_fields()},
                                default=float)
        except orjson.JSONEncodeError:
            meter.reported_usage = None  # usage_fields then gives the counts billed
    return orjson.dumps({**ours, "usage": meter.usage_fields()}, default=float)


def _error_event(meter: Meter, message: str, code: str) -> bytes:
    """The last event of a broken stream: the error, and what was charged for the delivery."""
    usage = meter.usage_fields()
    if meter.billed is None:
        message += " Nothing was charged."
    else:
        basis = "an estimate of" if meter.estimated else "the provider's count of"
        message += (f" Charged ${Decimal(usage['cost']):f} for {basis} what was delivered "
                    f"({meter.billed.prompt_tokens} prompt and "
                    f"{meter.billed.completion_tokens} completion tokens).")
    event = orjson.loads(stream_error_event(message, code))
    event["usage"] = usage
    try:
        return orjson.dumps(event, default=float)
    except orjson.JSONEncodeError:  # the provider's usage object nests past orjson's limit
        meter.reported_usage = None
        event["usage"] = meter.usage_fields()
        return orjson.dumps(event, default=float)


def _observe(meter: Meter, payload: bytes) -> bytes | None:
    """Account for one upstream chunk and return the bytes to send on (None to drop it).

    Usage is recorded from every chunk that carries it, the last one counting (a provider
    may repeat it, or put the running total in every chunk); the client gets it once, from
    `_usage_chunk`, so chunks are forwarded without theirs.
    """
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return encode_data(payload)  # not ours to judge; the client sees what came
    if not isinstance(chunk, dict):
        return encode_data(payload)
    if "error" in chunk and "choices" not in chunk:
        message = ""
        if isinstance(chunk["error"], dict):
            message = str(chunk["error"].get("message") or "")
        raise _UpstreamReportedError(
            f"The provider reported an error mid-stream: {scrub(message)}")
    if meter.first_token is None:
        meter.first_token = time.perf_counter()
        meter.upstream_model = str(chunk.get("model") or meter.plan.model.upstream)
        meter.stream_id = chunk["id"] if isinstance(chunk.get("id"), str) else None
    meter.delivered.add_chunk(chunk)
    if chunk.get("choices"):
        meter.delivered_any = True
    usage = chunk.get("usage")
    if usage is None:
        return encode_data(payload)
    parsed = usage_from(usage)
    if parsed:
        meter.usage, meter.reasoning_tokens = parsed
        meter.reported_usage = dict(usage)
    if chunk.get("choices"):
        chunk["usage"] = None
        try:
            return encode_data(orjson.dumps(chunk))
        except orjson.JSONEncodeError:  # nested past what orjson writes: send it as it came
            return encode_data(payload)
    if parsed:
        meter.usage_chunk = chunk
    return None
