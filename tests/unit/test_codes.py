"""Unit tests for ottpay.codes: every published rsp_code and order status, and the safe defaults."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ottpay.codes import OrderState, Outcome, classify_order_status, classify_rsp_code

PUBLISHED_CODES = {
    "SUCCESS": Outcome.SUCCESS,
    "PROCESSING": Outcome.UNKNOWN,
    "PWD_INCORRECT": Outcome.DECLINED,
    "FAIL": Outcome.DECLINED,
    "TIMEOUT": Outcome.UNKNOWN,
    "SYSTEM_ERROR": Outcome.UNKNOWN,
    "PARAM_INVALID": Outcome.PERMANENT,
    "PARAM_ERROR": Outcome.PERMANENT,
    "ORDER_PAID": Outcome.UNKNOWN,
    "ORDER_USED": Outcome.UNKNOWN,
    "ORDER_TYPE_ERROR": Outcome.PERMANENT,
    "DB_ERROR": Outcome.UNKNOWN,
}

PUBLISHED_STATUSES = {
    "init": OrderState.PENDING,
    "notpay": OrderState.PENDING,
    "success": OrderState.PAID,
    "canceling": OrderState.PENDING,
    "failure": OrderState.UNPAID_FINAL,
    "orderclosed": OrderState.UNPAID_FINAL,
    "authfinish": OrderState.PENDING,
    "partial_refunded": OrderState.PARTIALLY_REFUNDED,
    "fully_refunded": OrderState.REFUNDED,
    "authorised": OrderState.PENDING,
    "captured": OrderState.PAID,
}


@pytest.mark.parametrize(("code", "outcome"), PUBLISHED_CODES.items())
def test_classify_rsp_code_published_code_has_documented_outcome(code: str, outcome: Outcome) -> None:
    assert classify_rsp_code(code) is outcome


@pytest.mark.parametrize("code", ["", "REFUND_FAIL", "success", "Success", "SUCCESS!", "NOT_ENOUGH"])
def test_classify_rsp_code_unpublished_code_is_unknown(code: str) -> None:
    assert classify_rsp_code(code) is Outcome.UNKNOWN


def test_classify_rsp_code_surrounding_whitespace_is_ignored() -> None:
    assert classify_rsp_code(" SUCCESS\n") is Outcome.SUCCESS


@given(st.text().filter(lambda code: code.strip() not in PUBLISHED_CODES))
def test_classify_rsp_code_any_other_text_is_unknown(code: str) -> None:
    assert classify_rsp_code(code) is Outcome.UNKNOWN


@pytest.mark.parametrize(("status", "state"), PUBLISHED_STATUSES.items())
def test_classify_order_status_published_status_has_documented_state(status: str, state: OrderState) -> None:
    assert classify_order_status(status) is state


@pytest.mark.parametrize("status", ["SUCCESS", " Success ", "\tsuccess\n", "CAPTURED"])
def test_classify_order_status_case_and_whitespace_are_ignored(status: str) -> None:
    assert classify_order_status(status) is OrderState.PAID


@pytest.mark.parametrize("status", ["", "paid", "refunded", "succes", "chargeback", "成功"])
def test_classify_order_status_unlisted_value_is_review(status: str) -> None:
    assert classify_order_status(status) is OrderState.REVIEW


@given(st.text().filter(lambda status: status.strip().lower() not in PUBLISHED_STATUSES))
def test_classify_order_status_any_other_text_is_review_never_paid(status: str) -> None:
    assert classify_order_status(status) is OrderState.REVIEW


def test_outcome_and_state_values_are_stable_strings() -> None:
    assert [str(o) for o in Outcome] == ["success", "declined", "permanent", "unknown"]
    assert [str(s) for s in OrderState] == [
        "paid",
        "unpaid_final",
        "pending",
        "partially_refunded",
        "refunded",
        "review",
    ]
