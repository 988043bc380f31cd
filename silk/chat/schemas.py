"""Input validation for chat completions: strict types for what we read, the rest passes."""

from __future__ import annotations

from functools import lru_cache

from marshmallow import (
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from silk.validation import (
    OneOf,
    StrictBool,
    StrictInteger,
    StrictNumber,
    StrictString,
    Vouched,
    invalid,
    needed_fields,
)

_ROLES = ("system", "user", "assistant", "tool", "function", "developer")
_NEEDS_CONTENT = ("user", "system", "developer")  # roles whose content may not be null


def _content_ok(content) -> bool:
    if content is None or isinstance(content, str):
        return True
    if isinstance(content, list):
        return all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)
    return False


# Content parts whose prompt tokens the hold bounds: text by its bytes, an image by the
# image allowance, audio by the bytes of the recording the request holds.
_PARTS = ("text", "refusal", "image_url", "input_audio")
_UNSIZED = ("'{kind}' parts are not supported by this gateway: what a provider reads from "
            "a video, a file or a document cannot be bounded before it does (text, refusal, "
            "image_url and input_audio held in the request are)")


def _part_error(part: dict) -> dict | None:
    """What is wrong with a content part; a part no hold can bound is refused."""
    kind = part["type"]
    if kind not in _PARTS:
        return {"type": [_UNSIZED.format(kind=kind[:40])]}
    if kind == "text" and not isinstance(part.get("text"), str):
        return {"text": ["must be a string"]}
    if kind == "image_url":
        image = part.get("image_url")
        if isinstance(image, dict) and not isinstance(image.get("url"), str):
            return {"image_url": {"url": ["must be a string"]}}
        if not isinstance(image, dict | str):
            return {"image_url": ["must be an object with a url"]}
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        if not isinstance(data, str) or not _inline(data):
            return {"input_audio": {"data": [
                "must be the recording itself (base64 or a data: URL): audio by URL, whose "
                "length no hold can bound, is not supported by this gateway"]}}
    return None


def _inline(data: str) -> bool:
    """Whether media data is held in the request: a data: URL or base64, which has no
    colon (a URL, which a provider fetches, has one after its scheme)."""
    return data[:5].lower() == "data:" or ":" not in data[:64]


def check_tools(tools: list) -> None:
    """400 naming the first tool that is not a function tool. Run after the schema's load,
    and only for a request with tools: a schema-wide hook costs every request marshmallow's
    hook machinery (0.6 % of a chat request's instructions)."""
    for index, tool in enumerate(tools):
        problem = _tool_error(tool)
        if problem is not None:
            raise invalid({"tools": {index: problem}})


def _tool_error(tool) -> dict | list | None:
    """What is wrong with one tool: only function tools are relayed.

    A provider's built-in tool (MiMo's `web_search`) runs on its side and bills per call and
    for what it reads into the prompt, neither of which a hold or the catalogue's prices
    cover.
    """
    if not isinstance(tool, dict):
        return ["must be an object"]
    if tool.get("type") != "function":
        return {"type": ["must be function (a provider's built-in tool, such as web_search, "
                         "is billed apart and cannot run on this gateway)"]}
    return None


def _content_error(content, role: str) -> str | dict | None:
    """What is wrong with a message's content for its role (a message, or the problem per
    part index), or None."""
    if not _content_ok(content):
        return "must be a string, null or an array of content parts"
    if content is None and role in _NEEDS_CONTENT:
        return f"is required for a {role} message"
    if isinstance(content, list):
        for index, part in enumerate(content):
            problem = _part_error(part)
            if problem is not None:
                return {index: problem}
    return None


class MessageSchema(Schema):
    """One chat message: a role and string or multi-part content."""

    class Meta:
        unknown = INCLUDE

    role = StrictString(required=True, validate=validate.OneOf(_ROLES))
    content = fields.Raw(load_default=None)
    name = StrictString()
    tool_calls = OneOf(list)
    tool_call_id = StrictString()

    @validates_schema
    def _content(self, data, **kwargs):
        problem = _content_error(data.get("content"), data["role"])
        if isinstance(problem, str):
            raise ValidationError(problem, "content")
        if problem is not None:
            raise ValidationError({"content": problem})


