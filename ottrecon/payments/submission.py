"""The submission state machine: what to do next with an order, and what a gateway answer means. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ottpay.codes import GatewayReply, OrderState, Outcome, classify_order_status
from ottpay.messages import parse_cents
from ottrecon.backoff import backoff
from ottrecon.payments.statuses import FINAL, SWEPT


class Step(StrEnum):
    """The next thing to send for an order."""

    SUBMIT = "submit"  # send PASSIVEPAY / ACTIVEPAY (again, with the same order id)
    QUERY = "query"  # ask STATUS_QUERY where it stands
    EXPIRE = "expire"  # PASSIVEPAY never reached the gateway and the customer's code is stale
    NOTHING = "nothing"


@dataclass(frozen=True)
class Policy:
    """Submission and sweep thresholds (all configurable, see README)."""

    # A wallet payment code is short-lived: never re-send a PASSIVEPAY after this.
    passivepay_code_ttl_s: float = 60.0
    # After this many unresolved checks a pre-send failure is final and an unknown goes to review.
    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    # ACTIVEPAY orders without a payment are first queried after sweep_after_s …
    sweep_after_s: float = 300.0
    # … flagged unpaid after unpaid_deadline_s, and no longer followed after sweep_max_age_s.
    unpaid_deadline_s: float = 1800.0
    sweep_max_age_s: float = 86400.0
    # A PASSIVEPAY the gateway still reports pending (notpay: a PIN never entered) is given up this long
    # after it was created: flagged unpaid and no longer queried. The same 15 minutes as the callbacks'
    # retry window (decision 0005); a wallet settles or closes a scanned payment within minutes.
    passivepay_give_up_s: float = 900.0

    def follow_limit_s(self, kind: str) -> float:
        """How long after creation an order of this kind is followed without a final answer (decision 0030)."""
        return self.passivepay_give_up_s if kind == "PASSIVEPAY" else self.sweep_max_age_s

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Exponential delay with jitter (half to full), so workers and orders do not move in step."""
        return backoff(attempts, rng, base_delay_s=self.base_delay_s, max_delay_s=self.max_delay_s)


@dataclass(frozen=True)
class OrderFacts:
    """What the state machine needs to know about an order."""

    kind: str
    status: str
    amount: int
    created_at: datetime
    check_attempts: int
    tip: int = 0
    last_action: str | None = None
    last_outcome: str | None = None
    last_sent: bool = True
    last_not_found: bool = False
    # The gateway once confirmed it has this order (an ACTIVEPAY code, a query that found it).
    accepted: bool = False
    # An ACTIVEPAY's QR code (code_url) arrived: only the ACTIVEPAY answer carries it, a query never does.
    has_code_url: bool = True

    @property
    def gateway_has_it(self) -> bool:
        """Only an order the gateway never confirmed may be re-sent; one it confirmed is only queried."""
        return self.accepted or self.status in ("awaiting_payment", "unpaid")


@dataclass(frozen=True)
class Transition:
    """The result of applying one gateway answer to an order."""

    status: str
    reason: str | None = None
    code_url: str | None = None
    paid_amount: int | None = None  # set when this answer proves the order paid
    next_check_in_s: float | None = None  # None: nothing more to do
    flag_unpaid: bool = False
    # The worker stops following an order that has no final answer (stamps orders.given_up_at).
    given_up: bool = False


# Why an ACTIVEPAY the gateway holds has no QR code: its answer was lost and no query can bring the code back
# (PROTOCOL §2), so no customer can pay it. Said on the order, so the point of sale starts a new payment instead of
# waiting for a code that never comes; the order is still followed (a payment would still be recorded).
NO_QR_CODE = "the gateway has this order but its answer with the QR code was lost: create a new payment"


def code_expired(order: OrderFacts, now: datetime, policy: Policy) -> bool:
    return order.kind == "PASSIVEPAY" and now - order.created_at > timedelta(seconds=policy.passivepay_code_ttl_s)


def next_step(order: OrderFacts, now: datetime, policy: Policy) -> Step:
    """Decide what to send next. Re-sending happens only when the gateway cannot have the order:
    the request never left (sent=False), or STATUS_QUERY said it has no record of it."""
    if order.status in FINAL:
        return Step.NOTHING
    if order.status in SWEPT and order.gateway_has_it:
        return Step.QUERY
    payment_action = order.last_action in ("PASSIVEPAY", "ACTIVEPAY")
    may_resend = (
        order.last_action is None
        or (payment_action and order.last_outcome == Outcome.UNKNOWN and not order.last_sent)
        or (order.last_action == "STATUS_QUERY" and order.last_not_found)
    )
    if may_resend:
        return Step.EXPIRE if code_expired(order, now, policy) else Step.SUBMIT
    return Step.QUERY


