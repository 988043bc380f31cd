"""Anthropic Messages requests for the relay; pure.

Translated (every provider by default): the request becomes a chat-completions body, bound
as chat's (silk.relay.call.bound_body). Native (a provider with an Anthropic endpoint): the
request goes as it came, with the upstream model, the catalogue's extras and the bound held.
"""

from __future__ import annotations

import orjson

from silk.catalog.catalogue import Model, Provider
from silk.errors import InvalidRequest
from silk.relay.call import Call, bound_body
from silk.relay.tokens import (
    PER_MESSAGE_OVERHEAD,
    prompt_bound,
    prompt_estimate,
    template_overhead,
)

SURFACE = "messages"
# What Anthropic's tool_choice types are in chat completions.
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
# Anthropic request fields a model does not read as prompt; every other field sent natively
# counts in the prompt's bound (a provider may render any of them into the prompt, as
# Anthropic does output_config's format schema and the tools).
_NOT_PROMPT = frozenset(("model", "max_tokens", "stream", "temperature", "top_p", "top_k",
                         "metadata", "stop_sequences", "thinking"))
# What stands in for a block whose content is not in the request (a PDF, a document or file
# fetched by URL or id): what a provider reads from it cannot be bounded before it does;
# translated, also for a block whose content no chat model reads (a server tool's result).
OMITTED = ("[A {kind} was left out here: the gateway sends a provider only text and images "
           "that the request itself holds.]")
_NOTE_HEAD, _NOTE_TAIL = OMITTED.split("{kind}")
# The request fields sent natively: Anthropic's whose cost the hold covers. The rest are
# not sent: what a provider may charge beyond tokens (server-side tools' sandboxes, other
# service tiers or speeds), what it may read or run beyond the request (a conversation it
# holds, `thread`; another model, `fallbacks`; a compaction, whose tokens Anthropic leaves
# out of `usage`), chat completions' `max_completion_tokens` and `n` (more output than the
# max_tokens held, from an endpoint that read them as its chat dialect does), and any field
# added later, whose cost no one can know before a provider bills it.
_SENT = frozenset(("model", "max_tokens", "messages", "system", "stream", "temperature",
                   "top_p", "top_k", "metadata", "stop_sequences", "thinking", "tools",
                   "tool_choice", "output_config", "cache_control", "context_management"))
# The block types the gateway reads (and checks what is inside: a tool result's blocks).
_READ = frozenset(("text", "tool_use", "tool_result", "thinking", "redacted_thinking",
                   "document"))
# How the thinking is shown when a request names a display: as text, which the gateway
# counts as it arrives. Omitted, only its signature comes, at the block's end, so a stream
# cut while the model thinks would bill none of the thinking the provider bills.
_SHOWN = "summarized"
# The context_management edits sent: those that only clear context (a compaction is not).
_CLEARING = "clear_"


def to_call(model: Model, provider: Provider, request: dict, *, stream: bool,
            image_allowance: int) -> Call:
    """The relay's Call for a validated Messages request: native where the provider can.

    A max_tokens above the model's maximum is lowered to it: Anthropic clients size it for
    the Claude model they think they talk to (Claude Code asks 32000 to 128000 of whatever
    an alias names), and a shorter answer ends with stop_reason max_tokens as it would.
    Translated, a request whose turns leave the chat body without a message is a 400.
    """
    request = {**request, "max_tokens": min(request["max_tokens"], model.max_output_tokens)}
    chat = to_chat_body(request)
    if provider.anthropic_base_url:
        request = bounded_request(request)
        body, max_output = native_body(request, model, provider, stream=stream)
        bound = native_prompt_bound(body, image_allowance)
        estimate = prompt_estimate(chat, bound, image_allowance=image_allowance)
        return Call(model=model, body=orjson.dumps(body), stream=stream, prompt_bound=bound,
                    prompt_estimate=estimate, max_output=max_output, surface=SURFACE,
                    dialect="anthropic")
    if not any(_reads(message) for message in chat["messages"]):
        # every block was empty, or one a chat model does not read (a note stands for it)
        raise InvalidRequest("Invalid 'messages': nothing in them is sent to the model (no "
                             "text, image, tool call or result).", param="messages")
    max_output = bound_body(chat, model, provider, limit=request["max_tokens"], stream=stream)
    bound = prompt_bound(chat, image_allowance)
    estimate = prompt_estimate(chat, bound, image_allowance=image_allowance)
    return Call(model=model, body=orjson.dumps(chat), stream=stream, prompt_bound=bound,
                prompt_estimate=estimate, max_output=max_output, surface=SURFACE)


