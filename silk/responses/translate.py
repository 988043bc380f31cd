"""A validated Responses request as the relay's Call; pure.

The chat body comes from silk.responses.request; the limit held and sent, and the prompt's
bound and estimate (the carried conversation included), are the relay's rules for every
surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from silk.catalog.catalogue import Model, Provider
from silk.errors import InvalidRequest
from silk.relay.call import Call, bound_body
from silk.relay.tokens import prompt_bound, prompt_estimate
from silk.responses.request import chat_body


@dataclass(frozen=True, slots=True)
class ResponsesCall:
    """The relay's Call, and the flattened tool names the answer maps back."""

    call: Call
    names: dict[str, tuple[str, str]]
    continued: list[dict]  # the messages of the conversation it continues, as sent

    def own(self) -> int:
        """Bytes of the body sent that came from this request, not from the conversation it
        continues."""
        return len(self.call.body) - (len(orjson.dumps(self.continued)) if self.continued
                                      else 0)


def to_call(model: Model, provider: Provider, request: dict, carried: list[dict], *,
            stream: bool, image_allowance: int) -> ResponsesCall:
    """Translate a request (and the conversation it continues) and bound what it can cost."""
    translated = chat_body(request, carried, model, provider)
    body = translated.body
    limit = request.get("max_output_tokens")
    if limit is None:
        limit = model.max_output_tokens
    elif limit > model.max_output_tokens:
        raise InvalidRequest(f"Invalid 'max_output_tokens': {limit} is above this model's "
                             f"maximum of {model.max_output_tokens}.", param="max_output_tokens")
    max_output = bound_body(body, model, provider, limit=limit, stream=stream)
    bound = prompt_bound(body, image_allowance)
    estimate = prompt_estimate(body, bound, image_allowance=image_allowance)
    call = Call(model=model, body=orjson.dumps(body), stream=stream, prompt_bound=bound,
                prompt_estimate=estimate, max_output=max_output,
                surface="responses")
    start, end = translated.carried
    return ResponsesCall(call, translated.names, body["messages"][start:end])