def after_reply(
    order: OrderFacts, reply: GatewayReply, now: datetime, policy: Policy, rng: random.Random
) -> Transition:
    """What a gateway answer does to the order. Never moves it backwards; the caller's SQL
    enforces that too (order_status_rank)."""
    attempts = order.check_attempts + 1
    later = policy.backoff(attempts, rng)
    if reply.action == "STATUS_QUERY":
        return _after_query(order, reply, now, policy, attempts, later)
    if reply.outcome == Outcome.SUCCESS:
        if reply.action == "ACTIVEPAY":
            code_url = reply.data.get("code_url", "")
            if not code_url:
                return Transition(order.status, "ACTIVEPAY success without code_url", next_check_in_s=later)
            return Transition("awaiting_payment", code_url=code_url, next_check_in_s=policy.sweep_after_s)
        return _from_gateway_state(order, reply, now, policy, later)
    if reply.outcome == Outcome.DECLINED:
        return Transition("declined", _reason(reply))
    if reply.outcome == Outcome.PERMANENT:
        return Transition("failed", _reason(reply))
    # Unknown: if the request may have arrived, only a query may follow; otherwise re-send later.
    if attempts >= policy.max_attempts:
        if not reply.sent:
            return Transition("failed", f"gateway unreachable after {attempts} attempts ({reply.error})")
        return _follow_or_give_up(
            order, now, policy, "review", f"unresolved after {attempts} attempts: {_reason(reply)}", later
        )
    processing = reply.rsp_code == "PROCESSING"
    return Transition(order.status, _reason(reply), next_check_in_s=policy.base_delay_s if processing else later)


def _after_query(
    order: OrderFacts, reply: GatewayReply, now: datetime, policy: Policy, attempts: int, later: float
) -> Transition:
    if reply.not_found:
        if order.gateway_has_it:
            # It confirmed the order before: a human must look; keep asking while it is young.
            return _follow_or_give_up(order, now, policy, "review", "gateway has no record of an accepted order", later)
        if code_expired(order, now, policy):
            return Transition("expired", "the gateway never received it and the payment code has expired")
        if attempts >= policy.max_attempts:
            return Transition("failed", f"not accepted by the gateway after {attempts} attempts")
        return Transition(order.status, "gateway has no record: re-sending", next_check_in_s=0)
    if reply.outcome != Outcome.SUCCESS:
        if _past_follow_limit(order, now, policy):
            # No answer for the whole window: whether money moved is unknown, so a person looks.
            return Transition("review", f"given up unresolved: {_reason(reply)}", given_up=True)
        return Transition(order.status, _reason(reply), next_check_in_s=later)
    return _from_gateway_state(order, reply, now, policy, later)


def _from_gateway_state(
    order: OrderFacts, reply: GatewayReply, now: datetime, policy: Policy, later: float
) -> Transition:
    raw_status = reply.data.get("order_status", "success" if reply.action == "PASSIVEPAY" else "")
    state = classify_order_status(raw_status)
    if state in (OrderState.PAID, OrderState.PARTIALLY_REFUNDED, OrderState.REFUNDED):
        return Transition("paid", paid_amount=_paid_amount(order, reply))
    if state == OrderState.UNPAID_FINAL:
        final = "declined" if order.kind == "PASSIVEPAY" else "closed"
        return Transition(final, f"gateway order_status {raw_status}")
    if state == OrderState.REVIEW:
        return _follow_or_give_up(order, now, policy, "review", f"unknown gateway order_status {raw_status!r}", later)
    # Still pending at the gateway.
    age = (now - order.created_at).total_seconds()
    if _past_follow_limit(order, now, policy):
        # Flagged, so a payment that still arrives reconciles as paid_after_flagged (an alert).
        limit = int(policy.follow_limit_s(order.kind))
        reason = f"given up: the gateway still reports {raw_status} after {limit} s"
        return Transition("unpaid", reason, flag_unpaid=True, given_up=True)
    if order.kind == "PASSIVEPAY":
        # The customer may be entering a PIN: look again soon, the cashier is waiting.
        return Transition(order.status, f"gateway order_status {raw_status}", next_check_in_s=min(later, 5.0))
    status = "awaiting_payment" if order.status == "pending" else order.status
    no_code = None if order.has_code_url else NO_QR_CODE
    if age >= policy.unpaid_deadline_s:
        reason = "still unpaid past the deadline" + (f" ({no_code})" if no_code else "")
        return Transition("unpaid", reason, next_check_in_s=later, flag_unpaid=True)
    return Transition(status, no_code, next_check_in_s=max(later, policy.sweep_after_s / 4))


def _past_follow_limit(order: OrderFacts, now: datetime, policy: Policy) -> bool:
    return (now - order.created_at).total_seconds() >= policy.follow_limit_s(order.kind)


def _follow_or_give_up(
    order: OrderFacts, now: datetime, policy: Policy, status: str, reason: str, later: float
) -> Transition:
    """status with a next check, or, past the order's follow-up limit, with none (given up: left to humans)."""
    if _past_follow_limit(order, now, policy):
        return Transition(status, f"given up: {reason}", given_up=True)
    return Transition(status, reason, next_check_in_s=later)


def _paid_amount(order: OrderFacts, reply: GatewayReply) -> int:
    """The paid amount excluding tip, comparable with the ordered amount.

    STATUS_QUERY reports `amount`; PASSIVEPAY only `total_amount`, which is amount + tip
    (docs/decisions/0009). The gateway's figure is the evidence; the ordered amount is the
    fallback when it gave none that parses.
    """
    try:
        if reply.data.get("amount"):
            return parse_cents(reply.data["amount"])
        if reply.data.get("total_amount"):
            tip = parse_cents(reply.data["tip"]) if reply.data.get("tip") else order.tip
            return parse_cents(reply.data["total_amount"]) - tip
    except ValueError:
        pass
    return order.amount


def _reason(reply: GatewayReply) -> str:
    if reply.rsp_code is None:
        return f"no answer: {reply.error}"
    return f"{reply.rsp_code}: {reply.rsp_msg or ''}".strip()
