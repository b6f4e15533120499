"""Merchant sign keys: parsing OTTPAY_MERCHANTS and holding keys without ever showing them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

# PROTOCOL.md section 7: merchant ids are letters and digits; examples are 10 chars long.
_MERCHANT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
# Every published sign key is 16 hex characters, but the protocol does not promise a length.
_SIGN_KEY = re.compile(r"[0-9A-Za-z]{8,64}")


@dataclass(frozen=True)
class MerchantKeys(Mapping[str, tuple[str, ...]]):
    """Accepted sign keys per merchant id, in the order configured: first the key OTT Pay holds, which
    signs requests, then a key being rotated in (docs/OPERATIONS.md, decision 0029).

    The keys are secrets: repr() and str() show merchant ids and key counts only.
    """

    _keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def __getitem__(self, merchant_id: str) -> tuple[str, ...]:
        return self._keys[merchant_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        counts = ", ".join(f"{mid}: {len(keys)} key(s)" for mid, keys in self._keys.items())
        return f"MerchantKeys({counts})"

    __str__ = __repr__

    def keys_for(self, merchant_id: str) -> tuple[str, ...]:
        """The accepted keys for a merchant, or an empty tuple for an unknown one."""
        return self._keys.get(merchant_id, ())


def parse_merchant_keys(text: str) -> MerchantKeys:
    """Parse ``MID=KEY[,MID=KEY…]``; a merchant listed twice gets two accepted keys, in the order listed.

    Raises ValueError naming every malformed entry (never echoing a key's value).
    """
    keys: dict[str, list[str]] = {}
    problems: list[str] = []
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        merchant_id, sep, sign_key = (part.strip() for part in entry.partition("="))
        if not sep or not merchant_id or not sign_key:
            problems.append(f"entry {position} is not MID=KEY")
            continue
        if not _MERCHANT_ID.fullmatch(merchant_id):
            problems.append(f"entry {position}: merchant id must be 1-32 letters or digits")
            continue
        if not _SIGN_KEY.fullmatch(sign_key):
            problems.append(f"entry {position} ({merchant_id}): sign key must be 8-64 letters or digits")
            continue
        if sign_key not in keys.setdefault(merchant_id, []):
            keys[merchant_id].append(sign_key)
    if problems:
        raise ValueError("; ".join(problems))
    if not keys:
        raise ValueError("no merchant is configured")
    return MerchantKeys({mid: tuple(ks) for mid, ks in keys.items()})


def is_sign_key(text: str) -> bool:
    """True for text shaped like a sign key (what OTTPAY_MERCHANTS accepts)."""
    return bool(_SIGN_KEY.fullmatch(text))


def parse_operator_ids(text: str) -> dict[str, str]:
    """Parse ``MID=OPERATOR_ID[,…]`` (OTT Pay operator ids are 10 digits; up to 32 letters or digits accepted).

    An empty text gives an empty mapping. Raises ValueError naming every malformed entry.
    """
    operators: dict[str, str] = {}
    problems: list[str] = []
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        merchant_id, sep, operator_id = (part.strip() for part in entry.partition("="))
        if not sep or not _MERCHANT_ID.fullmatch(merchant_id) or not _MERCHANT_ID.fullmatch(operator_id):
            problems.append(f"entry {position} is not MID=OPERATOR_ID (letters and digits)")
        elif operators.setdefault(merchant_id, operator_id) != operator_id:
            problems.append(f"entry {position}: merchant {merchant_id} has two operator ids")
    if problems:
        raise ValueError("; ".join(problems))
    return operators
