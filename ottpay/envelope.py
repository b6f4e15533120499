"""OTT Pay envelope crypto: the md5 digest, AES-128-ECB sealing and verified opening (PROTOCOL §3)."""

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

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

# AES works on 16-byte blocks; PKCS#7 pads every plaintext to a whole number of them (1 to 16 bytes added).
BLOCK_SIZE = 16

# How far an attempt got before failing; open_with_any_key reports the furthest one.
_PIPELINE_RANK: dict[type[EnvelopeError], int] = {
    UndecodableData: 0,
    DecryptionFailed: 1,
    NotJsonObject: 2,
    MalformedPlaintext: 3,
    DigestMismatch: 4,
    MerchantMismatch: 5,
}


def digest(data: Mapping[str, str]) -> str:
    """Return the protocol md5: uppercase hex MD5 of the values joined in code-point-sorted key order.

    Keys are not part of the digest and empty values contribute nothing (PROTOCOL §3 steps 2-3).
    """
    joined = "".join(data[key] for key in sorted(data))
    return hashlib.md5(joined.encode("utf-8")).hexdigest().upper()


def derive_key(md5: str, signkey: str) -> bytes:
    """Return the AES-128 key for a message: the middle 16 hex chars of MD5(md5 + signkey), as ASCII bytes."""
    # The key is the hex text itself, not the 8 bytes it would decode to.
    return hashlib.md5((md5 + signkey).encode("utf-8")).hexdigest().upper()[8:24].encode("ascii")


def seal(data: Mapping[str, str], signkey: str) -> tuple[str, str]:
    """Encrypt and sign data as OTT Pay does; return (data_b64, md5).

    Deterministic (ECB, no IV): the same data and key always give the same output, byte for byte
    what OTT Pay emits. Raises TypeError if a key or value is not a str (None included), and
    ValueError (UnicodeEncodeError) for text that has no UTF-8 form.
    """
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"OTT Pay data must map str to str; got {type(value).__name__} for {key!r}")
    md5 = digest(data)
    # Compact, original key order, raw UTF-8: any other serialization changes the ciphertext.
    plaintext = json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encryptor = _cipher(derive_key(md5, signkey)).encryptor()
    ciphertext = encryptor.update(_pad(plaintext)) + encryptor.finalize()
    return base64.b64encode(ciphertext).decode("ascii"), md5


def decrypt(data_b64: str, md5: str, signkey: str) -> dict[str, str]:
    """Decrypt data_b64 with the key derived from md5 and signkey; return the fields in plaintext order.

    Does not verify the digest (see open_envelope). Any bad input raises UndecodableData,
    DecryptionFailed, NotJsonObject or MalformedPlaintext and nothing else. Errors are raised
    outside of except blocks so that no lower-level exception (a JSONDecodeError keeps the whole
    plaintext) is chained to them and reaches a log.
    """
    ciphertext = _b64decode_canonical(data_b64)
    if not ciphertext:
        raise UndecodableData()
    if len(ciphertext) % BLOCK_SIZE:
        raise DecryptionFailed("The ciphertext length is not a multiple of the AES block size.")
    if not (_has_utf8(md5) and _has_utf8(signkey)):
        raise DecryptionFailed("No key can be derived: the md5 or sign key is not valid text.")
    decryptor = _cipher(derive_key(md5, signkey)).decryptor()
    plaintext = _unpad_or_none(decryptor.update(ciphertext) + decryptor.finalize())
    if plaintext is None:
        raise DecryptionFailed()
    text = _utf8_or_none(plaintext)
    pairs = None if text is None else _json_object_pairs(text)
    if text is None or pairs is None:
        raise NotJsonObject()
    # Text decoded from UTF-8 holds no surrogate; only a \u escape can put one in a parsed string.
    may_hold_surrogates = "\\u" in text
    fields: dict[str, str] = {}
    for key, value in pairs:
        # The digest is defined over string values only; a lone surrogate (from a "\ud800"
        # escape) is a str that cannot be hashed or stored, so it is malformed too.
        if not isinstance(value, str) or (may_hold_surrogates and not (_has_utf8(key) and _has_utf8(value))):
            raise MalformedPlaintext()
        # json.loads would keep the last duplicate silently; refuse the ambiguity instead.
        if key in fields:
            raise MalformedPlaintext("The decrypted JSON object repeats a key.")
        fields[key] = value
    return fields


