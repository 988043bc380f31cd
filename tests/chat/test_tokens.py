"""The prompt estimate reads everything the model is sent, and never exceeds the bound."""

import base64
import random
import re
import string
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from silk.relay.tokens import estimate_text, prompt_bound, prompt_estimate
from tests.support.images import IMAGE_URL, patch_tokens, png_header

TEXT = "word " * 400  # 2000 ASCII characters: about 500 tokens


def _base() -> dict:
    return {"messages": [{"role": "user", "content": "hi"}]}


def test_each_field_the_model_reads_is_counted():
    base = prompt_estimate(_base(), image_allowance=0)
    heavy = {
        "name": {"messages": [{"role": "user", "content": "hi", "name": TEXT}]},
        "tool_calls": {"messages": [{"role": "user", "content": "hi"}, {
            "role": "assistant", "content": None, "tool_calls": [{
                "id": "c", "type": "function",
                "function": {"name": "f", "arguments": TEXT}}]}]},
        "tool message": {"messages": [{"role": "user", "content": "hi"},
                                      {"role": "tool", "tool_call_id": "c", "content": TEXT}]},
        "reasoning_content": {"messages": [{"role": "user", "content": "hi"}, {
            "role": "assistant", "content": "ok", "reasoning_content": TEXT}]},
        "text part": {"messages": [{"role": "user", "content": [
            {"type": "text", "text": TEXT}]}]},
        "tools": {**_base(), "tools": [{"type": "function", "function": {
            "name": "f", "description": TEXT, "parameters": {"type": "object"}}}]},
        "functions": {**_base(), "functions": [{"name": "f", "description": TEXT}]},
        "response_format": {**_base(), "response_format": {"type": "json_schema", "json_schema": {
            "name": "s", "schema": {"description": TEXT}}}},
        "tool_choice": {**_base(), "tool_choice": {"type": "function",
                                                   "function": {"name": TEXT}}},
        "a provider extra": {**_base(), "documents": [{"title": "t", "text": TEXT}]},
    }
    for field, body in heavy.items():
        extra = prompt_estimate(body, image_allowance=0) - base
        assert 400 <= extra <= 700, (field, extra)
    # Sampling, limits and switches are no prompt: neither estimated nor bound.
    options = {**_base(), "temperature": 0.5, "max_tokens": 10, "stop": [TEXT], "user": TEXT,
               "thinking": {"type": "enabled"}, "n": 2, "stream": True,
               "logit_bias": {str(token): -100 for token in range(300)},
               "metadata": {f"k{i}": "v" * 512 for i in range(16)}, "top_k": 40,
               "prompt_cache_key": TEXT[:64], "service_tier": "auto",
               "reasoning": {"effort": "high", "exclude": False}, "include_reasoning": True,
               "enable_thinking": True, "thinking_budget": 1024, "reasoning_format": "parsed"}
    assert prompt_estimate(options, image_allowance=0) == base
    assert prompt_bound(options, 0) == prompt_bound(_base(), 0)


def test_cjk_counts_a_token_a_character_and_odd_shapes_do_not_raise():
    assert estimate_text("你好世界") == 4
    odd = {"messages": [{"role": "user", "content": [{"type": "text", "text": 5},
                                                     "not a part"]},
                        {"role": "assistant", "content": None, "tool_calls": ["x", {}]}],
           "tools": None}
    assert prompt_estimate(odd, image_allowance=0) >= 0


def test_never_above_the_bound():
    body = {"messages": [{"role": "user", "content": "日本語" * 1000}],
            "tools": [{"type": "function", "function": {"name": "f", "description": TEXT}}]}
    bound = prompt_bound(body, 0)
    assert prompt_estimate(body, bound, image_allowance=0) <= bound
    assert prompt_estimate(body, 10, image_allowance=0) == 10


def _parts(*parts) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *parts]}]}


