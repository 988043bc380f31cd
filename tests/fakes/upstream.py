"""A real loopback HTTP server that impersonates the gateway's upstream LLM providers.

Why a real server and not a mocked ``requests`` session: the gateway is also tested as gunicorn
worker processes, and the interesting failures (keep-alive reuse, half-sent bodies, clients that
hang up mid-stream, refused connections, slow first tokens) only exist on a real socket.

Usage::

    with FakeUpstream() as fake:
        # e.g. DEEPSEEK_BASE_URL / DEEPSEEK_API_KEY in a gunicorn worker's environment
        app.config["SILK_UPSTREAMS"]["deepseek"]["base_url"] = fake.base_url("deepseek")
        fake.enqueue("deepseek", status=429)          # next deepseek call gets a 429
        ...
        assert fake.requests[-1].body["model"] == "deepseek-v4-flash"

Providers and paths (the gateway appends ``/chat/completions`` to the base URL):

* ``deepseek`` -> ``http://127.0.0.1:PORT/deepseek`` (``/deepseek/v1/...`` works too)
* ``ark``      -> ``http://127.0.0.1:PORT/ark/api/v3``
* ``mimo``     -> ``http://127.0.0.1:PORT/mimo/v1``
* ``compat``   -> ``http://127.0.0.1:PORT/compat/v1``: an OpenAI-compatible server an operator
  adds (OpenRouter, vLLM, Groq, SGLang), in DeepSeek's shape but for what follows

Token accounting is deterministic so tests can compute the exact bill:

* ``prompt_tokens`` = sum over messages of (whitespace-separated words in the text + 4), where
  the text is a string ``content`` or the ``text`` of each content part. A ``[[fake: ...]]``
  directive is ordinary text and counts too; :func:`count_prompt_tokens` applies the same rule.
* ``completion_tokens`` = number of reply pieces + number of reasoning pieces. A piece is one
  word of the reply (every piece after the first carries its leading space, so the concatenated
  pieces equal ``" ".join(reply.split())``). Reasoning pieces are also reported as
  ``completion_tokens_details.reasoning_tokens``.
* Reasoning is produced when the body's ``thinking.type`` is ``enabled`` or ``auto``, or,
  with no ``thinking.type``, when ``reasoning_effort`` is given (other than ``minimal`` or
  ``none``) or the model name contains ``reasoner``. (The real MiMo thinks by default;
  the fake does not, so that plain answers cost what their reply says.)
* Output limits, as each provider documents them (:func:`output_limits`): DeepSeek obeys
  ``max_tokens`` for reasoning plus answer; MiMo ``max_completion_tokens`` for both; Ark
  ``max_completion_tokens`` for both, or if that is absent ``max_tokens`` for the answer
  only (reasoning unbounded). A field the provider does not read is ignored. Reasoning comes
  first; what does not fit is not produced, and the finish reason is then ``length``.

The ``compat`` provider obeys ``max_tokens`` for reasoning plus answer, sends its reasoning
in ``delta.reasoning`` (``reasoning_field`` still chooses), and honours the request fields by
which such servers keep the reasoning they bill out of the answer (:func:`reasoning_shown`):
OpenRouter's ``reasoning.exclude: true`` and its, vLLM's and Groq's ``include_reasoning:
false``, Groq's and Cerebras' ``reasoning_format: "hidden"`` send no reasoning at all;
SGLang's ``stream_reasoning: false`` holds a stream's reasoning back and sends it whole in
one chunk once it ends. The usage counts the reasoning either way, as those servers bill it,
and a piece kept back counts toward ``cut_after`` as an event made (and waits ``chunk_delay``
as one), so a cut comes after the same generation whether the reasoning was sent or not.
It also honours what such servers bill beyond the text they stream: OpenRouter's
``reasoning`` object switches its thinking on (``effort`` other than ``none``, or
``max_tokens``) or off (``enabled: false``, effort ``none``), whatever ``thinking`` says,
and sizes it as OpenRouter does, over any other budget key (:func:`thinking_budget`): its
``max_tokens`` bounds the thinking, and an effort (``reasoning.effort``, an object with no
``max_tokens``, or ``reasoning_effort`` other than ``none``) leaves it unbounded by any
budget; without either, the first whole number of ``thinking.budget_tokens``,
``thinking_budget``, ``thinking_token_budget`` and ``chat_template_kwargs.thinking_budget``
bounds it (a negative one does not: Gemini's -1 asks for dynamic thinking);
a ``prediction`` (OpenAI's Predicted Outputs) is billed as completion tokens and
``completion_tokens_details.rejected_prediction_tokens``, one per word of its content (none
of it matches the reply), never streamed and beyond any limit; ``logprobs: true``
gives every piece it streams (reasoning and reply) a ``logprobs`` entry for that piece, as
vLLM does (the reasoning held back for ``stream_reasoning: false`` comes without, as SGLang
sends it), and a JSON answer's ``logprobs.content`` the reasoning's pieces, then the
reply's (none of the reasoning's when it is excluded); ``modalities`` with
``audio`` answers in ``delta.audio`` (a JSON answer's ``message.audio``), each piece's
``transcript`` with ``data``, content null, its pieces reported as
``completion_tokens_details.audio_tokens``. The ``reasoning_unbounded`` option makes its
``max_tokens`` bound the answer alone (as Ark's ``max_tokens``), for a provider entry whose
limit does not cover the thinking.

``hide_reasoning`` makes any provider one that never sends its reasoning and bills it all
the same, as OpenAI's o-series and Gemini's OpenAI API do: the reasoning is made (it counts
toward ``cut_after`` and waits ``chunk_delay`` as ``excluded`` reasoning does), but only the
final usage's ``completion_tokens`` and ``reasoning_tokens`` tell of it.

Fault options (see :data:`OPTION_TYPES`) come from four layers, later ones winning: constructor
defaults < :meth:`FakeUpstream.behave` < one queued entry (per key if one is queued for the
request's key, else per provider) < the ``[[fake: k=v ...]]`` directive(s) in the LAST
message's text. The directive is the cross-process channel: a gunicorn worker forwards the
client's messages, so a test can steer a single request from anywhere. Values are parsed with
shell quoting, e.g. ``[[fake: reply="Hi there" chunk_delay=0.01]]``; a bare name is a true flag.

Stream shape: a role chunk (``{"role": "assistant", "content": ""}``), one chunk per reasoning
piece (``delta.reasoning_content``; ``reasoning_field=reasoning`` sends it in
``delta.reasoning``, as vLLM and OpenRouter name it, ``both`` in both), one per reply piece
(``delta.content``), a finish chunk
(empty delta, ``finish_reason`` ``stop`` or ``length``, or the ``finish_reason`` option's:
a provider's ``content_filter``), then with ``stream_options.include_usage`` a
``choices: []`` usage chunk (earlier chunks carry ``"usage": null``; ``repeat_usage=n``
sends it n more times, and ``last_usage_json``, a JSON object, is merged into the last of
them alone: counts that contradict the ones sent before), then ``data: [DONE]``. Ark
alone honours ``stream_options.chunk_include_usage``: every chunk then carries the usage so
far (cumulative, the prompt and the pieces sent up to and including it).
``early_usage`` sends, right after the role chunk, a ``choices: []`` chunk whose usage counts
the prompt alone (completion 0), as a provider that reports the prompt first; the final usage
chunk still comes as above (``no_usage`` drops only that one). ``stale_usage`` sends that
early chunk again after every reply piece: a provider repeating a count it does not update.
``cut_after=n`` counts those data events; ``[DONE]`` is never sent after a cut.
``stall_after=n`` falls silent after n data events, until the client leaves. ``together=n``
writes the events n at a time, each group in one write (one read for the gateway), as a
provider's events pile up while a reader is busy; ``chunk_delay`` then comes between groups,
and a group is never held back across a pause, a cut or the end.
``stream_error="..."`` sends, after the role chunk, one ``{"error": {...}}`` event carrying that
message and ends the body there, as providers report a failure mid-stream; ``long_line=n``
sends, after the role chunk, one ``data:`` line of n bytes (not JSON) before the rest.
``infinite_logprobs`` gives each reply chunk a ``logprobs`` entry of ``-Infinity``, written
as Python's json writes it: JSON no strict parser reads, as some OpenAI-compatible servers send;
``multiline_data`` writes each streamed event's JSON indented over several ``data:``
lines, as SSE allows (the client joins them with newlines).
``refusal`` sends the reply as OpenAI's refusal: each piece in ``delta.refusal`` with
content null (a JSON answer's ``message.refusal``), counted as the reply's pieces are.
``lone_surrogates`` gives each a logprob token of half an emoji (``\\ud83d``), which orjson
neither reads nor writes. A JSON answer then carries the same logprobs, one per reply piece.
``message_json`` (a JSON object) is merged into a JSON answer's message, for shapes a
provider should not send (arguments as an object, content as a list of parts).
``finish_json`` (a JSON object) is merged into the choice that carries the finish reason (a
JSON answer's, a stream's finish chunk's), for fields DeepSeek, Ark and MiMo do not send,
such as the stop sequence matched that vLLM (``stop_reason``) and SGLang (``matched_stop``)
name there.
``error_message`` sets the message of the error body a non-200 ``status`` sends (in the
provider's dialect).

Tool calls: ``tool_call=NAME`` answers with one call to the function NAME instead of a reply
(``tool_args`` its arguments, a JSON text, ``{}`` by default), finish reason ``tool_calls``.
Streamed, a first chunk carries the call's id and name with empty arguments, then the
arguments follow in pieces of four characters. The call costs one token for its name plus
one per piece of four characters (:func:`tool_call_tokens`); output limits do not cut it.
Reasoning, when on, still comes first. Once the conversation holds a tool result (a ``tool``
message), or when the request offers tools but not NAME, the reply comes instead: an
agent's loop ends after one call. ``tool_calls`` answers with several calls instead, a list
of ``{"name", "arguments"}`` (or its JSON text), at chat indexes 0, 1, ...; each costs what
one call does. ``tool_stream`` says how their chunks are ordered: ``sequential`` (the
default: each call whole before the next starts), ``interleaved`` (every call starts, its
first piece with it, before the rest of any call's pieces, which then follow call by call)
or ``rounds`` (after those starts, the remaining pieces alternate between calls, one each).

Anthropic Messages: each provider also answers at ``/<provider>/anthropic/v1/messages``
(:meth:`FakeUpstream.anthropic_base_url`), key in ``x-api-key`` or Bearer, in Anthropic's
events and error shape, with the same options; :mod:`tests.fakes.anthropic` says how.

Every request is recorded (:attr:`FakeUpstream.requests`, a snapshot list) before any fault
applies; answers a client abandoned are in :attr:`FakeUpstream.disconnects`. The records are
final by the time the client has read the whole response.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import re
import select
import shlex
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import anthropic
from .anthropic import ANTHROPIC_BASE_PATHS, ANTHROPIC_PATHS
from .dialects import PROVIDERS, error_body, mask_key

DEFAULT_KEYS = {"deepseek": ["sk-ds-good"], "ark": ["ark-good"], "mimo": ["mimo-good"],
                "compat": ["compat-good"]}
DEFAULT_REPLY = "Hello from the fake upstream ."
DEFAULT_REASONING = "Let me think ."

# Path prefix of each provider's base URL, relative to the server root.
BASE_PATHS = {"deepseek": "/deepseek", "ark": "/ark/api/v3", "mimo": "/mimo/v1",
              "compat": "/compat/v1"}
# Every path that is a chat-completions endpoint, mapped to its provider.
CHAT_PATHS = {
    "/deepseek/chat/completions": "deepseek",
    "/deepseek/v1/chat/completions": "deepseek",
    "/ark/api/v3/chat/completions": "ark",
    "/mimo/v1/chat/completions": "mimo",
    "/compat/v1/chat/completions": "compat",
}
HEALTH_PATH = "/_fake/health"

_DIRECTIVE_RE = re.compile(r"\[\[fake:(.*?)\]\]", re.DOTALL)


# --------------------------------------------------------------------------- options


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


def _non_negative(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        out = conv(value)
        if out < 0:
            raise ValueError(f"must be >= 0, got {value!r}")
        return out
    return check


def _tool_calls(value: Any) -> list[dict[str, str]]:
    calls = json.loads(value) if isinstance(value, str) else value
    if not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str)
            and isinstance(c.get("arguments", ""), str) for c in calls):
        raise ValueError('expected a list of {"name", "arguments"} objects')
    return [{"name": c["name"], "arguments": c.get("arguments", "{}")} for c in calls]


def _tool_stream(value: Any) -> str:
    if value not in ("sequential", "interleaved", "rounds"):
        raise ValueError(f"expected sequential, interleaved or rounds, got {value!r}")
    return value


def _reasoning_field(value: Any) -> str:
    if value not in ("reasoning_content", "reasoning", "both"):
        raise ValueError(f"expected reasoning_content, reasoning or both, got {value!r}")
    return value


def _thinking_display(value: Any) -> str:
    if value not in ("omitted", "redacted"):
        raise ValueError(f"expected omitted or redacted, got {value!r}")
    return value


def _text_in_start(value: Any) -> str:
    if value not in ("block", "message"):
        raise ValueError(f"expected block or message, got {value!r}")
    return value


OPTION_TYPES: dict[str, Callable[[Any], Any]] = {
    "status": int,                      # non-200: error body in the provider's dialect
    "delay": _non_negative(float),      # seconds before the response headers
    "first_token_delay": _non_negative(float),  # after headers, before the first chunk
    "chunk_delay": _non_negative(float),        # between stream chunks
    "keepalive_interval": _non_negative(float),  # deepseek keep-alive cadence while waiting
    "cut_after": _non_negative(int),    # stream: close after n data events; else half body
    "stall_after": _non_negative(int),  # stream: fall silent after n events
    "together": _non_negative(int),     # stream: write the events n at a time, in one write
    "rst": _to_bool,                    # make cuts a TCP RST instead of a FIN
    "hang": _to_bool,                   # never answer; wait for the client to give up
    "garbage": _to_bool,                # 200 with invalid JSON / invalid SSE
    "no_usage": _to_bool,               # omit usage even when stream_options asks for it
    "usage_json": str,                  # JSON object merged into the usage reported
    "message_json": str,                # JSON object merged into a JSON answer's message
    "delta_usage_json": str,            # Anthropic stream: merged into message_delta's alone
    "reply_model": str,                 # model name the answer carries instead of the body's
    "reply": str,                       # reply text, split into word pieces
    "pieces": _non_negative(int),       # reply of n pieces: "w0 w1 ... w{n-1}"
    "reasoning": str,                   # reasoning text (when thinking is on)
    "reasoning_pieces": _non_negative(int),  # reasoning of n pieces: "t0 t1 ... t{n-1}"
    "repeat_usage": _non_negative(int),  # send the final usage chunk n more times
    "last_usage_json": str,             # stream: merged into the last usage chunk's alone
    "early_usage": _to_bool,            # stream: a prompt-only usage chunk after the role chunk
    "stale_usage": _to_bool,            # stream: that early chunk again after every reply piece
    "infinite_logprobs": _to_bool,      # reply pieces carry a logprob of -Infinity
    "lone_surrogates": _to_bool,        # reply pieces carry a logprob token of half an emoji
    "cache_hit": _non_negative(int),    # prompt tokens reported as cache hits
    "retry_after": str,                 # Retry-After header value (a 429 sends "1" unless set)
    "error_message": str,               # the message of the error body a `status` sends
    "stream_error": str,                # stream: an error event with this message after the
                                        # first chunk, then the end of the body
    "long_line": _non_negative(int),    # stream: a data line of n bytes after the first chunk
    "tool_call": str,                   # answer with a call to this function, not a reply
    "tool_args": str,                   # the call's arguments (JSON text), "{}" by default
    "tool_calls": _tool_calls,          # several calls: [{"name", "arguments"}, ...]
    "tool_stream": _tool_stream,        # sequential | interleaved | rounds
    "finish_reason": str,               # the finish reason sent instead of the one earned
    "finish_json": str,                 # JSON object merged into the finishing choice
    "text_in_start": _text_in_start,    # Anthropic stream: the reply in a start event (a lie)
    "thinking_display": _thinking_display,  # Anthropic: the thinking sealed, not as text
    "reasoning_field": _reasoning_field,  # stream: the delta field(s) reasoning comes in
    "reasoning_unbounded": _to_bool,    # compat: max_tokens bounds the answer alone
    "hide_reasoning": _to_bool,         # bill the reasoning, never send it (OpenAI's o-series)
    "multiline_data": _to_bool,         # stream: each event's JSON over several data: lines
    "refusal": _to_bool,                # the reply as OpenAI's refusal, content null
}


def normalize_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and convert fault options; ``pieces=n`` is turned into the equivalent ``reply``.

    Raises ValueError on an unknown name or bad value, so a typo in a test fails loudly instead
    of silently producing a normal response.
    """
    out: dict[str, Any] = {}
    for name, value in opts.items():
        if name not in OPTION_TYPES:
            raise ValueError(f"unknown fake option {name!r}; known: {sorted(OPTION_TYPES)}")
        try:
            out[name] = OPTION_TYPES[name](value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad value for fake option {name!r}: {exc}") from exc
    if "pieces" in out:
        out["reply"] = pieces_reply(out.pop("pieces"))
    if "reasoning_pieces" in out:
        out["reasoning"] = pieces_reply(out.pop("reasoning_pieces"), "t")
    return out


def sse_data(data: Any, multiline: bool = False) -> bytes:
    """One data event; `multiline` writes its JSON indented, a line per `data:` field, as
    SSE allows (a client joins the lines with newlines, which JSON reads as whitespace)."""
    text = json.dumps(data, indent=1) if multiline else json.dumps(data)
    return ("data: " + text.replace("\n", "\ndata: ") + "\n\n").encode()


def parse_directives(text: str) -> dict[str, Any]:
    """Parse every ``[[fake: k=v ...]]`` in ``text`` into normalized options (later wins)."""
    raw: dict[str, str] = {}
    for match in _DIRECTIVE_RE.finditer(text):
        for token in shlex.split(match.group(1)):
            name, sep, value = token.partition("=")
            if not sep:
                value = "1"  # a bare flag such as [[fake: hang]]
            raw[name.strip()] = value
    return normalize_options(raw)


# --------------------------------------------------------------------------- token helpers


def message_text(content: Any) -> str:
    """The text of a message ``content``: a string, or the ``text`` of each content part."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part["text"] for part in content
                 if isinstance(part, dict) and isinstance(part.get("text"), str)]
        return " ".join(texts)
    return ""


def count_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens the fake reports: per message, its word count plus 4."""
    return sum(len(message_text(m.get("content")).split()) + 4 for m in messages)


def reply_pieces(text: str) -> list[str]:
    """Split a reply into stream pieces, one token each; they concatenate back to the text."""
    return [word if i == 0 else " " + word for i, word in enumerate(text.split())]


def pieces_reply(n: int, prefix: str = "w") -> str:
    """A reply of exactly ``n`` pieces: ``"w0 w1 ... w{n-1}"``."""
    return " ".join(f"{prefix}{i}" for i in range(n))


def tool_arg_pieces(arguments: str) -> list[str]:
    """A tool call's arguments as streamed: pieces of four characters."""
    return [arguments[i:i + 4] for i in range(0, len(arguments), 4)]


def tool_call_deltas(tools: list[dict[str, str]], order: str | None = None
                     ) -> Iterator[tuple[int, dict]]:
    """The (chat index, tool call delta) a stream sends for ``tools``, in ``tool_stream`` order:
    a call's start (id, name, empty arguments), then its pieces of four characters."""
    starts = [[(i, {"id": tool["id"], "type": "function",
                    "function": {"name": tool["name"], "arguments": ""}})]
              for i, tool in enumerate(tools)]
    pieces = [[(i, {"function": {"arguments": piece}})
               for piece in tool_arg_pieces(tool["arguments"])] for i, tool in enumerate(tools)]
    if order in ("interleaved", "rounds"):
        for start, rest in zip(starts, pieces, strict=True):
            yield from start + rest[:1]
        rests = [rest[1:] for rest in pieces]
        if order == "interleaved":
            for rest in rests:
                yield from rest
        else:
            for turn in itertools.zip_longest(*rests):
                yield from (delta for delta in turn if delta is not None)
        return
    for start, rest in zip(starts, pieces, strict=True):
        yield from start + rest


def tool_call_tokens(arguments: str) -> int:
    """Completion tokens a tool call costs: one for its name, one per argument piece."""
    return 1 + len(tool_arg_pieces(arguments))


def wants_tool_call(body: Mapping[str, Any], name: str) -> bool:
    """Whether ``tool_call=name`` calls: no tool result yet, and the tool offered if any are."""
    messages = body.get("messages") or []
    if any(isinstance(m, dict) and m.get("role") == "tool" for m in messages):
        return False
    tools = body.get("tools")
    if not tools:
        return True
    return name in {t["function"].get("name") for t in tools
                    if isinstance(t, dict) and isinstance(t.get("function"), dict)}


def wants_reasoning(body: Mapping[str, Any], provider: str = "") -> bool:
    """Whether the fake answers ``body`` with reasoning content (see module docstring);
    ``compat`` reads OpenRouter's ``reasoning`` object first."""
    switch = body.get("reasoning")
    if provider == "compat" and isinstance(switch, dict) and switch:
        return switch.get("enabled") is not False and switch.get("effort") != "none"
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "disabled", "auto"):
        return thinking["type"] != "disabled"
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort not in ("minimal", "none"):
        return True
    return "reasoner" in str(body.get("model", ""))


