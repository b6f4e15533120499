"""A stable identity for one exact callback body, independent of JSON formatting."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping


def envelope_fingerprint(envelope: Mapping[str, object]) -> str:
    """SHA-256 (hex) of the envelope's canonical JSON: sorted keys, compact, UTF-8.

    Two deliveries share a fingerprint only when every field is identical, so a
    forged copy that reuses a genuine md5 can never be mistaken for the genuine one
    (the receiver's queue de-duplication and the rejected-callback table rely on this).
    """
    canonical = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
