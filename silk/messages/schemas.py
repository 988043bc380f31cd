"""Input validation for Anthropic Messages: strict types for what we read, the rest passes.

Blocks and tools are checked by hand (marshmallow would run a schema per block): a block of
a type the gateway reads must have the fields it reads; other types (documents, server tool
results, what the next client sends) pass as they came.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from silk.validation import (
    OneOf,
    StrictBool,
    StrictInteger,
    StrictNumber,
    StrictString,
    Vouched,
    present_fields,
)

ROLES = ("user", "assistant", "system")  # Claude Code sends mid-conversation system turns
THINKING = ("enabled", "adaptive", "disabled")
TOOL_CHOICES = ("auto", "any", "tool", "none")

# For each block type the gateway reads: the fields it needs and their JSON types.
_BLOCK_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "text": {"text": (str,)},
    "image": {"source": (dict,)},
    "tool_use": {"id": (str,), "name": (str,), "input": (dict,)},
    "tool_result": {"tool_use_id": (str,)},
    "thinking": {"thinking": (str,)},
    "redacted_thinking": {"data": (str,)},
}
_NAMES: dict[type, str] = {str: "a string", dict: "an object", list: "an array"}


def _block_error(block, nested: bool = False) -> dict | str | None:
    """What is wrong with one content block, or None."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return "must be an object with a string type"
    kind = block["type"]
    for name, types in _BLOCK_FIELDS.get(kind, {}).items():
        if not isinstance(block.get(name), types):
            return {name: [f"must be {_NAMES[types[0]]}"]}
    if kind == "image":
        source = block["source"]
        if source.get("type") == "base64":
            for name in ("media_type", "data"):
                if not isinstance(source.get(name), str):
                    return {"source": {name: ["must be a string"]}}
        elif source.get("type") == "url":
            if not isinstance(source.get("url"), str):
                return {"source": {"url": ["must be a string"]}}
        else:
            return {"source": {"type": ["must be base64 or url"]}}
    if kind == "tool_result":
        if nested:
            return "a tool result cannot hold another"
        content = block.get("content")
        if content is not None and not isinstance(content, str | list):
            return {"content": ["must be a string or an array of blocks"]}
        if isinstance(content, list):
            for index, part in enumerate(content):
                problem = _block_error(part, nested=True)
                if problem is not None:
                    return {"content": {index: _as_list(problem)}}
        if "is_error" in block and not isinstance(block["is_error"], bool):
            return {"is_error": ["must be true or false"]}
    return None


def _as_list(problem: dict | str) -> dict | list:
    return problem if isinstance(problem, dict) else [problem]


def _content_error(content) -> dict | list | None:
    """What is wrong with a message's (or the system prompt's) content, or None."""
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return ["must be a string or an array of content blocks"]
    for index, block in enumerate(content):
        problem = _block_error(block)
        if problem is not None:
            return {index: _as_list(problem)}
    return None


def _tool_error(tool) -> dict | list | None:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        return ["must be an object with a string name"]
    if tool.get("type") in (None, "custom") and not isinstance(tool.get("input_schema"), dict):
        return {"input_schema": ["must be an object (a JSON schema)"]}
    return None


class MessageSchema(Schema):
    """One turn: a role and string or block content."""

    class Meta:
        unknown = INCLUDE

    role = StrictString(required=True, validate=validate.OneOf(ROLES))
    content = fields.Raw(required=True)

    @validates_schema
    def _content(self, data, **kwargs):
        problem = _content_error(data.get("content"))
        if problem is not None:
            raise ValidationError({"content": problem})


def quick_turn(message) -> dict | None:
    """What MessageSchema loads from a turn with a known role and content blocks the gateway
    accepts; None for anything else (the schema then loads it and says what is wrong)."""
    if type(message) is not dict or type(message.get("role")) is not str:
        return None
    if message["role"] not in ROLES or "content" not in message:
        return None
    if _content_error(message["content"]) is not None:
        return None
    return dict(message)


class MessagesRequestSchema(Schema):
    """A Messages request: what the gateway reads is typed; the rest passes through."""

    class Meta:
        unknown = INCLUDE

    model = StrictString(required=True, validate=validate.Length(min=1, max=128))
    max_tokens = StrictInteger(required=True, validate=validate.Range(min=1))
    messages = Vouched(MessageSchema, quick_turn, required=True,
                       validate=validate.Length(min=1, max=10_000))
    system = OneOf(str, list)
    stream = StrictBool()
    temperature = StrictNumber(validate=validate.Range(0, 1))
    top_p = StrictNumber(validate=validate.Range(0, 1))
    top_k = StrictInteger(validate=validate.Range(min=0))
    stop_sequences = fields.List(StrictString())
    metadata = OneOf(dict)
    tools = OneOf(list)
    tool_choice = OneOf(dict)
    thinking = OneOf(dict)

    @validates_schema
    def _parts(self, data, **kwargs):
        if isinstance(data.get("system"), list):
            for index, block in enumerate(data["system"]):
                # Text only, as Anthropic has it: an image there would be read unbounded.
                if not (isinstance(block, dict) and block.get("type") == "text"
                        and isinstance(block.get("text"), str)):
                    raise ValidationError({"system": {index: [
                        "must be a text block (type text with a string text)"]}})
        for index, tool in enumerate(data.get("tools") or ()):
            problem = _tool_error(tool)
            if problem is not None:
                raise ValidationError({"tools": {index: problem}})
        choice = data.get("tool_choice")
        if choice is not None:
            if choice.get("type") not in TOOL_CHOICES:
                raise ValidationError({"tool_choice": {"type": [
                    "must be one of " + ", ".join(TOOL_CHOICES)]}})
            if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
                raise ValidationError({"tool_choice": {"name": ["must be a string"]}})
        thinking = data.get("thinking")
        if thinking is not None:
            if thinking.get("type") not in THINKING:
                raise ValidationError({"thinking": {"type": [
                    "must be one of " + ", ".join(THINKING)]}})
            budget = thinking.get("budget_tokens")
            if thinking["type"] == "enabled" and (
                    isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
                raise ValidationError({"thinking": {"budget_tokens": [
                    "must be a positive integer when thinking is enabled"]}})


messages_request_schema = MessagesRequestSchema()
# The schema limited to the fields a body has, which loads it exactly as the full one.
schema_for = present_fields(MessagesRequestSchema)
