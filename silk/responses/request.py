"""A Responses request as a chat-completions body for any provider; pure.

Input items become chat messages (function calls and their outputs become tool calls and
tool messages, reasoning items the next assistant turn's reasoning_content), function tools
become chat tools (a namespace's tools flattened as `namespace__name`), `text.format`
becomes `response_format`, and `reasoning.effort` the provider's thinking switch. Every
error is a 400 naming the field's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from silk.catalog.catalogue import Model, Provider
from silk.errors import InvalidRequest

_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_CHOICES = ("auto", "none", "required")
NAMESPACE_SEPARATOR = "__"


@dataclass(slots=True)
class Translated:
    """The chat body, and what the answer needs to be told back in the Responses shape."""

    body: dict
    # flattened tool name -> (namespace, name), for function calls in a namespace
    names: dict[str, tuple[str, str]] = field(default_factory=dict)


def _bad(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{path}': {message}.", param=path)


def input_items(value) -> list[dict]:
    """The request's `input` as items: a string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise _bad("input", "must be a string or an array of items")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"input[{index}]", "must be an object")
    return value


def chat_body(request: dict, carried: list[dict], model: Model, provider: Provider
              ) -> Translated:
    """The chat-completions body for a validated request; `carried` are the items of the
    stored conversation it continues (previous_response_id), oldest first."""
    out = Translated({})
    tools = request.get("tools") or []
    chat_tools = _tools(tools, out.names)
    flat = {pair: name for name, pair in out.names.items()}
    messages: list[dict] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": request["instructions"]})
    _messages(carried, "previous_response_id", flat, messages)
    _messages(input_items(request["input"]), "input", flat, messages)
    if not messages:
        raise _bad("input", "must hold at least one item")
    body = out.body
    body["messages"] = messages
    if chat_tools:
        body["tools"] = chat_tools
    choice = request.get("tool_choice")
    if choice is not None:
        body["tool_choice"] = _tool_choice(choice, flat)
    if request.get("parallel_tool_calls") is not None and chat_tools:
        body["parallel_tool_calls"] = request["parallel_tool_calls"]
    for name in ("temperature", "top_p"):
        if request.get(name) is not None:
            body[name] = request[name]
    text = request.get("text")
    if isinstance(text, dict) and text.get("format") is not None:
        response_format = _format(text["format"])
        if response_format:
            body["response_format"] = response_format
    _reasoning(request.get("reasoning"), body, model, provider)
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
            raise _bad(f"{path}.type", "is required")
        else:
            raise _bad(f"{path}.type", f"'{str(kind)[:40]}' items are not supported by this "
                       "gateway (it relays messages, function calls and their outputs, and "
                       "reasoning)")


def _message(item: dict, path: str, reasoning: list[str], messages: list[dict]) -> None:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise _bad(f"{path}.role", f"must be one of {', '.join(_MESSAGE_ROLES)}")
    content = item.get("content")
    if isinstance(content, str):
        parts: list[dict] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = [_part(part, f"{path}.content[{i}]") for i, part in enumerate(content)]
    else:
        raise _bad(f"{path}.content", "must be a string or an array of content parts")
    if role == "assistant":
        if any(part["type"] != "text" for part in parts):
            raise _bad(f"{path}.content", "an assistant message holds text only")
        messages.append(_assistant("".join(p["text"] for p in parts), reasoning, None))
        return
    if role != "user" and any(part["type"] != "text" for part in parts):
        raise _bad(f"{path}.content", f"a {role} message holds text only")
    chat_role = "user" if role == "user" else "system"
    if all(part["type"] == "text" for part in parts):
        messages.append({"role": chat_role, "content": "\n\n".join(p["text"] for p in parts)})
    else:
        messages.append({"role": chat_role, "content": parts})


def _part(part, path: str) -> dict:
    """One content part as a chat part: text, or an image by URL."""
    if not isinstance(part, dict):
        raise _bad(path, "must be an object")
    kind = part.get("type")
    if kind in _TEXT_PARTS or kind == "refusal":
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise _bad(f"{path}.{'refusal' if kind == 'refusal' else 'text'}",
                       "must be a string")
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad(f"{path}.image_url", "must be a URL or a data URL (file ids are not "
                       "supported)")
        image: dict = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise _bad(f"{path}.type", f"'{str(kind)[:40]}' parts are not supported by this gateway "
               "(input_text, input_image and output_text are)")


def _assistant(content: str | None, reasoning: list[str], calls: list[dict] | None) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)
        reasoning.clear()
    if calls:
        message["tool_calls"] = calls
    return message


