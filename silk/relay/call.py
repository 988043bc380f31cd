"""What a surface asks the relay to run, and the upstream rules every surface's body obeys."""

from __future__ import annotations

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
    of thought unbounded, the route's reasoning budget is reserved too, or thinking is off:
    every switch that could turn it on is taken out and the provider's thinking_off sent.
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
