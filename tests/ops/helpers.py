"""Helpers for the operations tests: CSRF tokens from pages, log capture, metric samples."""

from __future__ import annotations

import logging
import re

import orjson

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    """The CSRF token a dashboard page embeds in its forms."""
    match = _CSRF_RE.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


def sign_in(client, key: str):
    """Sign the test client into the dashboard with `key`; returns the response."""
    page = client.get("/dashboard/login")
    return client.post("/dashboard/login", data={"api_key": key,
                                                  "csrf_token": csrf_from(page.text)})


class LogLines(logging.Handler):
    """Collect the gateway's JSON log lines, formatted exactly as they are written."""

    def __init__(self):
        from silk.ops.requestlog import JsonFormatter

        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def requests(self) -> list[dict]:
        """Every request line, decoded."""
        return [d for d in map(orjson.loads, self.lines) if d.get("msg") == "request"]


def sample(text: str, name: str, **labels) -> float:
    """Sum of a metric's samples in Prometheus text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def timed_events(base_url: str, key: str, text: str, *, on_event=None,
                 timeout: float = 60.0) -> tuple[int, dict, list[tuple[float, object]]]:
    """Stream a chat completion; return status, headers and (arrival time, payload) per event.

    Reads the socket as bytes arrive (no client-side buffering), so arrival times show what
    the server and any proxy in between really did. `on_event(index, payload)` runs as each
    event arrives, e.g. to reload servers while the stream is open.
    """
    import http.client
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    body = orjson.dumps({"model": "deepseek-chat", "stream": True,
                         "messages": [{"role": "user", "content": text}]})
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                          "Connection": "close"})
    response = conn.getresponse()
    headers = {k.lower(): v for k, v in response.getheaders()}
    events: list[tuple[float, object]] = []
    buffer = b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            break
        now = time.monotonic()
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            data = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
            if not data:
                continue
            payload = b"\n".join(data)
            decoded = payload.decode() if payload == b"[DONE]" else orjson.loads(payload)
            events.append((now, decoded))
            if on_event:
                on_event(len(events) - 1, decoded)
    conn.close()
    return response.status, headers, events


def content_of(events) -> list[tuple[float, str]]:
    """(arrival time, text) of each event that carries reply content."""
    out = []
    for at, payload in events:
        if isinstance(payload, dict):
            for choice in payload.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    out.append((at, text))
    return out
