"""Postgres itself is the oracle: whatever `unstorable_problem` passes, jsonb accepts; what it flags, jsonb refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ottrecon.callbacks.storable import storable_copy, unstorable_problem

# Text including NUL and lone surrogates, numbers including NaN and ±Infinity: everything json.loads can produce.
_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=8)
_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)


@pytest.fixture
def postgres(database_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, asyncpg.Connection]]:
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(database_url))
    yield loop, conn
    loop.run_until_complete(conn.close())
    loop.close()


def _postgres_accepts(postgres: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], value: Any) -> bool:
    loop, conn = postgres
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        loop.run_until_complete(conn.fetchval("SELECT $1::jsonb IS NOT NULL", text))
    except (asyncpg.PostgresError, UnicodeEncodeError):
        return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_json_like)
def test_unstorable_problem_agrees_with_postgres(
    postgres: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], value: Any
) -> None:
    assert (unstorable_problem(value) is None) == _postgres_accepts(postgres, value), unstorable_problem(value)
    # And the escaped stand-in kept for an unstorable body is always storable.
    assert _postgres_accepts(postgres, storable_copy(value))
