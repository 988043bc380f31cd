"""Run a surface's Call: reserve its hold, call the upstream with failover, hand back events.

Everything up to the first byte for the client happens here, and any failure on the way
releases the hold through the Meter before it propagates to the surface's error envelope.
"""

from __future__ import annotations

import time

import orjson
import requests

from silk.account.auth import Principal
from silk.appctx import this_app, this_g
from silk.billing.tiers import tiers
from silk.database import utcnow
from silk.errors import SilkError, UpstreamError, UpstreamTimeout
from silk.extensions import db
from silk.limits import Ticket
from silk.metering.meter import Meter
from silk.metering.service import reserve
from silk.ops import metrics
from silk.relay import admission, anthropic, revocation
from silk.relay.call import Call
from silk.relay.events import Completion
from silk.relay.routes import open_route
from silk.relay.stream import RelayStream, lenient
from silk.relay.tokens import delivered_tokens, usage_from
from silk.validation import nests_deeper

# An answer nested deeper than this could not be written back to the client (orjson writes
# 255 levels at most): it is refused as a bad response before anything is charged.
_MAX_ANSWER_DEPTH = 250


def _release(ticket: Ticket):
    """What happens once a request ended, however: its rate-limit ticket is finished, with
    the tokens billed (none when nothing was), freeing its concurrency slots."""

    def ended(meter: Meter) -> None:
        ticket.finish(meter.billed.total_tokens if meter.billed is not None else 0)

    return ended


def start(call: Call, principal: Principal, request_id: str) -> RelayStream | Completion:
    """Admit the call (rate limits), reserve its hold and open the upstream: a stream's
    events, or the settled answer.

    The hold is released whole, and the admission's tokens and slots given back, if the
    upstream never answers.
    """
    app = this_app()
    config, extensions = app.config, app.extensions
    model = call.model
    # Counted at its estimate (the prompt and all the output it may produce), corrected to
    # the tokens billed when it ends.
    ticket = admission.admit(principal, model.id, call.prompt_estimate + call.max_output)
    engine = db.engine
    admitted = utcnow()  # the request pays the prices in force now, however long it runs
    try:
        hold = reserve(engine, tiers(), account_id=principal.account_id,
                       key_id=principal.key_id, request_id=request_id, model=model.id,
                       price=model.price_at(admitted), prompt_worst=call.prompt_bound,
                       max_output=call.max_output, prompt_estimate=call.prompt_estimate,
                       ttl_seconds=config["SILK_RESERVATION_TTL"],
                       key_capped=principal.capped)
    except BaseException:
        ticket.finish(0)
        raise
    meter = Meter(engine, hold, provider=model.provider, stream=call.stream,
                  surface=call.surface, cost=model.cost_at(admitted),
                  on_settled=metrics.settled, on_ended=_release(ticket))
    try:
        response, route = open_route(call, extensions["silk.upstreams"],
                                     extensions["silk.catalogue"].providers,
                                     extensions["silk.breakers"],
                                     metrics.route_failover)
        meter.served_by(route.provider, route.name, route.cost_at(admitted))
        this_g().silk_route = route.name  # named in the answer's x-silk-provider header
        provider = extensions["silk.catalogue"].providers[route.provider]
        meter.hides_reasoning = model.thinking and not provider.reasoning_streamed
        if call.stream:
            metrics.upstream_answered(route.provider, model.id,
                                      time.perf_counter() - meter.started, 200)
            return RelayStream(response, meter, route.upstream, config["SILK_SSE_MAX_EVENT"],
                               call.dialect, revocation.open_streams(app).watch(principal))
        return finish(response, call, meter, route.upstream)
    except SilkError as err:
        metrics.upstream_answered(meter.provider, model.id,
                                  time.perf_counter() - meter.started, err.status)
        if isinstance(err, UpstreamTimeout):
            meter.timed_out()
        else:
            meter.refused(err.status)
        raise
    except BaseException:
        meter.failed()
        raise


def _answer(raw: bytes) -> object:
    """A whole answer's JSON: one only a lenient parser reads (a logprob of -Infinity, half
    an emoji) is still the provider's answer, read as a stream's events are (stream.lenient).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = lenient(raw)
        if data is None:
            raise
        return data


def finish(response: requests.Response, call: Call, meter: Meter,
           upstream_model: str) -> Completion:
    """Read a non-streaming answer to the end and settle it."""
    native = call.dialect == "anthropic"
    try:
        raw = response.content
        data = _answer(raw)
        if not isinstance(data, dict) or ("content" if native else "choices") not in data:
            raise ValueError("not an answer of the dialect")
        if raw.count(b"{") + raw.count(b"[") > _MAX_ANSWER_DEPTH and nests_deeper(
                data, _MAX_ANSWER_DEPTH):
            raise ValueError("nested deeper than the answer can be written back")
    except requests.Timeout:
        meter.timed_out()
        raise UpstreamTimeout("The provider's answer did not arrive in time.") from None
    except (requests.RequestException, ValueError):
        meter.refused(502)
        raise UpstreamError("The provider sent an incomplete or invalid response.",
                            code="upstream_bad_response") from None
    finally:
        response.close()
    meter.first_token(str(data.get("model") or upstream_model))
    if native:
        parsed = anthropic.usage_from(data.get("usage"))
        if parsed:
            meter.usage_seen(*parsed)
        else:
            prompt = anthropic.input_from(data.get("usage"))
            if prompt is not None:
                meter.prompt_seen(prompt)
            meter.delivered(anthropic.message_delivered(data))
        return Completion(data, parsed is not None, meter.ended("done"))
    parsed = usage_from(data.get("usage"))
    if parsed:
        meter.usage_seen(*parsed)
    else:
        choices = data["choices"] if isinstance(data["choices"], list) else []
        meter.delivered(delivered_tokens({"choices": [
            {"delta": choice.get("message")} for choice in choices if isinstance(choice, dict)]}))
    return Completion(data, parsed is not None, meter.ended("done"))
