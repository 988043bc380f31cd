"""The upstream's Anthropic Messages dialect, read: usage, delivered text, the end; pure.

A provider that serves Anthropic Messages natively answers in events (`message_start`,
`content_block_*`, `message_delta`, `message_stop`, `error`) and counts in Anthropic's
fields; the relay reads them here as it reads chat completions in silk.relay.tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from silk.pricing import Usage
from silk.relay.tokens import estimate_text, whole_count

_COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
           "cache_creation_input_tokens")
_INPUT_COUNTS = tuple(name for name in _COUNTS if name != "output_tokens")


def merge_usage(seen: dict, usage: Mapping | None, *, output: bool = True) -> None:
    """Fold one event's usage fields into the counts seen so far (later values win, but
    a count never goes down).

    `message_start` carries the input side (its `output_tokens`, written before any output,
    is no count of the answer: `output` False leaves it out), `message_delta` the cumulative
    output (and, from some providers, the input side again). Counts are cumulative, so one
    below a count seen before (a message_delta's `input_tokens` 0, as some servers write it)
    is no count of what the provider read and bills. The input side is one prompt split
    three ways (fresh, cache reads, cache writes): a later report that counts no less of it
    in all replaces the split whole, and one that counts less is ignored, so a prompt
    counted first as cache reads and then as fresh input is billed once.
    """
    if not isinstance(usage, Mapping):
        return
    reported = {name: usage[name] for name in _INPUT_COUNTS if usage.get(name) is not None}
    if reported:
        before = _input_total(seen)
        now = _input_total({**seen, **reported})
        if before is None or now is None or now >= before:
            seen.update(reported)
    value = usage.get("output_tokens") if output else None
    if value is not None:
        before, now = whole_count(seen.get("output_tokens")), whole_count(value)
        if before is None or now is None or now >= before:
            seen["output_tokens"] = value


def _input_total(counts: Mapping) -> int | None:
    """The prompt the input side counts (absent fields 0); None if nothing is counted yet
    or a count is no whole number."""
    total, any_count = 0, False
    for name in _INPUT_COUNTS:
        value = counts.get(name)
        if value is None:
            continue
        count = whole_count(value)
        if count is None:
            return None
        total, any_count = total + count, True
    return total if any_count else None


def usage_from(usage: Mapping | None) -> tuple[Usage, int] | None:
    """Anthropic counts as the gateway's: every input token is prompt, cache reads are hits.

    Anthropic's `input_tokens` leaves out cache reads and cache writes; both were read by
    the model, so both are prompt tokens (a write is priced as input, and kept apart to be
    told back as the provider counted it). None when the counts
    are not whole numbers or there is no input or output count (an absent or null prompt
    count is no count of zero: the prompt is then the provider's earlier count or estimated).
    """
    counts = _whole(usage, "input_tokens", "output_tokens")
    if counts is None:
        return None
    fresh, output, read, written = counts
    return Usage(fresh + read + written, output, read, written), 0


def input_from(usage: Mapping | None) -> Usage | None:
    """The input side of Anthropic counts (`message_start`'s, before any output count): the
    prompt and its cache reads and writes, with no output; None when there is no whole
    input count."""
    counts = _whole(usage, "input_tokens")
    if counts is None:
        return None
    fresh, _, read, written = counts
    return Usage(fresh + read + written, 0, read, written)


def _whole(usage: Mapping | None, *required: str) -> tuple[int, ...] | None:
    """The counts of _COUNTS (0 when absent), or None if one of `required` is absent or one
    is not a whole number >= 0."""
    if not isinstance(usage, Mapping) or any(usage.get(name) is None for name in required):
        return None
    counts: list[int] = []
    for name in _COUNTS:
        value = usage.get(name)
        count = 0 if value is None else whole_count(value)
        if count is None:
            return None
        counts.append(count)
    return tuple(counts)


class Delivery:
    """Estimate the tokens a stream's events deliver, one event at a time.

    A delta's text, thinking or tool input JSON counts as text; a block's start counts what
    it already carries (a tool call's framing and name, any text or input a provider puts
    there rather than in deltas). A thinking block counts the larger of its text and its
    signature, and a redacted_thinking block its data: the provider seals the whole thinking
    there (see `sealed_tokens`) and bills all of it, while its text may be a summary, or
    none (display omitted). Per block, so a signature never adds to text already counted.
    """

    __slots__ = ("_thinking",)

    def __init__(self) -> None:
        self._thinking: dict[object, list[int]] = {}  # block index -> [text, sealed]

    def tokens(self, event: Mapping) -> int:
        """The tokens this event delivers beyond what the stream's earlier events did."""
        index = event.get("index")
        index = index if isinstance(index, int | str) else None
        if event.get("type") == "content_block_start":
            block = event.get("content_block")
            if not isinstance(block, Mapping):
                return 0
            if block.get("type") != "thinking":
                return _block_tokens(block)
            self._thinking[index] = [0, 0]
            return self._seal(index, _text_tokens(block.get("thinking")),
                              sealed_tokens(block.get("signature")))
        if event.get("type") != "content_block_delta":
            return 0
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            return 0
        if "signature" in delta:
            return self._seal(index, 0, sealed_tokens(delta["signature"]))
        if isinstance(delta.get("thinking"), str):
            return self._seal(index, estimate_text(delta["thinking"]), 0)
        for field in ("text", "partial_json"):
            value = delta.get(field)
            if isinstance(value, str):
                return estimate_text(value)
        return 0

    def _seal(self, index: object, text: int, sealed: int) -> int:
        """Add to a thinking block's text and sealed estimates; what its larger one grew."""
        counts = self._thinking.setdefault(index, [0, 0])
        before = max(counts)
        counts[0] += text
        counts[1] += sealed
        return max(counts) - before


def sealed_tokens(value: object) -> int:
    """Estimate the thinking sealed in a signature or a redacted block's data: the bytes its
    base64 holds (three in four characters), at four bytes a token as estimate_text counts
    plain text. A cipher is no shorter than what it seals unless the provider compresses
    first (then this says less); Anthropic returns the full thinking encrypted there."""
    return len(value) * 3 // 16 if isinstance(value, str) else 0


def message_delivered(message: Mapping) -> int:
    """Estimate the output tokens of a Message's content: a whole (non-streamed) answer, or
    whatever a stream's `message_start` carries."""
    content = message.get("content")
    return sum(_block_tokens(block) for block in content if isinstance(block, Mapping)) \
        if isinstance(content, list) else 0


def _text_tokens(value: object) -> int:
    return estimate_text(value) if isinstance(value, str) else 0


def _block_tokens(block: Mapping) -> int:
    """Estimate the output tokens of one whole content block (a thinking block's the larger
    of its text and its signature, a redacted one's its data; see Delivery)."""
    kind = block.get("type")
    thinking = _text_tokens(block.get("thinking"))
    if kind == "thinking":
        thinking = max(thinking, sealed_tokens(block.get("signature")))
    total = _text_tokens(block.get("text")) + thinking
    if kind == "redacted_thinking":
        total += sealed_tokens(block.get("data"))
    if kind == "tool_use":
        total += 2 + estimate_text(str(block.get("input") or ""))
    return total


def error_message(event: Mapping) -> str | None:
    """The message of an `error` event, or None for any other event."""
    if event.get("type") != "error":
        return None
    error = event.get("error")
    return str(error.get("message") or "") if isinstance(error, Mapping) else ""
