"""The client when things go wrong: lost answers, outages, slow PINs, dead ports, forged or broken replies."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from ottpay.client import MerchantCredentials, OttPayClient
from ottpay.codes import GatewayReply, OrderState, Outcome, classify_order_status
from ottpay.envelope import seal
from ottpay.errors import EnvelopeError
from tests.simulator import KEY, MERCHANT, NEW_KEY, OPERATOR, free_port, running_sim

ENVELOPE_REASONS = {cls.reason for cls in EnvelopeError.__subclasses__()}


async def _pay(client: OttPayClient, order_id: str) -> GatewayReply:
    return await client.passive_pay(order_id=order_id, amount=100, auth_code="28001", biz_type="ALIPAY")


async def test_passive_pay_lost_answer_is_unknown_sent_and_query_finds_it_paid() -> None:
    async with running_sim(SIM_FAULTS="timeout=1") as sim:
        client = sim.client(timeout_s=0.3)
        reply = await _pay(client, "T1")
        assert (reply.outcome, reply.sent, reply.error, reply.rsp_code) == (Outcome.UNKNOWN, True, "timeout", None)
        # The timeout fault loses only answers to money-moving actions, so the query gets through.
        query = await client.status_query("T1")
        assert classify_order_status(query.data["order_status"]) is OrderState.PAID
        again = await _pay(client, "T1")
        assert again.outcome is Outcome.UNKNOWN
        stats = await sim.stats()
        assert stats["charges_by_order_max"] == 1 and stats["orders"] == 1


async def test_gateway_503_is_unknown_sent_and_nothing_happens() -> None:
    async with running_sim(SIM_FAULTS="error_5xx=1") as sim:
        reply = await _pay(sim.client(), "S1")
        assert (reply.outcome, reply.sent, reply.error) == (Outcome.UNKNOWN, True, "http_503")
        assert (await sim.stats())["orders"] == 0


async def test_passive_pay_processing_is_unknown_then_paid() -> None:
    async with running_sim(SIM_FAULTS="processing=1,processing_delay_s=0.2") as sim:
        client = sim.client()
        reply = await _pay(client, "PR1")
        assert (reply.outcome, reply.rsp_code) == (Outcome.UNKNOWN, "PROCESSING")
        pending = await client.status_query("PR1")
        assert classify_order_status(pending.data["order_status"]) is OrderState.PENDING
        await asyncio.sleep(0.4)
        settled = await client.status_query("PR1")
        assert classify_order_status(settled.data["order_status"]) is OrderState.PAID


async def test_processing_order_closed_before_settling_stays_unpaid() -> None:
    async with running_sim(SIM_FAULTS="processing=1,processing_delay_s=0.2") as sim:
        client = sim.client()
        await _pay(client, "PR2")
        status, _ = await sim.post(f"/sim/orders/{MERCHANT}/PR2/close")
        await asyncio.sleep(0.4)
        query = await client.status_query("PR2")
        assert (status, query.data["order_status"]) == (200, "orderclosed")
        assert (await sim.stats())["charges_by_order_max"] == 0


async def test_connection_refused_is_unknown_not_sent() -> None:
    credentials = MerchantCredentials(MERCHANT, OPERATOR, (KEY,))
    async with aiohttp.ClientSession() as session:
        client = OttPayClient(session, credentials, base_url=f"http://127.0.0.1:{free_port()}")
        reply = await _pay(client, "C1")
    assert (reply.outcome, reply.sent, reply.error, reply.rsp_code) == (
        Outcome.UNKNOWN,
        False,
        "connection_error",
        None,
    )


async def test_connect_timeout_is_unknown_not_sent() -> None:
    # A listener that never accepts, its backlog already full: the kernel drops further SYNs,
    # so the client's connect hangs until its connect timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        try:
            async with aiohttp.ClientSession() as session:
                base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
                credentials = MerchantCredentials(MERCHANT, OPERATOR, (KEY,))
                client = OttPayClient(session, credentials, base_url=base_url, timeout_s=2, connect_timeout_s=0.3)
                reply = await _pay(client, "CT1")
        finally:
            for filler in fillers:
                filler.close()
    assert (reply.outcome, reply.sent, reply.error) == (Outcome.UNKNOWN, False, "connect_timeout")


async def test_answer_signed_with_a_key_the_client_does_not_accept_is_unknown_never_success() -> None:
    # The answer is sealed under a key that is not the merchant's (a forgery, or a key rotated in at
    # OTT Pay before it was configured here): nothing in it can be believed.
    async def foreign_key(request: web.Request) -> web.Response:
        sealed, md5 = seal({"order_id": "G1", "order_status": "success", "merchant_id": MERCHANT}, NEW_KEY)
        return web.json_response({"rsp_code": "SUCCESS", "rsp_msg": "success", "data": sealed, "md5": md5})

    reply = await _reply_from(foreign_key)
    assert reply.outcome is Outcome.UNKNOWN
    assert reply.error in ENVELOPE_REASONS
    assert (reply.rsp_code, reply.data) == (None, {})


async def test_answer_sealed_with_any_accepted_key_is_believed() -> None:
    # Mid-rotation an answer may come sealed under the other configured key.
    async def new_key(request: web.Request) -> web.Response:
        sealed, md5 = seal({"order_id": "G1", "order_status": "success", "merchant_id": MERCHANT}, NEW_KEY)
        return web.json_response({"rsp_code": "SUCCESS", "rsp_msg": "success", "data": sealed, "md5": md5})

    reply = await _reply_from(new_key, signkeys=(KEY, NEW_KEY))
    assert (reply.outcome, reply.data["order_id"]) == (Outcome.SUCCESS, "G1")


async def _serve(handler: Handler) -> TestServer:
    app = web.Application()
    app.router.add_post("/processV2", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def _reply_from(handler: Handler, signkeys: tuple[str, ...] = (KEY,)) -> GatewayReply:
    server = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as session:
            client = OttPayClient(
                session, MerchantCredentials(MERCHANT, OPERATOR, signkeys), base_url=str(server.make_url(""))
            )
            return await _pay(client, "G1")
    finally:
        await server.close()


async def test_non_json_answer_is_unknown_bad_response() -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    reply = await _reply_from(html)
    assert (reply.outcome, reply.sent, reply.error) == (Outcome.UNKNOWN, True, "bad_response")


async def test_unsigned_success_answer_is_unknown() -> None:
    async def bare_success(request: web.Request) -> web.Response:
        return web.json_response({"rsp_code": "SUCCESS", "rsp_msg": "success"})

    reply = await _reply_from(bare_success)
    assert (reply.outcome, reply.error, reply.rsp_code) == (Outcome.UNKNOWN, "unsigned_success", None)


async def test_signed_answer_about_other_order_is_unknown() -> None:
    async def other_order(request: web.Request) -> web.Response:
        sealed, md5 = seal({"order_id": "SOMEONEELSE", "order_status": "success", "merchant_id": MERCHANT}, KEY)
        return web.json_response({"rsp_code": "SUCCESS", "rsp_msg": "success", "data": sealed, "md5": md5})

    reply = await _reply_from(other_order)
    assert (reply.outcome, reply.error, reply.data) == (Outcome.UNKNOWN, "order_mismatch", {})


async def test_connection_dropped_mid_request_is_unknown_sent() -> None:
    async def hang_up(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.1)
        return web.Response(text="never seen")

    reply = await _reply_from(hang_up)
    assert (reply.outcome, reply.sent, reply.error) == (Outcome.UNKNOWN, True, "connection_lost")


def test_credentials_repr_hides_signkey() -> None:
    text = repr(MerchantCredentials(MERCHANT, OPERATOR, (KEY, NEW_KEY)))
    assert KEY not in text and NEW_KEY not in text


def test_credentials_refuse_a_bare_key_string_or_no_key() -> None:
    # A str is a sequence too: ("6698…") would silently become sixteen one-character keys.
    for signkeys in (KEY, (), (KEY, "")):
        with pytest.raises(ValueError):
            MerchantCredentials(MERCHANT, OPERATOR, signkeys)  # type: ignore[arg-type]
