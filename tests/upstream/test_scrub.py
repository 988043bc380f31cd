"""Provider error messages reach clients without anything of the provider's systems or secrets."""

from __future__ import annotations

import time

import pytest

from silk.upstream.dialects import scrub

# (message as a provider sends it, what must not survive, what must survive)
MESSAGES = [
    # DeepSeek
    ("This model's maximum context length is 131072 tokens. However, you requested 140000 "
     "tokens (139000 in the messages, 1000 in the completion). Please reduce the length of "
     "the messages or completion.", ["139000"],
     ["maximum context length is 131072 tokens", "requested 140000 tokens"]),
    ("Authentication Fails, Your api key: ****abcd is invalid", ["abcd"],
     ["Authentication Fails", "is invalid"]),
    ("Invalid max_tokens value, the valid range of max_tokens is [1, 8192]", [],
     ["the valid range of max_tokens is [1, 8192]"]),
    ("max_tokens must be <= 8192", [], ["max_tokens must be <= 8192"]),
    ("Incorrect API key provided: sk-ab**d.", ["sk-ab", "**d"], ["Incorrect API key provided"]),
    ("upstream 10.0.3.7:8080 refused (Authorization: Bearer ab12)", ["10.0.3.7", "8080", "ab12"],
     ["refused"]),
    # Volcengine Ark
    ("The model or endpoint ep-20240611183015-x7k2p does not exist or you do not have access "
     "to it. Request id: 021718000000000abcdef", ["ep-2024", "x7k2p", "021718"],
     ["does not exist or you do not have access to it"]),
    ("Your account 2100123456 has an overdue balance", ["2100123456"],
     ["Your account", "has an overdue balance"]),
    ("The request has exceeded the RPM limit of endpoint ep-fake-a1b2c3 of account 2100987654 "
     "(limit 30000)", ["ep-fake", "a1b2c3", "2100987654"], ["RPM limit", "limit 30000"]),
    ("Post \"https://ark-gw.cn-beijing.volces.com/api/v3/chat\": dial tcp 100.96.12.4:443: "
     "i/o timeout", ["volces", "100.96.12.4", ":443"], ["i/o timeout"]),
    ("AK/SK invalid: ak-7f3 for uid 88881234", ["ak-7f3", "88881234"], ["AK/SK invalid"]),
    # Xiaomi MiMo
    ("Post \"http://mimo-infer-7.mimo.svc.cluster.local:8080/v1/chat\": EOF",
     ["mimo-infer-7", "svc.cluster.local", "8080"], ["EOF"]),
    ("backend gpu-node-12.corp unreachable, retried pg-0.db.internal and redis:6379",
     ["gpu-node-12", "pg-0", "redis", "6379"], ["unreachable"]),
    ("connect to [fd00:1::12]:9000 refused; fallback 2408:8000:1010:1::8 and fe80::1%eth0",
     ["fd00", "9000", "2408", "fe80", "eth0"], ["refused; fallback"]),
    ("model-router:8000 returned 502 for bearer sk-x", ["model-router", "8000", "sk-x"],
     ["returned 502"]),
    ("temperature must be between 0 and 2, got 2.5 at 12:30:45", [],
     ["temperature must be between 0 and 2, got 2.5 at 12:30:45"]),
]


@pytest.mark.parametrize("message,hidden,kept", MESSAGES)
def test_scrub_removes_provider_internals_and_keeps_the_meaning(message, hidden, kept):
    cleaned = scrub(message)
    for secret in hidden:
        assert secret not in cleaned, (secret, cleaned)
    for words in kept:
        assert words in cleaned, (words, cleaned)


def test_scrub_never_answers_empty():
    assert scrub("") == "The provider rejected the request."
    assert scrub("ep-20240611183015-x7k2p") == "[endpoint]"


# Runs that look almost like host names, addresses or URLs: a pattern that tries every
# starting position and backtracks over the run costs the square of its length on them.
ECHOES = {"dashes": "a" + "a-" * 4000 + "!", "dots": "a." * 4000, "digits": "1." * 4000,
          "labels": "a1." * 3000 + ":", "colons": "[" + ":" * 8000, "hex": "ab:" * 3000 + "z",
          "words": "a " * 4000}


@pytest.mark.parametrize("name", list(ECHOES))
def test_each_pattern_reads_an_echoed_run_in_one_pass(name):
    """A provider may echo a client's value in its error: scrubbing it must not stall a worker.

    Each pattern meets the whole run (scrub itself reads only the message's start); a
    pattern that backtracks over the run takes seconds on these 8,000 characters, a linear
    one about a millisecond.
    """
    from silk.upstream import dialects

    patterns = [value for key, value in vars(dialects).items()
                if key.startswith("_") and hasattr(value, "sub")]
    assert len(patterns) >= 8
    for pattern in patterns:
        started = time.perf_counter()
        pattern.sub("x", ECHOES[name])
        assert time.perf_counter() - started < 0.5, pattern.pattern[:60]


def test_a_long_message_is_read_from_its_start_and_cut_where_a_word_ends():
    message = "bad request from 10.0.0.7:8080 " + "word " * 2000 + "sk-cut-in-two-secret"
    cleaned = scrub(message)
    assert "10.0.0.7" not in cleaned and cleaned.startswith("bad request from [address]")
    assert len(cleaned) <= 400 and "secret" not in cleaned
