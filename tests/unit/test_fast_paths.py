"""Fast paths (the receiver's checks, the everyday finish time) give exactly what the plain definitions give."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from ottpay import strict_json
from ottpay.fingerprint import canonical_json, envelope_fingerprint
from ottpay.finish_time import BEIJING, _parse_general, parse_finish_time
from ottpay.messages import CALLBACK_FIELDS, _plainly_well_shaped, _shape_problems, callback_shape_problems
from ottrecon.queue import deserialize, serialize
from webhook.queue import prepare

# Strings mostly of the characters that matter (NUL, lone surrogates, backslashes, quotes), some from every plane.
SPECIAL = st.text(st.sampled_from(["a", "é", "\x00", "\ud800", "\udfff", "\\", '"']), max_size=6)
TEXT = SPECIAL | SPECIAL | st.text(st.characters(codec=None, exclude_categories=()), max_size=6)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | TEXT | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3))


def reference_loads(raw: bytes | str, max_depth: int) -> Any:
    """strict_json.loads as first written: plain json.loads, then every string of the value checked."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise strict_json.NotStrictJson("body is not valid UTF-8") from None

    def finite(number: str) -> float:
        if not math.isfinite(value := float(number)):
            raise strict_json.NotStrictJson("numbers must be finite (no overflowing exponents like 1e999)")
        return value

    def constant(name: str) -> Any:
        raise strict_json.NotStrictJson(f"{name} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=constant, parse_float=finite)
    except strict_json.NotStrictJson:
        raise
    except RecursionError:
        raise strict_json.NotStrictJson(f"JSON is nested more than {max_depth} levels deep") from None
    except ValueError:
        raise strict_json.NotStrictJson("body is not valid JSON") from None
    problem = strict_json.storage_problem(value, max_depth)
    if problem:
        raise strict_json.NotStrictJson(problem)
    return value


def outcome(loads: Callable[[bytes | str, int], Any], raw: bytes | str, max_depth: int) -> tuple[str, Any]:
    try:
        return "ok", loads(raw, max_depth)
    except strict_json.NotStrictJson as exc:
        return "refused", str(exc)


# JSON texts as a sender might spell them: escaped or raw non-ASCII, sometimes cut or as raw bytes.
DUMPED = st.builds(
    lambda value, ascii, cut: json.dumps(value, ensure_ascii=ascii, allow_nan=True)[:cut],
    VALUES,
    st.booleans(),
    st.none() | st.none() | st.integers(1, 40),
)
# Escapes as other senders spell them: upper case, '=' escaped as Gson does, valid and broken pairs.
ESCAPES = ["a", "\\u003d", "\\u003D", "\\u0000", "\\uD800", "\\udBff", "\\uDC00", "\\uD83D\\uDE00", "\\u00e9"]
ESCAPES += ["\\\\", "\\\\u0000", "\\n"]
HAND_WRITTEN = st.builds(
    lambda pieces, key: '{"' + key + '":"' + "".join(pieces) + '"}',
    st.lists(st.sampled_from(ESCAPES), max_size=5),
    st.sampled_from(["data", "\\u0000", "\\uD800k"]),
)
TEXTS = DUMPED | HAND_WRITTEN


@settings(max_examples=600, deadline=None, database=None)
@given(TEXTS, st.booleans(), st.integers(0, 4))
def test_strict_loads_gives_the_reference_verdict_and_value(text: str, as_bytes: bool, max_depth: int) -> None:
    # As bytes, a raw lone surrogate becomes invalid UTF-8; as str (a caller's text) it stays one.
    raw: bytes | str = text.encode("utf-8", errors="surrogatepass") if as_bytes else text
    got = outcome(lambda r, d: strict_json.loads(r, max_depth=d), raw, max_depth)
    expected = outcome(reference_loads, raw, max_depth)
    if got[0] == expected[0] == "ok":
        assert json.dumps(got[1], allow_nan=True) == json.dumps(expected[1], allow_nan=True)
    else:
        assert got == expected


ENVELOPE_VALUES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=10), ENVELOPE_VALUES, max_size=8), st.integers(0, 10**9))
def test_prepared_item_is_what_serialize_makes_of_the_envelope(envelope: dict[str, Any], offset_s: int) -> None:
    received_at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=offset_s, microseconds=offset_s % 7)
    prepared = prepare(envelope, received_at)
    fingerprint = envelope_fingerprint(envelope)
    assert prepared.fingerprint == fingerprint
    # Byte for byte arq's own serialization of the parsed item (so the job equals enqueue_job's).
    expected = {"envelope": envelope, "received_at": received_at.isoformat(), "fingerprint": fingerprint}
    assert deserialize(prepared.item) == expected
    assert prepared.item == serialize(deserialize(prepared.item))


