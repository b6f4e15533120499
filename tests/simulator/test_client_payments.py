"""The client against the simulator: every action's answers, declines, parameter errors and refunds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ottpay.codes import OrderState, Outcome, classify_order_status
from tests.simulator import KEY, MERCHANT, NEW_KEY, running_sim

CALLBACK_URL = "http://127.0.0.1:9/ottpay/callback"


async def test_passive_pay_success_is_paid_and_charged_once() -> None:
    async with running_sim() as sim:
        reply = await sim.client().passive_pay(
            order_id="P1", amount=1250, tip=50, auth_code="2800001", biz_type="ALIPAY"
        )
        assert (reply.outcome, reply.rsp_code, reply.sent, reply.error) == (Outcome.SUCCESS, "SUCCESS", True, None)
        assert reply.data["order_status"] == "success"
        assert reply.data["order_id"] == "P1"
        assert (reply.data["total_amount"], reply.data["receive_amount"], reply.data["pay_amount"]) == ("1300",) * 3
        assert reply.data["trade_time"].isdigit() and len(reply.data["trade_time"]) == 14
        assert reply.data["bizpay_order_id"].startswith("AL")
        stats = await sim.stats()
        assert stats["charges_by_order_max"] == 1
        assert stats["orders_by_status"] == {"success": 1}


async def test_gateway_times_are_beijing_wall_time() -> None:
    # PROTOCOL.md section 4: the gateway writes its zone-less times in Beijing time (UTC+8).
    async with running_sim() as sim:
        client = sim.client()
        paid = await client.passive_pay(order_id="BJ1", amount=100, tip=0, auth_code="2800002", biz_type="ALIPAY")
        refund = await client.refund(ori_order_id="BJ1", refund_order_id="BJ1R", refund_amount=40)
        now = datetime.now(UTC)
        for text in (paid.data["trade_time"], refund.data["refund_time"]):
            stated = datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=ZoneInfo("Asia/Shanghai"))
            assert abs(stated - now) < timedelta(minutes=1), (text, now)


async def test_passive_pay_sale_num_and_wechat_are_recorded() -> None:
    async with running_sim() as sim:
        reply = await sim.client().passive_pay(
            order_id="P2", amount=100, auth_code="13000", biz_type="WECHATPAY", sale_num="INV-7"
        )
        assert reply.outcome is Outcome.SUCCESS
        assert reply.data["bizpay_order_id"].startswith("WX")
        status, order = await sim.get(f"/sim/orders/{MERCHANT}/P2")
        assert (status, order["sale_num"], order["auth_code"]) == (200, "INV-7", "13000")


async def test_active_pay_success_returns_code_url_and_waits() -> None:
    async with running_sim() as sim:
        client = sim.client()
        reply = await client.active_pay(order_id="A1", amount=500, biz_type="WECHATPAY", call_back_url=CALLBACK_URL)
        assert reply.outcome is Outcome.SUCCESS
        assert reply.data["code_url"] == f"https://qr.sim.ottpay.local/{MERCHANT}/A1"
        assert reply.data["order_id"] == "A1"
        query = await client.status_query("A1")
        assert classify_order_status(query.data["order_status"]) is OrderState.PENDING


async def test_status_query_paid_order_reports_amounts() -> None:
    async with running_sim() as sim:
        client = sim.client()
        await client.passive_pay(order_id="Q1", amount=700, tip=30, auth_code="28001", biz_type="UNIONPAY")
        reply = await client.status_query("Q1")
        assert reply.outcome is Outcome.SUCCESS and not reply.not_found
        assert classify_order_status(reply.data["order_status"]) is OrderState.PAID
        assert {k: reply.data[k] for k in ("amount", "tip", "receive_amount", "pay_amount")} == {
            "amount": "700",
            "tip": "30",
            "receive_amount": "730",
            "pay_amount": "730",
        }
        assert reply.data["bizpay_order_id"].startswith("UP")


async def test_status_query_unknown_order_is_not_found() -> None:
    async with running_sim() as sim:
        reply = await sim.client().status_query("NEVERSEEN1")
        assert reply.not_found
        assert (reply.rsp_code, reply.rsp_msg, reply.data) == ("FAIL", "order not found", {})


async def test_passive_pay_decline_suffix_is_declined() -> None:
    async with running_sim() as sim:
        client = sim.client()
        reply = await client.passive_pay(order_id="D1", amount=100, auth_code="28000000", biz_type="ALIPAY")
        assert (reply.outcome, reply.rsp_code) == (Outcome.DECLINED, "FAIL")
        query = await client.status_query("D1")
        assert classify_order_status(query.data["order_status"]) is OrderState.UNPAID_FINAL
        assert (await sim.stats())["charges_by_order_max"] == 0


async def test_passive_pay_wrong_pin_suffix_is_declined() -> None:
    async with running_sim() as sim:
        reply = await sim.client().passive_pay(order_id="W1", amount=100, auth_code="289999", biz_type="ALIPAY")
        assert (reply.outcome, reply.rsp_code) == (Outcome.DECLINED, "PWD_INCORRECT")


async def test_passive_pay_unknown_biz_type_is_permanent() -> None:
    async with running_sim() as sim:
        reply = await sim.client().passive_pay(order_id="B1", amount=100, auth_code="28001", biz_type="BITCOIN")
        assert (reply.outcome, reply.rsp_code) == (Outcome.PERMANENT, "PARAM_INVALID")
        assert (await sim.get("/sim/orders"))[1] == {"orders": []}


async def test_request_signed_with_unknown_key_is_permanent() -> None:
    async with running_sim() as sim:
        reply = await sim.client(signkey=NEW_KEY).passive_pay(
            order_id="K1", amount=100, auth_code="28001", biz_type="ALIPAY"
        )
        assert (reply.outcome, reply.rsp_code) == (Outcome.PERMANENT, "PARAM_INVALID")
        assert reply.rsp_msg is not None and "signature" in reply.rsp_msg


async def test_request_from_wrong_operator_is_permanent() -> None:
    async with running_sim(OTTPAY_OPERATORS=f"{MERCHANT}=5555555555") as sim:
        reply = await sim.client().status_query("X1")
        assert (reply.outcome, reply.rsp_code) == (Outcome.PERMANENT, "PARAM_INVALID")
        allowed = await sim.client(operator_id="5555555555").status_query("X1")
        assert allowed.not_found


async def test_passive_pay_order_id_reuse_is_unknown_and_charged_once() -> None:
    async with running_sim() as sim:
        client = sim.client()
        first = await client.passive_pay(order_id="R1", amount=100, auth_code="28001", biz_type="ALIPAY")
        again = await client.passive_pay(order_id="R1", amount=100, auth_code="28002", biz_type="ALIPAY")
        assert first.outcome is Outcome.SUCCESS
        assert (again.outcome, again.rsp_code) == (Outcome.UNKNOWN, "ORDER_USED")
        stats = await sim.stats()
        assert stats["charges_by_order_max"] == 1
        assert stats["orders_charged_more_than_once"] == []


async def test_refund_partial_then_full_reaches_fully_refunded() -> None:
    async with running_sim() as sim:
        client = sim.client()
        await client.passive_pay(order_id="F1", amount=1000, auth_code="28001", biz_type="ALIPAY")
        part = await client.refund(ori_order_id="F1", refund_order_id="F1R1", refund_amount=400)
        assert part.outcome is Outcome.SUCCESS
        assert (part.data["order_status"], part.data["refund_amount"]) == ("partial_refunded", "400")
        rest = await client.refund(ori_order_id="F1", refund_order_id="F1R2", refund_amount=600)
        assert rest.data["order_status"] == "fully_refunded"
        query = await client.status_query("F1")
        assert classify_order_status(query.data["order_status"]) is OrderState.REFUNDED
        assert query.data["refund_amount"] == "1000"


async def test_refund_over_remaining_is_permanent() -> None:
    async with running_sim() as sim:
        client = sim.client()
        await client.passive_pay(order_id="O1", amount=1000, auth_code="28001", biz_type="ALIPAY")
        await client.refund(ori_order_id="O1", refund_order_id="O1R1", refund_amount=900)
        over = await client.refund(ori_order_id="O1", refund_order_id="O1R2", refund_amount=101)
        assert (over.outcome, over.rsp_code) == (Outcome.PERMANENT, "PARAM_INVALID")
        query = await client.status_query("O1")
        assert (query.data["order_status"], query.data["refund_amount"]) == ("partial_refunded", "900")


async def test_refund_id_reuse_is_order_used_and_refunds_once() -> None:
    async with running_sim() as sim:
        client = sim.client()
        await client.passive_pay(order_id="U1", amount=1000, auth_code="28001", biz_type="ALIPAY")
        first = await client.refund(ori_order_id="U1", refund_order_id="U1R1", refund_amount=300)
        again = await client.refund(ori_order_id="U1", refund_order_id="U1R1", refund_amount=300)
        assert first.outcome is Outcome.SUCCESS
        assert (again.outcome, again.rsp_code) == (Outcome.UNKNOWN, "ORDER_USED")
        assert (await client.status_query("U1")).data["refund_amount"] == "300"


async def test_refund_of_unpaid_order_is_declined() -> None:
    async with running_sim() as sim:
        client = sim.client()
        await client.active_pay(order_id="N1", amount=100, biz_type="ALIPAY", call_back_url=CALLBACK_URL)
        reply = await client.refund(ori_order_id="N1", refund_order_id="N1R1", refund_amount=100)
        assert (reply.outcome, reply.rsp_code) == (Outcome.DECLINED, "FAIL")


@pytest.mark.parametrize(("amount", "error"), [(-1, ValueError), (0, ValueError), (True, TypeError), (1.5, TypeError)])
async def test_client_invalid_amount_raises_before_sending(amount: object, error: type[Exception]) -> None:
    async with running_sim() as sim:
        with pytest.raises(error):
            await sim.client().passive_pay(order_id="V1", amount=amount, auth_code="1", biz_type="ALIPAY")  # type: ignore[arg-type]
        assert (await sim.get("/sim/orders"))[1] == {"orders": []}


async def test_client_log_carries_ids_but_never_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ottpay")
    async with running_sim() as sim:
        await sim.client().passive_pay(order_id="L1", amount=100, auth_code="28001", biz_type="ALIPAY")
    records = [record for record in caplog.records if record.name == "ottpay.client"]
    assert [(getattr(r, "order_id", None), getattr(r, "rsp_code", None)) for r in records] == [("L1", "SUCCESS")]
    assert all(KEY not in str(vars(record)) for record in caplog.records)
