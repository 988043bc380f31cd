"""The reasoning a client asked to hide, taken out of chunks and answers with its scores."""

from __future__ import annotations

from silk.chat import reasoning


def _entries(*tokens: str) -> list[dict]:
    return [{"token": token, "logprob": -0.5, "top_logprobs": []} for token in tokens]


def _chunk(delta: dict, logprobs: dict | None, **choice) -> dict:
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                    "finish_reason": None, **choice}]}


def test_a_chunk_ending_the_reasoning_and_starting_the_reply_keeps_the_reply_scores():
    """vLLM can send the reasoning's last token and the reply's first in one delta, scored
    together: only the reply's scores stay (whitespace between them aside)."""
    data = _chunk({"reasoning": " so 4", "content": "It is 4"},
                  {"content": _entries(" so", " 4", "\n\nIt", " is", " 4")})
    assert reasoning.Withheld(reasoning.HIDDEN).chunk(data)
    choice = data["choices"][0]
    assert choice["delta"] == {"content": "It is 4"}
    assert [entry["token"] for entry in choice["logprobs"]["content"]] == [
        "\n\nIt", " is", " 4"]


def test_scores_that_do_not_end_in_the_reply_are_all_withheld():
    """Tokens that do not spell the visible text (a byte split across tokens) cannot be told
    apart from the reasoning's: none are sent."""
    data = _chunk({"reasoning": "hm", "content": "é"},
                  {"content": _entries("hm", "\ufffd", "\ufffd")})
    reasoning.Withheld(reasoning.HIDDEN).chunk(data)
    assert data["choices"][0]["logprobs"] is None


def test_a_reasoning_chunk_left_empty_goes_without_scores():
    data = _chunk({"reasoning_content": "think"}, {"content": _entries("think")},
                  reasoning_logprobs={"content": _entries("think")})
    assert reasoning.Withheld(reasoning.HELD).chunk(data)
    choice = data["choices"][0]
    assert choice["logprobs"] is None and "reasoning_logprobs" not in choice
    assert reasoning.quiet(data)


def test_a_chunk_without_reasoning_keeps_its_scores():
    scores = {"content": _entries("hi")}
    data = _chunk({"content": "hi"}, scores)
    assert not reasoning.Withheld(reasoning.HIDDEN).chunk(data)
    assert data["choices"][0]["logprobs"] == scores


def test_an_answer_keeps_the_scores_of_its_content_only():
    """A JSON answer's logprobs cover the reasoning, then the reply (vLLM, SGLang);
    Cerebras' parsed reasoning has its own `reasoning_logprobs`."""
    data = {"choices": [{"index": 0, "message": {"role": "assistant", "reasoning": "a b",
                                                 "content": "c d"},
                         "logprobs": {"content": _entries("a", " b", "c", " d"),
                                      "refusal": None},
                         "reasoning_logprobs": {"content": _entries("a", " b")}}]}
    reasoning.hide_in_answer(data)
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "c d"}
    assert choice["logprobs"] == {"content": _entries("c", " d"), "refusal": None}
    assert "reasoning_logprobs" not in choice
    tools = {"choices": [{"message": {"reasoning": "a", "content": None, "tool_calls": []},
                          "logprobs": {"content": _entries("a", "{}")}}]}
    reasoning.hide_in_answer(tools)
    assert tools["choices"][0]["logprobs"] is None


def test_a_long_answer_s_scores_are_found_in_linear_time():
    """The reply's scores are found from its end, token by token: joining each token to the
    text found so far copied that text again each time: 0.5 to 4.5 s of a worker's CPU (every
    other request of the worker waiting) for a reply of 131,072 tokens of four characters,
    and four to five seconds at least for the 400,000 here."""
    import time

    tokens = 400_000
    data = {"choices": [{"message": {"reasoning": "think", "content": "abcd" * tokens},
                         "logprobs": {"content": _entries("think", *["abcd"] * tokens)}}]}
    started = time.perf_counter()
    reasoning.hide_in_answer(data)
    assert time.perf_counter() - started < 1.5
    assert len(data["choices"][0]["logprobs"]["content"]) == tokens


def test_a_choice_index_that_is_no_number_is_held_as_choice_0():
    """A provider's odd `index` (a list, an object) is not a key to hold reasoning under:
    the chunk is still read, its reasoning held and given back when the choice speaks."""
    withheld = reasoning.Withheld(reasoning.HELD)
    thinking = {"choices": [{"index": [1], "delta": {"reasoning_content": "hmm"}}]}
    assert withheld.chunk(thinking)
    answer = {"choices": [{"index": {"a": 1}, "delta": {"content": "Hi"}}]}
    withheld.chunk(answer)
    assert answer["choices"][0]["delta"] == {"content": "Hi", "reasoning_content": "hmm"}
