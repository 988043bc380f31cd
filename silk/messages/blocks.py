"""The content blocks of a chat stream translated to Anthropic's events; pure.

Anthropic's blocks follow one another, and a stopped one never opens again, but a chat
stream may send a tool call's arguments after the next call has started. So a tool call's
block stays open until its arguments are a whole JSON object (then only whitespace, which
changes no input, could follow; a stopped call's block gets none), and a block that would
open meanwhile (the next call, text, thinking) waits, gathering its pieces. Waiting blocks
are sent whole, in the order they came, once the open call is whole or can grow no more: a
new call took its chat index, or the stream ended. Calls sent one after another, each whole
before the next starts, stream piece by piece. A broken stream sends its waiting blocks
before its error event, so the client holds every piece delivered and charged for; that
stops the call they waited for, cut short (as Anthropic stops a call that max_tokens cuts),
and the last block is left open, as Anthropic leaves the block an error cuts.
"""

from __future__ import annotations

import orjson

from silk.jsonio import dumps_bytes, whole_object

# The delta type and field of each kind of block; a tool_use block's are _JSON_DELTA.
_DELTAS = {"thinking": (b"thinking_delta", b"thinking"), "text": (b"text_delta", b"text")}
_JSON_DELTA = (b"input_json_delta", b"partial_json")


def event(kind: str, data: dict) -> bytes:
    """One server-sent event named as Anthropic names it."""
    return b"event: " + kind.encode() + b"\ndata: " + dumps_bytes(data) + b"\n\n"


class _Waiting:
    """A block kept back while a tool call's block is open and may still grow."""

    __slots__ = ("kind", "block", "pieces")

    def __init__(self, kind: str, block: dict):
        self.kind = kind
        self.block = block
        self.pieces: list[str] = []


class Blocks:
    """The content blocks of a translated stream: the open one, and those waiting for it."""

    __slots__ = ("index", "kind", "arguments", "waiting", "calls")

    def __init__(self) -> None:
        self.index = -1
        self.kind: str | None = None  # the open block's: thinking, text or tool<index>:<id>
        self.arguments: list[str] | None = None  # the open call's pieces, while it may grow
        self.waiting: list[_Waiting] = []  # only while the open block is such a call
        self.calls: dict[int, str] = {}  # chat tool call index -> its latest call's kind

    def close(self) -> bytes:
        """Stop the open block, if there is one."""
        if self.kind is None:
            return b""
        self.kind = None
        self.arguments = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def open(self, kind: str, block: dict) -> bytes:
        """Stop the open block and start another at the next index."""
        out = self.close()
        self.index += 1
        self.kind = kind
        if block["type"] == "tool_use":
            self.arguments = []
        return out + event("content_block_start", {"type": "content_block_start",
                                                   "index": self.index, "content_block": block})

    def write(self, text: str) -> bytes:
        """A delta of the open block, written directly: one per chunk of a stream."""
        kind, field = _DELTAS.get(self.kind or "", _JSON_DELTA)
        return (b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                b'"index":%d,"delta":{"type":"%s","%s":%s}}\n\n'
                % (self.index, kind, field, orjson.dumps(text)))

    def growing(self) -> bool:
        """Whether the open block is a tool call whose arguments may still grow."""
        return self.arguments is not None and not whole_object("".join(self.arguments))

    def start(self, kind: str, block: dict) -> bytes:
        """Open a block, or keep it waiting behind the open call while that may grow."""
        if self.waiting or self.growing():
            self.waiting.append(_Waiting(kind, block))
            return b""
        return self.open(kind, block)

    def piece(self, kind: str, text: str) -> bytes:
        """A piece of a block: written if it is open, kept if it waits, else not sent (a
        call's block stops once its arguments are whole: only whitespace may follow)."""
        if self.kind == kind:
            out = self.write(text)
            if self.arguments is not None:
                self.arguments.append(text)
                if self.waiting and text.rstrip().endswith("}"):
                    out += self.release()
            return out
        for waiting in reversed(self.waiting):
            if waiting.kind == kind:
                waiting.pieces.append(text)
                break
        return b""

    def text(self, kind: str, block: dict, text: str) -> bytes:
        """A text or thinking piece: the open or last waiting block of its kind, else a new one."""
        out = b""
        if self.kind != kind and not (self.waiting and self.waiting[-1].kind == kind):
            out = self.start(kind, block)
        return out + self.piece(kind, text)

    def call(self, position: int, kind: str, block: dict) -> bytes:
        """A new tool call's block; a call that had its chat index before grows no more."""
        out = b""
        if self.kind is not None and self.kind == self.calls.get(position):
            self.arguments = None
            out = self.release()
        self.calls[position] = kind
        return out + self.start(kind, block)

    def release(self, ending: bool = False) -> bytes:
        """Send waiting blocks whole, in turn, while the open block cannot grow (or at the end)."""
        out = b""
        while self.waiting and (ending or not self.growing()):
            waiting = self.waiting.pop(0)
            out += self.open(waiting.kind, waiting.block)
            if waiting.pieces:
                text = "".join(waiting.pieces)
                out += self.write(text)
                if self.arguments is not None:
                    self.arguments.append(text)
        return out

    def end(self) -> bytes:
        """Stop the open block and send every waiting one whole: nothing grows any more."""
        return self.release(ending=True) + self.close()

    def broken(self) -> bytes:
        """Send every waiting block before a broken stream's error; the last stays open."""
        return self.release(ending=True)
