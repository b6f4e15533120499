"""The simulated gateway's memory: orders, refunds, charge counters and callback counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from ottpay.finish_time import BEIJING

_BIZPAY_PREFIX = {"ALIPAY": "AL", "WECHATPAY": "WX", "UNIONPAY": "UP"}
BIZ_TYPES: tuple[str, ...] = tuple(_BIZPAY_PREFIX)
OrderKey = tuple[str, str]


def utc_now() -> datetime:
    """The simulator's default clock (any aware datetime will do: times are written in Beijing time)."""
    return datetime.now(UTC)


@dataclass
class Refund:
    """One accepted refund of a paid order."""

    order_id: str
    amount: int
    refund_time: str


@dataclass
class Order:
    """One payment order, as OTT Pay would hold it. status uses OTT Pay's lower-case values."""

    merchant_id: str
    order_id: str
    action: str
    amount: int
    tip: int
    biz_type: str
    status: str
    created_time: str
    auth_code: str | None = None
    sale_num: str | None = None
    call_back_url: str | None = None
    bizpay_order_id: str | None = None
    trade_time: str | None = None
    refunds: list[Refund] = field(default_factory=list)

    @property
    def total(self) -> int:
        """What the customer pays, in cents: amount plus tip. This is also what can be refunded."""
        return self.amount + self.tip

    @property
    def refunded(self) -> int:
        """Cents refunded so far."""
        return sum(refund.amount for refund in self.refunds)

    def to_json(self) -> dict[str, object]:
        """The order as plain JSON types, for the /sim endpoints."""
        return asdict(self) | {"total": self.total, "refunded": self.refunded}


@dataclass
class CallbackStats:
    """Callback counters: sent = acknowledged with 2xx, failed = attempts that were not."""

    scheduled: int = 0
    attempts: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    duplicated: int = 0


class SimState:
    """Orders keyed by (merchant_id, order_id); refund ids share that namespace, as order ids do."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        # Public so that a test can run the gateway on a clock of its own.
        self.clock = clock
        self.clear()

    def clear(self) -> None:
        """Forget everything (POST /sim/reset)."""
        self.orders: dict[OrderKey, Order] = {}
        self.refunds: dict[OrderKey, Refund] = {}
        self.charges_by_order: Counter[OrderKey] = Counter()
        # Wallet barcodes are single use: one auth code charged twice is a double charge even
        # when the client used two order ids.
        self.charges_by_auth_code: Counter[str] = Counter()
        self.callbacks = CallbackStats()
        # /processV2 (and /process) requests answered, the simulated 503s excluded.
        self.requests = 0
        self._sequence = 0

    def now_text(self) -> str:
        """The current time as OTT Pay writes finish_time, trade_time and refund_time: YYYYmmddHHMMSS,
        Beijing wall time, no zone (PROTOCOL.md section 4)."""
        return self.clock().astimezone(BEIJING).strftime("%Y%m%d%H%M%S")

    def id_in_use(self, merchant_id: str, order_id: str) -> bool:
        """True when the merchant already used order_id for a payment or a refund."""
        return (merchant_id, order_id) in self.orders or (merchant_id, order_id) in self.refunds

    def new_order_id(self, merchant_id: str) -> str:
        """A fresh digits-only id, as OTT Pay generates when the merchant sends none."""
        while True:
            self._sequence += 1
            candidate = f"{self._sequence:018d}"
            if not self.id_in_use(merchant_id, candidate):
                return candidate

    def add_order(self, order: Order) -> None:
        """Record a new order; its id must not be in use."""
        assert not self.id_in_use(order.merchant_id, order.order_id), "order id reuse must be refused earlier"
        self.orders[(order.merchant_id, order.order_id)] = order

    def charge(self, order: Order) -> None:
        """Take the customer's money: status success, trade time and channel id set, counters up."""
        self._sequence += 1
        order.status = "success"
        order.trade_time = self.now_text()
        order.bizpay_order_id = f"{_BIZPAY_PREFIX.get(order.biz_type, 'SM')}{self._sequence:015d}"
        self.charges_by_order[(order.merchant_id, order.order_id)] += 1
        if order.auth_code is not None:
            self.charges_by_auth_code[order.auth_code] += 1

    def add_refund(self, order: Order, refund_id: str, amount: int) -> Refund:
        """Refund part of a paid order; the caller has checked amount against what remains."""
        refund = Refund(order_id=refund_id, amount=amount, refund_time=self.now_text())
        order.refunds.append(refund)
        self.refunds[(order.merchant_id, refund_id)] = refund
        order.status = "fully_refunded" if order.refunded >= order.total else "partial_refunded"
        return refund

    def stats(self) -> dict[str, object]:
        """Counts for GET /sim/stats; orders_charged_more_than_once must stay empty with a correct client."""
        by_status = Counter(order.status for order in self.orders.values())
        return {
            "requests": self.requests,
            "orders": len(self.orders),
            "orders_by_status": dict(sorted(by_status.items())),
            "refunds": len(self.refunds),
            "charges_by_order_max": max(self.charges_by_order.values(), default=0),
            "orders_charged_more_than_once": [
                {"merchant_id": mid, "order_id": oid, "charges": n}
                for (mid, oid), n in sorted(self.charges_by_order.items())
                if n > 1
            ],
            "auth_codes_charged_more_than_once": sorted(c for c, n in self.charges_by_auth_code.items() if n > 1),
            "callbacks": asdict(self.callbacks),
        }
