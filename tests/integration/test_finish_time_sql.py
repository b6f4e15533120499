"""sql/0008's ottpay_parse_time is ottpay.finish_time.parse_finish_time in SQL: the same answer for any text.

The migration recomputes stored times with the SQL twin, so the two must never disagree: Hypothesis
feeds both near-miss time strings (every part of the grammar, in and out of range) and arbitrary text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ottpay.finish_time import ZONE_ABBREVIATIONS, parse_finish_time
from tests.integration.model_world import scaled

EXAMPLES = scaled("OTTRECON_PARSER_EXAMPLES", 400)


def _two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


@st.composite
def time_texts(draw: st.DrawFn) -> str:
    """A time in one of the accepted shapes, each part possibly out of range, with or without a zone."""
    zone = draw(
        st.one_of(
            st.just(""),
            st.builds(
                lambda sign, h, sep, m: f"{sign}{h}{sep}{m}",
                st.sampled_from("+-"),
                _two(0, 25),
                st.sampled_from(("", ":")),
                st.sampled_from(("", "00", "30", "45", "60", "75")),
            ),
            st.just("Z"),
            st.sampled_from((*ZONE_ABBREVIATIONS, "cst", "Edt", "BJT", "IST", "XYZZY", "A", "CSTX")),
        )
    )
    # Zone-less times are read in Beijing time; before 1992 Python's and Postgres's time zone rules may
    # legitimately differ about Shanghai's summer time of 1986-1991, which no OTT Pay time reaches.
    year = draw(st.integers(1992 if zone == "" else 2, 9998))
    month, day = draw(_two(0, 13)), draw(_two(0, 32))
    hour, minute, second = draw(_two(0, 25)), draw(_two(0, 61)), draw(_two(0, 61))
    if draw(st.booleans()):
        text = f"{year:04d}{month}{day}{hour}{minute}{second}"
    else:
        sep = draw(st.sampled_from(("T", " ", "\t")))
        text = f"{year:04d}-{month}-{day}{sep}{hour}:{minute}"
        if draw(st.booleans()):
            text += f":{second}" + draw(st.sampled_from(("", "", ".5", ".25", ".123456", ".1234567")))
    spaces = draw(st.sampled_from(("", " ", "  ")))
    pad = draw(st.sampled_from(("", " ", "\n", " \t")))
    return f"{pad}{text}{spaces}{zone}{pad}"


ANY_TEXT = st.text(st.characters(blacklist_characters="\x00", max_codepoint=0x3000), max_size=40)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def _both(conn: asyncpg.Connection, raw: str) -> tuple[datetime | None, datetime | None]:
    in_sql: datetime | None = await conn.fetchval("SELECT ottpay_parse_time($1, 'Asia/Shanghai')", raw)
    return parse_finish_time(raw), in_sql


@pytest.mark.timeout(max(60, EXAMPLES // 100))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(time_texts(), ANY_TEXT))
async def test_sql_twin_parses_every_text_as_python_does(conn: asyncpg.Connection, raw: str) -> None:
    in_python, in_sql = await _both(conn, raw)
    assert in_python == in_sql, (raw, in_python, in_sql)


async def test_sql_twin_reads_the_documented_examples(conn: asyncpg.Connection) -> None:
    examples = ("20200416050429", "2023-03-23 01:21:53", "2024-01-08 16:29:03 CST", "2024-01-08T16:29:03+08:00")
    for raw in examples:
        in_python, in_sql = await _both(conn, raw)
        assert in_python is not None and in_python == in_sql, raw
