"""What the simulated gateway does for each action (PROTOCOL §2), on verified request data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from simulator.background import Background
from simulator.callbacks import CallbackSender, callback_url_allowed
from simulator.faults import Dice
from simulator.fields import ParamInvalid, cents, order_id_field, required
from simulator.settings import SimulatorSettings
from simulator.state import BIZ_TYPES, Order, SimState

_REFUNDABLE = ("success", "partial_refunded")
# Actions whose answer can be lost after money moved; the timeout fault applies to these only.
MONEY_ACTIONS = frozenset({"PASSIVEPAY", "ACTIVEPAY", "REFUND"})


@dataclass(frozen=True)
class Answer:
    """A gateway answer before sealing: data (if any) is encrypted with the key the gateway holds."""

    rsp_code: str
    rsp_msg: str
    data: dict[str, str] | None = None


class UnknownOrder(LookupError):
    """No such order."""


class NotPayable(Exception):
    """The order is not waiting for the customer."""


class Gateway:
    """The simulated OTT Pay: tells the truth about its orders and never charges an order twice."""

    def __init__(
        self, settings: SimulatorSettings, state: SimState, dice: Dice, background: Background, sender: CallbackSender
    ) -> None:
        self._settings, self._state, self._dice = settings, state, dice
        self._background, self._sender = background, sender

    def handle(self, action: str, merchant_id: str, fields: Mapping[str, str]) -> Answer:
        """Answer one verified request. Unknown actions and bad fields are PARAM_INVALID."""
        handler = {
            "PASSIVEPAY": self._passive_pay,
            "ACTIVEPAY": self._active_pay,
            "STATUS_QUERY": self._status_query,
            "REFUND": self._refund,
        }.get(action)
        if handler is None:
            return Answer("PARAM_INVALID", f"unknown action {action[:40]!r}")
        try:
            return handler(merchant_id, fields)
        except ParamInvalid as exc:
            return Answer("PARAM_INVALID", str(exc))

    def pay_now(self, merchant_id: str, order_id: str) -> Order:
        """The customer pays an ACTIVEPAY order now; its callback is scheduled. Raises UnknownOrder/NotPayable."""
        order = self._order(merchant_id, order_id)
        if order.action != "ACTIVEPAY" or order.status != "notpay":
            raise NotPayable()
        self._state.charge(order)
        self._sender.order_paid(order, self._state.callbacks)
        return order

    def close(self, merchant_id: str, order_id: str) -> Order:
        """The customer walks away: a waiting order becomes orderclosed. Raises UnknownOrder/NotPayable."""
        order = self._order(merchant_id, order_id)
        if order.status != "notpay":
            raise NotPayable()
        order.status = "orderclosed"
        return order

    def _order(self, merchant_id: str, order_id: str) -> Order:
        order = self._state.orders.get((merchant_id, order_id))
        if order is None:
            raise UnknownOrder()
        return order

    def _passive_pay(self, merchant_id: str, fields: Mapping[str, str]) -> Answer:
        auth_code = required(fields, "auth_code")
        order = self._new_order(merchant_id, "PASSIVEPAY", fields)
        if order is None:
            return Answer("ORDER_USED", "order id already used")
        order.auth_code = auth_code
        order.sale_num = fields.get("sale_num") or None
        self._state.add_order(order)
        settings, pending = self._settings, {"order_id": order.order_id, "merchant_id": merchant_id}
        if auth_code.endswith(settings.wrong_pin_suffix):
            order.status = "failure"
            return Answer("PWD_INCORRECT", "password incorrect", pending | {"order_status": "failure"})
        if auth_code.endswith(settings.decline_suffix):
            order.status = "failure"
            return Answer("FAIL", "payment declined", pending | {"order_status": "failure"})
        if self._dice.chance(settings.faults.processing):
            self._background.later(settings.faults.processing_delay_s, lambda: self._settle(order), "settle")
            return Answer("PROCESSING", "transaction processing", pending | {"order_status": "notpay"})
        self._state.charge(order)
        paid = _order_data(order) | {"buyer_login_id": f"sim***{auth_code[-4:]}"}
        return Answer("SUCCESS", "success", paid)

    async def _settle(self, order: Order) -> None:
        # The customer may have been closed out (POST /sim/.../close) while the PIN was pending.
        if order.status == "notpay":
            self._state.charge(order)

    def _active_pay(self, merchant_id: str, fields: Mapping[str, str]) -> Answer:
        url = required(fields, "call_back_url")
        if not callback_url_allowed(url):
            raise ParamInvalid("call_back_url must be an absolute http(s) URL")
        order = self._new_order(merchant_id, "ACTIVEPAY", fields)
        if order is None:
            return Answer("ORDER_USED", "order id already used")
        order.call_back_url = url
        self._state.add_order(order)
        autopay = self._settings.autopay
        if autopay is not None and self._dice.chance(autopay.fraction):
            self._background.later(autopay.delay_s, lambda: self._autopay(order), "autopay")
        code_url = f"https://qr.sim.ottpay.local/{merchant_id}/{order.order_id}"
        data = {"code_url": code_url, "order_id": order.order_id, "merchant_id": merchant_id}
        return Answer("SUCCESS", "success", data)

    async def _autopay(self, order: Order) -> None:
        try:
            self.pay_now(order.merchant_id, order.order_id)
        except (UnknownOrder, NotPayable):
            pass  # closed or paid by hand in the meantime: nothing to do

    def _status_query(self, merchant_id: str, fields: Mapping[str, str]) -> Answer:
        order_id = order_id_field(fields, needed=True)
        if (merchant_id, order_id) in self._state.refunds:
            return Answer("ORDER_TYPE_ERROR", "order_id is a refund; query its original order")
        order = self._state.orders.get((merchant_id, order_id))
        if order is None:
            # Undocumented by OTT Pay; the project's choice (docs/decisions/0004).
            return Answer("FAIL", "order not found")
        return Answer("SUCCESS", "success", _order_data(order))

    def _refund(self, merchant_id: str, fields: Mapping[str, str]) -> Answer:
        ori_order_id = order_id_field(fields, name="ori_order_id", needed=True)
        amount = cents(fields, "refund_amt", minimum=1)
        refund_id = order_id_field(fields, needed=False) or self._state.new_order_id(merchant_id)
        # Checked first, so a retried refund is ORDER_USED even once nothing is left to refund.
        if self._state.id_in_use(merchant_id, refund_id):
            return Answer("ORDER_USED", "order id already used")
        if (merchant_id, ori_order_id) in self._state.refunds:
            return Answer("ORDER_TYPE_ERROR", "ori_order_id is a refund, not a payment")
        order = self._state.orders.get((merchant_id, ori_order_id))
        if order is None:
            return Answer("FAIL", "original order not found")
        if order.status not in _REFUNDABLE:
            return Answer("FAIL", f"original order is {order.status}, not paid")
        if amount > order.total - order.refunded:
            return Answer("PARAM_INVALID", "refund_amt exceeds the refundable amount")
        refund = self._state.add_refund(order, refund_id, amount)
        data = {"order_id": refund_id, "ori_order_id": ori_order_id, "merchant_id": merchant_id}
        data |= {"refund_amount": str(amount), "order_status": order.status, "refund_time": refund.refund_time}
        return Answer("SUCCESS", "success", data)

    def _new_order(self, merchant_id: str, action: str, fields: Mapping[str, str]) -> Order | None:
        """A validated, not yet recorded order; None when its order id is already in use."""
        required(fields, "operator_id")
        order_id = order_id_field(fields, needed=False)
        amount, tip = cents(fields, "amount", minimum=1), cents(fields, "tip", minimum=0, default=0)
        biz_type = required(fields, "biz_type")
        if biz_type not in BIZ_TYPES:
            raise ParamInvalid(f"biz_type must be one of {', '.join(BIZ_TYPES)}")
        if order_id and self._state.id_in_use(merchant_id, order_id):
            return None
        order_id = order_id or self._state.new_order_id(merchant_id)
        now = self._state.now_text()
        return Order(merchant_id, order_id, action, amount, tip, biz_type, "notpay", now)


def _order_data(order: Order) -> dict[str, str]:
    data = {"order_status": order.status, "order_id": order.order_id, "merchant_id": order.merchant_id}
    data |= {"amount": str(order.amount), "tip": str(order.tip), "total_amount": str(order.total)}
    if order.trade_time is not None and order.bizpay_order_id is not None:
        data |= {"trade_time": order.trade_time, "bizpay_order_id": order.bizpay_order_id}
        data |= {"receive_amount": str(order.total), "pay_amount": str(order.total)}
    if order.refunds:
        data["refund_amount"] = str(order.refunded)
    return data
