"""Rotating a merchant's sign key (docs/OPERATIONS.md) through the simulator: no request fails at any step.

The simulated gateway holds one key per merchant, as OTT Pay does, and switches it when told to
(POST /sim/merchants/{merchant_id}/signkey: the merchant changed it in OTT Pay's portal). The client
side is built the way the worker builds it (ottrecon.payments.gateway.Gateway over OTTPAY_MERCHANTS).
"""

from __future__ import annotations

import itertools
import logging

import pytest

from ottpay.client import OttPayClient
from ottpay.codes import OrderState, Outcome, classify_order_status
from ottpay.keys import parse_merchant_keys
from ottrecon.payments.gateway import Gateway
from tests.simulator import KEY, MERCHANT, NEW_KEY, OPERATOR, RunningSim, receiving_callbacks, running_sim

_ids = itertools.count(1)


def _client(sim: RunningSim, merchants: str) -> OttPayClient:
    """The worker's client for MERCHANT under an OTTPAY_MERCHANTS value (as after a restart with it)."""
    gateway = Gateway(
        lambda: sim.session, parse_merchant_keys(merchants), {MERCHANT: OPERATOR}, base_url=sim.url(), timeout_s=2.0
    )
    client = gateway.client_for(MERCHANT)
    assert client is not None
    return client


async def switch_gateway_key(sim: RunningSim, signkey: str) -> None:
    """The merchant enters a new sign key in OTT Pay's portal: from now on the gateway holds only that one."""
    status, body = await sim.post(f"/sim/merchants/{MERCHANT}/signkey", {"signkey": signkey})
    assert status == 200, body
    assert signkey not in str(body)


async def _every_action_succeeds(client: OttPayClient, callback_url: str, step: str) -> None:
    """PASSIVEPAY, ACTIVEPAY, STATUS_QUERY and REFUND, each answered SUCCESS with verified data."""
    paid_id, qr_id = f"R{next(_ids)}", f"R{next(_ids)}"
    # A wallet barcode is single use: each payment scans a new one.
    auth_code = f"28{next(_ids):016d}"
    paid = await client.passive_pay(order_id=paid_id, amount=500, auth_code=auth_code, biz_type="ALIPAY")
    assert (paid.outcome, paid.rsp_code, paid.error) == (Outcome.SUCCESS, "SUCCESS", None), (step, paid)
    qr = await client.active_pay(order_id=qr_id, amount=300, biz_type="WECHATPAY", call_back_url=callback_url)
    assert (qr.outcome, qr.error) == (Outcome.SUCCESS, None), (step, qr)
    query = await client.status_query(paid_id)
    assert query.outcome is Outcome.SUCCESS, (step, query)
    assert classify_order_status(query.data["order_status"]) is OrderState.PAID
    refund = await client.refund(ori_order_id=paid_id, refund_order_id=f"{paid_id}F", refund_amount=100)
    assert (refund.outcome, refund.error) == (Outcome.SUCCESS, None), (step, refund)


async def test_rotation_before_during_and_after_never_fails_a_request() -> None:
    async with running_sim() as sim, receiving_callbacks() as receiver:  # the gateway holds KEY
        await _every_action_succeeds(_client(sim, f"{MERCHANT}={KEY}"), receiver.url, "before")

        # Step 1: the operator adds the new key; OTT Pay does not know it yet.
        during = _client(sim, f"{MERCHANT}={KEY},{MERCHANT}={NEW_KEY}")
        await _every_action_succeeds(during, receiver.url, "new key added")

        # Step 2: the merchant switches the key in OTT Pay's portal, while our processes run unchanged.
        await switch_gateway_key(sim, NEW_KEY)
        await _every_action_succeeds(during, receiver.url, "gateway switched, running process")
        restarted = _client(sim, f"{MERCHANT}={KEY},{MERCHANT}={NEW_KEY}")
        await _every_action_succeeds(restarted, receiver.url, "gateway switched, restarted process")

        # Step 3: the operator promotes the new key; step 4: removes the old one.
        await _every_action_succeeds(_client(sim, f"{MERCHANT}={NEW_KEY},{MERCHANT}={KEY}"), receiver.url, "promoted")
        await _every_action_succeeds(_client(sim, f"{MERCHANT}={NEW_KEY}"), receiver.url, "after")

        stats = await sim.stats()
        assert stats["charges_by_order_max"] == 1 and not stats["auth_codes_charged_more_than_once"]


async def test_a_process_that_learned_the_switch_sends_one_request_per_call(caplog: pytest.LogCaptureFixture) -> None:
    async with running_sim() as sim, receiving_callbacks() as receiver:
        during = _client(sim, f"{MERCHANT}={KEY},{MERCHANT}={NEW_KEY}")
        await switch_gateway_key(sim, NEW_KEY)
        with caplog.at_level(logging.WARNING, logger="ottpay.client"):
            await _every_action_succeeds(during, receiver.url, "learning")
        # Said once, with the key's position only.
        switched = [r for r in caplog.records if r.getMessage().startswith("ottpay sign key switched")]
        assert len(switched) == 1 and "key 2 of 2" in switched[0].getMessage()
        assert not any(KEY in r.getMessage() or NEW_KEY in r.getMessage() for r in caplog.records)
        before = (await sim.stats())["requests"]
        await _every_action_succeeds(during, receiver.url, "learned")
        # Four calls, four requests: the key the gateway refused is not tried first any more.
        assert (await sim.stats())["requests"] - before == 4


async def test_a_key_the_gateway_does_not_hold_is_refused_and_nothing_is_charged() -> None:
    # Without the gateway's key no fallback can help: the request is refused (PARAM_INVALID) and
    # nothing moves; this is what step 2 before step 1 looks like, and why the order matters.
    async with running_sim() as sim:
        reply = await _client(sim, f"{MERCHANT}={NEW_KEY}").passive_pay(
            order_id="W1", amount=100, auth_code="2800999", biz_type="ALIPAY"
        )
        assert (reply.outcome, reply.rsp_code) == (Outcome.PERMANENT, "PARAM_INVALID")
        assert (await sim.stats())["orders"] == 0


async def test_a_genuinely_invalid_request_during_rotation_is_sent_once_per_key_and_stays_invalid() -> None:
    async with running_sim() as sim:
        client = _client(sim, f"{MERCHANT}={KEY},{MERCHANT}={NEW_KEY}")
        before = (await sim.stats())["requests"]
        reply = await client.passive_pay(order_id="BAD1", amount=100, auth_code="2800998", biz_type="UNKNOWNPAY")
        assert (reply.outcome, reply.rsp_code) == (Outcome.PERMANENT, "PARAM_INVALID")
        # The gateway's own answer (under the key it holds) is the one reported, not the signature refusal.
        assert reply.rsp_msg is not None and "biz_type" in reply.rsp_msg
        assert (await sim.stats())["requests"] - before == 2
        assert (await sim.stats())["orders"] == 0
