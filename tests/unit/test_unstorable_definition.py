"""One definition of what Postgres cannot store: the worker's check (storable) and the edges' (strict_json) agree."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ottpay.strict_json import storage_problem
from ottrecon.callbacks.storable import unstorable_problem

# Text from every plane, NUL and lone surrogates included; floats with NaN and infinities.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3))


@settings(max_examples=300, deadline=None, database=None)
@given(VALUES)
def test_worker_and_edges_flag_the_same_values(value: Any) -> None:
    assert (unstorable_problem(value) is None) == (storage_problem(value, max_depth=10**6) is None)
