"""What a surface asks the relay to run, and the upstream rules every surface's body obeys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from silk.catalog.catalogue import Model, Provider

# The output limits the chat-completions dialect knows; the provider receives only the one
# it obeys.
LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")
# The fields by which a request switches a provider's thinking on or sizes it: OpenAI's
# effort, OpenRouter's `reasoning` object and `include_reasoning`, Qwen's (DashScope's,
# SiliconFlow's) `enable_thinking` and `thinking_budget`, and the `thinking` switch.
THINKING_SWITCHES = ("reasoning_effort", "reasoning", "include_reasoning", "enable_thinking",
                     "thinking_budget", "thinking")
# vLLM's and SGLang's switches, read by the model's chat template.
_TEMPLATE_SWITCHES = ("enable_thinking", "thinking")
# Where a client names a number of thinking tokens, besides Anthropic's
# `thinking.budget_tokens`, OpenRouter's `reasoning.max_tokens`, the chat template's
# `thinking_budget` (SGLang's), NVIDIA NIM's `nvext.max_thinking_tokens` and Gemini's
# `thinking_config.thinking_budget`: Qwen's (DashScope's) and vLLM's.
_BUDGETS = ("thinking_budget", "thinking_token_budget")
# Where Gemini's OpenAI endpoint reads its `thinking_config` (`thinking_budget`, or the
# `thinking_level` effort): inside the body's own `extra_body`, as its documents send it;
# the other two are the same object a client may send one or two levels up.
_THINKING_CONFIGS = (("extra_body", "google", "thinking_config"),
                     ("google", "thinking_config"), ("thinking_config",))
# An effort names no number of tokens; only the one that asks for no thinking is sent.
_EFFORT_OFF = "none"


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream call: the catalogue model, the body to send, and the bounds of its hold."""

    model: Model
    body: bytes  # in the provider's chat-completions dialect, ready to send
    stream: bool
    prompt_bound: int  # no prompt can be longer: the hold is sized from it
    prompt_estimate: int  # a best guess, billed if a stream is cut before usage came
    max_output: int  # output tokens the upstream may produce, reasoning included
    surface: str  # the public API that asked: a label for the usage record
    # The upstream's dialect: "chat" (chat completions, every provider) or "anthropic"
    # (Anthropic Messages, where the provider serves it natively).
    dialect: str = "chat"


def bound_body(body: dict, model: Model, provider: Provider, *, limit: int,
               stream: bool) -> int:
    """Rewrite a chat-completions body for the provider in place; return its output bound.

    The bound reserved is the bound sent: one limit, in the field the provider obeys
    (silk.defaults.PROVIDERS), times the choices asked for. Where that field leaves the chain
    of thought unbounded, the route's reasoning budget is reserved too, the client may not
    size the thinking past it (_bound_thinking) and the budget is sent where the provider
    reads it (_send_budget), or thinking is off: every switch that could turn it on is taken
    out and the provider's thinking_off sent.
    A stream always asks for the final usage, which the request is billed from.
    """
    body["model"] = model.upstream
    body.update(model.extra_body)  # the catalogue's route is the operator's word
    for name in LIMIT_FIELDS:
        body.pop(name, None)
    reasoning = 0
    if model.thinking and not provider.limit_covers_reasoning:
        if model.reasoning_budget:
            reasoning = model.reasoning_budget
            _bound_thinking(body, reasoning, model.extra_body)
            if provider.budget_field:  # config refuses a budget on a provider without one
                _send_budget(body, provider.budget_field, reasoning)
        else:  # nothing would bound the thinking: there is none
            for name in THINKING_SWITCHES:
                body.pop(name, None)
            kwargs = body.get("chat_template_kwargs")
            if isinstance(kwargs, dict) and not kwargs.keys().isdisjoint(_TEMPLATE_SWITCHES):
                body["chat_template_kwargs"] = {name: value for name, value in kwargs.items()
                                                if name not in _TEMPLATE_SWITCHES}
            body.update(provider.thinking_off)
    body[provider.limit_field] = limit
    choices = body.get("n") or 1
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body["stream"] = False
        body.pop("stream_options", None)
    return (limit + reasoning) * choices


