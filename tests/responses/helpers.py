"""Small helpers for Responses tests: a typed event stream read back, a request posted."""

from __future__ import annotations

import json


def typed_events(raw: bytes) -> list[dict]:
    """Parse a Responses SSE body into its events; each `event:` line must match its type."""
    events = []
    for block in raw.decode().split("\n\n"):
        lines = block.split("\n")
        data = [line[5:].lstrip() for line in lines if line.startswith("data:")]
        if not data:
            continue
        event = json.loads("\n".join(data))
        names = [line[6:].strip() for line in lines if line.startswith("event:")]
        assert names == [event["type"]], block
        events.append(event)
    return events


def post(client, acct, body: dict, **headers):
    """POST /v1/responses with the account's key, the body read whole."""
    return client.post("/v1/responses", headers={**acct.headers, **headers}, json=body,
                       buffered=True)


_DELTAS = {"response.output_text.delta": "text",
           "response.reasoning_summary_text.delta": "text",
           "response.function_call_arguments.delta": "arguments",
           "response.refusal.delta": "refusal"}


def output_items(events: list[dict]) -> list[dict]:
    """The output items a client rebuilds from a stream's events, each with the text of its
    deltas (`arguments` for a function call, else `text`), how many it took, and the item
    output_item.done gave; asserts each item was added once at the next output_index, got
    deltas only while it was the open one, and was done before the next was added and before
    the response ended (a failure may leave the last in progress)."""
    items: list[dict] = []
    open_index = None
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert open_index is None, f"item {event['output_index']} added while " \
                f"{open_index} is open"
            assert event["output_index"] == len(items), event
            open_index = event["output_index"]
            items.append({**event["item"], "deltas": 0, "done": None})
        elif kind in _DELTAS:
            assert event["output_index"] == open_index, event
            item = items[open_index]
            assert event["item_id"] == item["id"], event
            item["deltas"] += 1
            field = _DELTAS[kind]
            item[field] = (item.get(field) or "") + event["delta"]
        elif kind == "response.function_call_arguments.done":
            assert event["output_index"] == open_index, event
            assert event["arguments"] == items[open_index]["arguments"], event
        elif kind == "response.output_item.done":
            assert event["output_index"] == open_index, event
            items[open_index]["done"] = event["item"]
            open_index = None
        elif kind in ("response.completed", "response.incomplete"):
            assert open_index is None, f"{kind} while item {open_index} is open"
    return items
