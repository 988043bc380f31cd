"""Near-valid Messages bodies never make a 500, and what is rejected is free."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.test_fuzz import FUZZ, _check, _snapshot, app_config, json_values

__all__ = ["app_config"]  # the fuzz module's settings: keys guessed freely

_TYPES = ["text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking",
          "document", 7]


def blocks():
    """Content blocks of every type the gateway reads, fields right or wrong."""
    value = json_values(2)
    source = st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["base64", "url", "file"]) | value,
        "media_type": st.just("image/png") | value, "data": st.just("iVBOR") | value,
        "url": st.just("https://x.test/a.png") | value})
    block = st.fixed_dictionaries({"type": st.sampled_from(_TYPES)}, optional={
        "text": st.text(max_size=20) | value, "source": source | value,
        "id": st.just("toolu_1") | value, "name": st.just("Read") | value,
        "input": st.just({"path": "a"}) | value, "tool_use_id": st.just("toolu_1") | value,
        "content": st.text(max_size=10) | st.lists(st.fixed_dictionaries(
            {"type": st.sampled_from(_TYPES), "text": st.text(max_size=5)}), max_size=2)
        | value, "is_error": st.booleans() | value, "thinking": st.text(max_size=10) | value,
        "data": value, "cache_control": value})
    return st.lists(block, max_size=3)


def messages_like():
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool"]),
         "content": st.text(max_size=30) | blocks() | json_values(1)})
    return st.fixed_dictionaries(
        {"model": st.sampled_from(["deepseek-chat", "mimo-v2.5", "claude-x", ""]),
         "max_tokens": st.integers(-1, 40_000) | json_values(1),
         "messages": st.lists(message, min_size=1, max_size=3) | json_values(1)},
        optional={"system": st.text(max_size=10) | blocks() | json_values(1),
                  "stream": st.booleans() | json_values(1),
                  "tools": st.lists(st.fixed_dictionaries({"name": st.just("Read")}, optional={
                      "input_schema": st.just({"type": "object"}) | json_values(1),
                      "type": st.sampled_from(["custom", "bash_20250124"])}), max_size=2)
                  | json_values(1),
                  "tool_choice": st.fixed_dictionaries({"type": st.sampled_from(
                      ["auto", "any", "tool", "none", "x"])}, optional={
                      "name": json_values(1)}) | json_values(1),
                  "thinking": st.fixed_dictionaries({"type": st.sampled_from(
                      ["enabled", "adaptive", "disabled", "on"])}, optional={
                      "budget_tokens": json_values(1)}) | json_values(1),
                  "temperature": json_values(1), "top_k": json_values(1),
                  "stop_sequences": json_values(1)})


def test_messages_bodies_never_500_and_rejections_are_free(app, client, accounts, upstream):
    user = accounts.make(credit="1")

    @settings(max_examples=150, **FUZZ)
    @given(payload=messages_like(), path=st.sampled_from(
        ["/v1/messages", "/v1/messages?beta=true", "/v1/messages/count_tokens"]))
    def fuzz(payload, path):
        before = _snapshot(app)
        response = client.post(path, data=json.dumps(payload),
                               content_type="application/json", headers=user.headers)
        response.get_data()
        _check(response, before, _snapshot(app), path)

    fuzz()
    assert accounts.audit() == []
    assert accounts.row(user.id).reserved_units == 0
