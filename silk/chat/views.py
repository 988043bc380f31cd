"""The chat blueprint: POST /v1/chat/completions, thin over the chat service."""

from flask import Blueprint, Response, request

from silk.account.auth import authenticate
from silk.chat import errors, service
from silk.errors import SilkError
from silk.jsonio import dumps_bytes
from silk.validation import read_body

bp = Blueprint("chat", __name__, url_prefix="/v1")
bp.register_error_handler(SilkError, errors.render)


@bp.post("/chat/completions")
def create_chat_completion():
    """Relay a chat completion, streaming as server-sent events or answering JSON."""
    principal = authenticate()
    answer = service.start(principal, read_body(cache=False), request.accept_mimetypes)
    if isinstance(answer, service.ChatStream):
        return Response(answer, status=200,
                        mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response = Response(dumps_bytes(answer.body), status=200, mimetype="application/json")
    response.headers["x-silk-cost"] = str(answer.cost)
    return response
