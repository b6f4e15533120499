"""A stable identity for one exact callback body, independent of JSON formatting."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

# Built once: json.dumps with these options would build an encoder per call (the receiver
# fingerprints every callback it takes).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(envelope: Mapping[str, object]) -> str:
    """The envelope's canonical JSON text: sorted keys, compact, non-ASCII kept as is (not \\u escapes)."""
    return _CANONICAL.encode(envelope)


def canonical_fingerprint(canonical: bytes) -> str:
    """SHA-256 (hex) of canonical_json's text encoded as UTF-8: envelope_fingerprint for a caller
    that keeps the canonical bytes for something else too."""
    return hashlib.sha256(canonical).hexdigest()


def envelope_fingerprint(envelope: Mapping[str, object]) -> str:
    """SHA-256 (hex) of the envelope's canonical JSON: sorted keys, compact, UTF-8.

    Two deliveries share a fingerprint only when every field is identical, so a
    forged copy that reuses a genuine md5 can never be mistaken for the genuine one
    (the receiver's queue de-duplication and the rejected-callback table rely on this).
    """
    return canonical_fingerprint(canonical_json(envelope).encode("utf-8"))
