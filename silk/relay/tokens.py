"""Token arithmetic over the upstream's chat-completions dialect, before and after it speaks.

Every surface translates its request into a chat-completions body, so the bounds of a hold
(prompt_bound, prompt_estimate), the reading of the provider's usage object (usage_from) and
the estimate of what was delivered (delivered_tokens) are written once, here; all pure.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

import orjson

from silk.pricing import Usage
from silk.relay.call import THINKING_SWITCHES
from silk.relay.imagesize import data_url_size

PER_MESSAGE_OVERHEAD = 8  # role and separator tokens a chat template adds per message
TEMPLATE_OVERHEAD = 64  # the chat template's own tokens around the whole conversation
# Tools come wrapped in the provider's own instructions on how to call them, billed as
# prompt: DeepSeek's template adds about 150 tokens, Anthropic documents 313-346 for its.
TOOLS_OVERHEAD = 512


def template_overhead(tools: object) -> int:
    """Tokens a provider's template may add to a prompt besides its messages and schemas."""
    return TEMPLATE_OVERHEAD + (TOOLS_OVERHEAD if tools else 0)


# Chat-completions fields whose values no model reads as prompt: the limits, sampling and
# streaming options (OpenAI's and the common open-model servers'), switches and labels;
# among the switches, those that turn the thinking on or size it (THINKING_SWITCHES) and
# those that say how it is shown (silk.chat.reasoning), whose few tokens a template renders
# are its overhead's, not their JSON.
# Every other field may be: messages, tools and schemas, and any provider extra a client
# passes through (vLLM renders `documents` into its chat template), so each of those counts
# in the bound and the estimate. A `logit_bias` of 300 entries would otherwise add about a
# thousand tokens to the estimate a stream cut before its usage is billed at.
NOT_PROMPT = frozenset((
    "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n",
    "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "logit_bias", "seed", "stop", "logprobs", "top_logprobs",
    "user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier",
    "verbosity", "parallel_tool_calls", *THINKING_SWITCHES, "reasoning_format",
    "stream_reasoning"))


def prompt_bound(body: dict, image_allowance: int) -> int:
    """An upper bound on prompt tokens: every byte a token, plus template and image allowances.

    A BPE token covers at least one byte of UTF-8, so the byte count of everything the
    model may read (every field but NOT_PROMPT's) bounds the real count; images are priced
    by the provider, hence the allowance.
    """
    size = 0
    images = 0
    for name, value in body.items():
        if name not in NOT_PROMPT:
            size += len(orjson.dumps(value))
    for message in body.get("messages", ()):
        content = message.get("content")
        if isinstance(content, list):
            images += sum(1 for part in content if part.get("type") != "text")
    tools = body.get("tools") or body.get("functions")
    return size + PER_MESSAGE_OVERHEAD * len(body.get("messages", ())) + template_overhead(
        tools) + images * image_allowance


# Punctuation and control characters: a tokenizer rarely merges them with their neighbours.
# All are ASCII, and no byte of a multi-byte UTF-8 sequence is, so they are counted in the
# text's UTF-8 bytes, where C loops over a 256-entry table do the work (a str's translate
# looks each character up in a dict: 3 ms for the 31 kB of tools a coding agent sends).
_MARKS = (string.punctuation + "".join(
    chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127))).encode()
# Byte maps to b"x" (part of a run) or b" " (between runs): the whitespace `str.split`
# splits ASCII text on; and what a run of narrow characters is made of, printable ASCII.
_WORD = bytes(0x20 if chr(b) in " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f" else 0x78
              for b in range(256))
_NARROW = bytes(0x78 if 0x21 <= b <= 0x7e else 0x20 for b in range(256))
# Byte maps to b"a" (an ASCII letter), b"0" (an ASCII digit) or b" ": tokenizers split
# letters from digits before merging (DeepSeek's, Qwen's, Llama 3's and OpenAI's), and
# digits into groups of at most three (Qwen: of one), so `a3f9c2e1` is eight tokens or more.
_DIGITS = string.digits.encode()
_CLASS = bytes(0x61 if chr(b).isascii() and chr(b).isalpha()
               else 0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))


def _runs(raw: bytes, kinds: bytes) -> int:
    """How many runs of bytes that `kinds` maps to b"x" there are in `raw`."""
    mapped = raw.translate(kinds)
    return mapped.count(b" x") + (mapped[0] == 0x78)


