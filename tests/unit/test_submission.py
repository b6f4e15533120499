"""The submission state machine, case by case (pure: no I/O)."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ottpay.codes import GatewayReply, Outcome
from ottrecon.backoff import backoff
from ottrecon.payments.statuses import WAITING
from ottrecon.payments.submission import OrderFacts, Policy, Step, after_reply, next_step

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
POLICY = Policy(
    passivepay_code_ttl_s=60,
    max_attempts=4,
    base_delay_s=1,
    max_delay_s=60,
    sweep_after_s=300,
    unpaid_deadline_s=1800,
    sweep_max_age_s=86400,
)


def order(kind: str = "PASSIVEPAY", status: str = "pending", age_s: float = 1, **last: Any) -> OrderFacts:
    fields: dict[str, Any] = {"last_action": None, "last_outcome": None, "last_sent": True, "last_not_found": False}
    fields |= last
    return OrderFacts(
        kind=kind,
        status=status,
        amount=1000,
        created_at=NOW - timedelta(seconds=age_s),
        check_attempts=0,
        tip=50,
        **fields,
    )


def reply(
    action: str,
    outcome: Outcome,
    rsp_code: str | None = "SUCCESS",
    *,
    sent: bool = True,
    not_found: bool = False,
    **data: str,
) -> GatewayReply:
    return GatewayReply(action, outcome, rsp_code, "msg", dict(data), 10, sent, None, not_found)


@pytest.mark.parametrize(
    ("facts", "step"),
    [
        (order(), Step.SUBMIT),
        (order(age_s=120), Step.EXPIRE),
        (order(last_action="PASSIVEPAY", last_outcome="unknown", last_sent=True), Step.QUERY),
        (order(last_action="PASSIVEPAY", last_outcome="unknown", last_sent=False), Step.SUBMIT),
        (order(age_s=120, last_action="PASSIVEPAY", last_outcome="unknown", last_sent=False), Step.EXPIRE),
        (order(last_action="STATUS_QUERY", last_outcome="declined", last_not_found=True), Step.SUBMIT),
        (order(last_action="STATUS_QUERY", last_outcome="unknown"), Step.QUERY),
        (order("ACTIVEPAY", age_s=10_000, last_action="STATUS_QUERY", last_not_found=True), Step.SUBMIT),
        (order("ACTIVEPAY", "awaiting_payment"), Step.QUERY),
        (order("ACTIVEPAY", "unpaid"), Step.QUERY),
        (order("ACTIVEPAY", "review", accepted=True), Step.QUERY),
        (order("ACTIVEPAY", "review", last_action="STATUS_QUERY", last_not_found=True), Step.SUBMIT),
        (order(status="paid"), Step.NOTHING),
        (order(status="declined"), Step.NOTHING),
    ],
)
def test_next_step_resends_only_when_the_gateway_cannot_have_the_order(facts: OrderFacts, step: Step) -> None:
    assert next_step(facts, NOW, POLICY) == step


def test_passivepay_success_is_paid_with_the_amount_excluding_tip() -> None:
    t = after_reply(
        order(),
        reply("PASSIVEPAY", Outcome.SUCCESS, order_status="success", total_amount="1050"),
        NOW,
        POLICY,
        random.Random(1),
    )
    assert (t.status, t.paid_amount, t.next_check_in_s) == ("paid", 1000, None)


def test_decline_and_permanent_errors_are_final() -> None:
    declined = after_reply(order(), reply("PASSIVEPAY", Outcome.DECLINED, "FAIL"), NOW, POLICY, random.Random(1))
    failed = after_reply(
        order(), reply("PASSIVEPAY", Outcome.PERMANENT, "PARAM_INVALID"), NOW, POLICY, random.Random(1)
    )
    assert (declined.status, declined.next_check_in_s) == ("declined", None)
    assert (failed.status, failed.next_check_in_s) == ("failed", None)


def test_unknown_after_send_waits_then_queries_and_processing_is_checked_soon() -> None:
    timeout = after_reply(order(), reply("PASSIVEPAY", Outcome.UNKNOWN, None), NOW, POLICY, random.Random(1))
    processing = after_reply(order(), reply("PASSIVEPAY", Outcome.UNKNOWN, "PROCESSING"), NOW, POLICY, random.Random(1))
    assert timeout.status == "pending" and timeout.next_check_in_s is not None
    assert 0.5 <= timeout.next_check_in_s <= 1.0
    assert processing.next_check_in_s == POLICY.base_delay_s


def test_attempt_limit_fails_an_unsent_order_but_keeps_querying_a_sent_one() -> None:
    tired = OrderFacts(kind="ACTIVEPAY", status="pending", amount=1, created_at=NOW, check_attempts=3)
    unsent = after_reply(tired, reply("ACTIVEPAY", Outcome.UNKNOWN, None, sent=False), NOW, POLICY, random.Random(1))
    sent = after_reply(tired, reply("ACTIVEPAY", Outcome.UNKNOWN, None, sent=True), NOW, POLICY, random.Random(1))
    assert (unsent.status, unsent.next_check_in_s) == ("failed", None)
    assert sent.status == "review" and sent.next_check_in_s is not None


def test_query_not_found_resends_now_unless_the_code_expired() -> None:
    fresh = after_reply(
        order(), reply("STATUS_QUERY", Outcome.DECLINED, "FAIL", not_found=True), NOW, POLICY, random.Random(1)
    )
    stale = after_reply(
        order(age_s=120), reply("STATUS_QUERY", Outcome.DECLINED, "FAIL", not_found=True), NOW, POLICY, random.Random(1)
    )
    assert (fresh.status, fresh.next_check_in_s) == ("pending", 0)
    assert (stale.status, stale.next_check_in_s) == ("expired", None)


@pytest.mark.parametrize(
    ("age_s", "status", "flag"),
    [(60, "awaiting_payment", False), (2000, "unpaid", True), (100_000, "unpaid", True)],
)
def test_sweep_flags_unpaid_after_the_deadline(age_s: float, status: str, flag: bool) -> None:
    facts = order("ACTIVEPAY", "awaiting_payment", age_s=age_s)
    t = after_reply(facts, reply("STATUS_QUERY", Outcome.SUCCESS, order_status="notpay"), NOW, POLICY, random.Random(1))
    assert (t.status, t.flag_unpaid) == (status, flag)
    # Past the maximum age nothing more is scheduled.
    assert (t.next_check_in_s is None) == (age_s >= POLICY.sweep_max_age_s)


@pytest.mark.parametrize(
    ("gateway_status", "expected"),
    [("success", "paid"), ("partial_refunded", "paid"), ("orderclosed", "closed"), ("weird", "review")],
)
def test_sweep_query_results(gateway_status: str, expected: str) -> None:
    facts = order("ACTIVEPAY", "awaiting_payment", age_s=400)
    t = after_reply(
        facts,
        reply("STATUS_QUERY", Outcome.SUCCESS, order_status=gateway_status, amount="1000"),
        NOW,
        POLICY,
        random.Random(1),
    )
    assert t.status == expected


def test_activepay_success_waits_for_the_customer_until_the_sweep() -> None:
    t = after_reply(
        order("ACTIVEPAY"), reply("ACTIVEPAY", Outcome.SUCCESS, code_url="https://qr/x"), NOW, POLICY, random.Random(1)
    )
    assert (t.status, t.code_url, t.next_check_in_s) == ("awaiting_payment", "https://qr/x", POLICY.sweep_after_s)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    delays = [POLICY.backoff(n, rng) for n in range(1, 12)]
    assert all(0 < d <= POLICY.max_delay_s for d in delays)
    assert delays[-1] >= POLICY.max_delay_s / 2
    assert delays[0] <= POLICY.base_delay_s


def test_review_order_the_gateway_never_had_is_failed_not_queried_forever() -> None:
    never = OrderFacts(kind="ACTIVEPAY", status="review", amount=1, created_at=NOW, check_attempts=3)
    t = after_reply(
        never, reply("STATUS_QUERY", Outcome.DECLINED, "FAIL", not_found=True), NOW, POLICY, random.Random(1)
    )
    assert (t.status, t.next_check_in_s) == ("failed", None)


def test_accepted_order_lost_by_the_gateway_goes_to_review_until_too_old() -> None:
    young = order("ACTIVEPAY", "awaiting_payment", age_s=600)
    old = order("ACTIVEPAY", "awaiting_payment", age_s=100_000)
    lost = reply("STATUS_QUERY", Outcome.DECLINED, "FAIL", not_found=True)
    assert after_reply(young, lost, NOW, POLICY, random.Random(1)).next_check_in_s is not None
    assert after_reply(old, lost, NOW, POLICY, random.Random(1)).next_check_in_s is None
    assert after_reply(old, lost, NOW, POLICY, random.Random(1)).status == "review"


def test_backoff_never_overflows_whatever_the_attempt_count() -> None:
    # Alert delivery never gives up: after days of outage its attempt count is past any float's exponent range.
    rng = random.Random(7)
    for attempts in (1, 2, 31, 1_000, 10**6, 10**12):
        delay = backoff(attempts, rng, base_delay_s=5.0, max_delay_s=600.0)
        assert 2.5 <= delay <= 600.0
    assert backoff(1, rng, base_delay_s=5.0, max_delay_s=600.0) <= 5.0


@pytest.mark.parametrize(
    ("age_s", "given_up"), [(10, False), (POLICY.passivepay_give_up_s - 1, False), (POLICY.passivepay_give_up_s, True)]
)
def test_passivepay_the_gateway_keeps_pending_is_given_up_after_its_window(age_s: float, given_up: bool) -> None:
    facts = order(age_s=age_s, last_action="STATUS_QUERY", last_outcome="success")
    t = after_reply(facts, reply("STATUS_QUERY", Outcome.SUCCESS, order_status="notpay"), NOW, POLICY, random.Random(1))
    if given_up:
        # Flagged unpaid (an alert; a late payment reconciles as paid_after_flagged), and never queried again.
        assert (t.status, t.flag_unpaid, t.given_up, t.next_check_in_s) == ("unpaid", True, True, None)
        assert t.reason == "given up: the gateway still reports notpay after 900 s"
    else:
        assert (t.status, t.given_up) == ("pending", False)
        assert t.next_check_in_s is not None and t.next_check_in_s <= 5.0


QUERY_STATUSES = st.sampled_from(
    ["success", "notpay", "init", "canceling", "authfinish", "failure", "orderclosed", "fully_refunded", "", "weird"]
)


@given(
    kind=st.sampled_from(["PASSIVEPAY", "ACTIVEPAY"]),
    status=st.sampled_from(sorted(str(s) for s in WAITING)),
    outcome=st.sampled_from(list(Outcome)),
    gateway_status=QUERY_STATUSES,
    age_s=st.floats(min_value=0, max_value=3 * POLICY.sweep_max_age_s),
    attempts=st.integers(min_value=0, max_value=50),
    accepted=st.booleans(),
    not_found=st.booleans(),
)
def test_no_order_is_queried_past_its_follow_up_window(
    kind: str,
    status: str,
    outcome: Outcome,
    gateway_status: str,
    age_s: float,
    attempts: int,
    accepted: bool,
    not_found: bool,
) -> None:
    facts = OrderFacts(
        kind=kind,
        status=status,
        amount=1000,
        created_at=NOW - timedelta(seconds=age_s),
        check_attempts=attempts,
        last_action="STATUS_QUERY",
        last_outcome="success",
        accepted=accepted,
    )
    answer = reply("STATUS_QUERY", outcome, None if outcome is Outcome.UNKNOWN else "X", not_found=not_found)
    if gateway_status:
        answer = dataclasses.replace(answer, data={"order_status": gateway_status, "amount": "1000"})
    t = after_reply(facts, answer, NOW, POLICY, random.Random(1))
    limit = POLICY.follow_limit_s(kind)
    # Only a re-send of an order the gateway never had may still follow (bounded by the attempt limit).
    resend = not_found and not facts.gateway_has_it
    if age_s >= limit and not resend:
        assert t.next_check_in_s is None, t
        # Stopping without a final answer is a give-up, and says so; a final answer is not one.
        assert t.given_up == (t.status in ("unpaid", "review")), t
    elif not resend:
        assert not t.given_up, t


@pytest.mark.parametrize(("age_s", "status"), [(400, "awaiting_payment"), (2000, "unpaid")])
def test_an_activepay_whose_qr_code_was_lost_says_so_and_is_still_followed(age_s: float, status: str) -> None:
    # The ACTIVEPAY answer (the only one carrying code_url) was lost; a query found the order pending.
    facts = dataclasses.replace(order("ACTIVEPAY", "pending", age_s=age_s), has_code_url=False)
    t = after_reply(facts, reply("STATUS_QUERY", Outcome.SUCCESS, order_status="notpay"), NOW, POLICY, random.Random(1))
    # Before: awaiting_payment with no reason, the point of sale waiting for a QR code that never comes.
    assert (t.status, t.code_url) == (status, None)
    assert t.reason is not None and "QR code was lost: create a new payment" in t.reason
    assert t.next_check_in_s is not None
    shown = after_reply(
        order("ACTIVEPAY", "awaiting_payment", age_s=age_s),
        reply("STATUS_QUERY", Outcome.SUCCESS, order_status="notpay"),
        NOW,
        POLICY,
        random.Random(1),
    )
    assert shown.reason is None or "QR code" not in shown.reason
