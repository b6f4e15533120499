"""Unit tests for ottpay.envelope against OTT Pay's published examples and crafted bad inputs."""

import base64
import hashlib
import json
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

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

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ottpay_published_examples.json"
PUBLISHED: dict[str, Any] = json.loads(FIXTURES.read_text(encoding="utf-8"))
APPENDIX_A: dict[str, Any] = PUBLISHED["appendix_a"]
SIGNKEY: str = APPENDIX_A["signkey"]
WRONG_KEY = "0123456789ABCDEF"
MERCHANT = "QC00005496"
PAYMENT = {"order_id": "A1", "amount": "100", "merchant_id": MERCHANT, "remarks": "咖啡 ☕"}


def encrypt_raw(plaintext: bytes, md5: str, signkey: str, *, padded: bool = True) -> str:
    """Encrypt arbitrary bytes the protocol's way, to craft plaintexts seal() refuses to produce."""
    body = pad(plaintext, AES.block_size) if padded else plaintext
    return base64.b64encode(AES.new(derive_key(md5, signkey), AES.MODE_ECB).encrypt(body)).decode("ascii")


def capture(call: Callable[[], object]) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        call()
    return info.value


def test_digest_appendix_a_matches_published() -> None:
    assert digest(APPENDIX_A["data"]) == APPENDIX_A["md5"]
    assert hashlib.md5(APPENDIX_A["sorted_values"].encode()).hexdigest().upper() == APPENDIX_A["md5"]


def test_digest_uppercase_keys_sort_first() -> None:
    assert digest({"b": "1", "B": "2", "a": "3"}) == hashlib.md5(b"231").hexdigest().upper()


def test_digest_empty_values_contribute_nothing() -> None:
    assert digest({"amount": "1", "tip": "", "z": "2"}) == digest({"amount": "1", "z": "2"})


def test_digest_callback_example_matches_published() -> None:
    example = PUBLISHED["callback_example"]
    assert digest(json.loads(example["decrypted_data_text"])) == example["md5"]


def test_derive_key_appendix_a_matches_published() -> None:
    assert derive_key(APPENDIX_A["md5"], SIGNKEY) == APPENDIX_A["aes_key"].encode("ascii")


def test_seal_appendix_a_reproduces_published_ciphertext() -> None:
    assert seal(APPENDIX_A["data"], SIGNKEY) == (APPENDIX_A["data_b64"], APPENDIX_A["md5"])


def test_decrypt_appendix_a_round_trips_in_key_order() -> None:
    data = decrypt(APPENDIX_A["data_b64"], APPENDIX_A["md5"], SIGNKEY)
    assert list(data.items()) == list(APPENDIX_A["data"].items())


def test_open_envelope_appendix_a_is_authentic() -> None:
    assert open_envelope(APPENDIX_A["data_b64"], APPENDIX_A["md5"], SIGNKEY, MERCHANT) == APPENDIX_A["data"]


@pytest.mark.parametrize("value", [None, 100, ["x"]])
def test_seal_non_string_value_raises_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        seal({"amount": value}, SIGNKEY)


@pytest.mark.parametrize("separator", ["\n", "\r\n", " ", "\t", " \n "])
def test_decrypt_whitespace_inside_data_is_tolerated(separator: str) -> None:
    text = APPENDIX_A["data_b64"]
    wrapped = separator + separator.join(text[i : i + 19] for i in range(0, len(text), 19)) + separator
    assert decrypt(wrapped, APPENDIX_A["md5"], SIGNKEY) == APPENDIX_A["data"]


def test_decrypt_space_is_not_turned_into_plus() -> None:
    text = APPENDIX_A["data_b64"]
    assert text[2] == "+"
    with pytest.raises(UndecodableData):
        decrypt(text[:2] + " " + text[3:], APPENDIX_A["md5"], SIGNKEY)


@pytest.mark.parametrize(
    "data_b64", ["", " \n\t", "!!!!", "abc", "QQ==QQ==", "QR==", "QQ", "Y2+G\u00e9oqB", "Y2-G_oqB"]
)
def test_decrypt_invalid_base64_raises_undecodable_data(data_b64: str) -> None:
    with pytest.raises(UndecodableData):
        decrypt(data_b64, APPENDIX_A["md5"], SIGNKEY)


