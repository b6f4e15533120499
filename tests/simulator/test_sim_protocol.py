"""The simulator's wire protocol seen with raw requests: envelope checks, generated ids, paths and /sim endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ottpay.envelope import open_envelope, seal
from simulator import run
from tests.simulator import KEY, MERCHANT, NEW_KEY, OPERATOR, RunningSim, free_port, running_sim

REPO = Path(__file__).resolve().parents[2]
PAY_DATA = {"operator_id": OPERATOR, "amount": "100", "auth_code": "28001", "biz_type": "ALIPAY"}


def envelope(data: dict[str, str], *, signkey: str = KEY, merchant_id: str = MERCHANT, **outer: str) -> dict[str, str]:
    sealed, md5 = seal(data, signkey)
    body = {"action": "PASSIVEPAY", "version": "1.0", "merchant_id": merchant_id, "data": sealed, "md5": md5}
    return body | outer


async def test_process_without_order_id_generates_digits_id() -> None:
    async with running_sim() as sim:
        status, body = await sim.post("/processV2", envelope(PAY_DATA))
        data = open_envelope(body["data"], body["md5"], KEY, MERCHANT)
        assert (status, body["rsp_code"]) == (200, "SUCCESS")
        assert data["order_id"].isdigit()
        assert (await sim.get(f"/sim/orders/{MERCHANT}/{data['order_id']}"))[0] == 200


async def test_process_old_path_answers_like_process_v2() -> None:
    async with running_sim() as sim:
        status, body = await sim.post("/process", envelope(PAY_DATA | {"order_id": "OLD1"}))
        assert (status, body["rsp_code"]) == (200, "SUCCESS")


async def test_process_holds_the_first_key_until_the_merchant_switches_it() -> None:
    async with running_sim(OTTPAY_MERCHANTS=f"{MERCHANT}={KEY},{MERCHANT}={NEW_KEY}") as sim:
        # Like OTT Pay, the gateway holds one key per merchant: the first listed one.
        assert await _rsp(sim, envelope(PAY_DATA | {"order_id": "NK0"}, signkey=NEW_KEY)) == (
            "PARAM_INVALID",
            "signature invalid (decryption_failed)",
            False,
        )
        _, body = await sim.post("/processV2", envelope(PAY_DATA | {"order_id": "NK1"}, signkey=KEY))
        assert open_envelope(body["data"], body["md5"], KEY, MERCHANT)["order_id"] == "NK1"

        status, switched = await sim.post(f"/sim/merchants/{MERCHANT}/signkey", {"signkey": NEW_KEY})
        assert (status, switched) == (200, {"merchant_id": MERCHANT, "status": "switched"})
        assert (await _rsp(sim, envelope(PAY_DATA | {"order_id": "NK2"}, signkey=KEY)))[0] == "PARAM_INVALID"
        _, body = await sim.post("/processV2", envelope(PAY_DATA | {"order_id": "NK3"}, signkey=NEW_KEY))
        assert open_envelope(body["data"], body["md5"], NEW_KEY, MERCHANT)["order_id"] == "NK3"

        # A reset forgets the switch with everything else.
        assert (await sim.post("/sim/reset"))[0] == 200
        assert (await _rsp(sim, envelope(PAY_DATA | {"order_id": "NK4"}, signkey=KEY)))[0] == "SUCCESS"


async def test_switching_a_key_refuses_unknown_merchants_and_non_keys() -> None:
    async with running_sim() as sim:
        assert (await sim.post("/sim/merchants/NB00000001/signkey", {"signkey": NEW_KEY}))[0] == 404
        for body in ({"signkey": "short"}, {"signkey": 1234567890}, {}, ["x"], None):
            assert (await sim.post(f"/sim/merchants/{MERCHANT}/signkey", body))[0] == 400
        assert (await _rsp(sim, envelope(PAY_DATA | {"order_id": "SW1"}, signkey=KEY)))[0] == "SUCCESS"


async def _rsp(sim: RunningSim, body: Any) -> tuple[str, str, bool]:
    status, answer = await sim.post("/processV2", body)
    assert status == 200
    return answer["rsp_code"], answer["rsp_msg"], "data" in answer


async def test_process_tampered_md5_is_param_invalid_without_data() -> None:
    async with running_sim() as sim:
        body = envelope(PAY_DATA | {"order_id": "TM1"})
        body["md5"] = "0" * 32
        code, message, has_data = await _rsp(sim, body)
        assert (code, message.startswith("signature invalid"), has_data) == ("PARAM_INVALID", True, False)
        assert (await sim.stats())["orders"] == 0


async def test_process_unknown_merchant_is_param_invalid() -> None:
    async with running_sim() as sim:
        body = envelope(PAY_DATA, merchant_id="ON00004652")
        assert await _rsp(sim, body) == ("PARAM_INVALID", "unknown merchant_id", False)


async def test_process_malformed_requests_are_param_invalid() -> None:
    async with running_sim() as sim:
        assert (await _rsp(sim, ["not", "an", "object"]))[0] == "PARAM_INVALID"
        assert (await _rsp(sim, {"action": "PASSIVEPAY"}))[0] == "PARAM_INVALID"
        assert (await _rsp(sim, envelope(PAY_DATA, version="2.0")))[0] == "PARAM_INVALID"
        assert (await _rsp(sim, envelope(PAY_DATA, action="TELEPORT")))[0] == "PARAM_INVALID"
        async with sim.session.post(sim.url("/processV2"), data=b"{not json") as response:
            assert (await response.json())["rsp_code"] == "PARAM_INVALID"


async def test_process_refund_id_used_as_order_is_order_type_error() -> None:
    async with running_sim() as sim:
        await sim.post("/processV2", envelope(PAY_DATA | {"order_id": "OT1"}))
        refund = {"ori_order_id": "OT1", "refund_amt": "10", "order_id": "OT1R"}
        assert (await _rsp(sim, envelope(refund, action="REFUND")))[0] == "SUCCESS"
        assert (await _rsp(sim, envelope({"order_id": "OT1R"}, action="STATUS_QUERY")))[0] == "ORDER_TYPE_ERROR"
        reused = envelope(PAY_DATA | {"order_id": "OT1R"})
        assert (await _rsp(sim, reused))[0] == "ORDER_USED"


async def test_sim_pay_unknown_order_is_404_and_paid_order_is_409() -> None:
    async with running_sim() as sim:
        assert (await sim.post(f"/sim/orders/{MERCHANT}/NOPE/pay"))[0] == 404
        assert (await sim.get(f"/sim/orders/{MERCHANT}/NOPE"))[0] == 404
        await sim.post("/processV2", envelope(PAY_DATA | {"order_id": "PP1"}))
        status, body = await sim.post(f"/sim/orders/{MERCHANT}/PP1/pay")
        assert (status, body) == (409, {"error": "not_payable", "status": "success"})
        assert (await sim.post(f"/sim/orders/{MERCHANT}/PP1/close"))[0] == 409


async def test_sim_reset_forgets_orders() -> None:
    async with running_sim() as sim:
        await sim.post("/processV2", envelope(PAY_DATA | {"order_id": "RS1"}))
        assert len((await sim.get("/sim/orders"))[1]["orders"]) == 1
        assert await sim.post("/sim/reset") == (200, {"status": "reset"})
        assert (await sim.get("/sim/orders"))[1] == {"orders": []}
        assert (await sim.stats())["orders"] == 0


def test_run_invalid_config_returns_2_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code = run({"OTTPAY_MERCHANTS": f"{MERCHANT}={KEY}", "SIM_PORT": "99999", "SIM_FAULTS": "timeout=2"})
    err = capsys.readouterr().err
    assert code == 2
    assert "SIM_PORT" in err and "SIM_FAULTS" in err and KEY not in err


async def test_run_serves_on_sim_port_until_sigterm() -> None:
    port = free_port()
    env = dict(os.environ) | {"OTTPAY_MERCHANTS": f"{MERCHANT}={KEY}", "SIM_PORT": str(port)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", env=env, cwd=REPO, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:
            stats = await _poll_stats(session, f"http://127.0.0.1:{port}/sim/stats")
        assert stats["orders"] == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0
    assert f"127.0.0.1:{port}" in stderr.decode() and KEY not in stderr.decode()


async def _poll_stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    for _ in range(100):
        try:
            async with session.get(url) as response:
                stats: dict[str, Any] = await response.json()
                return stats
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.05)
    raise AssertionError("the simulator did not start listening")