def open_envelope(data_b64: str, md5: str, signkey: str, merchant_id: str | None) -> dict[str, str]:
    """Decrypt and authenticate a message; return its data.

    Authentic means: decrypts with the signkey-derived key, valid padding, a JSON object of
    strings, digest equal to md5 (case-insensitive, constant time) and, when merchant_id is
    given and the data carries one, the same merchant_id. Raises an EnvelopeError subclass
    otherwise (DigestMismatch, MerchantMismatch, or one from decrypt).
    """
    data = decrypt(data_b64, md5, signkey)
    if not _digest_matches(digest(data), md5):
        raise DigestMismatch()
    if merchant_id is not None and data.get("merchant_id", merchant_id) != merchant_id:
        raise MerchantMismatch()
    return data


def open_with_any_key(
    data_b64: str, md5: str, signkeys: Sequence[str], merchant_id: str | None
) -> tuple[dict[str, str], int]:
    """Open a message with the first sign key that authenticates it; return (data, key index).

    For key rotation: pass the current key first. Raises NoSignKey when signkeys is empty;
    when every key fails, raises the error that got furthest through the pipeline, so the
    stored reason is the most informative one (a digest mismatch beats a padding failure).
    """
    if isinstance(signkeys, str):
        raise TypeError("signkeys must be a sequence of keys, not one key string")
    if not signkeys:
        raise NoSignKey()
    failures: list[EnvelopeError] = []
    for index, signkey in enumerate(signkeys):
        try:
            return open_envelope(data_b64, md5, signkey, merchant_id), index
        except EnvelopeError as exc:
            failures.append(exc)
    raise max(failures, key=lambda exc: _PIPELINE_RANK.get(type(exc), -1))


def _b64decode_canonical(data_b64: str) -> bytes | None:
    # Senders wrap long Base64 and some pass it through form decoding; whitespace is
    # removed, never turned into '+' (that would silently change the ciphertext).
    compact = "".join(data_b64.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Only the canonical spelling is accepted ("QR==" also decodes to b"A"), so each
    # ciphertext has exactly one textual form and any edit to the text is an error.
    return raw if base64.b64encode(raw).decode("ascii") == compact else None


def _cipher(key: bytes) -> Cipher[modes.ECB]:
    # ECB because the protocol says so (PROTOCOL §3); `cryptography` rather than pycryptodome for speed
    # (decision 0042). ECB takes no IV, so a cipher serves one message and is not worth caching.
    return Cipher(algorithms.AES(key), modes.ECB())


def _pad(plaintext: bytes) -> bytes:
    # PKCS#7: n bytes of value n, n from 1 to 16; a whole block of 16s when the length is already a multiple.
    count = BLOCK_SIZE - len(plaintext) % BLOCK_SIZE
    return plaintext + bytes((count,)) * count


def _unpad_or_none(padded: bytes) -> bytes | None:
    # The PKCS#7 check pycryptodome's unpad made: a non-empty whole number of blocks, a last byte n in 1..16,
    # and n bytes of value n at the end. Any other ending is a wrong key or a damaged message.
    if not padded or len(padded) % BLOCK_SIZE:
        return None
    count = padded[-1]
    if not 1 <= count <= BLOCK_SIZE or padded[-count:] != bytes((count,)) * count:
        return None
    return padded[:-count]


class _Pairs(list[tuple[str, Any]]):
    """A decoded JSON object as its key/value pairs, duplicates kept."""


# One decoder for every message: json.loads with a hook builds a new JSONDecoder per call (the
# worker opens thousands of envelopes a second). A decoder holds no state between calls.
_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_Pairs)


def _utf8_or_none(plaintext: bytes) -> str | None:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _json_object_pairs(text: str) -> list[tuple[str, Any]] | None:
    try:
        parsed = _PAIRS_DECODER.decode(text)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, _Pairs) else None


def _has_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _digest_matches(expected: str, received: str) -> bool:
    # A non-ASCII md5 never matches; checked first because str.upper() maps some
    # non-ASCII letters onto ASCII ("\ufb00" -> "FF") and compare_digest rejects non-ASCII str.
    if not received.isascii():
        return False
    return hmac.compare_digest(expected.encode("ascii"), received.encode("ascii").upper())


def build_callback(
    data: Mapping[str, str], merchant_id: str, signkey: str, rsp_code: str = "SUCCESS", rsp_msg: str = "success"
) -> dict[str, str]:
    """Return a callback body exactly as OTT Pay would POST it, with data sealed under signkey.

    data is encrypted as given: include "merchant_id" in it to mirror real callbacks.
    Raises like seal for non-string values.
    """
    data_b64, md5 = seal(data, signkey)
    return {"rsp_code": rsp_code, "rsp_msg": rsp_msg, "merchant_id": merchant_id, "data": data_b64, "md5": md5}
