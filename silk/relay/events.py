"""What the relay reports to a surface: surface-neutral events, encoded by the surface.

A streamed chunk keeps the upstream's bytes beside its parsed form, so a surface that passes
it on unchanged (chat) sends those bytes without encoding them again.
"""

from __future__ import annotations

from dataclasses import dataclass

from silk.metering.meter import Bill


class Chunk:
    """One upstream data event: its bytes, and the JSON object they hold (None if not one).

    `counted` is true when the chunk's usage object was read as the counts to bill.
    """

    __slots__ = ("payload", "data", "counted")

    def __init__(self, payload: bytes, data: dict | None, counted: bool = False):
        self.payload = payload
        self.data = data
        self.counted = counted


@dataclass(frozen=True, slots=True)
class Comment:
    """An SSE comment from the upstream (a keep-alive), worth passing through proxies."""

    text: bytes


class Flush:
    """The events of one upstream read that carried several have all been handed out.

    A surface yields b"" for it: what it encoded from that read then goes to the client in
    one write (silk.relay.surface.SurfaceStream), before the relay waits for the next read.
    """

    __slots__ = ()


FLUSH = Flush()


@dataclass(frozen=True, slots=True)
class Done:
    """The upstream finished its answer; the request is settled."""

    bill: Bill


@dataclass(frozen=True, slots=True)
class Failed:
    """The stream ended early (`reason`: cut, timeout, upstream_error, revoked); it is
    settled."""

    reason: str
    message: str  # what went wrong, for the client; the surface adds what was charged
    code: str
    bill: Bill

    @property
    def refused(self) -> bool:
        """The client's access ended (its key revoked, its account disabled), not the
        provider's answer: the surface says so as its authentication error."""
        return self.reason == "revoked"


@dataclass(frozen=True, slots=True)
class Completion:
    """A non-streaming answer: the upstream's JSON, settled.

    `counted` is true when its usage object was read as the counts to bill.
    """

    data: dict
    counted: bool
    bill: Bill


Event = Chunk | Comment | Flush | Done | Failed
