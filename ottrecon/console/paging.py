"""Keyset pagination cursors: the last row's sort key, opaque in the address (no OFFSET anywhere)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import date, datetime

from ottpay import strict_json
from ottrecon.console.errors import BadFilter

PAGE_SIZE = 50
# Cursor ints are Postgres int8 ids; anything larger would be a database error, not an empty page.
INT64_MAX = 2**63 - 1
Key = tuple[date | datetime | str | int, ...]


def encode(key: Key) -> str:
    """The sort key as URL-safe text (dates and times in ISO form)."""
    plain = [v.isoformat() if isinstance(v, date | datetime) else v for v in key]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(text: str | None, kinds: Sequence[type]) -> Key | None:
    """The key a cursor holds, each value converted to its kind (date, datetime, str, int); None if absent.

    A tampered or stale cursor is a 400 page, never a database error.
    """
    if not text:
        return None
    try:
        values = strict_json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), max_depth=1)
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError("wrong length")
        return tuple(_convert(value, kind) for value, kind in zip(values, kinds, strict=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise BadFilter(["the page link is damaged: go back to the first page"]) from exc


def _convert(value: object, kind: type) -> date | datetime | str | int:
    if kind is datetime and isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("naive time")
        return parsed
    if kind is date and isinstance(value, str):
        return date.fromisoformat(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT64_MAX:
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"expected {kind.__name__}")