def _string(item: dict, name: str, path: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(f"{path}.{name}", "must be a non-empty string")
    return value


def _function_call(item: dict, path: str, flat: dict) -> dict:
    name = _string(item, "name", path)
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise _bad(f"{path}.arguments", "must be a string (JSON text)")
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace:
        name = flat.get((namespace, name), f"{namespace}{NAMESPACE_SEPARATOR}{name}")
    return {"id": _string(item, "call_id", path), "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _tool_output(item: dict, path: str) -> dict:
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for index, part in enumerate(output):
            chat_part = _part(part, f"{path}.output[{index}]")
            if chat_part["type"] != "text":
                raise _bad(f"{path}.output[{index}]", "a function call output holds text only")
            texts.append(chat_part["text"])
        output = "\n".join(texts)
    if not isinstance(output, str):
        raise _bad(f"{path}.output", "must be a string or an array of text parts")
    return {"role": "tool", "tool_call_id": _string(item, "call_id", path), "content": output}


def _reasoning_texts(item: dict, path: str) -> list[str]:
    texts = []
    for name in ("summary", "content"):
        parts = item.get(name) or []
        if not isinstance(parts, list):
            raise _bad(f"{path}.{name}", "must be an array")
        for index, part in enumerate(parts):
            text = part.get("text") if isinstance(part, dict) else None
            if not isinstance(text, str):
                raise _bad(f"{path}.{name}[{index}].text", "must be a string")
            texts.append(text)
    return texts


def _tools(tools: list, names: dict[str, tuple[str, str]]) -> list[dict]:
    """Function tools as chat tools; a namespace's functions flattened; built-ins refused."""
    out: list[dict] = []
    for index, tool in enumerate(tools):
        path = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _bad(path, "must be an object")
        kind = tool.get("type")
        if kind == "function":
            out.append(_function_tool(tool, path, None))
        elif kind == "namespace":
            namespace = _string(tool, "name", path)
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise _bad(f"{path}.tools", "must be an array of function tools")
            for position, function in enumerate(inner):
                where = f"{path}.tools[{position}]"
                if not isinstance(function, dict) or function.get("type") != "function":
                    raise _bad(f"{where}.type", "a namespace holds function tools only")
                chat_tool = _function_tool(function, where, namespace)
                names[chat_tool["function"]["name"]] = (namespace, function["name"])
                out.append(chat_tool)
        else:
            hint = ' (in Codex, set web_search = "disabled")' if kind == "web_search" else ""
            raise _bad(f"{path}.type", f"the built-in tool '{str(kind)[:40]}' cannot run "
                       f"on this gateway; send function tools only{hint}")
    return out


def _function_tool(tool: dict, path: str, namespace: str | None) -> dict:
    name = _string(tool, "name", path)
    function: dict = {"name": f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name}
    if tool.get("description") is not None:
        if not isinstance(tool["description"], str):
            raise _bad(f"{path}.description", "must be a string")
        function["description"] = tool["description"]
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise _bad(f"{path}.parameters", "must be a JSON schema object")
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict, flat: dict) -> str | dict:
    if isinstance(choice, str):
        if choice not in _CHOICES:
            raise _bad("tool_choice", f"must be one of {', '.join(_CHOICES)} or a function")
        return choice
    if choice.get("type") != "function":
        raise _bad("tool_choice.type", "only 'function' is supported by this gateway")
    name = _string(choice, "name", "tool_choice")
    return {"type": "function", "function": {"name": name}}


def _format(spec) -> dict | None:
    """`text.format` as the chat `response_format` (None for plain text)."""
    if not isinstance(spec, dict):
        raise _bad("text.format", "must be an object")
    kind = spec.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise _bad("text.format.schema", "must be a JSON schema object")
        inner: dict = {"name": _string(spec, "name", "text.format"), "schema": schema}
        for name in ("description", "strict"):
            if spec.get(name) is not None:
                inner[name] = spec[name]
        return {"type": "json_schema", "json_schema": inner}
    raise _bad("text.format.type", "must be text, json_object or json_schema")


def _reasoning(reasoning, body: dict, model: Model, provider: Provider) -> None:
    """`reasoning.effort` as the provider's thinking switch; the hold rules apply after."""
    if not isinstance(reasoning, dict) or reasoning.get("effort") is None:
        return
    effort = reasoning["effort"]
    if effort not in _EFFORTS:
        raise _bad("reasoning.effort", f"must be one of {', '.join(_EFFORTS)}")
    if not model.thinking:
        return
    if effort in ("none", "minimal"):
        body.update(provider.thinking_off)
    else:
        body["reasoning_effort"] = "high" if effort == "xhigh" else effort
