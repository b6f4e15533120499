"""The OTT Pay payment protocol: envelope crypto, callback messages and their errors, with no I/O."""

from ottpay.envelope import decrypt, derive_key, digest, open_envelope, open_with_any_key, seal
from ottpay.errors import (
    DecryptionFailed,
    DigestMismatch,
    EnvelopeError,
    MalformedPlaintext,
    MerchantMismatch,
    NoSignKey,
    NotJsonObject,
    UndecodableData,
)
from ottpay.messages import (
    CALLBACK_FIELDS,
    SUCCESS_ACK,
    build_callback,
    callback_shape_problems,
    parse_cents,
    parse_finish_time,
)

__all__ = [
    "CALLBACK_FIELDS",
    "SUCCESS_ACK",
    "DecryptionFailed",
    "DigestMismatch",
    "EnvelopeError",
    "MalformedPlaintext",
    "MerchantMismatch",
    "NoSignKey",
    "NotJsonObject",
    "UndecodableData",
    "build_callback",
    "callback_shape_problems",
    "decrypt",
    "derive_key",
    "digest",
    "open_envelope",
    "open_with_any_key",
    "parse_cents",
    "parse_finish_time",
    "seal",
]
