"""A Responses request as a chat-completions body for any provider; pure.

Input items become chat messages (function calls and their outputs become tool calls and
tool messages, reasoning items the next assistant turn's reasoning_content); the options
(tools, tool_choice, text.format, reasoning) are silk.responses.options'. Every error is a
400 naming the field's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from silk.catalog.catalogue import Model, Provider
from silk.responses.options import (
    NAMESPACE_SEPARATOR,
    bad,
    response_format,
    string,
    thinking,
    tool_choice,
    tools_for,
)

_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")


@dataclass(slots=True)
class Translated:
    """The chat body, and what the answer needs to be told back in the Responses shape."""

    body: dict
    # flattened tool name -> (namespace, name), for function calls in a namespace
    names: dict[str, tuple[str, str]] = field(default_factory=dict)
    # where the carried conversation's messages are in body["messages"] (start, end)
    carried: tuple[int, int] = (0, 0)


def input_items(value) -> list[dict]:
    """The request's `input` as items: a string is one user message; the ids given are
    unique, since they are a stored response's page cursors."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise bad("input", "must be a string or an array of items")
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad(f"input[{index}]", "must be an object")
        item_id = item.get("id")
        if isinstance(item_id, str):  # the cursor of a stored response's input_items
            if item_id in seen:
                raise bad(f"input[{index}].id",
                          f"duplicates the id of input[{seen[item_id]}]; an item's id must "
                          "be unique in the request")
            seen[item_id] = index
    return value


def chat_body(request: dict, carried: list[dict], model: Model, provider: Provider
              ) -> Translated:
    """The chat-completions body for a validated request; `carried` are the items of the
    stored conversation it continues (previous_response_id), oldest first."""
    out = Translated({})
    tools = request.get("tools") or []
    chat_tools = tools_for(tools, out.names)
    flat = {pair: name for name, pair in out.names.items()}
    messages: list[dict] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": request["instructions"]})
    start = len(messages)
    _messages(carried, "previous_response_id", flat, messages)
    out.carried = (start, len(messages))
    _messages(input_items(request["input"]), "input", flat, messages)
    if not messages:
        raise bad("input", "must hold at least one item")
    body = out.body
    body["messages"] = messages
    if chat_tools:
        body["tools"] = chat_tools
    choice = request.get("tool_choice")
    if choice is not None:
        body["tool_choice"] = tool_choice(choice)
    if request.get("parallel_tool_calls") is not None and chat_tools:
        body["parallel_tool_calls"] = request["parallel_tool_calls"]
    for name in ("temperature", "top_p"):
        if request.get(name) is not None:
            body[name] = request[name]
    text = request.get("text")
    if isinstance(text, dict) and text.get("format") is not None:
        chat_format = response_format(text["format"])
        if chat_format:
            body["response_format"] = chat_format
    thinking(request.get("reasoning"), body, model, provider)
    return out


def _messages(items: list[dict], where: str, flat: dict, messages: list[dict]) -> None:
    """Append the chat messages for `items` (each error named `where[i]...`)."""
    reasoning: list[str] = []  # reasoning text waiting for the assistant turn it belongs to
    for index, item in enumerate(items):
        path = f"{where}[{index}]"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            _message(item, path, reasoning, messages)
        elif kind == "function_call":
            call = _function_call(item, path, flat)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not reasoning and (
                    "tool_calls" in last or last.get("content")):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append(_assistant(None, reasoning, [call]))
        elif kind == "function_call_output":
            messages.append(_tool_output(item, path))
        elif kind == "reasoning":
            reasoning.extend(_reasoning_texts(item, path))
        elif kind is None:
            raise bad(f"{path}.type", "is required")
        else:
            raise bad(f"{path}.type", f"'{str(kind)[:40]}' items are not supported by this "
                       "gateway (it relays messages, function calls and their outputs, and "
                       "reasoning)")


def _message(item: dict, path: str, reasoning: list[str], messages: list[dict]) -> None:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise bad(f"{path}.role", f"must be one of {', '.join(_MESSAGE_ROLES)}")
    content = item.get("content")
    if isinstance(content, str):
        parts: list[dict] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = [_part(part, f"{path}.content[{i}]") for i, part in enumerate(content)]
    else:
        raise bad(f"{path}.content", "must be a string or an array of content parts")
    if role == "assistant":
        if any(part["type"] != "text" for part in parts):
            raise bad(f"{path}.content", "an assistant message holds text only")
        messages.append(_assistant("".join(p["text"] for p in parts), reasoning, None))
        return
    if role != "user" and any(part["type"] != "text" for part in parts):
        raise bad(f"{path}.content", f"a {role} message holds text only")
    chat_role = "user" if role == "user" else "system"
    if all(part["type"] == "text" for part in parts):
        messages.append({"role": chat_role, "content": "\n\n".join(p["text"] for p in parts)})
    else:
        messages.append({"role": chat_role, "content": parts})


def _part(part, path: str) -> dict:
    """One content part as a chat part: text, or an image by URL."""
    if not isinstance(part, dict):
        raise bad(path, "must be an object")
    kind = part.get("type")
    if kind in _TEXT_PARTS or kind == "refusal":
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise bad(f"{path}.{'refusal' if kind == 'refusal' else 'text'}",
                       "must be a string")
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise bad(f"{path}.image_url", "must be a URL or a data URL (file ids are not "
                       "supported)")
        image: dict = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise bad(f"{path}.type", f"'{str(kind)[:40]}' parts are not supported by this gateway "
               "(input_text, input_image and output_text are)")


def _assistant(content: str | None, reasoning: list[str], calls: list[dict] | None) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)
        reasoning.clear()
    if calls:
        message["tool_calls"] = calls
    return message


def _function_call(item: dict, path: str, flat: dict) -> dict:
    name = string(item, "name", path)
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise bad(f"{path}.arguments", "must be a string (JSON text)")
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace:
        name = flat.get((namespace, name), f"{namespace}{NAMESPACE_SEPARATOR}{name}")
    return {"id": string(item, "call_id", path), "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _tool_output(item: dict, path: str) -> dict:
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for index, part in enumerate(output):
            chat_part = _part(part, f"{path}.output[{index}]")
            if chat_part["type"] != "text":
                raise bad(f"{path}.output[{index}]", "a function call output holds text only")
            texts.append(chat_part["text"])
        output = "\n".join(texts)
    if not isinstance(output, str):
        raise bad(f"{path}.output", "must be a string or an array of text parts")
    return {"role": "tool", "tool_call_id": string(item, "call_id", path), "content": output}


def _reasoning_texts(item: dict, path: str) -> list[str]:
    texts = []
    for name in ("summary", "content"):
        parts = item.get(name) or []
        if not isinstance(parts, list):
            raise bad(f"{path}.{name}", "must be an array")
        for index, part in enumerate(parts):
            text = part.get("text") if isinstance(part, dict) else None
            if not isinstance(text, str):
                raise bad(f"{path}.{name}[{index}].text", "must be a string")
            texts.append(text)
    return texts