def quick_message(message) -> dict | None:
    """What MessageSchema loads from a message of the common shape (a known role, content
    the gateway accepts, string name and tool_call_id, an array of tool_calls); None for
    anything else (the schema then loads it and says what is wrong)."""
    if type(message) is not dict or type(message.get("role")) is not str:
        return None
    if message["role"] not in _ROLES or (
            _content_error(message.get("content"), message["role"]) is not None):
        return None
    for name in ("name", "tool_call_id"):
        if name in message and type(message[name]) is not str:
            return None
    if "tool_calls" in message and type(message["tool_calls"]) is not list:
        return None
    loaded = dict(message)
    if "content" not in loaded:
        loaded["content"] = None  # the schema's load_default
    return loaded


class ChatRequestSchema(Schema):
    """A chat completion request: what the gateway reads is typed; the rest passes through."""

    class Meta:
        unknown = INCLUDE

    model = StrictString(required=True, validate=validate.Length(min=1, max=128))
    messages = Vouched(MessageSchema, quick_message, required=True,
                       validate=validate.Length(min=1, max=10_000))
    stream = StrictBool()
    stream_options = OneOf(dict)
    temperature = StrictNumber(validate=validate.Range(0, 2))
    top_p = StrictNumber(validate=validate.Range(0, 1))
    max_tokens = StrictInteger(validate=validate.Range(min=1))
    max_completion_tokens = StrictInteger(validate=validate.Range(min=1))
    n = StrictInteger(validate=validate.Range(1, 16))
    presence_penalty = StrictNumber(validate=validate.Range(-2, 2))
    frequency_penalty = StrictNumber(validate=validate.Range(-2, 2))
    seed = StrictInteger()
    stop = OneOf(str, list)
    logprobs = StrictBool()
    top_logprobs = StrictInteger(validate=validate.Range(0, 20))
    user = StrictString()
    tools = OneOf(list)
    tool_choice = OneOf(str, dict)
    response_format = OneOf(dict)
    reasoning_effort = StrictString()
    thinking = OneOf(dict)



chat_request_schema = ChatRequestSchema()

# Fields whose null is not "not given": required ones, refused by validation, and a message's
# content, where null is the OpenAI way to say an assistant message has only tool calls.
_KEEP_NULL = frozenset({"model", "messages"})
_MESSAGE_KEEP_NULL = frozenset({"role", "content"})


def drop_nulls(body: dict) -> dict:
    """Take every explicit null of an optional field out of `body` (in place): not given.

    OpenAI reads a null optional field as absent and wrapper code sends one (the openai SDK
    sends `temperature=None` as null), so a null is neither validated nor relayed upstream:
    top-level fields (passed-through ones too), a message's fields but its content, and
    `stream_options`' fields.
    """
    if None in body.values():
        for name in [name for name, value in body.items()
                     if value is None and name not in _KEEP_NULL]:
            del body[name]
    messages = body.get("messages")
    if type(messages) is list:
        for message in messages:
            if type(message) is dict and None in message.values():
                for name in [name for name, value in message.items()
                             if value is None and name not in _MESSAGE_KEEP_NULL]:
                    del message[name]
    options = body.get("stream_options")
    if type(options) is dict and None in options.values():
        body["stream_options"] = {k: v for k, v in options.items() if v is not None}
    return body


_FIELDS = tuple(ChatRequestSchema._declared_fields)
_MESSAGE_FIELDS = tuple(MessageSchema._declared_fields)
_NEEDED = needed_fields(ChatRequestSchema)
_MESSAGE_NEEDED = needed_fields(MessageSchema)


def schema_for(body: dict) -> ChatRequestSchema:
    """The chat schema limited to the fields `body` has, which loads it exactly as the full one.

    marshmallow runs every declared field for every load, present or not: for a typical
    request (four of twenty fields, messages with two of five) that was most of its cost.
    A field that is absent, not required and without a default does nothing, so leaving it
    out changes nothing; every field the body has is still validated.
    """
    present = frozenset(body.keys() & _FIELDS)
    messages = body.get("messages")
    message_keys: set = set()
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                message_keys.update(message)
    return _variant(present, frozenset(message_keys.intersection(_MESSAGE_FIELDS)))


@lru_cache(maxsize=128)
def _variant(present: frozenset[str], message_present: frozenset[str]) -> ChatRequestSchema:
    only = [name for name in _FIELDS if name in present or name in _NEEDED]
    only += [f"messages.{name}" for name in _MESSAGE_FIELDS
             if name in message_present or name in _MESSAGE_NEEDED]
    return ChatRequestSchema(only=only)
