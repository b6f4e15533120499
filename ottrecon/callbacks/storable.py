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

from ottpay.strict_json import has_unstorable

UNSTORABLE = "unstorable"
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def unstorable_problem(value: Any) -> str | None:
    """A short description of the first thing Postgres could not store in value, or None.

    Walks iteratively (a deeply nested body must not exhaust Python's recursion limit). Runs twice
    per callback in the worker's hot path, so a child's path (`$.data`) is only spelled out when
    it is needed: for a problem found, or for a container whose children are walked next.
    """
    if isinstance(value, dict):
        # A callback's envelope and data are flat text: one search over all of it settles the common case.
        try:
            flat = "".join(value) + "".join(value.values())
        except TypeError:
            pass  # a key or value that is not text: walk it
        else:
            if not has_unstorable(flat):
                return None
    # (parent's path, whether the step is a list index, the key or index, the item)
    stack: list[tuple[str | None, bool, object, Any]] = [(None, False, "$", value)]
    while stack:
        parent, indexed, step, item = stack.pop()
        if isinstance(item, str):
            if has_unstorable(item):
                return f"{_path(parent, indexed, step)} {_text_problem(item)}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{_path(parent, indexed, step)} is a non-finite number ({item!r}), which jsonb cannot hold"
        elif isinstance(item, dict):
            path = _path(parent, indexed, step)
            for key, child in item.items():
                key_problem = _text_problem(key) if isinstance(key, str) else None
                if key_problem:
                    return f"a key under {path} {key_problem}"
                stack.append((path, False, key, child))
        elif isinstance(item, list):
            path = _path(parent, indexed, step)
            stack.extend((path, True, i, child) for i, child in enumerate(item))
    return None


def _path(parent: str | None, indexed: bool, step: object) -> str:
    """A child's path: `$` for the root (no parent), `parent[i]` in a list, `parent.key` in a dict."""
    if parent is None:
        return "$"
    if indexed:
        return f"{parent}[{step}]"
    return f"{parent}.{safe_text(str(step))[:40]}"


def _text_problem(text: str) -> str | None:
    # What text cannot hold is ottpay.strict_json's one definition (the receiver refuses the same).
    if "\x00" in text:
        return "contains a NUL character"
    if has_unstorable(text):
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