def thinking_budget(body: Mapping[str, Any]) -> int | None:
    """The thinking tokens ``compat`` may spend on ``body`` (see module docstring): OpenRouter's
    ``reasoning`` object or an effort first, then the other budget keys; None: unbounded."""
    switch = body.get("reasoning")
    if isinstance(switch, dict) and switch:
        return _limit(switch, "max_tokens")
    if body.get("reasoning_effort") not in (None, "none"):
        return None
    thinking = body.get("thinking")
    kwargs = body.get("chat_template_kwargs")
    for where, name in ((thinking, "budget_tokens"), (body, "thinking_budget"),
                        (body, "thinking_token_budget"), (kwargs, "thinking_budget")):
        budget = _limit(where, name) if isinstance(where, Mapping) else None
        if budget is not None:
            return budget
    return None


def reasoning_shown(body: Mapping[str, Any]) -> str:
    """How the ``compat`` provider shows the reasoning it bills: ``streamed`` as it is made,
    ``held`` until it ends (SGLang's ``stream_reasoning: false``), or ``excluded`` from the
    answer (OpenRouter's ``reasoning.exclude``, ``include_reasoning: false``, Groq's
    ``reasoning_format: "hidden"``)."""
    reasoning = body.get("reasoning")
    if (isinstance(reasoning, dict) and reasoning.get("exclude") is True
            or body.get("include_reasoning") is False
            or body.get("reasoning_format") == "hidden"):
        return "excluded"
    return "held" if body.get("stream_reasoning") is False else "streamed"


