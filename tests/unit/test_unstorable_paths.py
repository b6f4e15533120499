"""unstorable_problem names its path lazily (a hot-path speed-up): every message is still the one the
straightforward walk gives, checked against that walk kept here as the reference model."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ottpay.strict_json import UNSTORABLE
from ottrecon.callbacks.storable import safe_text, unstorable_problem


def reference_problem(value: Any) -> str | None:
    """The walk as first written: every child's path spelled out as it is pushed."""
    stack: list[tuple[str, Any]] = [("$", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{path} is a non-finite number ({item!r}), which jsonb cannot hold"
        if isinstance(item, str):
            problem = _reference_text_problem(item)
            if problem:
                return f"{path} {problem}"
        elif isinstance(item, dict):
            for key, child in item.items():
                key_problem = _reference_text_problem(key) if isinstance(key, str) else None
                if key_problem:
                    return f"a key under {path} {key_problem}"
                stack.append((f"{path}.{safe_text(str(key))[:40]}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


def _reference_text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    if UNSTORABLE.search(text):
        return "contains an unpaired UTF-16 surrogate"
    return None


# Text from every plane, NUL and lone surrogates included; floats with NaN and infinities; keys that
# are not strings too (a dict built in Python, not parsed), and long keys (paths cut at 40 characters).
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
KEYS = TEXT | st.text(max_size=60) | st.integers() | st.none() | st.booleans()
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4))


@settings(max_examples=1000, deadline=None, database=None)
@given(VALUES)
def test_same_message_as_the_straightforward_walk(value: Any) -> None:
    assert unstorable_problem(value) == reference_problem(value)


def test_paths_name_keys_and_indexes() -> None:
    assert unstorable_problem({"a": [1, {"b\x00": 2}]}) == "a key under $.a[1] contains a NUL character"
    assert unstorable_problem({"a": [1.0, "x", {"b": float("nan")}]}) == (
        "$.a[2].b is a non-finite number (nan), which jsonb cannot hold"
    )
    assert unstorable_problem({3: {"k": "\ud800"}}) == "$.3.k contains an unpaired UTF-16 surrogate"
    assert unstorable_problem("\x00") == "$ contains a NUL character"
    assert unstorable_problem({"merchant_id": "QC1", "data": "abc"}) is None


def test_flat_text_fast_path_still_sees_halves_of_a_pair_in_neighbouring_values() -> None:
    # The fast path searches the values joined; a high and a low surrogate side by side must not pass.
    assert unstorable_problem({"a": "x\ud800", "b": "\udc00y"}) is not None
    assert unstorable_problem({"a\ud800": "v", "\udc00": "w"}) is not None
    assert unstorable_problem({"a": "1", "b": 2.0}) is None
    assert (
        unstorable_problem({"a": "1", "b": float("inf")}) == "$.b is a non-finite number (inf), which jsonb cannot hold"
    )
