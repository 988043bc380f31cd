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


def content_blocks(events: list[tuple[str, dict]]) -> list[dict]:
    """The content blocks a client rebuilds from a stream's events, each with its deltas'
    text (`partial_json` for tool_use, `text` or `thinking`) and how many deltas it took;
    asserts the sequence is one Anthropic allows: every block started once at the next index,
    deltas only while it is open, stopped before the next starts and before the message ends
    (an error may cut the last one)."""
    blocks: list[dict] = []
    open_index = None
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None, f"block {data['index']} starts while {open_index} is open"
            assert data["index"] == len(blocks), data
            open_index = data["index"]
            blocks.append({**data["content_block"], "deltas": 0})
        elif name == "content_block_delta":
            assert data["index"] == open_index, f"a delta for block {data['index']}, " \
                f"open: {open_index}"
            block = blocks[open_index]
            block["deltas"] += 1
            field = {"input_json_delta": "partial_json", "text_delta": "text",
                     "thinking_delta": "thinking"}[data["delta"]["type"]]
            block[field] = block.get(field, "") + data["delta"][field]
        elif name == "content_block_stop":
            assert data["index"] == open_index, data
            open_index = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None, f"{name} while block {open_index} is open"
    return blocks
