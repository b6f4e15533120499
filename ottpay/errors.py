"""Errors raised while opening OTT Pay envelopes, each with a stable reason code."""

from typing import ClassVar


class EnvelopeError(Exception):
    """The OTT Pay envelope could not be opened."""

    # Stored in the database next to a rejected callback, so never rename a code.
    reason: ClassVar[str] = "envelope_error"

    def __init__(self, message: str | None = None) -> None:
        # Messages are fixed texts written here, never built from the data, md5 or
        # keys: an error string ends up in logs and in the database.
        # Falls back to the reason code when docstrings are stripped (python -OO).
        super().__init__(message or type(self).__doc__ or self.reason)


class UndecodableData(EnvelopeError):
    """The data field is empty or not valid standard Base64."""

    reason = "undecodable_data"


class DecryptionFailed(EnvelopeError):
    """The data could not be decrypted: wrong key, truncated ciphertext or bad padding."""

    reason = "decryption_failed"


class NotJsonObject(EnvelopeError):
    """The decrypted data is not a UTF-8 JSON object."""

    reason = "not_json_object"


class MalformedPlaintext(EnvelopeError):
    """The decrypted JSON object holds a value that is not a string, or a repeated key."""

    reason = "malformed_plaintext"


class DigestMismatch(EnvelopeError):
    """The md5 does not match the digest of the decrypted data."""

    reason = "digest_mismatch"


class MerchantMismatch(EnvelopeError):
    """The merchant_id inside the data differs from the outer merchant_id."""

    reason = "merchant_mismatch"


class NoSignKey(EnvelopeError):
    """No sign key is configured for this merchant."""

    reason = "unknown_merchant"
