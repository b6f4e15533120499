"""The payments vocabulary: order, payment and refund statuses, kinds, channels. Pure (no database driver).

The database holds the same words (sql/0001's payment_status_rank, sql/0002's order_status_rank and CHECK
constraints); tests/integration/test_status_vocabulary.py holds the two to each other, and the api's OpenAPI
description, the console's filters and the CLI's choices are built from these.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    """Where an order this system created stands; it only ever moves up ORDER_RANK."""

    PENDING = "pending"  # stored; not sent yet, or its outcome is unknown
    AWAITING_PAYMENT = "awaiting_payment"  # ACTIVEPAY accepted: the customer has the QR code
    UNPAID = "unpaid"  # flagged: still unpaid past the deadline (may still be paid)
    REVIEW = "review"  # the gateway reported something we do not know
    DECLINED = "declined"  # final: the customer's wallet said no
    FAILED = "failed"  # final: the gateway refused the request
    CLOSED = "closed"  # final: the gateway closed the order unpaid
    EXPIRED = "expired"  # final: PASSIVEPAY never reached the gateway before its code expired
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


# sql/0002's order_status_rank(): a transition may only raise it.
ORDER_RANK: dict[OrderStatus, int] = {
    OrderStatus.PENDING: 0,
    OrderStatus.AWAITING_PAYMENT: 10,
    OrderStatus.UNPAID: 20,
    OrderStatus.REVIEW: 20,
    OrderStatus.DECLINED: 30,
    OrderStatus.FAILED: 30,
    OrderStatus.CLOSED: 30,
    OrderStatus.EXPIRED: 30,
    OrderStatus.PAID: 40,
    OrderStatus.PARTIALLY_REFUNDED: 50,
    OrderStatus.REFUNDED: 60,
}
# After these nothing more is ever sent for an order (refunds have their own flow).
FINAL = frozenset(s for s in OrderStatus if ORDER_RANK[s] >= ORDER_RANK[OrderStatus.DECLINED])
# The unpaid sweep follows these with STATUS_QUERY (the customer may still pay).
SWEPT = frozenset({OrderStatus.AWAITING_PAYMENT, OrderStatus.UNPAID, OrderStatus.REVIEW})
# May still be paid: not final, no money yet (the console's unpaid page).
WAITING = frozenset({OrderStatus.PENDING, *SWEPT})
# The api stops waiting once the gateway answered something definite: anything but pending.
SETTLED = frozenset(OrderStatus) - {OrderStatus.PENDING}


class PaymentStatus(StrEnum):
    """A payment reported for a (merchant, order), by any source; only ever moves up PAYMENT_RANK."""

    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


# sql/0001's payment_status_rank().
PAYMENT_RANK: dict[PaymentStatus, int] = {
    PaymentStatus.PAID: 10,
    PaymentStatus.PARTIALLY_REFUNDED: 20,
    PaymentStatus.REFUNDED: 30,
}


class RefundStatus(StrEnum):
    """A refund with its own OTT Pay order id (refunds_status_check)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


REFUND_DONE = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED})


class PaymentKind(StrEnum):
    """How the customer pays (orders_kind_check): scans our QR code, or shows a wallet code we scan."""

    ACTIVEPAY = "ACTIVEPAY"
    PASSIVEPAY = "PASSIVEPAY"


class Channel(StrEnum):
    """The wallet the money came through: OTT Pay's biz_type (orders_biz_type_check)."""

    ALIPAY = "ALIPAY"
    WECHATPAY = "WECHATPAY"
    UNIONPAY = "UNIONPAY"


class PaidSource(StrEnum):
    """What proved an order paid (payments_source_check): the PASSIVEPAY answer, a callback, a status query."""

    RESPONSE = "response"
    CALLBACK = "callback"
    QUERY = "query"
