"""Turn one queued callback into a verified payment report or a rejection with its reason. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ottpay.envelope import open_with_any_key
from ottpay.errors import EnvelopeError
from ottpay.fingerprint import envelope_fingerprint
from ottpay.keys import MerchantKeys
from ottpay.messages import callback_shape_problems, parse_cents, parse_finish_time

# Statuses a callback may carry that still mean "paid" (PROTOCOL.md section 6); wallet
# callbacks carry none at all, and an authentic SUCCESS callback without one means paid.
_PAID_ORDER_STATUSES = frozenset({"success", "captured"})
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
        """True when this callback says the order is paid (the only thing OTT Pay calls back for)."""
        status = self.data.get("order_status", "").strip().lower()
        return self.rsp_code == "SUCCESS" and (not status or status in _PAID_ORDER_STATUSES)


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


def judge(envelope: dict[str, Any], received_at: datetime, merchants: MerchantKeys) -> Verdict:
    """Verify an envelope with the merchant's configured keys and parse what it reports.

    Never raises for bad input: every failure becomes a RejectedCallback with a stable reason.
    """

    def reject(reason: str, detail: str) -> RejectedCallback:
        return RejectedCallback(
            merchant_id=_text(envelope.get("merchant_id")),
            md5=_text(envelope.get("md5")).upper(),
            envelope=envelope,
            fingerprint=envelope_fingerprint(envelope),
            reason=reason,
            detail=detail,
            received_at=received_at,
        )

    problems = callback_shape_problems(envelope)
    if problems:
        return reject("malformed_envelope", "; ".join(problems))
    merchant_id, md5 = envelope["merchant_id"], envelope["md5"]
    try:
        data, key_index = open_with_any_key(envelope["data"], md5, merchants.keys_for(merchant_id), merchant_id)
    except EnvelopeError as exc:
        return reject(exc.reason, str(exc))

    field_problems: list[str] = []
    order_id = data.get("order_id", "").strip()
    if not order_id:
        field_problems.append("order_id is missing")
    amount = _cents(data, "amount", field_problems, required=True)
    tip = _cents(data, "tip", field_problems, required=False)
    if any("\x00" in value for value in data.values()):
        # Postgres text cannot hold NUL; keep the envelope (Base64, NUL-free) as a rejection instead.
        field_problems.append("a field contains a NUL character")
    if field_problems:
        return reject("invalid_fields", "; ".join(field_problems))

    finish_time_raw = data.get("finish_time")
    return VerifiedCallback(
        merchant_id=merchant_id,
        md5=md5.upper(),
        order_id=order_id,
        rsp_code=envelope["rsp_code"],
        envelope=envelope,
        data=data,
        signkey_index=key_index,
        received_at=received_at,
        amount=amount,
        tip=tip,
        bizpay_order_id=data.get("bizpay_order_id") or None,
        finish_time_raw=finish_time_raw,
        finish_time=parse_finish_time(finish_time_raw) if finish_time_raw else None,
    )


def _cents(data: dict[str, str], name: str, problems: list[str], *, required: bool) -> int:
    raw = data.get(name, "")
    if not raw.strip():
        if required:
            problems.append(f"{name} is missing")
        return 0
    try:
        return parse_cents(raw)
    except ValueError as exc:
        problems.append(f"{name}: {exc}")
        return 0


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
