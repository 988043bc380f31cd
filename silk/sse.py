"""Pure server-sent events: split a byte stream into events and encode events back."""

from __future__ import annotations

import re

DONE = b"[DONE]"
# What ends a line for an SSE reader: CRLF, a lone CR or LF. The parser splits only at LF,
# so a CR may be left inside a line it passes on.
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


MAX_EVENT = 8 * 1024 * 1024  # bytes of one pending line or event, unless told otherwise


class EventTooLarge(ValueError):
    """One line or event outgrew the parser's bound: the stream is treated as broken."""


class SSEParser:
    """Incremental parser: feed bytes as they arrive, get complete events out.

    Yields ("data", payload) for each event's data (multi-line data joined by newlines) and
    ("comment", text) for comment lines such as DeepSeek's `: keep-alive`.

    Work is linear in the bytes fed however they are cut: only new bytes are searched for a
    newline, and a partial line waits in a bytearray that grows in place. A line or an event
    larger than `max_event` bytes raises EventTooLarge instead of buffering without end.
    """

    __slots__ = ("_partial", "_data", "_data_size", "max_event")

    def __init__(self, max_event: int = MAX_EVENT):
        self._partial = bytearray()
        self._data: list[bytes] = []
        self._data_size = 0
        self.max_event = max_event

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """Consume a chunk and return the events it completes."""
        events: list[tuple[str, bytes]] = []
        end = chunk.find(b"\n")
        if end < 0:
            self._keep(chunk)
            return events
        if self._partial:
            self._keep(chunk[:end])
            line, self._partial = self._partial, bytearray()
        else:
            line = chunk[:end]
        self._line(line, events)
        start = end + 1
        while (end := chunk.find(b"\n", start)) >= 0:
            self._line(chunk[start:end], events)
            start = end + 1
        if start < len(chunk):
            self._keep(chunk[start:] if start else chunk)
        return events

    def _keep(self, piece: bytes) -> None:
        """Hold the start of a line until its newline arrives."""
        self._partial += piece
        if len(self._partial) > self.max_event:
            self._partial.clear()
            raise EventTooLarge(f"an upstream line exceeds {self.max_event} bytes")

    def _line(self, line: bytes | bytearray, events: list[tuple[str, bytes]]) -> None:
        """Act on one line; a long line is copied once, from where its value starts."""
        stop = len(line) - 1 if line.endswith(b"\r") else len(line)
        if not stop:
            if self._data:
                events.append(("data", b"\n".join(self._data)))
                self._data = []
                self._data_size = 0
        elif line.startswith(b"data:"):
            start = 6 if line.startswith(b"data: ") else 5
            # a line cut from the chunk is bytes: one slice copies it; a joined partial line
            # is a bytearray, copied once through a view
            value = (line[start:stop] if type(line) is bytes
                     else bytes(memoryview(line)[start:stop]))
            self._data_size += len(value) + 1
            if self._data_size > self.max_event:
                self._data, self._data_size = [], 0
                raise EventTooLarge(f"an upstream event exceeds {self.max_event} bytes")
            self._data.append(value)
        elif line.startswith(b":"):
            events.append(("comment", bytes(line[1:stop]).strip()))
        # event:, id: and retry: fields carry nothing the chat protocol uses.

    def flush(self) -> list[tuple[str, bytes]]:
        """Return an event left unterminated when the stream ended (a cut stream)."""
        events: list[tuple[str, bytes]] = []
        if self._partial.strip():
            line, self._partial = self._partial, bytearray()
            self._line(line, events)
        if self._data:
            events.append(("data", b"\n".join(self._data)))
            self._data = []
            self._data_size = 0
        return events


def data_field(payload: bytes) -> bytes:
    """A payload as `data:` lines, one per line of it (no final newline).

    An upstream may write one event's data over several lines, as SSE allows (the parser
    joins them with newlines, which JSON reads as whitespace): written on one line, each
    newline would end the field early for the client, and a CR, which the parser leaves
    inside a line, would too. A reader joins the lines back with newlines.
    """
    if b"\n" in payload or b"\r" in payload:
        payload = _LINE_BREAK.sub(b"\ndata: ", payload)
    return b"data: " + payload


def encode_data(payload: bytes) -> bytes:
    """Frame one data payload as an SSE event."""
    return data_field(payload) + b"\n\n"


def encode_comment(text: bytes) -> bytes:
    """Frame a comment (used to pass keep-alives through proxies); a CR the parser left in
    it starts another comment line, never a field the client would read."""
    if b"\r" in text or b"\n" in text:
        text = _LINE_BREAK.sub(b"\n: ", text)
    return b": " + text + b"\n\n"


DONE_EVENT = encode_data(DONE)
