"""The Responses blueprint: create, retrieve, list input items, delete; thin over the service.

Errors use the application's envelope (silk.errors), which is OpenAI's.
"""

from flask import Blueprint, jsonify, request

from silk.account.auth import authenticate
from silk.relay.surface import respond
from silk.responses import service
from silk.validation import int_arg, read_body

bp = Blueprint("responses", __name__, url_prefix="/v1")


@bp.post("/responses")
def create_response():
    """Relay a response, streaming typed server-sent events or answering the JSON object."""
    principal = authenticate()
    return respond(service.start(principal, read_body(cache=False)))


@bp.get("/responses/<response_id>")
def get_response(response_id: str):
    """A stored response of the caller's account."""
    return jsonify(service.retrieve(authenticate(), response_id))


@bp.get("/responses/<response_id>/input_items")
def list_input_items(response_id: str):
    """A stored response's input items, paged as OpenAI pages them."""
    principal = authenticate()
    return jsonify(service.list_input_items(
        principal, response_id, after=request.args.get("after") or None,
        limit=int_arg("limit", 20, 1, 100), order=request.args.get("order", "desc")))


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str):
    """Delete a stored response of the caller's account."""
    return jsonify(service.delete(authenticate(), response_id))