def _splits(raw: bytes) -> int:
    """Tokens a text's letters and digits add to its runs: each switch between a letter and
    a digit, and each group of three digits after a run's first (hex, ids, long numbers)."""
    mapped = raw.translate(_CLASS)
    to_digit = mapped.count(b"a0")
    digit_runs = to_digit + mapped.count(b" 0") + (mapped[0] == 0x30)
    return to_digit + mapped.count(b"0a") + max(0, (mapped.count(b"0") + 2) // 3 - digit_runs)


def estimate_text(text: str, *, splits: bool = False) -> int:
    """Guess the tokens of a text: about four ASCII characters or one CJK character each,
    and never fewer than its words and marks (a run of `1 2 3`, of punctuation or of control
    characters costs a token a piece, not a token per four characters), nor, with `splits`,
    than its switches between letters and digits and its groups of digits (`a3f9` is four).

    A prompt is estimated with `splits`: its client chooses its text, and hex or ids by
    length alone would be a third of their tokens. What was delivered is not: providers
    stream about a token a chunk, and each chunk is estimated on its own."""
    if not text:
        return 0
    raw = text.encode("utf-8", "surrogatepass")
    marks = len(raw) - len(raw.translate(None, _MARKS))
    size = len(text)
    wide = (len(raw) - size) // 2
    if len(raw) == size:  # ASCII: its words as str.split counts them
        by_size, counted = (size + 3) // 4, _runs(raw, _WORD) + marks
    else:
        # A wide character ends a run of narrow ones: `a中a中` cannot merge its `a`s.
        by_size, counted = (max(0, size - wide) + 3) // 4, _runs(raw, _NARROW) + marks
    # Each digit adds at most two switches and a third of a group: in a text of under one
    # digit in fifty bytes (prose, code, an agent's tools and instructions) that is at most
    # a fifth of its estimate by size, and as a rule nothing, told by one pass, not five.
    if splits and (len(raw) - len(raw.translate(None, _DIGITS))) * 50 > len(raw):
        counted += _splits(raw)
    return max(by_size, counted) + wide


# What a stream cut before usage bills an image whose bytes the request holds: one token per
# 28x28-pixel patch (pixels / 784, rounded up), as 28-pixel-patch vision encoders count an
# image (SiliconFlow documents it for Qwen2-VL; Ark's, MiMo's and DeepSeek's own pages were
# not at hand to check); never above the allowance its hold took.
IMAGE_PATCH_PIXELS = 28 * 28


def image_estimate(image, allowance: int) -> int:
    """An image_url part's tokens as a provider bills them, by its pixels: read from the
    header of a data: URL; an image by URL, or one whose header does not read, is billed
    at the allowance held for it, since its size may be anything up to that."""
    url = image.get("url") if isinstance(image, dict) else image
    size = data_url_size(url) if isinstance(url, str) else None
    if size is None:
        return allowance
    width, height = size
    return min(allowance, -(-width * height // IMAGE_PATCH_PIXELS))


def prompt_estimate(body: dict, bound: int | None = None, *, image_allowance: int) -> int:
    """A best guess (not a bound) of prompt tokens, for billing a stream cut before usage came.

    It reads everything the upstream sends the model: every message's text, images, name,
    tool calls and reasoning, the tool and format schemas and any other field a model may
    read (every one but NOT_PROMPT's, as its JSON); a part it cannot size (an image by URL,
    audio) at the `image_allowance` the hold took for it; never more than `bound` when given.
    """
    total = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            total += PER_MESSAGE_OVERHEAD // 2 + _message_estimate(message, image_allowance)
    for name, value in body.items():
        if name != "messages" and name not in NOT_PROMPT:
            total += _json_estimate(value)
    return total if bound is None else min(total, bound)


def _message_estimate(message: dict, image_allowance: int) -> int:
    """One message: its content (text parts and images), name, tool calls and reasoning."""
    total = 0
    content = message.get("content")
    if isinstance(content, str):
        total += estimate_text(content, splits=True)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text":
                total += _prompt_value(part.get("text"))
            elif kind == "image_url":
                total += image_estimate(part.get("image_url"), image_allowance)
            elif kind == "refusal":
                total += _prompt_value(part.get("refusal"))
            else:  # audio: its length is not read, so the allowance held for it
                total += image_allowance
    elif content is not None:
        total += _json_estimate(content)
    for field in ("name", "reasoning_content", "tool_call_id"):
        value = message.get(field)
        if isinstance(value, str):
            total += estimate_text(value, splits=True)
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        total += _call_estimate(function) if isinstance(function, dict) else _json_estimate(call)
    if isinstance(message.get("function_call"), dict):
        total += _call_estimate(message["function_call"])
    return total


def _call_estimate(function: dict) -> int:
    """A tool call: its function's name and arguments (a JSON string, read as text)."""
    total = 2  # the call's framing
    for field in ("name", "arguments"):
        total += _prompt_value(function.get(field))
    return total


def _prompt_value(value) -> int:
    """A prompt field: its text as the prompt counts text, or the JSON text of any other
    value (0 for null)."""
    return estimate_text(value, splits=True) if isinstance(value, str) else _json_estimate(value)


def _json_estimate(value, *, splits: bool = True) -> int:
    """A structure as the model reads it: about its JSON text."""
    if value is None:
        return 0
    try:
        return estimate_text(orjson.dumps(value).decode(), splits=splits)
    except (TypeError, orjson.JSONEncodeError):
        return 0


def delivered_tokens(chunk: dict) -> int:
    """Estimate the tokens of one streamed chunk's deltas (whatever shape the provider sent).

    What reached the client is billed from this sum if the provider's usage never comes (the
    thinking too, under either of its names); a value that is no string (arguments as an
    object, content as parts) reaches a client too, and is counted as its JSON text.
    """
    tokens = 0
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        # Most deltas carry one field: each absent one costs a lookup, not a call.
        content = delta.get("content")
        if content is not None:
            tokens += _text_estimate(content)
        # The thinking, in DeepSeek's `reasoning_content` or vLLM's and OpenRouter's
        # `reasoning`: a server that sends both sends the same text twice, billed once.
        thought, other = delta.get("reasoning_content"), delta.get("reasoning")
        if thought is not None or other is not None:
            tokens += max(_text_estimate(thought), _text_estimate(other))
        refusal = delta.get("refusal")
        if refusal is not None:
            tokens += _text_estimate(refusal)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                tokens += _function_delta(function)
        # The deprecated `functions` API streams its one call here.
        if isinstance(delta.get("function_call"), dict):
            tokens += _function_delta(delta["function_call"])
    return tokens


def thought(delta: Mapping) -> str:
    """The thinking a chat delta (or a whole answer's message) carries, for a surface that
    shows it: DeepSeek's `reasoning_content`, else vLLM's and OpenRouter's `reasoning`
    (a server that sends both sends the same text twice); "" for none. Both are billed
    (delivered_tokens), so both are delivered."""
    for name in ("reasoning_content", "reasoning"):
        value = delta.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _function_delta(function: dict) -> int:
    """A piece of a streamed call: its arguments' text, and its name's framing."""
    return _text_estimate(function.get("arguments")) + (2 if function.get("name") else 0)


def _text_estimate(value) -> int:
    """A delivered field: its text, or the JSON text of any other value (0 for null)."""
    return (estimate_text(value) if isinstance(value, str)
            else _json_estimate(value, splits=False))


def usage_from(data: Mapping | None) -> tuple[Usage, int] | None:
    """Read an OpenAI-style usage object (with DeepSeek's cache fields); None if absent.

    A usage object that is not made of whole numbers counts as absent (`whole_count`): a
    prompt or completion count that is missing, null, a bool, a fraction, a string or
    negative is no count of the answer, and the request is then billed from an estimate,
    never failed for what the provider sent. Absent cache and reasoning counts are 0.
    """
    if not isinstance(data, Mapping):
        return None
    prompt = whole_count(data.get("prompt_tokens"))
    completion = whole_count(data.get("completion_tokens"))
    hit = data.get("prompt_cache_hit_tokens")
    if hit is None:
        hit = _mapping(data.get("prompt_tokens_details")).get("cached_tokens")
    hit = 0 if hit is None else whole_count(hit)
    reasoning = _mapping(data.get("completion_tokens_details")).get("reasoning_tokens")
    reasoning = 0 if reasoning is None else whole_count(reasoning)
    if prompt is None or completion is None or hit is None or reasoning is None:
        return None
    return Usage(prompt, completion, hit), reasoning


def whole_count(value) -> int | None:
    """A provider's token count as an int if it is a whole number >= 0 (a JSON integer, or a
    number written with a fraction of zero, such as 1e25); None for anything else."""
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def _mapping(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}
