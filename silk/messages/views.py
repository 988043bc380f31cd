"""The messages blueprint: POST /v1/messages and /v1/messages/count_tokens, thin."""

from flask import Blueprint, Response

from silk.account.auth import authenticate
from silk.errors import SilkError
from silk.jsonio import dumps_bytes
from silk.messages import errors, service
from silk.relay.surface import respond
from silk.validation import read_body

bp = Blueprint("messages", __name__, url_prefix="/v1")
bp.register_error_handler(SilkError, errors.render)


@bp.record_once
def _envelope(state) -> None:
    """Errors the app raises itself on these paths come out in Anthropic's envelope too."""
    state.app.extensions.setdefault("silk.error_envelopes", {})["/v1/messages"] = errors.render


@bp.post("/messages")
def create_message():
    """Relay a Message, streaming as Anthropic's server-sent events or answering JSON.

    `?beta=true`, `anthropic-version` and `anthropic-beta` are accepted and need nothing.
    """
    principal = authenticate()
    return respond(service.start(principal, read_body(cache=False)))


@bp.post("/messages/count_tokens")
def count_tokens():
    """Estimate a Message's input tokens; no charge, rate-limited like any request."""
    principal = authenticate()
    return Response(dumps_bytes(service.count_tokens(principal, read_body(cache=False))),
                    status=200, mimetype="application/json")
