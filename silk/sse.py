"""Pure server-sent events: split a byte stream into events and encode events back."""

from __future__ import annotations

DONE = b"[DONE]"


class SSEParser:
    """Incremental parser: feed bytes as they arrive, get complete events out.

    Yields ("data", payload) for each event's data (multi-line data joined by newlines) and
    ("comment", text) for comment lines such as DeepSeek's `: keep-alive`.
    """

    __slots__ = ("_buffer", "_data")

    def __init__(self):
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """Consume a chunk and return the events it completes."""
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[tuple[str, bytes]] = []
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(("data", b"\n".join(self._data)))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b":"):
                events.append(("comment", line[1:].strip()))
            # event:, id: and retry: fields carry nothing the chat protocol uses.
        self._buffer = buffer[start:]
        return events

    def flush(self) -> list[tuple[str, bytes]]:
        """Return an event left unterminated when the stream ended (a cut stream)."""
        if self._buffer.strip():
            self.feed(b"\n\n")
        events = []
        if self._data:
            events.append(("data", b"\n".join(self._data)))
            self._data = []
        return events


def encode_data(payload: bytes) -> bytes:
    """Frame one data payload as an SSE event."""
    return b"data: " + payload + b"\n\n"


def encode_comment(text: bytes) -> bytes:
    """Frame a comment (used to pass keep-alives through proxies)."""
    return b": " + text + b"\n\n"


DONE_EVENT = encode_data(DONE)