def _bound_thinking(body: dict, budget: int, route: Mapping) -> None:
    """Size a client's thinking within the route's budget, in place, whichever key the
    provider reads.

    A budget the client names is capped at the route's in its own key; an effort names
    none, so only `none` is sent; OpenRouter's `reasoning` object, sized by an effort
    unless it has `max_tokens`, gets one unless it switches thinking off, and its
    `include_reasoning: true` (thinking at the default effort) is not sent, nor is Gemini's
    `thinking_level`. What the route's extra_body sets is the operator's and stays as it is
    (but for the provider's own budget key: _send_budget).
    """
    if "reasoning_effort" not in route and body.get("reasoning_effort") != _EFFORT_OFF:
        body.pop("reasoning_effort", None)
    if "include_reasoning" not in route:
        body.pop("include_reasoning", None)
    for name in _BUDGETS:
        if name in body and name not in route:
            body[name] = _capped(body[name], budget)
    thinking = body.get("thinking")
    if "thinking" not in route and isinstance(thinking, dict) and "budget_tokens" in thinking:
        body["thinking"] = {**thinking, "budget_tokens": _capped(thinking["budget_tokens"],
                                                                   budget)}
    reasoning = body.get("reasoning")
    if "reasoning" not in route and "reasoning" in body:
        if isinstance(reasoning, dict):
            body["reasoning"] = _bounded_reasoning(reasoning, budget)
        else:
            del body["reasoning"]
    kwargs = body.get("chat_template_kwargs")
    if "chat_template_kwargs" not in route and isinstance(kwargs, dict):
        kwargs = {name: value for name, value in kwargs.items()
                  if name != "reasoning_effort" or value == _EFFORT_OFF}
        if "thinking_budget" in kwargs:
            kwargs["thinking_budget"] = _capped(kwargs["thinking_budget"], budget)
        body["chat_template_kwargs"] = kwargs
    nvext = _inner(body, ("nvext",), make=False) if "nvext" not in route else None
    if nvext is not None and "max_thinking_tokens" in nvext:
        nvext["max_thinking_tokens"] = _capped(nvext["max_thinking_tokens"], budget)
    for path in _THINKING_CONFIGS:
        config = _inner(body, path, make=False) if path[0] not in route else None
        if config is not None:
            config.pop("thinking_level", None)
            if "thinking_budget" in config:
                config["thinking_budget"] = _capped(config["thinking_budget"], budget)


def _send_budget(body: dict, field: str, budget: int) -> None:
    """The model's budget in the provider's own budget key (`field`, a dotted path), in
    place, so that the provider thinks no more than the hold covers whatever else the
    client or the route's extra_body sends: a whole number from 1 to the budget there is
    kept, anything else becomes the budget. Objects on the way are made where missing or
    not objects. It goes even beside a switch that turns thinking off: which switch a
    provider obeys over a budget is its own."""
    *parents, name = field.split(".")
    where = _inner(body, parents, make=True)
    if where is not None:  # always, being made where missing
        where[name] = _capped(where.get(name), budget)


def _inner(body: dict, path: Sequence[str], *, make: bool) -> dict | None:
    """The object at `path` in `body` (`body` itself for none), each object on the way
    copied so that the route's extra_body, merged in by reference, is never changed; one
    missing or not an object is made empty if `make`, else there is none (None)."""
    where = body
    for part in path:
        inner = where.get(part)
        if not isinstance(inner, Mapping):
            if not make:
                return None
            inner = {}
        copied = dict(inner)
        where[part] = copied
        where = copied
    return where


def _bounded_reasoning(reasoning: dict, budget: int) -> dict:
    """OpenRouter's `reasoning` object sized by `max_tokens` within the budget, no effort
    but `none`; one that switches thinking off stays off."""
    kept = {name: value for name, value in reasoning.items()
            if name != "effort" or value == _EFFORT_OFF}
    off = kept.get("enabled") is False or (kept.get("effort") == _EFFORT_OFF
                                           and kept.get("enabled") is not True)
    if not off or "max_tokens" in kept:
        kept["max_tokens"] = _capped(kept.get("max_tokens"), budget)
    return kept


def _capped(value, budget: int) -> int:
    """A client's thinking budget kept if a whole number from 1 to `budget`, else `budget`
    (Gemini's -1 asks for dynamic thinking, and what 0 means differs between providers)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= budget:
        return value
    return budget