def _png(width: int, height: int) -> dict:
    url = "data:image/png;base64," + base64.b64encode(png_header(width, height)).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def test_an_image_is_estimated_by_its_pixels_up_to_the_allowance():
    """Sized from a data: URL's header; by URL, or unreadable, or audio: the allowance."""
    base = prompt_estimate(_parts(), image_allowance=6000)

    def extra(*parts, allowance=6000) -> int:
        return prompt_estimate(_parts(*parts), image_allowance=allowance) - base

    assert extra(_png(2048, 2048)) == patch_tokens(2048, 2048) == 5350
    assert extra(_png(100, 50)) == 7  # 5000 pixels: 6.4 patches
    assert extra(_png(4096, 4096)) == 6000  # 21400 patches: no more than the hold took
    assert extra(_png(2048, 2048), allowance=1000) == 1000
    assert extra({"type": "image_url", "image_url": _png(300, 300)["image_url"]["url"]}) == 115
    assert extra({"type": "image_url", "image_url": {"url": IMAGE_URL}}) == 6000
    assert extra({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                 allowance=77) == 77
    assert extra({"type": "image_url", "image_url": None}, allowance=77) == 77
    assert extra({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                 allowance=77) == 77
    assert extra({"type": "refusal", "refusal": TEXT}) == estimate_text(TEXT)
    body = _parts(_png(2048, 2048), _png(2048, 2048))
    bound = prompt_bound(body, 6000)
    assert prompt_estimate(body, bound, image_allowance=6000) == base + 2 * 5350 <= bound
    assert prompt_estimate(body, 5000, image_allowance=6000) == 5000


def test_text_a_tokenizer_cannot_merge_is_not_counted_four_characters_a_token():
    """Digits between spaces, punctuation and control characters are a token or more each."""
    assert estimate_text("1 " * 2000) >= 2000
    assert estimate_text("!?" * 2000) >= 4000
    assert estimate_text("\x01" * 8000) >= 8000
    assert estimate_text("a\u4e2d" * 1000) >= 2000
    # Prose stays at about four characters a token.
    prose = "The Silk Road was an ancient network of trade routes, linking East and West. " * 20
    assert len(prose) // 5 <= estimate_text(prose) <= len(prose) // 3


# The estimate as defined, character by character; estimate_text works on UTF-8 bytes.
_MARK_CHARS = set(string.punctuation + "".join(
    chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127)))


def _as_defined(text: str, splits: bool = False) -> int:
    if not text:
        return 0
    marks = sum(1 for c in text if c in _MARK_CHARS)
    digits = len(re.findall("[0-9]", text))
    if splits and digits * 50 > len(text.encode("utf-8", "surrogatepass")):
        # each switch between an ASCII letter and digit, each group of three digits
        switches = len(re.findall(r"(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])", text))
        digit_runs = len(re.findall("[0-9]+", text))
        marks += switches + max(0, (digits + 2) // 3 - digit_runs)
    if text.isascii():
        return max((len(text) + 3) // 4, len(text.split()) + marks)
    wide = (len(text.encode("utf-8")) - len(text)) // 2
    narrow = max(0, len(text) - wide)
    return max((narrow + 3) // 4, len(re.findall(r"[\x21-\x7e]+", text)) + marks) + wide


# Every kind of character the estimate tells apart: letters, digits, ASCII whitespace
# (str.split's, \x1c-\x1f included), marks, controls, DEL, non-ASCII spaces, two-, three-
# and four-byte UTF-8.
_ALPHABET = "abZ 70\t\n\r\x0b\x0c\x1c\x1f\x00\x01\x7f!.,{}\"'\x85\xa0é—中文🤖"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=40) | st.text(max_size=40))
def test_the_estimate_counts_as_defined(text):
    assert estimate_text(text) == _as_defined(text)
    assert estimate_text(text, splits=True) == _as_defined(text, splits=True)


def test_a_prompt_of_ids_or_numbers_is_not_estimated_by_its_length():
    """Tokenizers split letters from digits and digits into groups of three: an id of 32
    random hex digits is about 20 tokens in OpenAI's tokenizers, 8 by length alone, and a
    client that hangs up after the first token paid for that. A number of 12 digits is 4."""
    chance = random.Random(7)
    ids = " ".join(uuid.UUID(int=chance.getrandbits(128)).hex for _ in range(500))
    numbers = "123456789012 " * 1000
    base = prompt_estimate(_base(), image_allowance=0)
    for text, least in ((ids, 15 * 500), (numbers, 4000)):
        assert estimate_text(text, splits=True) >= least > estimate_text(text)
        for message in _messages_with(text):  # wherever a prompt carries text
            body = {"messages": [{"role": "user", "content": "hi"}, message]}
            assert prompt_estimate(body, image_allowance=0) >= least + base, message.keys()


def _messages_with(text: str) -> list[dict]:
    """A message carrying `text` in each place a prompt's text may be."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": text}}
    return [{"role": "user", "content": text},
            {"role": "user", "content": [{"type": "text", "text": text}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": text}]},
            {"role": "assistant", "content": None, "reasoning_content": text},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": text}]


def test_a_long_non_ascii_text_is_estimated_as_defined():
    """What a coding agent sends: tools and a system prompt, with an em dash here and there."""
    text = ("Read a file — returns its lines, numbered; at most {limit} of them.\n" * 500)
    assert estimate_text(text) == _as_defined(text) > len(text) // 5
