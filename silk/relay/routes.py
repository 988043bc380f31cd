"""Choose a call's route: its model's routes in order (or by weight), rested ones last.

The hold was sized before any route was chosen, so a route's body carries the same output
bound as the call's; the relay moves on to the next route on the same failures that move a
request on to a provider's next key, and only before the first byte: never once a provider
took the whole request and went silent, as it may be generating it. A JSON answer waits for
its body once, across routes and keys, as long as one route's wait: the longest answer
stays within what SILK_GRACEFUL_TIMEOUT allows a stopping worker (silk.startup).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import requests

from silk.catalog.catalogue import Model, Provider, Route
from silk.errors import SilkError, UpstreamError, UpstreamTimeout
from silk.ops import metrics
from silk.relay.call import Call, bound_body
from silk.upstream.breaker import Breaker, Breakers
from silk.upstream.client import UpstreamClient, may_try_elsewhere

OnRouteFailover = Callable[[str, str, str], None]  # (model, route that failed, why)


def routes_of(model: Model) -> tuple[Route, ...]:
    """A model's routes; a model built without any is its own one route."""
    return model.routes or (Route(f"{model.provider}/{model.upstream}", model.provider,
                                  model.upstream, model.extra_body, 0, model.cost_pricing),)


def ordered(routes: tuple[Route, ...], pick: random.Random | None = None) -> list[Route]:
    """Routes in the order to try: as listed, or, when any has a weight, drawn by weight
    (a route of weight 0 after every weighted one)."""
    if not any(route.weight for route in routes):
        return list(routes)
    rng = pick or random
    keyed = [(rng.random() ** (1 / route.weight) if route.weight else -1.0, i)
             for i, route in enumerate(routes)]
    return [routes[i] for _, i in sorted(keyed, reverse=True)]


def body_for(call: Call, route: Route, providers: Mapping[str, Provider]) -> bytes | None:
    """The call's body for a route: the first route's body as the surface built it, any
    other re-targeted (its model, extras, limit field); None if it would need a larger hold
    or the body is in a dialect other than chat completions."""
    model = call.model
    if (route.provider, route.upstream, dict(route.extra_body)) == (
            model.provider, model.upstream, dict(model.extra_body)):
        return call.body
    if call.dialect != "chat":  # a provider's own dialect: only the model's own route has it
        return None
    body = orjson.loads(call.body)
    for name, value in model.extra_body.items():  # the first route's extras are not this one's
        if body.get(name) == value:
            body.pop(name)
    limit = body.get(providers[model.provider].limit_field)
    if not isinstance(limit, int):
        return None
    alone = dataclasses.replace(model, provider=route.provider, upstream=route.upstream,
                                extra_body=route.extra_body)
    if bound_body(body, alone, providers[route.provider], limit=limit,
                  stream=call.stream) > call.max_output:
        return None
    return orjson.dumps(body)


def open_route(call: Call, clients: Mapping[str, UpstreamClient],
               providers: Mapping[str, Provider], breakers: Breakers,
               on_failover: OnRouteFailover) -> tuple[requests.Response, Route]:
    """Open the call upstream on the first route that answers; raise the last failure.

    Routes whose breaker rests are tried only after every other route failed, so a model
    with one route is always tried.
    """
    first: list[Route] = []
    rested: list[Route] = []
    for route in ordered(routes_of(call.model)):
        (rested if breakers.get(route.name).resting() else first).append(route)
    last: SilkError | None = None
    failed: str | None = None
    # A JSON answer's body must begin within one wait (the first route's `first_byte_wait`),
    # however many keys and routes it takes: each is given what is left of it.
    began, deadline = time.monotonic(), None
    for route in first + rested:
        body = body_for(call, route, providers)
        if body is None:
            continue
        if deadline is not None and time.monotonic() >= deadline:
            break  # the wait is spent: the client gets the last failure
        breaker = breakers.get(route.name)
        if route in first and not breaker.allow():
            continue  # another request is probing it
        if failed is not None:  # moving on from a route that failed
            on_failover(call.model.id, failed, (last.code if last else None) or "unknown")
        client = clients[route.provider]
        if deadline is None and not call.stream:
            deadline = began + client.first_byte_wait(call.max_output)
        started = time.perf_counter()
        try:
            response = client.open(body, stream=call.stream, max_output=call.max_output,
                                   dialect=call.dialect, deadline=deadline)
        except SilkError as err:
            if not may_try_elsewhere(err):
                _ended_here(err, route.name, breaker, time.perf_counter() - started)
                raise
            breaker.failed(time.perf_counter() - started)
            metrics.route_answered(route.name, time.perf_counter() - started, False)
            last, failed = err, route.name
            continue
        breaker.succeeded(time.perf_counter() - started)
        metrics.route_answered(route.name, time.perf_counter() - started, True)
        return response, route
    raise last or UpstreamError("No route of this model could take the request.",
                                code="upstream_unavailable")


def _ended_here(err: SilkError, route: str, breaker: Breaker, seconds: float) -> None:
    """A failure that ends the call on this route: a provider that went silent after taking
    the request is a failing route; one that answered (a bad request) is not."""
    if isinstance(err, UpstreamTimeout):
        breaker.failed(seconds)
        metrics.route_answered(route, seconds, False)
    else:
        breaker.succeeded(seconds)


def report(models: Mapping[str, Model], clients: Mapping[str, UpstreamClient],
           breakers: Breakers) -> dict[str, list[dict[str, Any]]]:
    """Every route and key as this worker sees it: serving or resting (until when), recent
    failures, latency percentiles of the route's recent answers."""
    routes = []
    for model in models.values():
        for route in routes_of(model):
            state = breakers.get(route.name).state()
            routes.append({
                "model": model.id, "route": route.name, "provider": route.provider,
                "upstream": route.upstream, "weight": route.weight, "state": state.state,
                "resting_until": _moment(state.resting_until), "failures": state.failures,
                "recent_failures": state.recent_failures,
                "latency_ms": {"p50": state.p50_ms, "p90": state.p90_ms, "p99": state.p99_ms}})
    keys = [{"provider": pid, "key": key, "state": "resting" if until else "serving",
             "resting_until": _moment(until)}
            for pid, client in clients.items() for key, until in client.key_states()]
    return {"routes": routes, "keys": keys}


def _moment(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")
