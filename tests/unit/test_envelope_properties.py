"""Hypothesis properties of ottpay.envelope: round trips, and tampering yields only documented errors."""

import base64
import json
from collections.abc import Callable

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad, unpad
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ottpay.envelope import decrypt, derive_key, open_envelope, open_with_any_key, seal
from ottpay.errors import (
    DecryptionFailed,
    DigestMismatch,
    EnvelopeError,
    MalformedPlaintext,
    MerchantMismatch,
    NotJsonObject,
    UndecodableData,
)

DOCUMENTED = (UndecodableData, DecryptionFailed, NotJsonObject, MalformedPlaintext, DigestMismatch, MerchantMismatch)

PROPERTY = settings(max_examples=200, deadline=None, database=None)

signkeys = st.text(min_size=1, max_size=24)
payloads = st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=8)
# ECB lets whole blocks be cut out undetected when they hold only key names or empty values, which
# the digest does not cover. Short keys and non-empty values keep every edit inside covered bytes.
tamper_payloads = st.dictionaries(st.text(max_size=8), st.text(min_size=1, max_size=40), min_size=1, max_size=6)
# Whitespace is stripped by design, so an inserted or substituted whitespace character is no edit.
visible_chars = st.characters(codec="utf-8").filter(lambda c: not c.isspace())


def outcome(call: Callable[[], dict[str, str]]) -> dict[str, str] | EnvelopeError:
    """Run call; return its data or its error, failing the test on any undocumented exception."""
    try:
        return call()
    except EnvelopeError as exc:
        assert type(exc) in DOCUMENTED
        return exc


@PROPERTY
@given(data=payloads, signkey=signkeys)
def test_open_envelope_round_trip_returns_equal_data(data: dict[str, str], signkey: str) -> None:
    data_b64, md5 = seal(data, signkey)
    opened = open_envelope(data_b64, md5, signkey, data.get("merchant_id", "QC00005496"))
    assert list(opened.items()) == list(data.items())


@PROPERTY
@given(data=payloads, signkeys=st.lists(signkeys, min_size=1, max_size=4, unique=True), pick=st.integers(0, 3))
def test_open_with_any_key_round_trip_finds_the_sealing_key(
    data: dict[str, str], signkeys: list[str], pick: int
) -> None:
    index = pick % len(signkeys)
    data_b64, md5 = seal(data, signkeys[index])
    opened, used = open_with_any_key(data_b64, md5, signkeys, None)
    assert opened == data
    assert used == index


@PROPERTY
@given(data=tamper_payloads, signkey=signkeys, position=st.integers(min_value=0), char=visible_chars)
def test_open_envelope_flipped_character_raises_documented_error(
    data: dict[str, str], signkey: str, position: int, char: str
) -> None:
    data_b64, md5 = seal(data, signkey)
    position %= len(data_b64)
    assume(data_b64[position] != char)
    tampered = data_b64[:position] + char + data_b64[position + 1 :]
    assert isinstance(outcome(lambda: open_envelope(tampered, md5, signkey, None)), DOCUMENTED)


@PROPERTY
@given(
    data=tamper_payloads, signkey=signkeys, position=st.integers(min_value=0), text=st.text(visible_chars, min_size=1)
)
def test_open_envelope_inserted_characters_raise_documented_error(
    data: dict[str, str], signkey: str, position: int, text: str
) -> None:
    data_b64, md5 = seal(data, signkey)
    position %= len(data_b64) + 1
    tampered = data_b64[:position] + text + data_b64[position:]
    assert isinstance(outcome(lambda: open_envelope(tampered, md5, signkey, None)), DOCUMENTED)


@PROPERTY
@given(data=tamper_payloads, signkey=signkeys, start=st.integers(min_value=0), length=st.integers(1, 200))
def test_open_envelope_deleted_characters_never_yield_other_data(
    data: dict[str, str], signkey: str, start: int, length: int
) -> None:
    data_b64, md5 = seal(data, signkey)
    start %= len(data_b64)
    tampered = data_b64[:start] + data_b64[start + length :]
    result = outcome(lambda: open_envelope(tampered, md5, signkey, None))
    # Deleting whole AES blocks (64 Base64 chars at a multiple of 64) leaves valid ECB ciphertext.
    assert isinstance(result, DOCUMENTED), result


@PROPERTY
@given(data=payloads, signkey=signkeys, other_md5=st.text(max_size=40))
def test_open_envelope_changed_md5_raises_documented_error(data: dict[str, str], signkey: str, other_md5: str) -> None:
    data_b64, md5 = seal(data, signkey)
    assume(other_md5 != md5)
    assert isinstance(outcome(lambda: open_envelope(data_b64, other_md5, signkey, None)), DOCUMENTED)


@PROPERTY
@given(data=tamper_payloads, signkey=signkeys, other_key=signkeys, new_value=st.text(max_size=40))
def test_open_envelope_value_resealed_with_other_key_raises_documented_error(
    data: dict[str, str], signkey: str, other_key: str, new_value: str
) -> None:
    assume(other_key != signkey)
    field = next(iter(data))
    assume(data[field] != new_value)
    data_b64, md5 = seal({**data, field: new_value}, other_key)
    result = outcome(lambda: open_with_any_key(data_b64, md5, [signkey], None)[0])
    assert isinstance(result, DOCUMENTED)


