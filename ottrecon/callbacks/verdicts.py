"""What the worker decides about a callback: verified (with its payment fields) or rejected (with a reason). Pure.

Apart from verify.py so that storing, metrics and the console can name a verdict without loading the cipher.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class RejectReason(StrEnum):
    """Why a callback was rejected: stored in rejected_callbacks.reason, so never rename one.

    The envelope reasons are ottpay.errors' codes (each EnvelopeError subclass's `reason`).
    """

    MALFORMED_ENVELOPE = "malformed_envelope"
    INVALID_FIELDS = "invalid_fields"
    UNSTORABLE = "unstorable"
    UNDECODABLE_DATA = "undecodable_data"
    DECRYPTION_FAILED = "decryption_failed"
    NOT_JSON_OBJECT = "not_json_object"
    MALFORMED_PLAINTEXT = "malformed_plaintext"
    DIGEST_MISMATCH = "digest_mismatch"
    MERCHANT_MISMATCH = "merchant_mismatch"
    UNKNOWN_MERCHANT = "unknown_merchant"


# Reasons a key fixes (a missing, wrong or rotated key garbles decryption): only these are worth a replay.
# A malformed envelope, a merchant mismatch or unusable fields stay what they are.
KEY_REASONS = frozenset(
    {
        RejectReason.UNKNOWN_MERCHANT,
        RejectReason.DECRYPTION_FAILED,
        RejectReason.NOT_JSON_OBJECT,
        RejectReason.MALFORMED_PLAINTEXT,
        RejectReason.DIGEST_MISMATCH,
    }
)

# Statuses a callback may carry that still mean "paid" (PROTOCOL.md section 6); wallet
# callbacks carry none at all, and an authentic callback without one means paid (OTT Pay calls
# back only for payments that succeeded, PROTOCOL.md section 4).
_PAID_ORDER_STATUSES = frozenset({"success", "captured"})
# What every genuine callback's envelope says (PROTOCOL.md section 4). Not signed: anything else is a copy
# someone altered, or gateway behaviour nobody documented; either way a person should look (decision 0026).
GENUINE_RSP_CODE = "SUCCESS"
# A live callback's finish_time further than this from its receipt is counted and shown in the order's
# evidence (decision 0007): the zone was misread once, and a future surprise must show within a day.
FINISH_TIME_SKEW_LIMIT = timedelta(hours=1)


@dataclass(frozen=True)
class VerifiedCallback:
    """An authentic callback, with the payment fields it reports already parsed."""

    merchant_id: str
    md5: str
    order_id: str
    rsp_code: str
    envelope: dict[str, Any]
    data: dict[str, str]
    signkey_index: int
    received_at: datetime
    amount: int
    tip: int
    bizpay_order_id: str | None
    finish_time_raw: str | None
    finish_time: datetime | None

    @property
    def finish_time_skew(self) -> timedelta | None:
        """finish_time minus received_at (negative: finished before it arrived); None when it did not parse."""
        return None if self.finish_time is None else self.finish_time - self.received_at

    @property
    def reports_payment(self) -> bool:
        """True when the signed data says the order is paid (the only thing OTT Pay calls back for).

        The envelope's rsp_code is not signed (the md5 covers only the data's values), so it never takes
        part: a copy with rsp_code FAIL says exactly what the genuine callback says (decision 0026).
        """
        status = self.data.get("order_status", "").strip().lower()
        return not status or status in _PAID_ORDER_STATUSES

    @property
    def rsp_code_unexpected(self) -> bool:
        """True when the unsigned rsp_code is not what genuine callbacks carry: worth a person's look."""
        return self.rsp_code.strip() != GENUINE_RSP_CODE


@dataclass(frozen=True)
class RejectedCallback:
    """A callback that could not be verified or interpreted, kept with its reason for replay."""

    merchant_id: str
    md5: str
    envelope: dict[str, Any]
    fingerprint: str
    reason: str
    detail: str
    received_at: datetime


Verdict = VerifiedCallback | RejectedCallback
