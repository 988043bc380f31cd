"""Chat completion service: authorise, validate, reserve, call the upstream, hand back."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app, g

from silk.account.auth import Principal
from silk.billing.tiers import tiers
from silk.catalog import catalogue
from silk.chat import relay
from silk.chat.schemas import schema_for
from silk.errors import NotFound, PermissionDenied, SilkError
from silk.extensions import db
from silk.metering.service import reserve
from silk.ops import metrics
from silk.validation import json_object, load


def parse_body(raw: bytes) -> dict:
    """Decode and validate a chat request body; 400 names the offending field."""
    body = json_object(raw)
    return load(schema_for(body), body)


def wants_stream(body: dict, accept: str) -> bool:
    """`stream` as sent; when omitted, true unless the client asked for JSON."""
    if "stream" in body:
        return body["stream"]
    return "application/json" not in (accept or "").lower()


@dataclass
class Started:
    """A request that holds its reservation and has an upstream answer to relay."""

    meter: relay.Meter
    stream: bool
    response: object  # requests.Response for a stream, else the finished JSON dict


def _after_settle(limiter, key_id: int):
    """What happens once a request is settled: its tokens count against the key's TPM."""

    def done(meter: relay.Meter, outcome) -> None:
        if meter.billed is not None:
            limiter.add_tokens(f"key:{key_id}", meter.billed.total_tokens)
        metrics.settled(meter, outcome)

    return done


def start(principal: Principal, raw: bytes, accept: str) -> Started:
    """Run everything up to the first byte for the client; settle on any failure here."""
    body = parse_body(raw)
    cat = catalogue()
    model = cat.model(body["model"])
    if model is None:
        raise NotFound(f"The model '{body['model']}' does not exist. GET /v1/models lists "
                       "the models you can use.", param="model", code="model_not_found")
    if not principal.may_use(model.id):
        raise PermissionDenied(f"This API key may not use the model '{model.id}'.",
                               param="model", code="model_not_allowed")
    g.model = model.id
    config = current_app.config
    limiter = current_app.extensions["silk.limiter"]
    rpm = principal.rpm_limit or config["SILK_DEFAULT_RPM"]
    tpm = principal.tpm_limit or config["SILK_DEFAULT_TPM"]
    limiter.admit(f"key:{principal.key_id}", rpm, tpm)

    stream = wants_stream(body, accept)
    plan = relay.make_plan(model, cat.provider_of(model), body, stream=stream,
                           image_allowance=config["SILK_IMAGE_TOKEN_ALLOWANCE"])
    engine = db.engine
    hold = reserve(engine, tiers(), account_id=principal.account_id,
                   key_id=principal.key_id, request_id=g.request_id, model=model.id,
                   price=model.price, prompt_worst=plan.prompt_bound,
                   max_output=plan.max_output, prompt_estimate=plan.prompt_estimate,
                   ttl_seconds=config["SILK_RESERVATION_TTL"])
    meter = relay.Meter(engine, hold, plan, model.provider,
                        _after_settle(limiter, principal.key_id))
    client = current_app.extensions["silk.upstreams"][model.provider]
    try:
        if stream:
            response = client.open(plan.body, stream=True)
            metrics.upstream_answered(model.provider, model.id,
                                      time.perf_counter() - meter.started, 200)
            return Started(meter, True, response)
        data, _ = relay.complete(client, meter)
        return Started(meter, False, data)
    except SilkError as err:
        metrics.upstream_answered(model.provider, model.id,
                                  time.perf_counter() - meter.started, err.status)
        meter.finish("upstream_error", http_status=err.status, billable=False)
        raise
    except BaseException:
        meter.finish("error", http_status=500, billable=False)
        raise
