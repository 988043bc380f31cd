"""The prompt estimate reads everything the model is sent, and never exceeds the bound."""

from silk.relay.tokens import estimate_text, prompt_bound, prompt_estimate

TEXT = "word " * 400  # 2000 ASCII characters: about 500 tokens


def _base() -> dict:
    return {"messages": [{"role": "user", "content": "hi"}]}


def test_each_field_the_model_reads_is_counted():
    base = prompt_estimate(_base())
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
    }
    for field, body in heavy.items():
        extra = prompt_estimate(body) - base
        assert 400 <= extra <= 700, (field, extra)


def test_cjk_counts_a_token_a_character_and_odd_shapes_do_not_raise():
    assert estimate_text("你好世界") == 4
    odd = {"messages": [{"role": "user", "content": [{"type": "text", "text": 5},
                                                     "not a part"]},
                        {"role": "assistant", "content": None, "tool_calls": ["x", {}]}],
           "tools": None}
    assert prompt_estimate(odd) >= 0


def test_never_above_the_bound():
    body = {"messages": [{"role": "user", "content": "日本語" * 1000}],
            "tools": [{"type": "function", "function": {"name": "f", "description": TEXT}}]}
    bound = prompt_bound(body, 0)
    assert prompt_estimate(body, bound) <= bound
    assert prompt_estimate(body, 10) == 10


def test_text_a_tokenizer_cannot_merge_is_not_counted_four_characters_a_token():
    """Digits between spaces, punctuation and control characters are a token or more each."""
    assert estimate_text("1 " * 2000) >= 2000
    assert estimate_text("!?" * 2000) >= 4000
    assert estimate_text("\x01" * 8000) >= 8000
    assert estimate_text("a\u4e2d" * 1000) >= 2000
    # Prose stays at about four characters a token.
    prose = "The Silk Road was an ancient network of trade routes, linking East and West. " * 20
    assert len(prose) // 5 <= estimate_text(prose) <= len(prose) // 3