def native_body(request: dict, model: Model, provider: Provider, *,
                stream: bool) -> tuple[dict, int]:
    """The request for a provider's own Messages endpoint, and the output bound held.

    Only the fields of _SENT go, with custom tools and clearing context edits only. Anthropic
    counts a thinking budget inside max_tokens; the gateway does not rely on a provider
    doing so and holds max_tokens plus the budget, a budget not under max_tokens (which
    may have been lowered to the model's maximum) lowered under it, as Anthropic requires.
    Thinking with no budget (adaptive) is bounded by max_tokens only where the provider's
    limit covers reasoning (silk.defaults.PROVIDERS); elsewhere it gets the route's
    reasoning budget, or is off. A thinking display asked for is sent as _SHOWN.
    """
    body = {name: value for name, value in request.items() if name in _SENT}
    if "tools" in body:  # custom tools only: a server tool (web search...) is priced apart
        body["tools"] = [tool for tool in body["tools"]
                         if tool.get("type") in (None, "custom")]
    if "context_management" in body:
        body["context_management"] = _clearing_only(body["context_management"])
        if body["context_management"] is None:
            del body["context_management"]
    body["model"] = model.upstream
    body.update(model.extra_body)  # the catalogue's route is the operator's word
    body["stream"] = stream
    limit = body["max_tokens"]
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and "display" in thinking:
        thinking = body["thinking"] = {**thinking, "display": _SHOWN}
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if not model.thinking:
        body.pop("thinking", None)
        kind = None
    if kind == "enabled" and isinstance(thinking, dict):
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
            if budget < limit:
                return body, limit + budget
            if limit > 1:  # max_tokens was lowered under it: Anthropic wants budget < max
                body["thinking"] = {**thinking, "budget_tokens": limit - 1}
                return body, 2 * limit - 1
            body["thinking"] = {"type": "disabled"}  # no room to think in one token
            return body, limit
        kind = "adaptive"
    if kind != "disabled" and model.thinking and not provider.limit_covers_reasoning:
        if model.reasoning_budget:
            body["thinking"] = {"type": "enabled", "budget_tokens": model.reasoning_budget}
            return body, limit + model.reasoning_budget
        body["thinking"] = {"type": "disabled"}
    return body, limit


def _clearing_only(config) -> dict | None:
    """context_management with the edits that only clear context; None if none is left."""
    edits = config.get("edits") if isinstance(config, dict) else None
    kept = [edit for edit in edits if isinstance(edit, dict) and str(
        edit.get("type")).startswith(_CLEARING)] if isinstance(edits, list) else []
    return {"edits": kept} if kept else None


def bounded(block) -> bool:
    """Whether all a content block makes the model read is in the request: not a document
    by URL, file id or base64 (a PDF's pages are read as images, as many as it has), nor a
    block of a type the gateway does not read with such a document, an image or a file
    anywhere inside (a web fetch's result: the hold counts the block as one image). A
    document whose source is text, or blocks of text and images (`_held`), is bounded."""
    if not isinstance(block, dict) or block.get("type") == "image":
        return True
    source = block.get("source")
    if "file_id" in block or isinstance(source, dict) and not _held(source):
        return False
    return block.get("type") in _READ or not _holds_media(block)


def _holds_media(value) -> bool:
    """Whether a file id, or a source other than text, is anywhere inside `value`."""
    if isinstance(value, list):
        return any(_holds_media(item) for item in value)
    if not isinstance(value, dict):
        return False
    source = value.get("source")
    if "file_id" in value or isinstance(source, dict) and source.get("type") != "text":
        return True
    return any(_holds_media(item) for item in value.values())


def _held(source: dict) -> bool:
    """Whether a document's source is in the request: text, or a content source of text
    and of images by URL or base64 (each counted as an image, `_images`)."""
    if source.get("type") == "text":
        return True
    content = source.get("content")
    return source.get("type") == "content" and (isinstance(content, str) or isinstance(
        content, list) and all(_text_block(item) or _image_block(item) for item in content))


