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
