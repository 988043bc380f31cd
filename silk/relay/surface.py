"""What every surface does around the relay, written once: the model a key may use,
the stream body whose closing settles, the settled answer, and the HTTP response of either.

A surface brings its own dialect (parsing, translation, encoding, error envelope); the steps
here are the same for all of them, so they stay surface-neutral.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from flask import Response

from silk.account.auth import Principal
from silk.appctx import this_g
from silk.catalog import catalogue
from silk.catalog.catalogue import Model
from silk.errors import NotFound, PermissionDenied
from silk.jsonio import dumps_bytes
from silk.relay.stream import RelayStream


def allowed_model(principal: Principal, name: str) -> Model:
    """The catalogue model a name (or an alias) means, if this key may use it (404, 403)."""
    model = catalogue().model(name)
    if model is None:
        raise NotFound(f"The model '{name}' does not exist. GET /v1/models lists the models "
                       "you can use.", param="model", code="model_not_found")
    if not principal.may_use(model.id):
        raise PermissionDenied(f"This API key may not use the model '{model.id}'.",
                               param="model", code="model_not_allowed")
    this_g().model = model.id
    return model


class SurfaceStream:
    """A stream's response body: the relay's events in a surface's SSE; closing it settles.

    `encode(relay_stream, *args, on_error=..., **kwargs)` is the surface's encoder; it
    yields b"" for a Flush. A WSGI server writes each piece it is given with a system call
    of its own, so what a surface encodes from one upstream read goes out as one piece. A
    WSGI server calls `close()` when the client is gone; the relay then settles what was
    delivered and closes the upstream.
    """

    __slots__ = ("_relay", "_bytes")

    def __init__(self, relay_stream: RelayStream,
                 encode: Callable[..., Generator[bytes, None, None]], *args, **kwargs):
        self._relay = relay_stream
        self._bytes = encode(relay_stream, *args, on_error=relay_stream.abort, **kwargs)

    def __iter__(self) -> Iterator[bytes]:
        batch = self._relay.batch
        held: list[bytes] = []
        try:
            for piece in self._bytes:
                if batch.open:  # more events of this read to come: hold what they made so far
                    held.append(piece)
                    continue
                if held:
                    held.append(piece)
                    piece = b"".join(held)
                    held.clear()
                if piece:
                    yield piece
        except Exception:
            # The encoder failed (the relay settled the request as the gateway's error):
            # what it had made of this read was delivered and is billed, so it goes out.
            if held:
                yield b"".join(held)
            raise

    def close(self) -> None:
        """Stop encoding, then end the relay (which settles if the stream had not ended)."""
        self._bytes.close()
        self._relay.close()


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-streaming answer, settled: the surface's JSON body and what it cost."""

    body: dict
    cost: object  # USD, Decimal (0 when nothing was charged)


def respond(answer: SurfaceStream | Answer) -> Response:
    """The HTTP response: an event stream (unbuffered by proxies), or the JSON body with its
    cost in `x-silk-cost`."""
    if isinstance(answer, SurfaceStream):
        return Response(answer, status=200, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response = Response(dumps_bytes(answer.body), status=200, mimetype="application/json")
    response.headers["x-silk-cost"] = str(answer.cost)
    return response
