"""Can Postgres store this value? JSON that Python accepts but jsonb and text refuse, found before writing.

Python's json module reads `NaN`, `Infinity` and `1e999` (as an infinite float), lone UTF-16
surrogates (`"\\ud800"`) and `\\u0000`; Postgres refuses each of them (jsonb has no non-finite
numbers, text holds neither NUL nor unpaired surrogates). Such a body must never reach a
statement: it would fail the batch and, before this check, went to the dead-letter list where
`requeue-dead` could only fail again. The worker records it as rejected (reason `unstorable`)
with an escaped copy that Postgres can hold. Pure.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from ottpay.strict_json import UNSTORABLE as UNSTORABLE_TEXT

UNSTORABLE = "unstorable"
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def unstorable_problem(value: Any) -> str | None:
    """A short description of the first thing Postgres could not store in value, or None.

    Walks iteratively (a deeply nested body must not exhaust Python's recursion limit).
    """
    stack: list[tuple[str, Any]] = [("$", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{path} is a non-finite number ({item!r}), which jsonb cannot hold"
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"{path} {problem}"
        elif isinstance(item, dict):
            for key, child in item.items():
                key_problem = _text_problem(key) if isinstance(key, str) else None
                if key_problem:
                    return f"a key under {path} {key_problem}"
                stack.append((f"{path}.{safe_text(str(key))[:40]}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


def _text_problem(text: str) -> str | None:
    # What text cannot hold is ottpay.strict_json's one definition (the receiver refuses the same).
    if "\x00" in text:
        return "contains a NUL character"
    if UNSTORABLE_TEXT.search(text):
        return "contains an unpaired UTF-16 surrogate"
    return None


def safe_text(text: str) -> str:
    """text with NUL and unpaired surrogates written as escapes, so a text column can hold it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def storable_copy(value: Any) -> dict[str, str]:
    """A jsonb-safe stand-in for an unstorable body: its JSON text, every problem escaped, as one string."""
    return {"unstorable_json": json.dumps(value, ensure_ascii=True, sort_keys=True, default=repr)}


def safe_fingerprint(item: Any, value: Any) -> str:
    """The receiver's fingerprint when the item carries a well-formed one, else one computed from an escaped copy."""
    given = item.get("fingerprint") if isinstance(item, dict) else None
    if isinstance(given, str) and _FINGERPRINT.match(given):
        return given
    canonical = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
