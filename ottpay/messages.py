"""OTT Pay callback bodies and field parsing: shape checks, amounts and times (PROTOCOL §4). Pure: no cipher.

Building a sealed callback needs the cipher: ottpay.envelope.build_callback.
"""

import math
import re

from ottpay.finish_time import parse_finish_time
from ottpay.strict_json import has_unstorable

__all__ = [
    "CALLBACK_FIELDS",
    "GATEWAY_BASE_URL",
    "SUCCESS_ACK",
    "callback_shape_problems",
    "parse_cents",
    "parse_finish_time",
]

CALLBACK_FIELDS: tuple[str, ...] = ("rsp_code", "rsp_msg", "merchant_id", "data", "md5")

# Where OTT Pay's payment API answers (PROTOCOL §1). Here rather than in ottpay.client, so that settings can name
# it without loading the HTTP client.
GATEWAY_BASE_URL = "https://frontapi.ottpay.com:443"

# The acknowledgement is not documented by OTT Pay; this mirrors its own success envelope.
SUCCESS_ACK: dict[str, str] = {"rsp_code": "SUCCESS", "rsp_msg": "success"}

_NON_EMPTY_FIELDS = ("merchant_id", "data", "md5")
# Bounds of the documented shape. A real callback is well under 2 KiB: its data (Base64 of the
# encrypted fields) a few hundred characters, merchant ids 10, md5 32 hex digits. The limits
# leave room for long remarks and future fields while keeping every field's size known.
FIELD_MAX_CHARS: dict[str, int] = {"rsp_code": 64, "rsp_msg": 1024, "merchant_id": 64, "data": 32 * 1024, "md5": 64}
MAX_EXTRA_FIELDS = 16
EXTRA_NAME_MAX_CHARS = 64
EXTRA_VALUE_MAX_CHARS = 1024

# Integer cents only: "100" is 1.00. [0-9] rather than \d, which also matches other scripts' digits.
_CENTS = re.compile(r"[0-9]{1,15}")


def callback_shape_problems(body: object) -> list[str]:
    """Return what is wrong with the shape of a parsed callback body; an empty list means usable.

    Cheap and key-free, for the receiver to run before queueing. The documented shape only
    (PROTOCOL §4): a flat JSON object whose five callback fields are strings of bounded length
    (merchant_id, data and md5 not empty); unknown extra fields are kept, but only a few, with
    short names and scalar values of bounded size. No string may hold a NUL or a lone surrogate
    (Postgres cannot store them). Problems name fields and JSON types, never echo values.
    """
    return [] if _plainly_well_shaped(body) else _shape_problems(body)


# (field, longest allowed, must not be empty) for the fast path, in CALLBACK_FIELDS order.
_FIELD_RULES = tuple((field, FIELD_MAX_CHARS[field], field in _NON_EMPTY_FIELDS) for field in CALLBACK_FIELDS)


def _plainly_well_shaped(body: object) -> bool:
    """True for the everyday body (the five fields, bounded non-empty strings, nothing unstorable, no
    extras) at a fraction of _shape_problems' cost; False only means "look closer", never "bad".
    tests/unit/test_fast_paths.py holds it to _shape_problems."""
    if type(body) is not dict or len(body) != len(CALLBACK_FIELDS):
        return False
    for field, longest, non_empty in _FIELD_RULES:
        value = body.get(field)
        if type(value) is not str or len(value) > longest or (non_empty and not value):
            return False
    # All five values are str (checked above) and there is nothing else: one scan covers them all.
    return not has_unstorable("".join(body.values()))


def _shape_problems(body: object) -> list[str]:
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
        elif len(body[field]) > FIELD_MAX_CHARS[field]:
            problems.append(f"field {field!r} is longer than {FIELD_MAX_CHARS[field]} characters")
        elif has_unstorable(body[field]):
            problems.append(f"field {field!r} holds a NUL character or a lone surrogate escape")
    extras = [name for name in body if name not in FIELD_MAX_CHARS]
    if len(extras) > MAX_EXTRA_FIELDS:
        problems.append(f"at most {MAX_EXTRA_FIELDS} extra fields are accepted, got {len(extras)}")
        return problems
    for name in extras:
        problems += _extra_field_problems(name, body[name])
    return problems


def _extra_field_problems(name: str, value: object) -> list[str]:
    # Field names are echoed only once known to be short and storable (they are attacker text).
    if len(name) > EXTRA_NAME_MAX_CHARS or has_unstorable(name):
        return [f"an extra field name is longer than {EXTRA_NAME_MAX_CHARS} characters or holds a NUL"]
    if isinstance(value, dict | list):
        return [f"extra field {name!r} must be a string, number, boolean or null, not {_json_type(value)}"]
    if isinstance(value, str):
        if len(value) > EXTRA_VALUE_MAX_CHARS:
            return [f"extra field {name!r} is longer than {EXTRA_VALUE_MAX_CHARS} characters"]
        if has_unstorable(value):
            return [f"extra field {name!r} holds a NUL character or a lone surrogate escape"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"extra field {name!r} must be a finite number"]
    return []


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