def logprob(piece: str) -> dict[str, Any]:
    """The log probability entry of one piece (a token), as OpenAI-compatible servers write
    it."""
    return {"token": piece, "logprob": -0.25, "bytes": list(piece.encode()),
            "top_logprobs": []}


def rejected_prediction(body: Mapping[str, Any]) -> int:
    """Prediction tokens ``compat`` bills and never sends: a word each of the content."""
    prediction = body.get("prediction")
    if not isinstance(prediction, dict):
        return 0
    return len(message_text(prediction.get("content")).split())


def wants_audio(body: Mapping[str, Any]) -> bool:
    """Whether ``compat`` answers ``body`` in audio (``modalities`` naming it)."""
    modalities = body.get("modalities")
    return isinstance(modalities, list) and "audio" in modalities


def _limit(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def output_limits(provider: str, body: Mapping[str, Any],
                  answer_only: bool = False) -> tuple[int | None, int | None]:
    """(bound on reasoning + answer, bound on the answer alone) as ``provider`` reads ``body``.

    DeepSeek obeys ``max_tokens`` for both; MiMo ``max_completion_tokens`` for both; Ark
    ``max_completion_tokens`` for both when set (``max_tokens`` is then ignored), else
    ``max_tokens`` for the answer only. A field the provider does not read is ignored.
    ``compat`` obeys ``max_tokens`` for both, or for the answer alone if ``answer_only``.
    """
    if provider == "compat" and answer_only:
        return None, _limit(body, "max_tokens")
    if provider in ("deepseek", "compat"):
        return _limit(body, "max_tokens"), None
    if provider == "mimo":
        return _limit(body, "max_completion_tokens"), None
    total = _limit(body, "max_completion_tokens")
    return (total, None) if total is not None else (None, _limit(body, "max_tokens"))


def truncate(provider: str, body: Mapping[str, Any], reasoning: list[str],
             content: list[str], answer_only: bool = False
             ) -> tuple[list[str], list[str], str]:
    """The pieces the provider would produce within its limits, and the finish reason."""
    total, answer = output_limits(provider, body, answer_only)
    kept_reasoning, kept_content = reasoning, content
    if total is not None:
        kept_reasoning = reasoning[:total]
        kept_content = content[:max(0, total - len(kept_reasoning))]
    if answer is not None:
        kept_content = kept_content[:answer]
    cut = len(kept_reasoning) < len(reasoning) or len(kept_content) < len(content)
    return kept_reasoning, kept_content, "length" if cut else "stop"


def build_usage(provider: str, prompt_tokens: int, completion_tokens: int,
                reasoning_tokens: int = 0, cache_hit: int = 0) -> dict[str, Any]:
    """The ``usage`` object in ``provider``'s shape; DeepSeek adds its cache hit/miss split."""
    hit = min(cache_hit, prompt_tokens)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": hit},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }
    if provider == "deepseek":
        usage["prompt_cache_hit_tokens"] = hit
        usage["prompt_cache_miss_tokens"] = prompt_tokens - hit
    return usage


def expected_usage(provider: str, messages: Iterable[Mapping[str, Any]], *,
                   reply: str = DEFAULT_REPLY, reasoning: str | None = None,
                   cache_hit: int = 0) -> dict[str, Any]:
    """The usage the fake will report, for tests that check billing exactly.

    Pass ``reasoning`` (e.g. :data:`DEFAULT_REASONING`) when the request has thinking on.
    """
    n_reasoning = len(reply_pieces(reasoning)) if reasoning else 0
    return build_usage(provider, count_prompt_tokens(messages),
                       len(reply_pieces(reply)) + n_reasoning, n_reasoning, cache_hit)


# --------------------------------------------------------------------------- records


@dataclass
class RequestRecord:
    """One request the fake received, recorded before any fault is applied."""

    request_id: str
    provider: str | None
    method: str
    path: str
    key: str | None
    headers: dict[str, str]          # lower-cased names
    body: Any                        # parsed JSON, or None if it did not parse
    raw_body: bytes
    time: float
    peer: tuple = ()                 # client (host, port): equal ports = a reused connection
    options: dict[str, Any] = field(default_factory=dict)  # effective fault options
    status: int | None = None        # status line sent (None if no headers were sent)
    outcome: str | None = None       # ok | error | garbage | cut | client_gone | dropped

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream")) if isinstance(self.body, dict) else False

    @property
    def messages(self) -> list:
        body = self.body if isinstance(self.body, dict) else {}
        messages = body.get("messages")
        return messages if isinstance(messages, list) else []


@dataclass
class DisconnectRecord:
    """A client that went away before the fake finished answering.

    ``chunks_sent`` counts SSE data events written before the departure was noticed (keep-alive
    comments excluded; with ``together``, the events kept for the group's write count too).
    The fake checks the socket before every event, so with any chunk delay this is exact;
    without one the kernel may have accepted an event or two more.
    """

    request_id: str
    provider: str | None
    path: str
    key: str | None
    model: str | None
    stream: bool
    phase: str                       # delay | hang | first_token | stream | body
    chunks_sent: int
    time: float


class _ClientGone(Exception):
    """The peer closed the connection (or the fake is stopping)."""


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # re-listen on the same port right after refuse()
    request_queue_size = 1024   # hundreds of simultaneous connects must not be refused

    def __init__(self, address: tuple[str, int], fake: FakeUpstream) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | _ClientGone):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeUpstream/1.0"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection must not pin a thread forever

    server: _Server

    # -- connection bookkeeping

    def setup(self) -> None:
        super().setup()
        self.fake = self.server.fake
        self.record: RequestRecord | None = None
        self.dropped = False  # set when the fake itself hangs up (refuse/stop)
        self.native = False  # the request came to an Anthropic Messages path
        self.together = 1  # events per write (the together option)
        self.group: list[bytes] = []  # events kept for the current write
        self.fake._track(self, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.fake._track(self, False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.fake.verbose:
            super().log_message(format, *args)

    # -- request entry points

    def do_GET(self) -> None:
        self.record = None
        if self.path.split("?", 1)[0] == HEALTH_PATH:
            self._send_bytes(200, b'{"status":"ok"}', "application/json")
            return
        self._send_json(404, error_body(None, 404, url=self._url(), request_id="fakereq-get"))

    def do_POST(self) -> None:
        self.chunks_sent = 0
        self.phase = "delay"
        path = self.path.split("?", 1)[0]
        provider = CHAT_PATHS.get(path)
        self.native = provider is None and path in ANTHROPIC_PATHS
        if self.native:
            provider = ANTHROPIC_PATHS[path]
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        key = self._auth_key(provider)
        self.record = self.fake._record_request(
            provider=provider, method="POST", path=path, key=key, peer=self.client_address[:2],
            headers={k.lower(): v for k, v in self.headers.items()}, body=body, raw_body=raw)
        try:
            self._answer(provider, key, body)
        except _ClientGone:
            self._client_left()
        except OSError:
            # BrokenPipe / ConnectionReset surfacing outside the stream writer.
            self._client_left()

    # -- the exchange

    def _answer(self, provider: str | None, key: str | None, body: Any) -> None:
        rid = self.record.request_id
        if provider is None:
            self._send_error(None, 404, key, message=f"No route for POST {self._url()}")
            return
        try:
            opts = self.fake._options_for(provider, key)
            if isinstance(body, dict) and isinstance(body.get("messages"), list) \
                    and body["messages"] and isinstance(body["messages"][-1], dict):
                opts.update(parse_directives(message_text(body["messages"][-1].get("content"))))
        except ValueError as exc:
            self._send_error(provider, 400, key, message=f"fake directive error: {exc}")
            return
        self.record.options = opts
        self.together = max(opts.get("together", 1), 1)
        self.group.clear()

        if opts.get("delay"):
            self._wait(opts["delay"])
        if opts.get("hang"):
            self.phase = "hang"
            while True:
                self._wait(3600)
        if key not in self.fake.keys.get(provider, ()):
            self._send_error(provider, 401, key)
            return
        status = opts.get("status", 200)
        if status != 200:
            self._send_error(provider, status, key, retry_after=opts.get("retry_after"),
                             message=opts.get("error_message"))
            return
        if self.native:
            problem = anthropic.validate(body)
            if problem:
                self._send_error(provider, 400, key, message=problem)
            elif opts.get("garbage"):
                self._send_garbage(bool(body.get("stream")))
            else:
                anthropic.answer(self, provider, opts, body, rid)
            return
        problem = _validate(body)
        if problem:
            self._send_error(provider, 400, key, message=problem)
            return
        if opts.get("garbage"):
            self._send_garbage(bool(body.get("stream")))
            return

        reasoning = (reply_pieces(opts.get("reasoning", ""))
                     if wants_reasoning(body, provider) else [])
        budget = thinking_budget(body) if provider == "compat" else None
        if budget is not None and budget >= 0:  # a negative one is dynamic (Gemini's -1)
            reasoning = reasoning[:budget]
        tools: list[dict[str, str]] = []
        call_id = "call_" + rid.removeprefix("fakereq-")
        if opts.get("tool_calls") and all(wants_tool_call(body, call["name"])
                                          for call in opts["tool_calls"]):
            tools = [{"id": f"{call_id}_{i}", **call} for i, call in enumerate(opts["tool_calls"])]
        elif opts.get("tool_call") and wants_tool_call(body, opts["tool_call"]):
            tools = [{"id": call_id, "name": opts["tool_call"],
                      "arguments": opts.get("tool_args", "{}")}]
        reasoning, content, finish = truncate(provider, body, reasoning,
                                              [] if tools else reply_pieces(opts.get("reply", "")),
                                              bool(opts.get("reasoning_unbounded")))
        prompt = count_prompt_tokens(body["messages"])
        called = sum(tool_call_tokens(tool["arguments"]) for tool in tools)
        rejected = rejected_prediction(body) if provider == "compat" else 0
        audio = provider == "compat" and wants_audio(body)
        usage = build_usage(provider, prompt, len(content) + len(reasoning) + called + rejected,
                            len(reasoning), opts.get("cache_hit", 0))
        if rejected:
            usage["completion_tokens_details"]["rejected_prediction_tokens"] = rejected
        if audio:
            usage["completion_tokens_details"]["audio_tokens"] = len(content)
        if opts.get("usage_json"):
            usage.update(json.loads(opts["usage_json"]))
        if opts.get("no_usage"):
            usage = None
        meta = {"id": "chatcmpl-" + rid.removeprefix("fakereq-"), "created": int(time.time()),
                "model": body["model"],
                "finish": opts.get("finish_reason") or ("tool_calls" if tools else finish),
                "tools": tools,
                "shown": ("excluded" if opts.get("hide_reasoning")
                          else reasoning_shown(body) if provider == "compat" else "streamed"),
                "logprobs": provider == "compat" and body.get("logprobs") is True,
                "audio": audio}
        if provider == "deepseek":
            meta["system_fingerprint"] = "fp_fake_upstream"

        if opts.get("reply_model"):
            meta["model"] = opts["reply_model"]
        if body.get("stream"):
            options = body.get("stream_options")
            options = options if isinstance(options, dict) else {}
            include_usage = options.get("include_usage") is True and usage is not None
            running = None
            if provider == "ark" and options.get("chunk_include_usage") is True and usage:
                def running(reasoned: int, answered: int) -> dict:
                    return build_usage(provider, prompt, reasoned + answered, reasoned,
                                       opts.get("cache_hit", 0))
            early = (build_usage(provider, prompt, 0, 0, opts.get("cache_hit", 0))
                     if opts.get("early_usage") else None)
            self._stream(provider, opts, meta, reasoning, content,
                         usage if include_usage else None, running, early)
        else:
            self._complete(provider, opts, meta, reasoning, content, usage)

    def _complete(self, provider: str, opts: dict, meta: dict, reasoning: list[str],
                  content: list[str], usage: dict | None) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
        if meta["audio"]:
            message["content"] = None
            message["audio"] = {"id": "audio_" + meta["id"], "data": "UklGRg==",
                                "transcript": "".join(content)}
        if meta["tools"]:
            message["content"] = None
            message["tool_calls"] = [{"id": tool["id"], "type": "function", "function": {
                "name": tool["name"], "arguments": tool["arguments"]}} for tool in meta["tools"]]
        if opts.get("refusal"):
            message["content"], message["refusal"] = None, message["content"]
        if reasoning and meta["shown"] != "excluded":
            field = "reasoning" if provider == "compat" else "reasoning_content"
            message[field] = "".join(reasoning)
        if opts.get("message_json"):
            message.update(json.loads(opts["message_json"]))
        doc: dict[str, Any] = {
            "id": meta["id"], "object": "chat.completion", "created": meta["created"],
            "model": meta["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": meta["finish"]}],
        }
        if opts.get("finish_json"):
            doc["choices"][0].update(json.loads(opts["finish_json"]))
        if opts.get("infinite_logprobs") or opts.get("lone_surrogates"):
            odd = opts.get("lone_surrogates")
            doc["choices"][0]["logprobs"] = {"content": [
                {"token": "\ud83d" if odd else piece, "logprob": -0.5 if odd else float("-inf"),
                 "top_logprobs": []} for piece in content]}
        if meta["logprobs"]:
            scored = [*(reasoning if meta["shown"] != "excluded" else ()), *content]
            doc["choices"][0]["logprobs"] = {"content": [logprob(piece) for piece in scored]}
        if "system_fingerprint" in meta:
            doc["system_fingerprint"] = meta["system_fingerprint"]
        if provider == "ark":
            doc["service_tier"] = "default"
        if usage is not None:
            doc["usage"] = usage
        data = json.dumps(doc).encode()

        if opts.get("cut_after") is not None:
            # Promise the whole body, deliver half, hang up: a truncated response.
            self._start(200, "application/json", length=len(data))
            self.phase = "body"
            self.record.outcome = "cut"
            self._write(data[: len(data) // 2])
            self._cut(opts.get("rst", False))
            return
        if opts.get("first_token_delay"):
            # Headers go out at once; DeepSeek then trickles blank lines until the JSON is ready.
            self._start(200, "application/json", length=None)
            self.phase = "first_token"
            self._wait_with_keepalive(provider, opts, b"\n")
            self.phase = "body"
            self.record.outcome = "ok"
            self._chunk(data, last=True)
        else:
            self._start(200, "application/json", length=len(data))
            self.phase = "body"
            self.record.outcome = "ok"
            self._write(data)

    def _stream(self, provider: str, opts: dict, meta: dict, reasoning: list[str],
                content: list[str], usage: dict | None,
                running: Callable[[int, int], dict] | None,
                early: dict | None = None) -> None:
        """Stream the answer; ``usage`` is the final usage chunk's (None: no such chunk),
        ``running(reasoned, answered)`` the usage so far that every chunk carries (Ark's
        ``chunk_include_usage``), and ``early`` a usage chunk's sent after the role chunk."""
        counts = [0, 0]  # reasoning and answer pieces sent so far

        def chunk(delta: dict, finish: str | None = None) -> dict:
            doc = {"id": meta["id"], "object": "chat.completion.chunk",
                   "created": meta["created"], "model": meta["model"]}
            if "system_fingerprint" in meta:
                doc["system_fingerprint"] = meta["system_fingerprint"]
            doc["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
            if running is not None:
                doc["usage"] = running(*counts)
            elif usage is not None:
                doc["usage"] = None
            return doc

        def events() -> Iterator[dict | None]:
            yield chunk({"role": "assistant", "content": ""})
            if early is not None:
                first = chunk({})
                first["choices"] = []
                first["usage"] = early
                yield first
            field = opts.get("reasoning_field",
                             "reasoning" if provider == "compat" else "reasoning_content")
            fields = ("reasoning_content", "reasoning") if field == "both" else (field,)
            for piece in reasoning:
                counts[0] += 1
                # made and billed; kept back (None) unless the reasoning is streamed
                if meta["shown"] != "streamed":
                    yield None
                    continue
                reasoning_chunk = chunk(dict.fromkeys(fields, piece))
                if meta["logprobs"]:
                    reasoning_chunk["choices"][0]["logprobs"] = {"content": [logprob(piece)]}
                yield reasoning_chunk
            if reasoning and meta["shown"] == "held":  # whole, once it ended
                yield chunk(dict.fromkeys(fields, "".join(reasoning)))
            for piece in content:
                counts[1] += 1
                piece_chunk = chunk({"content": piece} if not meta["audio"] else {
                    "content": None, "audio": {"id": "audio_" + meta["id"],
                                               "data": "UklGRg==", "transcript": piece}})
                if opts.get("refusal"):
                    piece_chunk["choices"][0]["delta"] = {"content": None, "refusal": piece}
                if meta["logprobs"]:
                    piece_chunk["choices"][0]["logprobs"] = {"content": [logprob(piece)]}
                if opts.get("infinite_logprobs"):  # json.dumps writes it as -Infinity
                    piece_chunk["choices"][0]["logprobs"] = {"content": [
                        {"token": piece, "logprob": float("-inf"), "top_logprobs": []}]}
                if opts.get("lone_surrogates"):  # half of a split emoji, as \ud83d
                    piece_chunk["choices"][0]["logprobs"] = {"content": [
                        {"token": "\ud83d", "logprob": -0.5, "top_logprobs": []}]}
                yield piece_chunk
                if early is not None and opts.get("stale_usage"):
                    stale = chunk({})
                    stale["choices"] = []
                    stale["usage"] = early
                    yield stale
            for index, call in tool_call_deltas(meta["tools"], opts.get("tool_stream")):
                counts[1] += 1
                yield chunk({"tool_calls": [{"index": index, **call}]})
            finishing = chunk({}, meta["finish"])
            if opts.get("finish_json"):
                finishing["choices"][0].update(json.loads(opts["finish_json"]))
            yield finishing
            if usage is not None:
                repeats = 1 + opts.get("repeat_usage", 0)
                for sent in range(1, repeats + 1):
                    final = chunk({})
                    final["choices"] = []
                    final["usage"] = usage
                    if sent == repeats and opts.get("last_usage_json"):
                        final["usage"] = {**usage, **json.loads(opts["last_usage_json"])}
                    yield final

        self._start(200, "text/event-stream", length=None)
        self.phase = "first_token"
        if opts.get("first_token_delay"):
            self._wait_with_keepalive(provider, opts, b": keep-alive\n\n")
        self.phase = "stream"
        cut_after = opts.get("cut_after")
        chunk_delay = opts.get("chunk_delay", 0)
        kept = 0  # reasoning pieces made but kept back (compat): they count toward a cut
        for index, event in enumerate(events()):
            if cut_after is not None and self.chunks_sent + kept >= cut_after:
                break
            if index and chunk_delay and index % self.together == 0:
                self._wait(chunk_delay)
            if opts.get("stall_after") is not None and self.chunks_sent >= opts["stall_after"]:
                self._wait(3600)
            if index == 1 and "stream_error" in opts:
                self.record.outcome = "error"
                error = {"error": {"message": opts["stream_error"], "type": "server_error",
                                   "param": None, "code": "internal_error"}}
                self._event(("data: " + json.dumps(error) + "\n\n").encode(), last=True)
                return
            if index == 1 and opts.get("long_line"):
                self._long_line(opts["long_line"])
            if event is None:
                kept += 1
                continue
            self._event(sse_data(event, opts.get("multiline_data", False)))
        if cut_after is not None:
            self.record.outcome = "cut"
            self._cut(opts.get("rst", False))
            return
        # Outcome first: a test may inspect the record as soon as its client sees [DONE].
        self.record.outcome = "ok"
        self._event(b"data: [DONE]\n\n", last=True)

    def _long_line(self, size: int) -> None:
        """One data line of `size` bytes (not JSON), written in 64 KiB pieces."""
        self._write_group()
        piece = b"x" * 65536
        self._chunk(b"data: ")
        for start in range(0, size, len(piece)):
            self._chunk(piece[:size - start])
        self._event(b"\n\n")

    def _send_garbage(self, stream: bool) -> None:
        if stream:
            self._start(200, "text/event-stream", length=None)
            self.phase = "stream"
            self._event(b'data: {"id": "chatcmpl-garbage", "choices": [{"delta": {"con\n\n')
            self._event(b"this is not server-sent events at all\n\n")
            self.record.outcome = "garbage"
            self._event(b"data: [DONE]\n\n", last=True)
        else:
            self.record.outcome = "garbage"
            self._send_bytes(200, b'<html><body>upstream says hi</body></html>{"choices": [',
                             "application/json")

    def _send_error(self, provider: str | None, status: int, key: str | None, *,
                    message: str | None = None, retry_after: str | None = None) -> None:
        if self.native:
            doc = anthropic.error_body(status, message)
        else:
            doc = error_body(provider, status, message=message, key=key, url=self._url(),
                             request_id=self.record.request_id)
        headers = {}
        if status == 429 or retry_after is not None:
            headers["Retry-After"] = retry_after or "1"
        if self.record:
            self.record.outcome = "error"
        self._send_json(status, doc, headers)

    # -- waiting

    def _wait(self, seconds: float) -> None:
        """Sleep, but notice the client leaving or the fake stopping (raises _ClientGone);
        the events kept for a group go out first."""
        self._write_group()
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.fake._stopping.is_set() or self._peer_closed(min(remaining, 0.05)):
                raise _ClientGone

    def _wait_with_keepalive(self, provider: str, opts: dict, ping: bytes) -> None:
        delay = opts["first_token_delay"]
        interval = opts.get("keepalive_interval") or 0
        if provider != "deepseek" or interval <= 0:
            self._wait(delay)
            return
        deadline = time.monotonic() + delay
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wait(min(interval, remaining))
            if time.monotonic() < deadline:
                self._chunk(ping)

    def _peer_closed(self, timeout: float = 0.0) -> bool:
        """True if the client has closed its end (readable and a peek returns EOF)."""
        poller = select.poll()
        try:
            poller.register(self.connection, select.POLLIN | select.POLLERR | select.POLLHUP)
        except (ValueError, OSError):
            return True
        events = poller.poll(timeout * 1000)
        if not events:
            return False
        if events[0][1] & (select.POLLERR | select.POLLNVAL):
            return True
        try:
            data = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if data:
            time.sleep(timeout)  # pipelined bytes, not a hang-up; don't spin on them
            return False
        return True

    # -- writing

    def _start(self, status: int, content_type: str, *, length: int | None,
               headers: Mapping[str, str] | None = None) -> None:
        """Send the status line and headers; ``length=None`` means a streamed body."""
        self.chunked = length is None and self.request_version != "HTTP/1.0"
        rid = self.record.request_id if self.record else "fakereq-0"
        if self.record:
            self.record.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("x-request-id", rid)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", str(length))
            else:
                self.send_header("Cache-Control", "no-cache")
            if self.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            elif length is None:
                self.send_header("Connection", "close")  # HTTP/1.0: EOF ends the body
                self.close_connection = True
            self.end_headers()
        except OSError as exc:
            raise _ClientGone from exc

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise _ClientGone from exc

    def _chunk(self, data: bytes, last: bool = False) -> None:
        """Write one piece of a streamed body (framed as an HTTP chunk when chunked).

        ``last`` also ends a chunked body, in the same write, so the client cannot finish
        reading before the fake is done with the response.
        """
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
            if last:
                data += b"0\r\n\r\n"
        self._write(data)

    def _event(self, data: bytes, last: bool = False) -> None:
        """Write one SSE event (or keep it for its group's write), checking first that the
        client is still there."""
        if self._peer_closed():
            raise _ClientGone
        self.group.append(data)
        self.chunks_sent += 1
        if last or len(self.group) >= self.together:
            self._write_group(last)

    def _write_group(self, last: bool = False) -> None:
        """Write the events kept for the current group, as one piece."""
        if self.group:
            data = b"".join(self.group)
            self.group.clear()
            self._chunk(data, last)

    def _send_bytes(self, status: int, data: bytes, content_type: str,
                    headers: Mapping[str, str] | None = None) -> None:
        self._start(status, content_type, length=len(data), headers=headers)
        self._write(data)

    def _send_json(self, status: int, doc: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(doc).encode(), "application/json", headers)

    def _cut(self, rst: bool) -> None:
        """Hang up mid-response: FIN by default, TCP RST with ``rst=1``."""
        self._write_group()
        self.close_connection = True
        conn = self.connection
        with contextlib.suppress(OSError):
            if rst:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.rfile.close()
                conn.close()  # last reference: the kernel discards the socket with a RST
            else:
                conn.shutdown(socket.SHUT_RDWR)

    def _client_left(self) -> None:
        self.close_connection = True
        if self.dropped or self.fake._stopping.is_set():
            self.record.outcome = "dropped"  # our own hang-up, not the client's
            return
        self.record.outcome = "client_gone"
        self.fake._record_disconnect(self.record, self.phase, self.chunks_sent)

    # -- reading

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _auth_key(self, provider: str | None) -> str | None:
        if self.native and self.headers.get("x-api-key"):
            return self.headers["x-api-key"].strip()
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        if provider == "mimo" and self.headers.get("api-key"):
            return self.headers["api-key"].strip()  # MiMo also accepts an api-key header
        return None

    def _url(self) -> str:
        return f"http://{self.fake.host}:{self.fake.port}{self.path}"


def _validate(body: Any) -> str | None:
    """Why ``body`` is not a chat-completions request, or None if it is one."""
    if not isinstance(body, dict):
        return "Failed to parse the request body as JSON"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "Failed to deserialize the JSON body into the target type: missing field `model`"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return ("Failed to deserialize the JSON body into the target type: "
                "missing field `messages`")
    return None


# --------------------------------------------------------------------------- the fake


class FakeUpstream:
    """DeepSeek, Ark and MiMo chat-completions endpoints on one loopback port, with faults.

    ``keys`` maps provider -> valid Bearer keys (providers left out keep their default key).
    ``fake.keys`` stays mutable while running, for key-rotation tests. ``reply``, ``reasoning``,
    ``cache_hit`` and ``keepalive_interval`` are the lowest-priority option layer.
    """

    def __init__(self, keys: Mapping[str, Iterable[str]] | None = None, *,
                 reply: str = DEFAULT_REPLY, reasoning: str = DEFAULT_REASONING,
                 cache_hit: int = 0, keepalive_interval: float = 0.05,
                 host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> None:
        self.keys: dict[str, list[str]] = {p: list(v) for p, v in DEFAULT_KEYS.items()}
        for provider, values in (keys or {}).items():
            if provider not in PROVIDERS:
                raise ValueError(f"unknown provider {provider!r}")
            self.keys[provider] = list(values)
        self.host = host
        self.verbose = verbose
        self._port = port
        self._defaults = normalize_options({
            "reply": reply, "reasoning": reasoning, "cache_hit": cache_hit,
            "keepalive_interval": keepalive_interval})
        self._lock = threading.Lock()
        self._behaviour: dict[str, Any] = {}
        self._provider_queues: dict[str, collections.deque] = collections.defaultdict(
            collections.deque)
        self._key_queues: dict[str, collections.deque] = collections.defaultdict(
            collections.deque)
        self._requests: list[RequestRecord] = []
        self._disconnects: list[DisconnectRecord] = []
        self._connections: set[_Handler] = set()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle

    def start(self) -> FakeUpstream:
        """Bind (an ephemeral port unless one was given) and serve in a daemon thread."""
        self._stopping.clear()
        self._listen()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection, unblocking hung or slow answers."""
        self._stopping.set()
        self._close_listener()
        self._drop_connections()

    def refuse(self, drop_connections: bool = True) -> None:
        """Stop listening, so new connections are refused, as if the provider were down.

        Open connections are dropped too by default, because a client's keep-alive pool would
        otherwise keep reaching the "down" server.
        """
        self._close_listener()
        if drop_connections:
            self._drop_connections()

    def accept(self) -> None:
        """Listen again on the same port after :meth:`refuse`."""
        self._listen()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def base_url(self, provider: str) -> str:
        """The base URL to configure for ``provider``; the gateway appends /chat/completions."""
        return self.url + BASE_PATHS[provider]

    def anthropic_base_url(self, provider: str) -> str:
        """The Anthropic base URL for ``provider``; the gateway appends /v1/messages."""
        return self.url + ANTHROPIC_BASE_PATHS[provider]

    def chat_url(self, provider: str) -> str:
        return self.base_url(provider) + "/chat/completions"

    def leak_markers(self) -> list[str]:
        """Strings that must never reach a gateway client: address, keys, masked keys, ids."""
        markers = [f"{self.host}:{self._port}", "fakereq-"]
        for keys in self.keys.values():
            for key in keys:
                markers += [key, mask_key(key)]
        return markers

    # -- behaviour

    def behave(self, **opts: Any) -> None:
        """Set server-wide fault options (merged into earlier ones) until :meth:`reset`."""
        checked = normalize_options(opts)
        with self._lock:
            self._behaviour.update(checked)

    def enqueue(self, provider: str | None = None, *, key: str | None = None, times: int = 1,
                **opts: Any) -> None:
        """Queue options for the next ``times`` requests to ``provider`` (or bearing ``key``).

        A request consumes one entry from its key's queue if that is non-empty, otherwise one
        from its provider's queue. Entries are consumed even by requests then failing auth.
        """
        if (provider is None) == (key is None):
            raise ValueError("enqueue() needs exactly one of provider or key")
        if provider is not None and provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        checked = normalize_options(opts)
        with self._lock:
            queue = self._provider_queues[provider] if key is None else self._key_queues[key]
            queue.extend(dict(checked) for _ in range(times))

    def reset(self) -> None:
        """Forget :meth:`behave` options and all queued entries (records are kept)."""
        with self._lock:
            self._behaviour.clear()
            self._provider_queues.clear()
            self._key_queues.clear()

    def pending(self, provider: str | None = None, *, key: str | None = None) -> int:
        """How many queued entries are still unconsumed for ``provider`` or ``key``."""
        with self._lock:
            queue = self._provider_queues if key is None else self._key_queues
            found = queue.get(provider if key is None else key)
            return len(found) if found else 0

    # -- records

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> list[DisconnectRecord]:
        """A snapshot of the answers clients abandoned, oldest first."""
        with self._lock:
            return list(self._disconnects)

    def requests_for(self, provider: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.provider == provider]

    def clear(self) -> None:
        """Forget recorded requests and disconnects (behaviour is kept)."""
        with self._lock:
            self._requests.clear()
            self._disconnects.clear()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0,
                 interval: float = 0.005) -> Any:
        """Poll ``predicate()`` until truthy and return its value; TimeoutError otherwise.

        Useful because the fake records a disconnect only when it next touches the socket,
        which is after the client's call has already returned.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    # -- internals used by the handler

    def _listen(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.05}, name=f"fake-upstream-{self._port}", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _drop_connections(self) -> None:
        with self._lock:
            handlers = list(self._connections)
        for handler in handlers:
            handler.dropped = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)

    def _track(self, handler: _Handler, alive: bool) -> None:
        with self._lock:
            if alive:
                self._connections.add(handler)
            else:
                self._connections.discard(handler)

    def _options_for(self, provider: str, key: str | None) -> dict[str, Any]:
        with self._lock:
            opts = dict(self._defaults)
            opts.update(self._behaviour)
            key_queue = self._key_queues.get(key) if key is not None else None
            if key_queue:
                opts.update(key_queue.popleft())
            else:
                provider_queue = self._provider_queues.get(provider)
                if provider_queue:
                    opts.update(provider_queue.popleft())
        return opts

    def _record_request(self, **fields: Any) -> RequestRecord:
        record = RequestRecord(request_id=f"fakereq-{next(self._ids):08x}", time=time.time(),
                               **fields)
        with self._lock:
            self._requests.append(record)
        return record

    def _record_disconnect(self, record: RequestRecord, phase: str, chunks_sent: int) -> None:
        entry = DisconnectRecord(
            request_id=record.request_id, provider=record.provider, path=record.path,
            key=record.key, model=record.model, stream=record.stream, phase=phase,
            chunks_sent=chunks_sent, time=time.time())
        with self._lock:
            self._disconnects.append(entry)
