"""Input validation for Responses requests: strict types for what the gateway reads.

Fields the gateway accepts without acting on them (metadata, include, prompt_cache_key,
client_metadata, user...) pass through unread; the input items are checked one by one as
they are translated (silk.responses.request), each error naming its path.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, validate

from silk.validation import (
    OneOf,
    StrictBool,
    StrictInteger,
    StrictNumber,
    StrictString,
    present_fields,
)


class ResponsesRequestSchema(Schema):
    """A create-response request: what the gateway reads is typed; the rest passes."""

    class Meta:
        unknown = INCLUDE

    model = StrictString(required=True, validate=validate.Length(min=1, max=128))
    input = OneOf(str, list, required=True)
    instructions = OneOf(str, allow_none=True)
    stream = StrictBool()
    store = OneOf(bool, allow_none=True)
    previous_response_id = OneOf(str, allow_none=True)
    tools = OneOf(list, allow_none=True)
    tool_choice = OneOf(str, dict, allow_none=True)
    parallel_tool_calls = OneOf(bool, allow_none=True)
    max_output_tokens = StrictInteger(validate=validate.Range(min=1), allow_none=True)
    temperature = StrictNumber(validate=validate.Range(0, 2), allow_none=True)
    top_p = StrictNumber(validate=validate.Range(0, 1), allow_none=True)
    reasoning = OneOf(dict, allow_none=True)
    text = OneOf(dict, allow_none=True)
    metadata = OneOf(dict, allow_none=True)
    include = OneOf(list, allow_none=True)
    background = OneOf(bool, allow_none=True)


# The schema limited to the fields a body has, which loads it exactly as the full one.
schema_for = present_fields(ResponsesRequestSchema)