def test_decrypt_truncated_ciphertext_raises_decryption_failed() -> None:
    ciphertext = base64.b64decode(APPENDIX_A["data_b64"])
    truncated = base64.b64encode(ciphertext[:-1]).decode("ascii")
    with pytest.raises(DecryptionFailed):
        decrypt(truncated, APPENDIX_A["md5"], SIGNKEY)


def test_decrypt_bad_padding_raises_decryption_failed() -> None:
    data_b64 = encrypt_raw(b'{"a":"b"}' + b"\x00" * 7, APPENDIX_A["md5"], SIGNKEY, padded=False)
    with pytest.raises(DecryptionFailed):
        decrypt(data_b64, APPENDIX_A["md5"], SIGNKEY)


def test_open_envelope_wrong_key_raises_decryption_failed() -> None:
    with pytest.raises(DecryptionFailed):
        open_envelope(APPENDIX_A["data_b64"], APPENDIX_A["md5"], WRONG_KEY, None)


def test_decrypt_unusable_md5_raises_decryption_failed() -> None:
    with pytest.raises(DecryptionFailed):
        decrypt(APPENDIX_A["data_b64"], "\ud800", SIGNKEY)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"not json",
        b"\xff\xfe{}",
        b'["a","b"]',
        b'"text"',
        b"null",
        b"",
        b"[" * 5000,
        b'\xef\xbb\xbf{"a":"b"}',  # a UTF-8 byte order mark: json.loads refuses it, so must the reused decoder
        b'{"a":"b"} {"c":"d"}',
    ],
)
def test_decrypt_plaintext_not_a_json_object_raises_not_json_object(plaintext: bytes) -> None:
    with pytest.raises(NotJsonObject):
        decrypt(encrypt_raw(plaintext, APPENDIX_A["md5"], SIGNKEY), APPENDIX_A["md5"], SIGNKEY)


@pytest.mark.parametrize(
    "plaintext",
    [b'{"amount":100}', b'{"amount":null}', b'{"a":{"b":"c"}}', b'{"a":["b"]}', b'{"a":true}', b'{"a":"\\ud800"}'],
)
def test_decrypt_non_string_value_raises_malformed_plaintext(plaintext: bytes) -> None:
    with pytest.raises(MalformedPlaintext):
        decrypt(encrypt_raw(plaintext, APPENDIX_A["md5"], SIGNKEY), APPENDIX_A["md5"], SIGNKEY)


def test_decrypt_duplicate_key_raises_malformed_plaintext() -> None:
    data_b64 = encrypt_raw(b'{"amount":"1","amount":"100"}', APPENDIX_A["md5"], SIGNKEY)
    with pytest.raises(MalformedPlaintext):
        decrypt(data_b64, APPENDIX_A["md5"], SIGNKEY)


def test_open_envelope_wrong_md5_raises_digest_mismatch() -> None:
    # Whoever holds the sign key can encrypt under any md5; only the recomputed digest catches it.
    bogus = "0" * 32
    data_b64 = encrypt_raw(json.dumps(PAYMENT).encode(), bogus, SIGNKEY)
    with pytest.raises(DigestMismatch):
        open_envelope(data_b64, bogus, SIGNKEY, MERCHANT)


def test_open_envelope_lowercase_md5_is_accepted() -> None:
    md5 = digest(PAYMENT).lower()
    data_b64 = encrypt_raw(json.dumps(PAYMENT).encode(), md5, SIGNKEY)
    assert open_envelope(data_b64, md5, SIGNKEY, MERCHANT) == PAYMENT


def test_open_envelope_non_ascii_md5_raises_digest_mismatch() -> None:
    # "\ufb00".upper() == "FF": a naive case-insensitive compare would accept this md5.
    data = next(d for d in ({"n": str(i)} for i in count()) if "FF" in digest(d))
    lookalike = digest(data).replace("FF", "\ufb00", 1)
    assert lookalike.upper() == digest(data)
    data_b64 = encrypt_raw(json.dumps(data).encode(), lookalike, SIGNKEY)
    with pytest.raises(DigestMismatch):
        open_envelope(data_b64, lookalike, SIGNKEY, None)


def test_open_envelope_other_merchant_raises_merchant_mismatch() -> None:
    data_b64, md5 = seal(PAYMENT, SIGNKEY)
    with pytest.raises(MerchantMismatch):
        open_envelope(data_b64, md5, SIGNKEY, "ON00004652")


@pytest.mark.parametrize("outer", [MERCHANT, None])
def test_open_envelope_same_or_unchecked_merchant_returns_data(outer: str | None) -> None:
    data_b64, md5 = seal(PAYMENT, SIGNKEY)
    assert open_envelope(data_b64, md5, SIGNKEY, outer) == PAYMENT