def _text_block(item) -> bool:
    return isinstance(item, dict) and item.get("type") == "text" and isinstance(
        item.get("text"), str)


def _image_block(item) -> bool:
    """An image block whose source `_image` reads: base64 with its type and data, or a URL."""
    if not isinstance(item, dict) or item.get("type") != "image":
        return False
    source = item.get("source")
    if not isinstance(source, dict):
        return False
    if source.get("type") == "url":
        return isinstance(source.get("url"), str)
    return source.get("type") == "base64" and isinstance(
        source.get("media_type"), str) and isinstance(source.get("data"), str)


def _omitted(block: dict) -> dict:
    return {"type": "text", "text": OMITTED.format(kind=str(block.get("type") or "block"))}


def _bounded_content(content):
    """Content with each unbounded block replaced by a note saying it was left out."""
    if not isinstance(content, list):
        return content
    out = []
    for block in content:
        if not bounded(block):
            block = _omitted(block)
        elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
            block = {**block, "content": _bounded_content(block["content"])}
        out.append(block)
    return out


def bounded_request(request: dict) -> dict:
    """The request with what the gateway cannot bound left out (see `bounded`); the same
    object when there is nothing to leave out."""
    def needs(content) -> bool:
        return isinstance(content, list) and any(
            isinstance(block, dict) and not bounded(block) or (block.get("type") == "tool_result"
                                   and needs(block.get("content"))) for block in content)
    messages = request["messages"]
    if not needs(request.get("system")) and not any(needs(m["content"]) for m in messages):
        return request
    out = {**request, "messages": [{**m, "content": _bounded_content(m["content"])}
                                   for m in messages]}
    if "system" in request:
        out["system"] = _bounded_content(request["system"])
    return out


def native_prompt_bound(request: dict, image_allowance: int) -> int:
    """An upper bound on the prompt a native provider reads from the body it is sent: every
    byte of every field it may read a token."""
    size = sum(len(orjson.dumps(value)) for name, value in request.items()
               if name not in _NOT_PROMPT)
    images = 0
    for message in request["messages"]:
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            images += _images(block)
    return size + PER_MESSAGE_OVERHEAD * (len(request["messages"]) + 1) + template_overhead(
        request.get("tools")) + images * image_allowance


def _images(block: dict) -> int:
    """The images a native provider may read in a block: those in a tool result or in a
    document made of blocks (at least the one a document is held as); one for any other
    block that is not text, thinking or a call."""
    kind = block.get("type")
    if kind == "tool_result" and isinstance(block.get("content"), list):
        return sum(_images(part) for part in block["content"])
    source = block.get("source")
    if kind == "document" and isinstance(source, dict) and isinstance(
            source.get("content"), list):
        return max(1, sum(1 for item in source["content"] if _image_block(item)))
    return 0 if kind in ("text", "thinking", "redacted_thinking", "tool_use",
                         "tool_result") else 1


def to_chat_body(request: dict) -> dict:
    """The request as chat completions: messages, tools, tool choice, thinking, sampling."""
    messages: list[dict] = []
    system = request.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for message in request["messages"]:
        messages.extend(_chat_messages(message))
    body: dict = {"model": request["model"], "messages": messages,
                  "max_tokens": request["max_tokens"]}
    for name in ("temperature", "top_p"):
        if name in request:
            body[name] = request[name]
    if request.get("stop_sequences"):
        body["stop"] = request["stop_sequences"]
    tools = [_chat_tool(tool) for tool in request.get("tools") or ()
             if isinstance(tool.get("input_schema"), dict)]
    choice = request.get("tool_choice")
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = _TOOL_CHOICE.get(choice["type"]) or {
                "type": "function", "function": {"name": choice.get("name")}}
            if choice.get("disable_parallel_tool_use") is True:
                body["parallel_tool_calls"] = False
    thinking = request.get("thinking")
    if thinking is not None:
        on = thinking["type"] != "disabled"
        body["thinking"] = {"type": "enabled" if on else "disabled"}
    return body


