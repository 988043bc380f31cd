"""The nesting check answers what a recursive reading of the JSON's depth answers.

`nests_deeper` walks a decoded body one level at a time; a body one level too deep must be
caught and one at the limit let through, whatever mix of objects, arrays and scalars it has.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from silk.validation import MAX_JSON_DEPTH, nests_deeper

_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=3)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                max_size=3),
    max_leaves=40)


def _depth(value) -> int:
    """Levels of containers, counted as the definition says: a scalar adds none."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(body=st.dictionaries(st.text(max_size=2), _JSON, max_size=4),
       limit=st.integers(min_value=1, max_value=8))
def test_the_walk_agrees_with_the_recursive_depth(body, limit):
    assert nests_deeper(body, limit) == (_depth(body) > limit)


def _chain(depth: int, leaf) -> dict:
    """An object `depth` levels deep around `leaf` (a container leaf adds its own level):
    arrays and objects in turn, with siblings beside (a shallower container among them)."""
    node = leaf
    for level in range(depth - 1):
        node = [1, node, "x"] if level % 2 else {"a": node, "b": [2] if level > 1 else 2}
    return {"tools": node} if depth > 1 else {}


def test_the_limit_itself_passes_and_one_more_level_does_not():
    for leaf in ("text", [], {}):
        extra = 1 if isinstance(leaf, list | dict) else 0  # an empty container is a level
        at_limit = _chain(MAX_JSON_DEPTH - extra, leaf)
        assert _depth(at_limit) == MAX_JSON_DEPTH
        assert not nests_deeper(at_limit, MAX_JSON_DEPTH)
        deeper = _chain(MAX_JSON_DEPTH + 1 - extra, leaf)
        assert _depth(deeper) == MAX_JSON_DEPTH + 1
        assert nests_deeper(deeper, MAX_JSON_DEPTH)