def test_open_envelope_data_without_merchant_id_accepts_any_outer() -> None:
    data = {"order_id": "A1", "amount": "100"}
    data_b64, md5 = seal(data, SIGNKEY)
    assert open_envelope(data_b64, md5, SIGNKEY, "ON00004652") == data


def test_open_with_any_key_empty_list_raises_no_sign_key() -> None:
    with pytest.raises(NoSignKey) as info:
        open_with_any_key(APPENDIX_A["data_b64"], APPENDIX_A["md5"], [], None)
    assert info.value.reason == "unknown_merchant"


def test_open_with_any_key_single_string_raises_type_error() -> None:
    with pytest.raises(TypeError):
        open_with_any_key(APPENDIX_A["data_b64"], APPENDIX_A["md5"], SIGNKEY, None)


@pytest.mark.parametrize(("keys", "index"), [([WRONG_KEY, SIGNKEY], 1), ([SIGNKEY, WRONG_KEY], 0), ([SIGNKEY], 0)])
def test_open_with_any_key_returns_index_of_working_key(keys: list[str], index: int) -> None:
    data_b64, md5 = seal(PAYMENT, SIGNKEY)
    assert open_with_any_key(data_b64, md5, keys, MERCHANT) == (PAYMENT, index)


@pytest.mark.parametrize("keys", [[WRONG_KEY, SIGNKEY], [SIGNKEY, WRONG_KEY]])
def test_open_with_any_key_all_failing_raises_furthest_error(keys: list[str]) -> None:
    bogus = "0" * 32
    forged = encrypt_raw(json.dumps(PAYMENT).encode(), bogus, SIGNKEY)
    with pytest.raises(DigestMismatch):
        open_with_any_key(forged, bogus, keys, MERCHANT)
    data_b64, md5 = seal(PAYMENT, SIGNKEY)
    with pytest.raises(MerchantMismatch):
        open_with_any_key(data_b64, md5, keys, "ON00004652")


def test_open_with_any_key_all_wrong_keys_raises_decryption_failed() -> None:
    with pytest.raises(DecryptionFailed):
        open_with_any_key(APPENDIX_A["data_b64"], APPENDIX_A["md5"], [WRONG_KEY, "FEDCBA9876543210"], None)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (EnvelopeError, "envelope_error"),
        (UndecodableData, "undecodable_data"),
        (DecryptionFailed, "decryption_failed"),
        (NotJsonObject, "not_json_object"),
        (MalformedPlaintext, "malformed_plaintext"),
        (DigestMismatch, "digest_mismatch"),
        (MerchantMismatch, "merchant_mismatch"),
        (NoSignKey, "unknown_merchant"),
    ],
)
def test_error_reason_and_default_message_are_stable(error: type[EnvelopeError], reason: str) -> None:
    assert error.reason == reason
    assert error.__doc__ is not None
    assert str(error()) == error.__doc__
    assert str(error("custom text")) == "custom text"
    assert issubclass(error, EnvelopeError)


def test_no_sign_key_message_is_documented_text() -> None:
    assert str(NoSignKey()) == "No sign key is configured for this merchant."


def test_errors_never_leak_keys_or_plaintext() -> None:
    md5 = APPENDIX_A["md5"]
    secret = "SECRET-PLAINTEXT-\u5f20"
    crafted = [
        lambda: decrypt("!!!!", md5, SIGNKEY),
        lambda: decrypt(APPENDIX_A["data_b64"], md5, WRONG_KEY),
        lambda: decrypt(encrypt_raw(secret.encode(), md5, SIGNKEY), md5, SIGNKEY),
        lambda: decrypt(encrypt_raw(f'{{"a":"{secret}","b":1}}'.encode(), md5, SIGNKEY), md5, SIGNKEY),
        lambda: open_envelope(encrypt_raw(json.dumps({"a": secret}).encode(), md5, SIGNKEY), md5, SIGNKEY, None),
    ]
    for call in crafted:
        error = capture(call)
        for forbidden in (SIGNKEY, WRONG_KEY, APPENDIX_A["aes_key"], derive_key(md5, WRONG_KEY).decode(), secret):
            assert forbidden not in str(error)
        # Nothing chained either: a JSONDecodeError would carry the whole plaintext into a traceback.
        assert error.__cause__ is None
        assert error.__context__ is None
