"""Relay an upstream stream as events as it arrives; the Meter settles it however it ends.

The stream holds no database connection; settling opens its own short transaction when the
stream ends, in a `finally`, so a client that leaves still settles its request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator

import orjson
import requests

from silk.metering.meter import Meter
from silk.ops import metrics
from silk.relay import anthropic
from silk.relay.events import FLUSH, Chunk, Comment, Done, Event, Failed
from silk.relay.pace import pace
from silk.relay.revocation import NOT_WATCHED, Watch
from silk.relay.tokens import delivered_tokens, usage_from
from silk.sse import DONE, MAX_EVENT, SSEParser
from silk.upstream.dialects import scrub

log = logging.getLogger("silk.relay")

_READ_SIZE = 65536
Ending = tuple[str, str, str]  # how a stream ends: reason, message, error code
_CUT = ("cut", "The provider ended the stream early.", "upstream_stream_cut")
_TIMEOUT = ("timeout", "The provider stopped sending in time.", "upstream_timeout")


def lenient(payload: bytes) -> dict | None:
    """An event orjson refuses that Python's json reads (NaN or -Infinity, as some servers
    write a logprob; half of a split emoji): still the provider's event, and its text
    reaches the client, so it is counted. A lone surrogate, which no surface could write
    back, reads as U+FFFD. None if it is no JSON object."""
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            return None
        try:
            orjson.dumps(data)
        except orjson.JSONEncodeError:  # a lone surrogate (or nesting orjson cannot write)
            text = json.dumps(data, ensure_ascii=False)
            data = json.loads(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
            orjson.dumps(data)
    except (ValueError, RecursionError, orjson.JSONEncodeError):
        return None
    return data


class Batch:
    """Open while the relay hands out the events of one upstream read that carried several;
    a Flush follows the last of them, before the next read or the settlement."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = False


class RelayStream:
    """A stream's events: iterate them; closing it settles even if it was never iterated.

    A WSGI server calls `close()` when the client is gone; a generator closed before it
    started runs no `finally`, so the hold and the upstream connection are released here.
    `batch` says whether more events of the current upstream read are to come. `watch`
    ends the stream once its key no longer serves (silk.relay.revocation).

    On a provider that bills reasoning it never streams (the Meter's `hides_reasoning`),
    its final usage is the only count of it, and no output yet is no measure of what it
    made (a model may think for long, billed, before its first visible token). A client
    that leaves does not close the upstream then: the rest is read (nothing is sent) until
    its usage and end, within the read timeout, and the provider's count is billed, capped
    by the hold as always. A stream whose key no longer serves is read on the same way, its
    client sent nothing more until the failure event that tells it the provider's count.
    """

    def __init__(self, response: requests.Response, meter: Meter, upstream_model: str,
                 max_event: int = MAX_EVENT, dialect: str = "chat",
                 watch: Watch = NOT_WATCHED):
        self._response = response
        self._meter = meter
        self._watch = watch
        self.batch = Batch()
        relay = _relay_anthropic if dialect == "anthropic" else _relay
        self._events = relay(response, meter, upstream_model, max_event, self.batch, watch)

    def __iter__(self) -> Iterator[Event]:
        return self._events

    def close(self) -> None:
        """End the stream now: stop relaying (or read on to the provider's usage, where it
        hides its reasoning), settle if nobody did, close the upstream."""
        meter = self._meter
        try:
            if meter.hides_reasoning and not meter.finished:
                self._read_to_the_end()
        finally:
            self._events.close()
            self._watch.close()
            if not meter.finished:
                meter.ended("client_gone")
                self._response.close()

    def _read_to_the_end(self) -> None:
        """Relay the rest to nobody: the relay settles once the upstream ends, cut or timed
        out included, and bills its usage if it came.

        It runs in the request's greenlet, inside the WSGI server's close, so the worker's
        other requests go on, the request still counts as served (silk.inflight), and a
        gunicorn worker told to stop waits for it as for any open request (its
        graceful_timeout); one killed meanwhile settles from what was delivered, in the
        relay's `finally`.
        """
        self._meter.left()
        try:
            for _event in self._events:
                pass
        except Exception:  # noqa: BLE001 - the relay settled in its finally; nobody to tell
            log.exception("reading a left stream to its usage failed",
                          extra={"fields": {"request_id": self._meter.hold.request_id}})

    def abort(self) -> None:
        """End the stream because the surface failed to encode it: the gateway's error."""
        self._meter.ended("error")
        self._events.close()
        self._response.close()


