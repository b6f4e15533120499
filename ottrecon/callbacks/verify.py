"""Turn one queued callback into a verified payment report or a rejection with its reason. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ottpay.envelope import open_with_any_key
from ottpay.errors import EnvelopeError
from ottpay.fingerprint import envelope_fingerprint
from ottpay.finish_time import parse_finish_time
from ottpay.keys import MerchantKeys
from ottpay.messages import callback_shape_problems, parse_cents
from ottrecon.callbacks.verdicts import RejectedCallback, Verdict, VerifiedCallback


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
