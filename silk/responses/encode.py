"""The relay's events as a Responses stream or a Response object; pure.

A stream's opening events (response.created, response.in_progress) go out in one write
with the first events the provider's answer makes (or its first keep-alive): like every
surface, a Responses stream sends nothing before the provider does, and a burst of streams
costs one write a stream fewer while its requests wait for their first tokens.

The finished Response, or the failed one of a stream the upstream broke, is handed to
`on_done` before the stream's last event goes out, so a client that continues from it at
once (previous_response_id) finds it stored.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable

from silk.relay.events import Chunk, Comment, Completion, Done, Failed, Flush
from silk.responses.answer import Builder, usage_object
from silk.sse import encode_comment


def encode_stream(events: Iterable, builder: Builder, *,
                  on_done: Callable[[dict], None] | None = None,
                  on_error: Callable[[], None] | None = None
                  ) -> Generator[bytes, None, None]:
    """Typed Responses events from the relay's chunks; `on_error` is called if encoding fails
    (the relay then settles the request as the gateway's error)."""
    try:
        head = builder.start()
        for out in _typed(events, builder, on_done):
            if head:
                out, head = head + out, b""
            yield out
    except Exception:
        if on_error is not None:
            on_error()
        raise


def _typed(events: Iterable, builder: Builder, on_done: Callable[[dict], None] | None
           ) -> Generator[bytes, None, None]:
    """Each relay event's typed events (b"" for a Flush)."""
    for event in events:
        if type(event) is Chunk:
            data = event.data
            if data is None:
                continue  # not JSON: nothing a Responses client could read
            choices = data.get("choices")
            for choice in choices if isinstance(choices, list) else ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    out = builder.delta(delta)
                    if out:
                        yield out
                if choice.get("finish_reason"):
                    builder.finish = str(choice["finish_reason"])
        elif type(event) is Flush:
            yield b""
        elif type(event) is Comment:
            yield encode_comment(event.text)
        elif type(event) in (Done, Failed):
            if type(event) is Done:
                final, closing = builder.done(event.bill)
            else:
                final, closing = builder.failed(event.message, event.bill,
                                                event.code if event.refused else "server_error")
            if on_done is not None:
                on_done(final)
            yield closing()


def encode_completion(completion: Completion, builder: Builder) -> dict:
    """The Response object for a whole chat answer, with the usage billed and its cost."""
    data = completion.data
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if isinstance(choice, dict):
        message = choice.get("message")
        if isinstance(message, dict):
            builder.delta(message)
        if choice.get("finish_reason"):
            builder.finish = str(choice["finish_reason"])
    final, _ = builder.done(completion.bill)
    return final


__all__ = ["encode_completion", "encode_stream", "usage_object"]
