"""The chat blueprint: POST /v1/chat/completions, thin over the chat service."""

from flask import Blueprint, request

from silk.account.auth import authenticate
from silk.chat import errors, service
from silk.errors import SilkError
from silk.relay.surface import respond
from silk.validation import read_body

bp = Blueprint("chat", __name__, url_prefix="/v1")
bp.register_error_handler(SilkError, errors.render)


@bp.post("/chat/completions")
def create_chat_completion():
    """Relay a chat completion, streaming as server-sent events or answering JSON."""
    principal = authenticate()
    return respond(service.start(principal, read_body(cache=False),
                                 lambda: request.accept_mimetypes))
