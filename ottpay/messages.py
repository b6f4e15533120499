"""OTT Pay callback bodies and field parsing: shape checks, a callback builder, amounts and times (PROTOCOL §4)."""

import re
from collections.abc import Mapping

from ottpay.envelope import seal
from ottpay.finish_time import parse_finish_time

__all__ = [
    "CALLBACK_FIELDS",
    "SUCCESS_ACK",
    "build_callback",
    "callback_shape_problems",
    "parse_cents",
    "parse_finish_time",
]

CALLBACK_FIELDS: tuple[str, ...] = ("rsp_code", "rsp_msg", "merchant_id", "data", "md5")

# The acknowledgement is not documented by OTT Pay; this mirrors its own success envelope.
SUCCESS_ACK: dict[str, str] = {"rsp_code": "SUCCESS", "rsp_msg": "success"}

_NON_EMPTY_FIELDS = ("merchant_id", "data", "md5")

# Integer cents only: "100" is 1.00. [0-9] rather than \d, which also matches other scripts' digits.
_CENTS = re.compile(r"[0-9]{1,15}")


def callback_shape_problems(body: object) -> list[str]:
    """Return what is wrong with the shape of a parsed callback body; an empty list means usable.

    Cheap and key-free, for the receiver to run before queueing: the body is a JSON object,
    every callback field is present as a string, and merchant_id, data and md5 are not empty.
    Extra fields are allowed. Problems name fields and JSON types, never echo values.
    """
    if not isinstance(body, dict):
        return [f"body must be a JSON object, not {_json_type(body)}"]
    problems: list[str] = []
    for field in CALLBACK_FIELDS:
        if field not in body:
            problems.append(f"missing field {field!r}")
        elif not isinstance(body[field], str):
            problems.append(f"field {field!r} must be a string, not {_json_type(body[field])}")
        elif field in _NON_EMPTY_FIELDS and not body[field]:
            problems.append(f"field {field!r} must not be empty")
    return problems


def build_callback(
    data: Mapping[str, str], merchant_id: str, signkey: str, rsp_code: str = "SUCCESS", rsp_msg: str = "success"
) -> dict[str, str]:
    """Return a callback body exactly as OTT Pay would POST it, with data sealed under signkey.

    data is encrypted as given: include "merchant_id" in it to mirror real callbacks.
    Raises like seal for non-string values.
    """
    data_b64, md5 = seal(data, signkey)
    return {"rsp_code": rsp_code, "rsp_msg": rsp_msg, "merchant_id": merchant_id, "data": data_b64, "md5": md5}


def parse_cents(raw: str) -> int:
    """Return the integer cents of an OTT Pay amount string ("100" is 1.00).

    Accepts 1 to 15 ASCII digits, optionally surrounded by whitespace; anything else (sign,
    decimal point, exponent, separators, other scripts' digits) raises ValueError.
    """
    text = raw.strip()
    if not _CENTS.fullmatch(text):
        raise ValueError(f"not an OTT Pay amount in integer cents (1-15 ASCII digits): {raw[:40]!r}")
    return int(text)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
