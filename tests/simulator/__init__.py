"""Helpers for the simulator tests: a simulator on loopback, clients for it, and a merchant callback receiver.

Everything here speaks real HTTP over 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from ottpay.client import MerchantCredentials, OttPayClient
from ottpay.envelope import open_envelope
from simulator import SimulatorSettings, create_app

# Keys published in PROTOCOL.md, not secrets.
MERCHANT = "QC00005496"
KEY = "6698851A525C9433"
NEW_KEY = "A8B5FE540E38A5A9"
OPERATOR = "1234567890"
# Short delays so that every retry and fault path runs in well under a second.
FAST_ENV = {
    "OTTPAY_MERCHANTS": f"{MERCHANT}={KEY}",
    "SIM_CALLBACK_RETRY_S": "0.05,0.05",
    "SIM_TIMEOUT_HOLD_S": "5",
    "SIM_SEED": "7",
}


def sim_settings(**env: str) -> SimulatorSettings:
    """Simulator settings from FAST_ENV with the given variables replaced."""
    return SimulatorSettings.from_env(FAST_ENV | env)


def free_port() -> int:
    """A loopback port that nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningSim:
    """A simulator served over loopback, and an HTTP session to talk to it."""

    server: BaseTestServer
    session: aiohttp.ClientSession

    def url(self, path: str = "") -> str:
        return str(self.server.make_url(path))

    def client(self, signkey: str = KEY, *, timeout_s: float = 2.0, operator_id: str = OPERATOR) -> OttPayClient:
        """The project's client pointed at this simulator."""
        credentials = MerchantCredentials(merchant_id=MERCHANT, operator_id=operator_id, signkeys=(signkey,))
        return OttPayClient(self.session, credentials, base_url=self.url(), timeout_s=timeout_s)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url(path)) as response:
            return response.status, await response.json()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.post(self.url(path), json=body) as response:
            return response.status, await response.json(content_type=None)

    async def stats(self) -> dict[str, Any]:
        status, body = await self.get("/sim/stats")
        assert status == 200
        stats: dict[str, Any] = body
        return stats


@asynccontextmanager
async def running_sim(**env: str) -> AsyncIterator[RunningSim]:
    """Serve a fresh simulator (FAST_ENV plus env) on 127.0.0.1 for the block."""
    async with (
        TestServer(create_app(sim_settings(**env)), host="127.0.0.1") as server,
        aiohttp.ClientSession() as session,
    ):
        yield RunningSim(server, session)


@dataclass
class CallbackReceiver:
    """A merchant's callback endpoint: answers `statuses` in turn (then 200) and keeps every body."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    arrivals: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            await self.arrivals.put(body)
            return web.json_response({"rsp_code": "SUCCESS", "rsp_msg": "success"})
        return web.json_response({"error": "try again"}, status=status)

    async def next_delivered(self, timeout_s: float = 3.0) -> dict[str, Any]:
        """The next callback acknowledged with 200."""
        return await asyncio.wait_for(self.arrivals.get(), timeout_s)

    async def quiet_for(self, seconds: float) -> bool:
        """True when no callback was acknowledged during the next `seconds`."""
        try:
            await asyncio.wait_for(self.arrivals.get(), seconds)
        except TimeoutError:
            return True
        return False


def verified(body: dict[str, Any], signkey: str = KEY) -> dict[str, str]:
    """A callback's data, authenticated exactly as the worker does it (raises EnvelopeError otherwise)."""
    return open_envelope(body["data"], body["md5"], signkey, body["merchant_id"])


@asynccontextmanager
async def receiving_callbacks(statuses: list[int] | None = None) -> AsyncIterator[CallbackReceiver]:
    """Serve a CallbackReceiver on 127.0.0.1 for the block; its url is set."""
    receiver = CallbackReceiver(statuses=list(statuses or []))
    app = web.Application()
    app.router.add_post("/ottpay/callback", receiver.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        receiver.url = str(server.make_url("/ottpay/callback"))
        yield receiver
