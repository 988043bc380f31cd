"""Helpers for Messages tests: requests, SSE with event names, the fake's counts."""

from __future__ import annotations

import json

from tests.fakes.anthropic import prompt_tokens as native_prompt_tokens  # noqa: F401
from tests.fakes.upstream import count_prompt_tokens

HEADERS = {"anthropic-version": "2023-06-01"}


def request(text: str = "Hello there", directive: str = "", **extra) -> dict:
    """A one-turn Messages request, optionally steering the fake upstream."""
    content = f"{text} [[fake: {directive}]]" if directive else text
    return {"model": "deepseek-chat", "max_tokens": 1000,
            "messages": [{"role": "user", "content": content}], **extra}


def chat_prompt_tokens(body: dict) -> int:
    """The prompt the fake counts for a translated request (system first, as chat)."""
    from silk.messages.translate import to_chat_body

    return count_prompt_tokens(to_chat_body(body)["messages"])


def sse(raw: bytes) -> list[tuple[str, dict]]:
    """An Anthropic SSE body as (event name, data) pairs."""
    events = []
    for block in raw.decode().split("\n\n"):
        name = data = None
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
        if name is not None:
            events.append((name, data))
    return events
