"""The simulator's aiohttp application: OTT Pay's /processV2 over the real envelope, plus the /sim controls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from ottpay.envelope import open_with_any_key, seal
from ottpay.errors import EnvelopeError
from simulator.control import add_control_routes
from simulator.core import SIM, Simulator
from simulator.gateway import MONEY_ACTIONS, Answer
from simulator.settings import SimulatorSettings

logger = logging.getLogger("simulator")

_ENVELOPE_FIELDS = ("action", "version", "merchant_id", "data", "md5")


def create_app(settings: SimulatorSettings) -> web.Application:
    """A fresh simulated gateway with empty memory; the caller runs it (web.run_app, TestServer, …)."""
    app = web.Application()
    app[SIM] = Simulator(settings)
    app.cleanup_ctx.append(_callback_session)
    app.on_shutdown.append(_release_held_responses)
    # /process is the older path some merchants still use (PROTOCOL §1).
    app.router.add_post("/processV2", process)
    app.router.add_post("/process", process)
    add_control_routes(app.router)
    return app


async def _callback_session(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIM]
    async with aiohttp.ClientSession() as session:
        sim.sender.attach(session)
        yield
        # Callbacks still waiting would otherwise outlive the app (and its session).
        await sim.background.cancel_all()
        sim.sender.attach(None)


async def _release_held_responses(app: web.Application) -> None:
    app[SIM].stopping.set()


async def process(request: web.Request) -> web.StreamResponse:
    """OTT Pay's single endpoint. Always HTTP 200 with rsp_code, except a simulated 503 outage."""
    sim = request.app[SIM]
    faults = sim.settings.faults
    # Fault draws happen on arrival, before any await, so a seed replays in request order.
    if sim.dice.chance(faults.error_5xx):
        return web.Response(status=503, text="simulated outage")
    body = _json_or_none(await request.read())
    sim.state.requests += 1
    action, merchant_id, answer = _answer(sim, body)
    lost = action in MONEY_ACTIONS and sim.dice.chance(faults.timeout)
    logger.info(
        "simulated %s: %s", action or "request", answer.rsp_code, extra={"merchant_id": merchant_id, "lost": lost}
    )
    payload = _sealed(sim, merchant_id, answer)
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if lost:
        # The order exists and may be charged, but the client sees no answer: it has to query.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sim.stopping.wait(), sim.settings.timeout_hold_s)
    return web.json_response(payload)


def _answer(sim: Simulator, body: Any) -> tuple[str, str | None, Answer]:
    """Verify a request as the gateway would and answer it; returns (action, merchant_id, answer)."""
    if not isinstance(body, dict):
        return "", None, Answer("PARAM_INVALID", "body must be a JSON object")
    missing = [name for name in _ENVELOPE_FIELDS if not isinstance(body.get(name), str) or not body[name]]
    if missing:
        return "", None, Answer("PARAM_INVALID", f"missing or not a string: {', '.join(missing)}")
    action, merchant_id = body["action"], body["merchant_id"]
    if body["version"] != "1.0":
        return action, None, Answer("PARAM_INVALID", "version must be 1.0")
    signkey = sim.keys.key_for(merchant_id)
    if signkey is None:
        # Nobody to sign an answer for: the reply carries no data.
        return action, None, Answer("PARAM_INVALID", "unknown merchant_id")
    try:
        # Only the key the gateway holds now opens a request, as at OTT Pay: a rotation switches it.
        fields, _ = open_with_any_key(body["data"], body["md5"], (signkey,), merchant_id)
    except EnvelopeError as exc:
        return action, merchant_id, Answer("PARAM_INVALID", f"signature invalid ({exc.reason})")
    expected = sim.settings.operators.get(merchant_id)
    if expected is not None:
        carried = [value for value in (body.get("operator_id"), fields.get("operator_id")) if value is not None]
        if not carried or any(value != expected for value in carried):
            return action, merchant_id, Answer("PARAM_INVALID", "operator_id is not this merchant's operator")
    return action, merchant_id, sim.gateway.handle(action, merchant_id, fields)


def _sealed(sim: Simulator, merchant_id: str | None, answer: Answer) -> dict[str, str]:
    payload = {"rsp_code": answer.rsp_code, "rsp_msg": answer.rsp_msg}
    if answer.data and merchant_id is not None:
        signkey = sim.keys.key_for(merchant_id)
        assert signkey is not None, "answers with data are only given to known merchants"
        payload["data"], payload["md5"] = seal(answer.data, signkey)
    return payload


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
