"""The chat blueprint: POST /v1/chat/completions, thin over the chat service."""

from flask import Blueprint, Response, current_app, request

from silk.account.auth import authenticate
from silk.chat import relay, service
from silk.jsonio import dumps_bytes
from silk.validation import read_body

bp = Blueprint("chat", __name__, url_prefix="/v1")


@bp.post("/chat/completions")
def create_chat_completion():
    """Relay a chat completion, streaming as server-sent events or answering JSON."""
    principal = authenticate()
    started = service.start(principal, read_body(cache=False),
                            request.headers.get("Accept", ""))
    if started.stream:
        stream = relay.RelayStream(started.response, started.meter,
                                   current_app.config["SILK_SSE_MAX_EVENT"])
        return Response(stream, status=200,
                        mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    settlement = started.meter.settlement
    response = Response(dumps_bytes(started.response), status=200, mimetype="application/json")
    response.headers["x-silk-cost"] = str(settlement.cost_usd if settlement else 0)
    return response
