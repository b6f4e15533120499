"""Helpers for integration tests: real callbacks, a burst worker, the receiver over HTTP, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from arq import ArqRedis

from ottpay.envelope import build_callback
from ottpay.keys import MerchantKeys
from tests.conftest import MERCHANT, OLD_KEY
from webhook.app import create_app
from webhook.queue import enqueue_callbacks, prepare
from webhook.settings import WebhookSettings
from worker.main import create_worker
from worker.settings import WorkerSettings


def make_callback(
    order_id: str,
    amount: str = "100",
    *,
    merchant_id: str = MERCHANT,
    key: str = OLD_KEY,
    **fields: str,
) -> dict[str, str]:
    """A callback body encrypted and signed for real, as OTT Pay sends it."""
    data = {"amount": amount, "bizpay_order_id": f"AL{order_id}", "tip": "0", "merchant_id": merchant_id}
    data.update({"order_id": order_id, "finish_time": "20200416050429"})
    data.update(fields)
    return build_callback(data, merchant_id, key)


async def enqueue_callback(redis: ArqRedis, envelope: dict[str, Any]) -> bool:
    """Queue one callback with the receiver's own code, without its HTTP app; True if newly queued."""
    return (await enqueue_callbacks(redis, [prepare(envelope, datetime.now(UTC))]))[0]


def worker_settings(database_url: str, redis_url: str, merchants: MerchantKeys, **overrides: Any) -> WorkerSettings:
    """Settings for a test worker: short retry delays so retry paths run in seconds."""
    settings = WorkerSettings(
        database_url=database_url,
        redis_url=redis_url,
        merchants=merchants,
        retry_window_s=30,
        retry_base_delay_s=0.05,
        retry_max_delay_s=0.2,
    )
    return dataclasses.replace(settings, **overrides)


async def drain(settings: WorkerSettings) -> Any:
    """Run a worker until the queue is empty (arq's burst mode), as arq tests its own workers."""
    worker = create_worker(dataclasses.replace(settings, poll_delay_s=0), burst=True, handle_signals=False)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


@contextlib.asynccontextmanager
async def receiver(redis_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    """The real receiver app on a loopback port, with an HTTP client for it."""
    app = create_app(WebhookSettings(redis_url=redis_url, enqueue_timeout_s=1.0))
    async with TestClient(TestServer(app)) as client:
        yield client


class TcpProxy:
    """Forwards a local port to a server; `cut()` drops every connection and refuses new ones.

    Lets a test take Postgres "down" and "up" again without touching the real server.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self._writers.update({client_writer, server_writer})
        await asyncio.gather(
            _pipe(client_reader, server_writer), _pipe(server_reader, client_writer), return_exceptions=True
        )
        self._writers.difference_update({client_writer, server_writer})


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.close()


class HoldingProxy:
    """A TCP proxy to one server that can hold back what clients send until released."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._open = asyncio.Event()
        self._open.set()
        self.held = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        assert self._server is not None
        self._server.close()

    def hold(self) -> None:
        self.held.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._target)
        await asyncio.gather(
            self._upstream(client_reader, server_writer),
            _pipe(server_reader, client_writer),
            return_exceptions=True,
        )

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if not self._open.is_set():
                    self.held.set()
                    await self._open.wait()
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()
