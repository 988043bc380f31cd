"""Reasoning a client asks to hide: asked of the provider in full, withheld by the gateway.

A chat request's fields pass through, and an OpenAI-compatible server an operator adds may
take one that leaves the reasoning it bills out of its answer (OpenRouter's
`reasoning.exclude`; OpenRouter's, vLLM's and Groq's `include_reasoning: false`; Groq's and
Cerebras' `reasoning_format: "hidden"`) or holds it back until it ends (SGLang's
`stream_reasoning: false`). A stream cut while the model thinks would then bill none of
what the provider bills. The provider is sent the request with its reasoning shown, which
the relay counts as it arrives, and the gateway keeps from the client what it asked to hide.
"""

from __future__ import annotations

import time

# What the client asked of the reasoning: left out of the answer, or held until it ends.
HIDDEN = "hidden"
HELD = "held"
# The fields a provider sends its reasoning in (vLLM's and OpenRouter's, DeepSeek's, and
# OpenRouter's structured details).
FIELDS = ("reasoning", "reasoning_content", "reasoning_details")


def shown(body: dict) -> str | None:
    """Rewrite a chat body in place so the provider shows its reasoning as it makes it;
    return what the client asked instead (HIDDEN, HELD) or None.

    `reasoning.exclude` other than false (or 0) and null (unset, as the servers read it) is
    sent false and `reasoning_format: "hidden"` as `"parsed"` (the reasoning in its own
    field); `include_reasoning` and `stream_reasoning` other than true are not sent, as the
    servers that read them show the reasoning as it comes by default (left out, neither can
    switch thinking on where the gateway switched it off).
    """
    asked = None
    if "stream_reasoning" in body and body["stream_reasoning"] is not True:
        del body["stream_reasoning"]
        asked = HELD
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("exclude") not in (None, False):
        body["reasoning"] = {**reasoning, "exclude": False}
        asked = HIDDEN
    if "include_reasoning" in body and body["include_reasoning"] is not True:
        del body["include_reasoning"]
        asked = HIDDEN
    form = body.get("reasoning_format")
    if isinstance(form, str) and form.lower() == "hidden":
        body["reasoning_format"] = "parsed"
        asked = HIDDEN
    return asked


def hide_in_answer(data: dict) -> None:
    """Take the reasoning out of a JSON answer's messages, in place, and its log
    probabilities with it."""
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            hidden = [message.pop(name, None) for name in FIELDS]
            if any(value is not None for value in hidden):
                _score_visible(choice, message.get("content"))


def _score_visible(choice: dict, text) -> bool:
    """Keep of a choice whose reasoning was taken out only the log probabilities of its
    visible `text`; True if they changed.

    vLLM scores every token it makes, the reasoning's included, in the stream's chunk that
    carries it and in a JSON answer's `logprobs.content` (reasoning first), and Cerebras'
    parsed reasoning has its own `reasoning_logprobs`. The entries kept are the last ones
    whose tokens make up the text (whitespace before it aside); if none do, none are kept.
    """
    changed = choice.pop("reasoning_logprobs", None) is not None
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return changed
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    kept = _scored_tail(entries, text) if isinstance(entries, list) else None
    if kept is None:
        choice["logprobs"] = None
    elif len(kept) != len(entries or ()):
        choice["logprobs"] = {**logprobs, "content": kept}
    else:
        return changed
    return True


def _scored_tail(entries: list, text) -> list | None:
    """The last of `entries` whose tokens join into `text` (after whitespace); None if
    there is no such run or no text.

    The run is found by counting its characters from the end and joined once: joining
    token by token would copy the text found so far at each token (seconds of a worker for
    a long answer)."""
    if not isinstance(text, str) or not text:
        return None
    length = 0
    for start in range(len(entries) - 1, -1, -1):
        token = entries[start].get("token") if isinstance(entries[start], dict) else None
        if not isinstance(token, str):
            return None
        length += len(token)
        if length >= len(text):
            tail = entries[start:]
            joined = "".join(entry["token"] for entry in tail)
            ahead = joined[:length - len(text)]
            return tail if joined.endswith(text) and not ahead.strip() else None
    return None


class Withheld:
    """The reasoning of a stream's chunks kept from the client: left out (HIDDEN), or held
    until its choice's reasoning ends and sent with the delta that follows it (HELD)."""

    __slots__ = ("_keep", "_held")

    def __init__(self, asked: str):
        self._keep = asked == HELD
        self._held: dict = {}  # choice index -> the reasoning fields held, joined

    def chunk(self, data: dict) -> bool:
        """Take the reasoning out of a chunk's deltas, in place, giving back what is held
        once its choice carries anything else; True if the chunk changed."""
        changed = False
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            index = choice.get("index", 0)
            if not isinstance(index, int):  # a provider's odd index: held as choice 0's
                index = 0
            taken = False
            for name in FIELDS:
                value = delta.get(name)
                if value is not None:
                    del delta[name]
                    taken = changed = True
                    if self._keep:
                        self._hold(index, name, value)
            if taken and _score_visible(choice, delta.get("content")):
                changed = True
            if self._keep and self._held and index in self._held and (
                    _speaks(delta) or choice.get("finish_reason") is not None):
                delta.update(self._held.pop(index))
                changed = True
        return changed

    def release(self, stream_id: str, model: str) -> list[dict]:
        """The chunks that give back what is still held when the stream ends without its
        choice speaking again (cut, failed): it was made and billed, so it is delivered."""
        held, self._held = self._held, {}
        return [{"id": stream_id, "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": model, "choices": [{"index": index, "delta": fields,
                                              "finish_reason": None}]}
                for index, fields in held.items()]

    def _hold(self, index, name: str, value) -> None:
        """Add a piece to what is held of a choice's field: text joined, details listed."""
        held = self._held.setdefault(index, {})
        before = held.get(name)
        joins = type(before) is type(value) and isinstance(value, str | list)
        held[name] = before + value if joins else value


def _speaks(delta: dict) -> bool:
    """Whether a delta carries anything of the answer but its role."""
    return any(value for name, value in delta.items() if name != "role")


def quiet(data: dict) -> bool:
    """Whether a chunk, its reasoning taken out, has nothing left for a client: no usage,
    and no choice with a delta that speaks, a finish reason or log probabilities."""
    if data.get("usage") is not None:
        return False
    choices = data.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None or (
                choice.get("logprobs") is not None):
            return False
        delta = choice.get("delta")
        if not isinstance(delta, dict) or any(delta.values()):
            return False
    return True