@PROPERTY
@given(data=payloads, signkey=signkeys, inner=st.text(max_size=12), outer=st.text(max_size=12))
def test_open_envelope_swapped_merchant_raises_merchant_mismatch(
    data: dict[str, str], signkey: str, inner: str, outer: str
) -> None:
    assume(inner != outer)
    data_b64, md5 = seal({**data, "merchant_id": inner}, signkey)
    result = outcome(lambda: open_envelope(data_b64, md5, signkey, outer))
    assert isinstance(result, MerchantMismatch)


@PROPERTY
@given(data_b64=st.text(max_size=120), md5=st.text(max_size=40), signkey=signkeys)
def test_open_envelope_arbitrary_text_raises_only_documented_errors(data_b64: str, md5: str, signkey: str) -> None:
    result = outcome(lambda: open_envelope(data_b64, md5, signkey, "QC00005496"))
    assert isinstance(result, DOCUMENTED)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@PROPERTY
@given(value=json_values, signkey=signkeys)
def test_decrypt_any_json_plaintext_is_classified(value: object, signkey: str) -> None:
    md5 = "C12F9560769C2CB55E6954935B325916"
    plaintext = pad(json.dumps(value).encode("utf-8"), AES.block_size)
    data_b64 = base64.b64encode(AES.new(derive_key(md5, signkey), AES.MODE_ECB).encrypt(plaintext)).decode("ascii")
    result = outcome(lambda: decrypt(data_b64, md5, signkey))
    if not isinstance(value, dict):
        assert isinstance(result, NotJsonObject)
    elif all(isinstance(item, str) for item in value.values()):
        assert result == value
    else:
        assert isinstance(result, MalformedPlaintext)


@PROPERTY
@given(plaintext=st.binary(max_size=80), signkey=signkeys)
def test_decrypt_arbitrary_plaintext_bytes_raise_only_documented_errors(plaintext: bytes, signkey: str) -> None:
    md5 = "F70CA0472D1AAA596E720C19A1DD36A0"
    padded = pad(plaintext, AES.block_size)
    data_b64 = base64.b64encode(AES.new(derive_key(md5, signkey), AES.MODE_ECB).encrypt(padded)).decode("ascii")
    result = outcome(lambda: decrypt(data_b64, md5, signkey))
    assert isinstance(result, dict | NotJsonObject | MalformedPlaintext)


# pycryptodome is an independent AES and PKCS#7 implementation (decision 0042): the envelope uses `cryptography`,
# so these hold the two to the same bytes, and to the same verdict on every padding.


@PROPERTY
@given(data=payloads, signkey=signkeys)
def test_seal_matches_an_independent_aes(data: dict[str, str], signkey: str) -> None:
    assume(_has_utf8_form(signkey) and all(_has_utf8_form(k) and _has_utf8_form(v) for k, v in data.items()))
    data_b64, md5 = seal(data, signkey)
    plaintext = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    expected = AES.new(derive_key(md5, signkey), AES.MODE_ECB).encrypt(pad(plaintext, AES.block_size))
    assert base64.b64decode(data_b64) == expected


def _last_block(raw: bytes, count: int, corrupt_at: int, corrupt: bool) -> bytes:
    """A final block ending in `count` bytes of `count` (valid PKCS#7), or that with one pad byte changed."""
    block = bytearray(raw[: 16 - count] + bytes((count,)) * count)
    if corrupt:
        block[15 - corrupt_at % count] ^= 1 + corrupt_at // count
    return bytes(block)


last_blocks = st.binary(min_size=16, max_size=16) | st.builds(
    _last_block,
    st.binary(min_size=16, max_size=16),
    st.integers(min_value=1, max_value=16),
    st.integers(min_value=0, max_value=63),
    st.booleans(),
)


@PROPERTY
@given(blocks=st.integers(min_value=0, max_value=2), raw=st.binary(min_size=32, max_size=32), last=last_blocks)
def test_padding_is_judged_as_an_independent_pkcs7(blocks: int, raw: bytes, last: bytes) -> None:
    # What a wrong key or a damaged message decrypts to ends in anything; the envelope must accept exactly the
    # endings pycryptodome's unpad accepts (accepted, these bytes are no JSON: NotJsonObject, else DecryptionFailed).
    padded = raw[: 16 * blocks] + last
    md5, signkey = "F70CA0472D1AAA596E720C19A1DD36A0", "oracle-key"
    data_b64 = base64.b64encode(AES.new(derive_key(md5, signkey), AES.MODE_ECB).encrypt(padded)).decode("ascii")
    try:
        unpad(padded, AES.block_size, style="pkcs7")
    except ValueError:
        independent_accepts = False
    else:
        independent_accepts = True
    result = outcome(lambda: decrypt(data_b64, md5, signkey))
    assert not isinstance(result, dict)  # no valid JSON object can come out of these bytes' ending alone
    assert isinstance(result, DecryptionFailed) != independent_accepts


def _has_utf8_form(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
