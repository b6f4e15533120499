"""A stable identity for one exact callback body, independent of JSON formatting."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from json.encoder import encode_basestring

from ottpay.messages import CALLBACK_FIELDS

# Built once: json.dumps with these options would build an encoder per call (the receiver
# fingerprints every callback it takes).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# The five callback fields in sort_keys order, for the everyday body that has exactly those, all strings.
_SORTED_FIELDS = tuple(sorted(CALLBACK_FIELDS))
_EVERYDAY_TEMPLATE = "{" + ",".join(f'"{field}":%s' for field in _SORTED_FIELDS) + "}"


def canonical_json(envelope: Mapping[str, object]) -> str:
    """The envelope's canonical JSON text: sorted keys, compact, non-ASCII kept as is (not \\u escapes)."""
    if type(envelope) is dict and len(envelope) == len(_SORTED_FIELDS):
        texts = [value for field in _SORTED_FIELDS if isinstance(value := envelope.get(field), str)]
        if len(texts) == len(_SORTED_FIELDS):
            # The encoder's own string escaping (encode_basestring is what it uses with ensure_ascii=False) around
            # fixed keys: the same text at under half the cost of the general encoder (the receiver fingerprints
            # every callback). tests/unit/test_fast_paths.py holds the two to each other.
            return _EVERYDAY_TEMPLATE % tuple(encode_basestring(text) for text in texts)
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
