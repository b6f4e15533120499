"""What OTT Pay's response codes and order statuses mean for the project (PROTOCOL §5 and §6), with no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """What a gateway answer means for the request that got it."""

    SUCCESS = "success"
    # Final failure of that attempt: the customer was not charged by it.
    DECLINED = "declined"
    # The request itself is wrong: sending it again unchanged can only fail again.
    PERMANENT = "permanent"
    # Money may have moved, or the gateway already knows this order id: resolve by STATUS_QUERY.
    UNKNOWN = "unknown"


_OUTCOMES: dict[str, Outcome] = {
    "SUCCESS": Outcome.SUCCESS,
    "PWD_INCORRECT": Outcome.DECLINED,
    "FAIL": Outcome.DECLINED,
    "PARAM_INVALID": Outcome.PERMANENT,
    "PARAM_ERROR": Outcome.PERMANENT,
    "ORDER_TYPE_ERROR": Outcome.PERMANENT,
    "PROCESSING": Outcome.UNKNOWN,
    "TIMEOUT": Outcome.UNKNOWN,
    "SYSTEM_ERROR": Outcome.UNKNOWN,
    "DB_ERROR": Outcome.UNKNOWN,
    # Both say the gateway already has this order id; only a query tells whether it was paid.
    "ORDER_PAID": Outcome.UNKNOWN,
    "ORDER_USED": Outcome.UNKNOWN,
}


def classify_rsp_code(code: str) -> Outcome:
    """Return the Outcome of an rsp_code; never raises.

    Codes are matched exactly after stripping surrounding whitespace: OTT Pay spells them in
    upper case, and a code it does not publish (or a different spelling) is UNKNOWN, so the
    caller queries rather than guesses.
    """
    if not isinstance(code, str):
        return Outcome.UNKNOWN
    return _OUTCOMES.get(code.strip(), Outcome.UNKNOWN)


class OrderState(StrEnum):
    """Where an order stands according to STATUS_QUERY's order_status."""

    PAID = "paid"
    UNPAID_FINAL = "unpaid_final"
    PENDING = "pending"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    # A status PROTOCOL §6 does not list: pending, and a human looks at it. Never paid or failed.
    REVIEW = "review"


_STATES: dict[str, OrderState] = {
    "success": OrderState.PAID,
    "captured": OrderState.PAID,
    "failure": OrderState.UNPAID_FINAL,
    "orderclosed": OrderState.UNPAID_FINAL,
    "init": OrderState.PENDING,
    "notpay": OrderState.PENDING,
    "canceling": OrderState.PENDING,
    "authfinish": OrderState.PENDING,
    "authorised": OrderState.PENDING,
    "partial_refunded": OrderState.PARTIALLY_REFUNDED,
    "fully_refunded": OrderState.REFUNDED,
}


def classify_order_status(status: str) -> OrderState:
    """Return the OrderState of an order_status, case-insensitively and ignoring surrounding whitespace.

    Never raises: any value PROTOCOL §6 does not list (including a non-string) is REVIEW.
    """
    if not isinstance(status, str):
        return OrderState.REVIEW
    return _STATES.get(status.strip().lower(), OrderState.REVIEW)


@dataclass(frozen=True)
class GatewayReply:
    """One request's result. Read outcome first: only Outcome.SUCCESS means the gateway did it."""

    action: str
    outcome: Outcome
    rsp_code: str | None
    rsp_msg: str | None
    data: dict[str, str]
    latency_ms: int
    sent: bool
    error: str | None
    not_found: bool = False
