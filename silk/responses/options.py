"""The request's options as chat-completions fields; pure.

Function tools (a namespace's tools flattened as `namespace__name`), `tool_choice`,
`text.format` as `response_format`, and `reasoning.effort` as the provider's thinking
switch. A built-in tool the gateway cannot run is a 400 naming it.
"""

from __future__ import annotations

from silk.catalog.catalogue import Model, Provider
from silk.errors import InvalidRequest

_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_CHOICES = ("auto", "none", "required")
NAMESPACE_SEPARATOR = "__"


def bad(path: str, message: str) -> InvalidRequest:
    """The 400 naming the field at `path`."""
    return InvalidRequest(f"Invalid '{path}': {message}.", param=path)


def string(item: dict, name: str, path: str) -> str:
    """A non-empty string field of `item`, or the 400 naming it."""
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise bad(f"{path}.{name}", "must be a non-empty string")
    return value


def tools_for(tools: list, names: dict[str, tuple[str, str]]) -> list[dict]:
    """Function tools as chat tools; a namespace's functions flattened; built-ins refused."""
    out: list[dict] = []
    for index, tool in enumerate(tools):
        path = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise bad(path, "must be an object")
        kind = tool.get("type")
        if kind == "function":
            out.append(_function_tool(tool, path, None))
        elif kind == "namespace":
            namespace = string(tool, "name", path)
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise bad(f"{path}.tools", "must be an array of function tools")
            for position, function in enumerate(inner):
                where = f"{path}.tools[{position}]"
                if not isinstance(function, dict) or function.get("type") != "function":
                    raise bad(f"{where}.type", "a namespace holds function tools only")
                chat_tool = _function_tool(function, where, namespace)
                names[chat_tool["function"]["name"]] = (namespace, function["name"])
                out.append(chat_tool)
        elif not isinstance(kind, str) or not kind:
            raise bad(f"{path}.type", "is required: a tool's type, such as function")
        else:
            hint = ' (in Codex, set web_search = "disabled")' if kind == "web_search" else ""
            raise bad(f"{path}.type", f"the built-in tool '{str(kind)[:40]}' cannot run "
                       f"on this gateway; send function tools only{hint}")
    return out


def _function_tool(tool: dict, path: str, namespace: str | None) -> dict:
    name = string(tool, "name", path)
    function: dict = {"name": f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name}
    if tool.get("description") is not None:
        if not isinstance(tool["description"], str):
            raise bad(f"{path}.description", "must be a string")
        function["description"] = tool["description"]
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise bad(f"{path}.parameters", "must be a JSON schema object")
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def tool_choice(choice: str | dict) -> str | dict:
    """`tool_choice` as chat's: a mode, or one function by name."""
    if isinstance(choice, str):
        if choice not in _CHOICES:
            raise bad("tool_choice", f"must be one of {', '.join(_CHOICES)} or a function")
        return choice
    if choice.get("type") != "function":
        raise bad("tool_choice.type", "only 'function' is supported by this gateway")
    name = string(choice, "name", "tool_choice")
    return {"type": "function", "function": {"name": name}}


def response_format(spec) -> dict | None:
    """`text.format` as the chat `response_format` (None for plain text)."""
    if not isinstance(spec, dict):
        raise bad("text.format", "must be an object")
    kind = spec.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise bad("text.format.schema", "must be a JSON schema object")
        inner: dict = {"name": string(spec, "name", "text.format"), "schema": schema}
        for name in ("description", "strict"):
            if spec.get(name) is not None:
                inner[name] = spec[name]
        return {"type": "json_schema", "json_schema": inner}
    raise bad("text.format.type", "must be text, json_object or json_schema")


def thinking(reasoning, body: dict, model: Model, provider: Provider) -> None:
    """`reasoning.effort` as the provider's thinking switch; the hold rules apply after."""
    if not isinstance(reasoning, dict) or reasoning.get("effort") is None:
        return
    effort = reasoning["effort"]
    if effort not in _EFFORTS:
        raise bad("reasoning.effort", f"must be one of {', '.join(_EFFORTS)}")
    if not model.thinking:
        return
    if effort in ("none", "minimal"):
        body.update(provider.thinking_off)
    else:
        body["reasoning_effort"] = "high" if effort == "xhigh" else effort
