"""The quick check of a conversation's turns loads exactly what the marshmallow schema loads.

`Vouched` lets a plain function vouch for each chat message or Messages turn; anything it
does not vouch for goes through the schema. So for any body, valid or not, loading must give
the same result or the same errors as the schema alone, and the common shapes (the recorded
agent clients' turns included) must be vouched for, or the quick path is never taken.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError, fields, validate

from silk.chat import schemas as chat
from silk.messages import schemas as messages

RECORDED = (Path(__file__).resolve().parent / "messages" / "fixtures"
            / "claude-code-2.1.332-request.json")


class _ChatAsSchemaAlone(chat.ChatRequestSchema):
    messages = fields.List(fields.Nested(chat.MessageSchema), required=True,
                           validate=validate.Length(min=1, max=10_000))


class _MessagesAsSchemaAlone(messages.MessagesRequestSchema):
    messages = fields.List(fields.Nested(messages.MessageSchema), required=True,
                           validate=validate.Length(min=1, max=10_000))


def _outcome(schema, body):
    try:
        return "loaded", schema.load(body)
    except ValidationError as err:
        return "refused", err.messages


_odd = st.sampled_from([None, 5, 1.5, True, "x", [], {}, ["x"], {"a": 1}])
_text = st.text(max_size=8)
_chat_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(_text, _odd)}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.one_of(
        st.fixed_dictionaries({"url": st.one_of(_text, _odd)}), _text, _odd)}),
    st.fixed_dictionaries({"type": st.one_of(st.just("input_audio"), _odd)}),
    _odd)
_chat_message = st.fixed_dictionaries({}, optional={
    "role": st.one_of(st.sampled_from(chat._ROLES), _text, _odd),
    "content": st.one_of(_text, st.lists(_chat_part, max_size=3), _odd),
    "name": st.one_of(_text, _odd),
    "tool_calls": st.one_of(st.lists(_odd, max_size=2), _odd),
    "tool_call_id": st.one_of(_text, _odd),
    "other": _odd,
})

_block = st.deferred(lambda: st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(_text, _odd)}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": st.one_of(_text, _odd),
                           "name": _text, "input": st.one_of(st.just({}), _odd)}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": _text},
                          optional={"content": st.one_of(_text, st.lists(_block, max_size=2),
                                                         _odd),
                                    "is_error": st.one_of(st.booleans(), _odd)}),
    st.fixed_dictionaries({"type": st.just("image"), "source": st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(["base64", "url", "file"])},
                              optional={"media_type": _text, "data": _text, "url": _text}),
        _odd)}),
    st.fixed_dictionaries({"type": st.sampled_from(["thinking", "redacted_thinking",
                                                    "document"])},
                          optional={"thinking": _text, "data": st.one_of(_text, _odd)}),
    _odd))
_turn = st.fixed_dictionaries({}, optional={
    "role": st.one_of(st.sampled_from(messages.ROLES), _text, _odd),
    "content": st.one_of(_text, st.lists(_block, max_size=3), _odd),
    "other": _odd,
})


@settings(max_examples=400, deadline=None)
@given(st.lists(_chat_message, max_size=4))
def test_a_chat_body_loads_as_the_schema_alone_loads_it(turns):
    body = chat.drop_nulls({"model": "deepseek-chat", "messages": turns})
    assert _outcome(chat.schema_for(body), body) == _outcome(_ChatAsSchemaAlone(), body)


@settings(max_examples=400, deadline=None)
@given(st.lists(_turn, max_size=4))
def test_a_messages_body_loads_as_the_schema_alone_loads_it(turns):
    body = {"model": "deepseek-chat", "max_tokens": 10, "messages": turns}
    assert (_outcome(messages.schema_for(body), body)
            == _outcome(_MessagesAsSchemaAlone(), body))


@settings(max_examples=400, deadline=None)
@given(_chat_message)
def test_what_the_quick_check_vouches_for_the_schema_loads_the_same(message):
    vouched = chat.quick_message(message)
    if vouched is not None:
        assert chat.MessageSchema().load(message) == vouched


@settings(max_examples=400, deadline=None)
@given(_turn)
def test_what_the_quick_turn_check_vouches_for_the_schema_loads_the_same(turn):
    vouched = messages.quick_turn(turn)
    if vouched is not None:
        assert messages.MessageSchema().load(turn) == vouched


def test_the_common_chat_shapes_are_vouched_for():
    common = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": "ok", "name": "bot", "reasoning_content": "..."},
    ]
    for message in common:
        assert chat.quick_message(message) == chat.MessageSchema().load(message), message


def test_the_recorded_claude_code_turns_are_vouched_for():
    turns = json.loads(RECORDED.read_text())["body"]["messages"]
    assert turns
    for turn in turns:
        assert messages.quick_turn(turn) == messages.MessageSchema().load(turn)


def test_a_chat_message_content_rule_names_the_problem_whichever_check_meets_it():
    """The content rule is written once (`_content_error`) for the schema and the quick
    check; the schema's errors still name the field and say what is wrong."""
    cases = [
        ({"role": "user"}, {"content": ["is required for a user message"]}),
        ({"role": "user", "content": 5},
         {"content": ["must be a string, null or an array of content parts"]}),
        ({"role": "user", "content": [{"type": "text", "text": 1}]},
         {"content": {0: {"text": ["must be a string"]}}}),
        ({"role": "user", "content": [{"type": "image_url", "image_url": 5}]},
         {"content": {0: {"image_url": ["must be an object with a url"]}}}),
    ]
    for message, errors in cases:
        assert chat.quick_message(message) is None
        body = {"model": "deepseek-chat", "messages": [message]}
        assert _outcome(chat.schema_for(body), body) == ("refused", {"messages": {0: errors}})