def _chat_tool(tool: dict) -> dict:
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _text(content) -> str:
    """The text of a string or of its blocks (cache_control and the like dropped; images,
    which a system message cannot hold, too)."""
    if isinstance(content, str):
        return content
    parts = (part for block in content if isinstance(block, dict) for part in _readable(block))
    return "\n".join(part["text"] for part in parts if part["type"] == "text")


def _readable(block: dict) -> list[dict]:
    """What a chat model reads of a block other than a tool result, as chat parts: its text;
    an image; a document's text (and a content document's images) under its title and
    context; a search result's text under its title and source. Thinking and calls are read
    in the assistant's turn; a block not sent (`bounded`), or of a type whose content no
    chat model reads (a server tool's result, a tool reference), is a note (OMITTED)."""
    kind = block.get("type")
    if kind == "image":
        return [_image(block)]
    if isinstance(block.get("text"), str):
        return [_part(block["text"])]
    if kind in ("thinking", "redacted_thinking", "tool_use"):
        return []
    if not bounded(block):
        return [_omitted(block)]
    source = block.get("source")
    if kind == "document" and isinstance(source, dict):
        head = [value for value in (block.get("title"), block.get("context"))
                if isinstance(value, str) and value]
        inner = source.get("data") if source.get("type") == "text" else source.get("content")
        if isinstance(inner, str):
            return [_part("\n".join([*head, inner]))]
        if source.get("type") == "content" and isinstance(inner, list):  # held: `bounded`
            parts = [_image(item) if item["type"] == "image" else _part(item["text"])
                     for item in inner]
            return [_part("\n".join(head)), *parts] if head else parts
    elif kind == "search_result":
        content = block.get("content")
        if isinstance(content, list) and all(_text_block(item) for item in content):
            head = [block["title"]] if isinstance(block.get("title"), str) else []
            if isinstance(block.get("source"), str):
                head.append("Source: " + block["source"])
            return [_part("\n".join([*head, *(item["text"] for item in content)]))]
    return [_omitted(block)]


def _part(text: str) -> dict:
    return {"type": "text", "text": text}


def _reads(message: dict) -> bool:
    """Whether a chat message holds anything but notes of blocks left out (OMITTED)."""
    content = message.get("content")
    if message["role"] not in ("user", "system") or not isinstance(content, str | list):
        return True
    parts = [_part(content)] if isinstance(content, str) else content
    return any(part["type"] != "text" or not all(
        line.startswith(_NOTE_HEAD) and line.endswith(_NOTE_TAIL)
        for line in part["text"].split("\n")) for part in parts)


def _chat_messages(message: dict) -> list[dict]:
    """One Anthropic turn as chat messages: tool results become tool messages first."""
    role, content = message["role"], message["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        return [_assistant(content)]
    if role == "system":
        return [{"role": "system", "content": _text(content)}]
    out: list[dict] = []
    parts: list[dict] = []
    for block in content:
        kind = block["type"]
        if kind == "tool_result":
            result, images = _tool_result(block)
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                        "content": result})
            parts.extend(images)
        else:
            parts.extend(_readable(block))
    if parts:
        if all(part["type"] == "text" for part in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant(content: list) -> dict:
    """An assistant turn: its text, its thinking as reasoning_content, its tool calls."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    for block in content:
        kind = block["type"]
        if kind == "tool_use":
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": block["name"], "arguments": orjson.dumps(block["input"]).decode()}})
        elif kind == "thinking":
            reasoning.append(block["thinking"])
        elif kind != "redacted_thinking" and isinstance(block.get("text"), str):
            text.append(block["text"])
    message: dict = {"role": "assistant", "content": "".join(text) or None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool_result(block: dict) -> tuple[str, list[dict]]:
    """A tool result's text for a tool message, and its images for the user turn after."""
    content = block.get("content")
    if isinstance(content, list):
        parts = [part for item in content for part in _readable(item)]
        text = "\n".join(part["text"] for part in parts if part["type"] == "text")
        images = [part for part in parts if part["type"] != "text"]
    else:
        text, images = content or "", []
    if block.get("is_error"):
        text = "Error: " + text
    return text, images


def _image(block: dict) -> dict:
    source = block["source"]
    if source["type"] == "url":
        url = source["url"]
    else:
        url = f"data:{source['media_type']};base64,{source['data']}"
    return {"type": "image_url", "image_url": {"url": url}}
