"""Unit tests for ottpay.messages: callback shape, the callback builder and amounts (finish times: test_finish_time)."""

import base64
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ottpay.envelope import build_callback, open_envelope
from ottpay.messages import CALLBACK_FIELDS, SUCCESS_ACK, callback_shape_problems, parse_cents

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ottpay_published_examples.json"
CALLBACK_EXAMPLE: dict[str, Any] = json.loads(FIXTURES.read_text(encoding="utf-8"))["callback_example"]
TORONTO = ZoneInfo("America/Toronto")
SIGNKEY = "6698851A525C9433"
PAID = {"order_id": "A1", "amount": "1999", "tip": "0", "merchant_id": "ON00004652", "remarks": "谢谢"}


def valid_body() -> dict[str, Any]:
    return build_callback(PAID, "ON00004652", SIGNKEY)


def test_callback_fields_and_ack_are_the_documented_ones() -> None:
    assert CALLBACK_FIELDS == ("rsp_code", "rsp_msg", "merchant_id", "data", "md5")
    assert json.dumps(SUCCESS_ACK, separators=(",", ":")) == '{"rsp_code":"SUCCESS","rsp_msg":"success"}'


def test_callback_example_body_parses_escaped_equals_signs() -> None:
    text = CALLBACK_EXAMPLE["body_text"]
    assert "\\u003d\\u003d" in text and "==" not in text
    body = json.loads(text)
    assert body["data"].endswith("==")
    assert body["md5"] == CALLBACK_EXAMPLE["md5"]
    assert callback_shape_problems(body) == []


def test_callback_example_ciphertext_length_matches_compact_plaintext() -> None:
    # The signkey is unpublished, but the length still pins the serialization: compact JSON in
    # the published key order pads to exactly the ciphertext length, spaced JSON would not.
    ciphertext = base64.b64decode(json.loads(CALLBACK_EXAMPLE["body_text"])["data"], validate=True)
    plaintext = json.loads(CALLBACK_EXAMPLE["decrypted_data_text"])
    compact = json.dumps(plaintext, separators=(",", ":"), ensure_ascii=False).encode()
    spaced = json.dumps(plaintext).encode()
    assert len(ciphertext) == (len(compact) // 16 + 1) * 16
    assert len(ciphertext) != (len(spaced) // 16 + 1) * 16


@pytest.mark.parametrize("body", [None, [], "text", 3, True])
def test_callback_shape_problems_non_object_body_is_reported(body: object) -> None:
    problems = callback_shape_problems(body)
    assert len(problems) == 1
    assert "JSON object" in problems[0]


@pytest.mark.parametrize("field", CALLBACK_FIELDS)
def test_callback_shape_problems_missing_field_is_reported(field: str) -> None:
    body = valid_body()
    del body[field]
    assert callback_shape_problems(body) == [f"missing field {field!r}"]


@pytest.mark.parametrize(("value", "kind"), [(None, "null"), (1, "number"), ({}, "object"), ([], "array")])
def test_callback_shape_problems_non_string_field_is_reported(value: object, kind: str) -> None:
    body = valid_body()
    body["md5"] = value
    assert callback_shape_problems(body) == [f"field 'md5' must be a string, not {kind}"]


@pytest.mark.parametrize("field", ["merchant_id", "data", "md5"])
def test_callback_shape_problems_empty_required_field_is_reported(field: str) -> None:
    body = valid_body()
    body[field] = ""
    assert callback_shape_problems(body) == [f"field {field!r} must not be empty"]


def test_callback_shape_problems_empty_rsp_msg_and_scalar_extra_fields_are_allowed() -> None:
    body = valid_body() | {"rsp_msg": "", "sign_type": "MD5", "version": 1, "test": False, "memo": None}
    assert callback_shape_problems(body) == []


@pytest.mark.parametrize("value", [{"nested": 1}, [1], float("nan"), float("inf"), "x\u0000", "\ud800", "v" * 1025])
def test_callback_shape_problems_nested_unbounded_or_unstorable_extra_fields_are_reported(value: object) -> None:
    problems = callback_shape_problems(valid_body() | {"extra": value})
    assert len(problems) == 1
    assert "'extra'" in problems[0]


def test_callback_shape_problems_reports_every_problem_at_once() -> None:
    assert len(callback_shape_problems({"rsp_code": 1, "data": ""})) == 5


def test_build_callback_opens_with_the_same_key() -> None:
    body = build_callback(PAID, "ON00004652", SIGNKEY, rsp_msg="ok")
    assert tuple(body) == CALLBACK_FIELDS
    assert (body["rsp_code"], body["rsp_msg"], body["merchant_id"]) == ("SUCCESS", "ok", "ON00004652")
    assert open_envelope(body["data"], body["md5"], SIGNKEY, body["merchant_id"]) == PAID


def test_build_callback_survives_gson_style_escaping() -> None:
    # OTT Pay's JSON encoder escapes '=' as \u003d (and could escape anything else).
    wire = json.dumps(valid_body()).replace("=", "\\u003d")
    body = json.loads(wire)
    assert callback_shape_problems(body) == []
    assert open_envelope(body["data"], body["md5"], SIGNKEY, body["merchant_id"]) == PAID


@pytest.mark.parametrize(
    ("raw", "cents"),
    [("100", 100), ("1", 1), ("0", 0), ("007", 7), (" 1999\n", 1999), ("999999999999999", 999_999_999_999_999)],
)
def test_parse_cents_digit_strings_are_integer_cents(raw: str, cents: int) -> None:
    assert parse_cents(raw) == cents


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "1.00",
        "1.",
        "-1",
        "+1",
        "1e3",
        "1,000",
        "1_000",
        "1 000",
        "0x10",
        "NaN",
        "Infinity",
        "1000000000000000",
        "\u0661\u0662\u0663",
        "\uff11\uff12",
        "12\u00b2",
    ],
)
def test_parse_cents_anything_else_raises_value_error(raw: str) -> None:
    with pytest.raises(ValueError, match="integer cents"):
        parse_cents(raw)
