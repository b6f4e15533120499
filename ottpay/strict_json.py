"""JSON that every later hop can hold: Postgres jsonb, our JSON queue, UTF-8 logs. Pure.

Python's json module accepts more than that: NaN and Infinity, numbers that overflow to inf
(1e999), lone surrogate escapes ("\\ud800") and "\\u0000", which jsonb and text columns refuse,
and nesting deep enough to raise RecursionError. An edge that parses with `loads` refuses all
of them up front with a message a careless client can act on, instead of failing later, in a
shared step, for everyone.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Deeper than any document our edges take (callbacks are flat; API bodies are one level).
MAX_DEPTH = 32
# What Postgres text and jsonb cannot hold: NUL, and UTF-16 surrogates without their pair.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# In JSON text: an unstorable character as such, or a \u escape that may decode to one (\u0000 or
# any surrogate \uD800-\uDFFF, a valid pair included). Other escapes (\u003d: senders escape '=')
# cannot, so they keep a body on loads' fast path.
_MAY_HOLD_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]|\\u(?:0000|[dD][89a-fA-F])")


def has_unstorable(text: str) -> bool:
    """Whether text holds what UNSTORABLE matches (a NUL, a lone surrogate), cheaply for the common case.

    Surrogates are not ASCII, so ASCII text only needs the NUL looked for: `in` and isascii run at
    memory speed, where the regex costs ~4 µs on a callback body (issue 13's profiles of both hot paths).
    """
    if text.isascii():
        return "\x00" in text
    return UNSTORABLE.search(text) is not None


def _may_hold_unstorable(text: str) -> bool:
    """_MAY_HOLD_UNSTORABLE.search, answered without the regex for text with no backslash-u and nothing unstorable."""
    if "\\u" not in text and not has_unstorable(text):
        return False
    return _MAY_HOLD_UNSTORABLE.search(text) is not None


class NotStrictJson(ValueError):
    """The body is not JSON that can be stored as received."""


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse raw as strict JSON; raise NotStrictJson (a ValueError) naming the first problem.

    Never raises anything else for any input, whatever its size or shape.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError:
        raise NotStrictJson("body is not valid UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except NotStrictJson:
        raise
    except RecursionError:
        raise NotStrictJson(f"JSON is nested more than {max_depth} levels deep") from None
    except ValueError:
        # JSONDecodeError, and ints beyond Python's digit limit; the message would echo input.
        raise NotStrictJson("body is not valid JSON") from None
    # A parsed string can only hold a NUL or a lone surrogate if the text held one (a str caller's
    # text may; UTF-8 decoding never yields a surrogate, and JSON refuses a raw NUL in a string) or
    # spelled one as a \u escape. Without either, the walk skips the strings (a callback has ~6).
    strings = _may_hold_unstorable(text)
    if not strings and type(value) is dict and max_depth >= 1 and all(type(item) is str for item in value.values()):
        # The everyday body (a callback: one flat object of strings) leaves the walk nothing to find:
        # no nesting, no numbers, and its strings were just cleared. A third of loads' time on such a body.
        return value
    problem = storage_problem(value, max_depth, check_strings=strings)
    if problem:
        raise NotStrictJson(problem)
    return value


def storage_problem(value: Any, max_depth: int = MAX_DEPTH, *, check_strings: bool = True) -> str | None:
    """What keeps an already parsed value from being stored as received, or None.

    Walks iteratively (a hostile value cannot exhaust the stack): depth, NUL characters and
    lone surrogates in keys and strings (unless check_strings is False: the caller knows there
    are none), non-finite floats.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"JSON is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    if check_strings and isinstance(key, str) and has_unstorable(key):
                        return "a field name holds a NUL character or a lone surrogate escape"
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if check_strings and has_unstorable(item):
                return "a string holds a NUL character or a lone surrogate escape"
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite (no NaN, Infinity or overflowing exponents)"
    return None


def _refuse_constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise NotStrictJson("numbers must be finite (no overflowing exponents like 1e999)")
    return number


# Built once: json.loads with hooks would build a decoder per call (the receiver parses every body).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