def _read(raw, parser: SSEParser,
          meter: Meter) -> tuple[list[tuple[str, bytes]], Ending | None]:
    """The events of the stream's next upstream read, or why there are none (cut or timeout).

    Once the stream has delivered output the read is paced while the worker runs late
    (silk.relay.pace); the first output is never held.
    """
    if meter.delivered_tokens:
        pace.wait()
    try:
        chunk = raw.read1(_READ_SIZE)
        events = parser.feed(chunk)  # EventTooLarge (a ValueError) is a cut
    except (requests.Timeout, TimeoutError):
        return [], _TIMEOUT
    except (requests.RequestException, OSError, ValueError):
        return [], _CUT
    return (events, None) if chunk else ([], _CUT)


def _relay(response: requests.Response, meter: Meter, upstream_model: str,
           max_event: int, batch: Batch, watch: Watch) -> Generator[Event, None, None]:
    """Yield upstream events as they arrive; settle in `finally`, however the stream ends.

    Usage is recorded from every chunk that carries it (a provider may repeat it, or put the
    running total in every chunk); the Meter bills each count at its largest. The events of
    a read that carried several are handed out with `batch.open`, then a Flush. Before each
    read, a stream whose `watch` was marked checks its key; one that no longer serves ends
    as `revoked`, billed for what was delivered, or, where the provider hides its reasoning
    (billed, and counted only by its final usage), sends nothing more and is read on to that
    usage before it ends so: else revoking one's own key mid-thought would leave the
    thinking unpaid. Such a stream looks at its mark after each read too, so the answer
    that ends a long unseen thought does not reach a key revoked meanwhile.
    """
    parser = SSEParser(max_event)
    raw = response.raw
    failure: Ending | None = None
    done = False
    first = True
    withheld: Ending | None = None  # the key's ending, the rest read unsent
    metrics.stream_opened(meter.hold.model)
    try:
        while not done:
            if watch.check and not withheld:  # its key or account changed: still serving?
                failure, withheld = _verdict_before(watch, meter)
                if failure:
                    break
            events, failure = _read(raw, parser, meter)
            if failure:
                break
            if watch.check and not withheld:  # marked during the read
                withheld = _withheld_after(watch, meter)
            several = len(events) > 1
            batch.open = several
            for kind, payload in events:
                if kind == "comment":
                    if not withheld:
                        yield Comment(payload)
                    continue
                if payload == DONE:
                    done = True
                    break
                try:
                    data = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    data = lenient(payload)
                    if data is None:
                        if not withheld:  # not ours to judge; the client sees it
                            yield Chunk(payload, None)
                        continue
                if not isinstance(data, dict):
                    if not withheld:
                        yield Chunk(payload, None)
                    continue
                if "error" in data and "choices" not in data:
                    failure = ("upstream_error", _reported_error(data), "upstream_error")
                    break
                if first:
                    first = False
                    meter.first_token(str(data.get("model") or upstream_model))
                if data.get("choices"):
                    meter.delivered(delivered_tokens(data))
                usage = data.get("usage")
                if usage is None:
                    if not withheld:
                        yield Chunk(payload, data)
                    continue
                parsed = usage_from(usage)
                if parsed:
                    meter.usage_seen(*parsed)
                if not withheld:
                    yield Chunk(payload, data, parsed is not None)
            if several:
                batch.open = False
                if not withheld:
                    yield FLUSH
            if failure:
                break
        if withheld:  # the provider's usage came, or never will
            reason, message, code = withheld
            yield Failed(reason, message, code, meter.ended(reason))
        elif done:
            yield Done(meter.ended("done"))
        else:
            reason, message, code = failure or _CUT
            yield Failed(reason, message, code, meter.ended(reason))
    except GeneratorExit:
        meter.ended("client_gone")
        raise
    finally:
        # Settle before anything else that could be interrupted (closing the upstream may
        # wait a moment for the rest of its answer).
        if not meter.finished:  # an unexpected exception inside this generator
            meter.ended("error")
        response.close()
        watch.close()
        metrics.stream_closed(meter.hold.model)


def _verdict_before(watch: Watch, meter: Meter) -> tuple[Ending | None, Ending | None]:
    """Before a read of a marked stream: (the ending that stops it now, the ending that has
    the rest read unsent). A key that no longer serves ends the stream at once, but where
    the provider hides its reasoning, which only its final usage counts, the stream is read
    on to that usage unsent, so that revoking one's own key mid-thought cannot leave the
    thinking unpaid."""
    ending = watch.verdict()
    if ending and meter.hides_reasoning:
        meter.left(ending[0])
        return None, ending
    return ending, None


