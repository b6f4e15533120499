"""Simulator callbacks to a real merchant endpoint: content, verification, retries, faults and autopay."""

from __future__ import annotations

import asyncio
from typing import Any

from ottpay.codes import Outcome
from ottpay.messages import CALLBACK_FIELDS, parse_finish_time
from tests.simulator import MERCHANT, CallbackReceiver, RunningSim, receiving_callbacks, running_sim, verified


async def _order(sim: RunningSim, receiver: CallbackReceiver, order_id: str, amount: int = 1999) -> None:
    reply = await sim.client().active_pay(
        order_id=order_id, amount=amount, tip=100, biz_type="ALIPAY", call_back_url=receiver.url
    )
    assert reply.outcome is Outcome.SUCCESS


async def _pay(sim: RunningSim, order_id: str) -> dict[str, Any]:
    status, order = await sim.post(f"/sim/orders/{MERCHANT}/{order_id}/pay")
    assert status == 200
    paid: dict[str, Any] = order
    return paid


async def test_callback_after_pay_verifies_with_documented_fields() -> None:
    async with receiving_callbacks() as receiver, running_sim() as sim:
        await _order(sim, receiver, "CB1")
        order = await _pay(sim, "CB1")
        body = await receiver.next_delivered()
        assert set(body) == set(CALLBACK_FIELDS)
        assert (body["rsp_code"], body["rsp_msg"], body["merchant_id"]) == ("SUCCESS", "success", MERCHANT)
        data = verified(body)
        assert list(data) == ["order_id", "amount", "tip", "bizpay_order_id", "merchant_id", "finish_time"]
        assert (data["order_id"], data["amount"], data["tip"], data["merchant_id"]) == ("CB1", "1999", "100", MERCHANT)
        assert data["bizpay_order_id"] == order["bizpay_order_id"] and data["bizpay_order_id"].startswith("AL")
        assert len(data["finish_time"]) == 14 and parse_finish_time(data["finish_time"]) is not None
        assert (await sim.stats())["callbacks"] == {
            "scheduled": 1,
            "attempts": 1,
            "sent": 1,
            "failed": 0,
            "dropped": 0,
            "duplicated": 0,
        }


async def test_callback_receiver_failing_twice_is_resent_until_delivered() -> None:
    async with receiving_callbacks(statuses=[500, 503]) as receiver, running_sim() as sim:
        await _order(sim, receiver, "CB2")
        await _pay(sim, "CB2")
        delivered = await receiver.next_delivered()
        assert len(receiver.bodies) == 3
        assert receiver.bodies[0] == receiver.bodies[1] == delivered
        callbacks = (await sim.stats())["callbacks"]
        assert (callbacks["attempts"], callbacks["failed"], callbacks["sent"], callbacks["dropped"]) == (3, 2, 1, 0)


async def test_callback_receiver_always_failing_is_dropped_after_schedule() -> None:
    async with receiving_callbacks(statuses=[500] * 10) as receiver, running_sim() as sim:
        await _order(sim, receiver, "CB3")
        await _pay(sim, "CB3")
        await asyncio.sleep(0.4)
        assert len(receiver.bodies) == 3  # the first attempt and the two re-sends of FAST_ENV
        callbacks = (await sim.stats())["callbacks"]
        assert (callbacks["attempts"], callbacks["failed"], callbacks["sent"], callbacks["dropped"]) == (3, 3, 0, 1)


async def test_callback_duplicate_fault_delivers_identical_twice() -> None:
    async with receiving_callbacks() as receiver, running_sim(SIM_FAULTS="duplicate_callback=1") as sim:
        await _order(sim, receiver, "CB4")
        await _pay(sim, "CB4")
        first, second = await receiver.next_delivered(), await receiver.next_delivered()
        assert first == second and verified(first)["order_id"] == "CB4"
        assert (await sim.stats())["callbacks"]["duplicated"] == 1


async def test_callback_drop_fault_sends_nothing_but_order_is_paid() -> None:
    async with receiving_callbacks() as receiver, running_sim(SIM_FAULTS="drop_callback=1") as sim:
        await _order(sim, receiver, "CB5")
        await _pay(sim, "CB5")
        assert await receiver.quiet_for(0.3)
        assert (await sim.client().status_query("CB5")).data["order_status"] == "success"
        assert (await sim.stats())["callbacks"]["dropped"] == 1


async def test_callback_amount_mismatch_fault_reports_other_amount() -> None:
    async with receiving_callbacks() as receiver, running_sim(SIM_FAULTS="amount_mismatch=1") as sim:
        await _order(sim, receiver, "CB6", amount=1000)
        await _pay(sim, "CB6")
        data = verified(await receiver.next_delivered())
        assert data["amount"] != "1000"
        assert (await sim.client().status_query("CB6")).data["amount"] == "1000"


async def test_callback_reorder_fault_lets_later_callback_overtake() -> None:
    env = {"SIM_FAULTS": "reorder_callback=0.5,reorder_delay_s=0.6"}
    async with receiving_callbacks() as receiver, running_sim(**env) as sim:
        ids = [f"RO{n}" for n in range(8)]
        for order_id in ids:
            await _order(sim, receiver, order_id)
        for order_id in ids:
            await _pay(sim, order_id)
        arrived = [verified(await receiver.next_delivered())["order_id"] for _ in ids]
        assert sorted(arrived) == sorted(ids)
        assert arrived != ids


async def test_callback_drop_fault_with_seed_replays_after_reset() -> None:
    async def dropped_ids(sim: RunningSim, receiver: CallbackReceiver) -> set[str]:
        ids = [f"SD{n}" for n in range(12)]
        for order_id in ids:
            await _order(sim, receiver, order_id)
            await _pay(sim, order_id)
        await asyncio.sleep(0.2)
        delivered = {verified(body)["order_id"] for body in receiver.bodies}
        receiver.bodies.clear()
        return set(ids) - delivered

    async with receiving_callbacks() as receiver, running_sim(SIM_FAULTS="drop_callback=0.5") as sim:
        first = await dropped_ids(sim, receiver)
        assert (await sim.post("/sim/reset"))[0] == 200
        second = await dropped_ids(sim, receiver)
    assert first == second
    assert 0 < len(first) < 12


async def test_autopay_pays_and_calls_back_without_customer() -> None:
    async with receiving_callbacks() as receiver, running_sim(SIM_AUTOPAY="fraction=1,delay_s=0.1") as sim:
        await _order(sim, receiver, "AP1")
        data = verified(await receiver.next_delivered())
        assert data["order_id"] == "AP1"
        assert (await sim.client().status_query("AP1")).data["order_status"] == "success"


async def test_autopay_fraction_zero_leaves_orders_waiting() -> None:
    async with receiving_callbacks() as receiver, running_sim(SIM_AUTOPAY="fraction=0,delay_s=0") as sim:
        await _order(sim, receiver, "AP2")
        assert await receiver.quiet_for(0.2)
        assert (await sim.client().status_query("AP2")).data["order_status"] == "notpay"
