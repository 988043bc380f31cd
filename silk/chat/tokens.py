"""Token arithmetic the relay needs before and after the upstream speaks; pure."""

from __future__ import annotations

import orjson

PER_MESSAGE_OVERHEAD = 8  # role and separator tokens a chat template adds per message
PROMPT_FIELDS = ("messages", "tools", "functions", "response_format", "tool_choice")


def prompt_bound(body: dict, image_allowance: int) -> int:
    """An upper bound on prompt tokens: every byte a token, plus template and image allowances.

    A BPE token covers at least one byte of UTF-8, so the byte count of everything the
    model reads bounds the real count; images are priced by the provider, hence the allowance.
    """
    size = 0
    images = 0
    for name in PROMPT_FIELDS:
        if name in body:
            size += len(orjson.dumps(body[name]))
    for message in body.get("messages", ()):
        content = message.get("content")
        if isinstance(content, list):
            images += sum(1 for part in content if part.get("type") != "text")
    return size + PER_MESSAGE_OVERHEAD * len(body.get("messages", ())) + 64 + (
        images * image_allowance)


def estimate_text(text: str) -> int:
    """Guess the tokens of a text: about four ASCII characters or one CJK character each."""
    if not text:
        return 0
    if text.isascii():
        return (len(text) + 3) // 4
    wide = (len(text.encode("utf-8")) - len(text)) // 2
    narrow = max(0, len(text) - wide)
    return (narrow + 3) // 4 + wide


def prompt_estimate(body: dict) -> int:
    """A best guess (not a bound) of prompt tokens, for billing a stream cut before usage came."""
    total = 0
    for message in body.get("messages", ()):
        total += PER_MESSAGE_OVERHEAD // 2
        content = message.get("content")
        if isinstance(content, str):
            total += estimate_text(content)
        elif isinstance(content, list):
            for part in content:
                total += estimate_text(part.get("text") or "") if part.get(
                    "type") == "text" else 85
    return total


class DeliveredText:
    """Counts what reached the client, to estimate completion tokens if usage never comes."""

    __slots__ = ("tokens",)

    def __init__(self):
        self.tokens = 0

    def add_chunk(self, chunk: dict) -> None:
        """Count the text of one streamed chunk's deltas (whatever shape the provider sent)."""
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            for field in ("content", "reasoning_content"):
                value = delta.get(field)
                if isinstance(value, str):
                    self.tokens += estimate_text(value)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    arguments = function.get("arguments")
                    self.tokens += estimate_text(arguments if isinstance(arguments, str) else "")
                    self.tokens += 2 if function.get("name") else 0
