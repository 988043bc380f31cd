"""Test doubles that run as real network servers (see ``upstream.FakeUpstream``)."""

from .upstream import (
    DEFAULT_KEYS,
    DEFAULT_REASONING,
    DEFAULT_REPLY,
    DisconnectRecord,
    FakeUpstream,
    RequestRecord,
    build_usage,
    count_prompt_tokens,
    expected_usage,
    parse_directives,
    pieces_reply,
    reply_pieces,
)

__all__ = [
    "DEFAULT_KEYS",
    "DEFAULT_REASONING",
    "DEFAULT_REPLY",
    "DisconnectRecord",
    "FakeUpstream",
    "RequestRecord",
    "build_usage",
    "count_prompt_tokens",
    "expected_usage",
    "parse_directives",
    "pieces_reply",
    "reply_pieces",
]