def _withheld_after(watch: Watch, meter: Meter) -> Ending | None:
    """After a read, where the provider hides its reasoning: the key's ending if it was
    marked meanwhile and no longer serves (the read's events are then not sent), else None.

    A mark made while the relay waited in its read (the model thinking unseen, for minutes
    maybe) is otherwise looked at only before the next one, and this read's answer would
    reach the revoked key first. Charging is unchanged: the provider's usage counts it.
    """
    if not meter.hides_reasoning:
        return None
    ending = watch.verdict()
    if ending:
        meter.left(ending[0])
    return ending


def _reported_error(data: dict) -> str:
    """The message of an error event the provider sent inside its stream, scrubbed."""
    message = ""
    if isinstance(data["error"], dict):
        message = str(data["error"].get("message") or "")
    return f"The provider reported an error mid-stream: {scrub(message)}"


def _relay_anthropic(response: requests.Response, meter: Meter, upstream_model: str,
                     max_event: int, batch: Batch,
                     watch: Watch) -> Generator[Event, None, None]:
    """`_relay` for a provider answering in Anthropic Messages events.

    `message_stop` ends the answer (it is not passed on: the surface ends its stream on
    Done); an `error` event is the provider's failure. Usage is recorded when an event
    carries output counts (`message_delta`'s are cumulative), with the input counts of
    `message_start`, so a stream cut before them is billed from what was delivered.
    """
    parser = SSEParser(max_event)
    raw = response.raw
    failure: Ending | None = None
    done = False
    first = True
    seen: dict = {}
    delivery = anthropic.Delivery()
    withheld: Ending | None = None  # the key's ending, the rest read unsent
    metrics.stream_opened(meter.hold.model)
    try:
        while not done:
            if watch.check and not withheld:  # its key or account changed: still serving?
                failure, withheld = _verdict_before(watch, meter)
                if failure:
                    break
            events, failure = _read(raw, parser, meter)
            if failure:
                break
            if watch.check and not withheld:  # marked during the read
                withheld = _withheld_after(watch, meter)
            several = len(events) > 1
            batch.open = several
            for kind, payload in events:
                if kind == "comment":
                    if not withheld:
                        yield Comment(payload)
                    continue
                try:
                    data = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue  # not an event of the dialect: nothing a client could read
                if not isinstance(data, dict):
                    continue
                what = data.get("type")
                if what == "message_stop":
                    done = True
                    break
                problem = anthropic.error_message(data)
                if problem is not None:
                    failure = ("upstream_error", "The provider reported an error mid-stream: "
                               + scrub(problem), "upstream_error")
                    break
                if first:
                    first = False
                    message = data.get("message")
                    model = message.get("model") if isinstance(message, dict) else None
                    meter.first_token(str(model or upstream_model))
                counted = False
                if what == "message_start" and isinstance(data.get("message"), dict):
                    anthropic.merge_usage(seen, data["message"].get("usage"), output=False)
                    prompt = anthropic.input_from(seen)
                    if prompt is not None:
                        meter.prompt_seen(prompt)
                    # The answer began: the client holds message_start (its content, [] as a
                    # rule), so a stream ending now bills the prompt, as a chat stream's
                    # first chunk does.
                    meter.delivered(anthropic.message_delivered(data["message"]))
                elif what == "message_delta":
                    anthropic.merge_usage(seen, data.get("usage"))
                    parsed = anthropic.usage_from(seen)
                    if parsed:
                        meter.usage_seen(*parsed)
                        counted = True
                else:
                    tokens = delivery.tokens(data)
                    if tokens or what == "content_block_delta":
                        meter.delivered(tokens)
                if not withheld:
                    yield Chunk(payload, data, counted)
            if several:
                batch.open = False
                if not withheld:
                    yield FLUSH
            if failure:
                break
        if withheld:  # the provider's usage came, or never will
            reason, message, code = withheld
            yield Failed(reason, message, code, meter.ended(reason))
        elif done:
            yield Done(meter.ended("done"))
        else:
            reason, message, code = failure or _CUT
            yield Failed(reason, message, code, meter.ended(reason))
    except GeneratorExit:
        meter.ended("client_gone")
        raise
    finally:
        if not meter.finished:
            meter.ended("error")
        response.close()
        watch.close()
        metrics.stream_closed(meter.hold.model)