# Bodies near the everyday shape: the five fields (sometimes one missing or retyped), values
# short, long, empty or unstorable, sometimes an extra field.
FIELD_VALUES = TEXT | st.text(max_size=70) | st.integers() | st.none() | st.just("x" * 1025) | st.just("")


@st.composite
def near_callbacks(draw: st.DrawFn) -> object:
    body: dict[str, object] = {field: draw(st.text(min_size=1, max_size=12)) for field in CALLBACK_FIELDS}
    for field in draw(st.lists(st.sampled_from(CALLBACK_FIELDS), max_size=2)):
        if draw(st.booleans()):
            body[field] = draw(FIELD_VALUES)
        else:
            body.pop(field, None)
    if draw(st.booleans()):
        body[draw(TEXT)] = draw(FIELD_VALUES)
    return draw(st.sampled_from([body, [body], "body"])) if draw(st.integers(0, 9)) == 0 else body


@settings(max_examples=1000, deadline=None, database=None)
@given(near_callbacks())
def test_shape_fast_path_says_well_shaped_only_when_the_full_check_finds_nothing(body: object) -> None:
    if _plainly_well_shaped(body):
        assert _shape_problems(body) == []
    assert callback_shape_problems(body) == ([] if _plainly_well_shaped(body) else _shape_problems(body))


# Text as JSON bodies spell it: escapes of every kind (\u0000, surrogate halves, harmless \u003d), raw NUL and
# surrogates, ASCII and non-ASCII, so both branches of each fast check are taken.
BODY_ESCAPES: st.SearchStrategy[str] = st.sampled_from(
    ["\\u0000", "\\ud800", "\\uDFFF", "\\u003d", "\\u", "\\n", "\\\\u0000", "u0000"]
)
JSON_TEXT = st.lists(st.one_of(BODY_ESCAPES, TEXT, st.text(max_size=8)), max_size=6).map("".join)


@settings(max_examples=2000)
@given(JSON_TEXT)
def test_has_unstorable_is_the_regex(text: str) -> None:
    assert strict_json.has_unstorable(text) == (strict_json.UNSTORABLE.search(text) is not None)


@settings(max_examples=2000)
@given(JSON_TEXT)
def test_may_hold_unstorable_is_the_regex(text: str) -> None:
    assert strict_json._may_hold_unstorable(text) == (strict_json._MAY_HOLD_UNSTORABLE.search(text) is not None)


# Fourteen digits, mostly near a real date (so both valid and invalid ones: month 13, February 30, year 0).
FOURTEEN_DIGITS = st.text(st.sampled_from("0123456789"), min_size=14, max_size=14) | st.builds(
    "{:04d}{:02d}{:02d}{:02d}{:02d}{:02d}".format,
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
)
ZONES = st.sampled_from([BEIJING, UTC, ZoneInfo("America/Toronto"), timezone(timedelta(hours=-5))])


@settings(max_examples=2000, deadline=None)
@given(raw=FOURTEEN_DIGITS | st.text(st.sampled_from("0123456789 +-:TZ\u0661"), max_size=16), zone=ZONES)
def test_the_compact_finish_time_fast_path_parses_as_the_grammar_does(raw: str, zone: tzinfo) -> None:
    expected = _parse_general(raw, zone) if raw.isascii() else None
    parsed = parse_finish_time(raw, default_tz=zone)
    # The same instant and the same zone (aware datetimes in two zones compare equal when their instants are).
    assert (parsed, parsed and parsed.tzinfo) == (expected, expected and expected.tzinfo)


# Bodies with the five callback fields (strings of every kind, or now and then another JSON value), sometimes a
# field missing or an extra one: the canonical text's fast path must match the plain definition on all of them.
FIVE_FIELD_BODIES = st.fixed_dictionaries({field: TEXT | TEXT | TEXT | VALUES for field in CALLBACK_FIELDS}) | (
    st.dictionaries(st.sampled_from([*CALLBACK_FIELDS, "extra", "Data"]) | TEXT, TEXT | VALUES, max_size=6)
)


@settings(max_examples=2000)
@given(FIVE_FIELD_BODIES)
def test_canonical_json_is_sorted_compact_json(body: dict[str, Any]) -> None:
    assert canonical_json(body) == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
