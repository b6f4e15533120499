"""Every answer of the payments api is true (finding 03): once a payment or a refund is stored, a failure of a
later step (the queue, reading its state back) answers with what was stored (202), never "nothing was stored";
and what was stored is then sent by the worker's scheduled retry, once.

The failures are real: the api's Redis is a port nothing listens on (a stopped Redis), and its Postgres is
reached through a TCP proxy that the test cuts once the row is in the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ottrecon.api.app import create_app
from ottrecon.api.openapi import openapi_spec
from ottrecon.api.settings import ApiSettings, parse_tokens
from ottrecon.payments import refund_store, store
from tests.chaos.cluster import ephemeral_port
from tests.conftest import MERCHANT
from tests.integration.stack import API_TOKEN, FAST_POLICY, running_simulator, running_stack
from tests.integration.support import TcpProxy

# The cashier's code must outlive the pause between the api's answer and the worker of the second half.
PATIENT_POLICY = dataclasses.replace(FAST_POLICY, passivepay_code_ttl_s=120.0)
CODE = "283456789012345555"
HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(database_url)
    tcp = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await tcp.start()
    yield tcp
    await tcp.cut()


def through(proxy: TcpProxy, database_url: str) -> str:
    parts = urlsplit(database_url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


def api_settings(database_url: str, wait_s: float = 3.0) -> ApiSettings:
    """The api with its queue on a stopped Redis: every hand-over to a worker fails."""
    return ApiSettings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{ephemeral_port()}/0",
        token_digests=parse_tokens(API_TOKEN),
        merchant_ids=frozenset({MERCHANT}),
        wait_s=wait_s,
    )


def reading_back(db: asyncpg.Connection, query: str) -> Callable[[], Awaitable[bool]]:
    """True once a connection of the api ran query, the read after its INSERT: the INSERT's answer has arrived.
    (Cutting as soon as the row is visible could beat that answer to the api, which then rightly says "may have
    been stored", not what these tests are about.)"""
    sql = "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND query = $1"
    return lambda: db.fetchval(sql, query)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def post(api: TestClient[Any, Any], path: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await api.post(path, json=body, headers=HEADERS | {"Idempotency-Key": key})
    return response.status, await response.json()


def passivepay(amount: int = 1000) -> dict[str, Any]:
    return {"merchant_id": MERCHANT, "kind": "PASSIVEPAY", "biz_type": "ALIPAY", "amount": amount, "auth_code": CODE}


async def test_payment_stored_before_postgres_went_away_is_answered_with_and_then_sent_once(
    database_url: str, redis_url: str, db: asyncpg.Connection, proxy: TcpProxy
) -> None:
    async with TestClient(TestServer(create_app(api_settings(through(proxy, database_url), 30.0)))) as api:
        answer = asyncio.create_task(post(api, "/api/payments", "k-lost-1", passivepay()))
        await until(reading_back(db, store.ORDER_BY_ID))
        await proxy.cut()  # the row is stored; reading its state back now fails
        status, body = await answer
    stored = await db.fetchrow("SELECT order_id, status FROM orders")
    assert stored is not None

    assert status == 202, body
    assert (body["id"], body["status"]) == (stored["order_id"], "pending")
    assert f"GET /api/payments/{body['id']}" in body["notice"] and "never a new one" in body["notice"]
    # The POS believed it and did not start over; the worker's scheduled retry sends the stored payment.
    async with running_stack(database_url, redis_url, policy=PATIENT_POLICY) as stack:
        paid = await stack.wait_status(body["id"], {"paid"})
        # A POS that retries with a new key anyway is told which payment holds the code (decision 0027).
        retry_status, retry = await stack.pay("k-lost-2", **passivepay())
        stats = await stack.sim_stats()

    assert paid["paid_amount"] == 1000
    assert (retry_status, retry["payment_id"]) == (409, body["id"])
    assert (stats["orders"], stats["auth_codes_charged_more_than_once"]) == (1, [])
    assert await db.fetchval("SELECT count(*) FROM submission_attempts WHERE action = 'PASSIVEPAY'") == 1


async def test_payment_the_queue_could_not_take_says_so_and_the_schedule_sends_it(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with TestClient(TestServer(create_app(api_settings(database_url)))) as api:
        status, body = await post(api, "/api/payments", "k-noqueue", passivepay(1250))

    assert status == 202, body
    assert body["status"] == "pending" and "scheduled retry" in body["notice"]
    async with running_stack(database_url, redis_url, policy=PATIENT_POLICY) as stack:
        paid = await stack.wait_status(body["id"], {"paid"})
        stats = await stack.sim_stats()

    assert (paid["paid_amount"], stats["orders"]) == (1250, 1)


async def test_refund_stored_before_postgres_went_away_is_answered_with_and_then_sent_once(
    database_url: str, redis_url: str, db: asyncpg.Connection, proxy: TcpProxy
) -> None:
    async with running_simulator() as sim:
        await refund_after_postgres_went_away(sim, database_url, redis_url, db, proxy)


async def refund_after_postgres_went_away(
    sim: TestClient[Any, Any], database_url: str, redis_url: str, db: asyncpg.Connection, proxy: TcpProxy
) -> None:
    async with running_stack(database_url, redis_url, policy=PATIENT_POLICY, sim=sim) as stack:
        _, payment = await stack.pay("k-refunded", **passivepay())
        assert payment["status"] == "paid"

    async with TestClient(TestServer(create_app(api_settings(through(proxy, database_url), 30.0)))) as api:
        path = f"/api/payments/{payment['id']}/refunds"
        answer = asyncio.create_task(post(api, path, "r-lost-1", {"amount": 1000}))
        await until(reading_back(db, refund_store.REFUND_BY_ID))
        await proxy.cut()
        status, body = await answer
    stored = await db.fetchrow("SELECT refund_order_id FROM refunds")
    assert stored is not None

    assert status == 202, body
    assert (body["id"], body["payment_id"], body["status"]) == (stored["refund_order_id"], payment["id"], "pending")
    assert f"GET /api/payments/{payment['id']}" in body["notice"] and "never a new one" in body["notice"]
    async with running_stack(database_url, redis_url, policy=PATIENT_POLICY, sim=sim) as stack:
        refunded = await stack.wait_status(payment["id"], {"refunded"})
        stats = await stack.sim_stats()

    assert [(r["id"], r["status"]) for r in refunded["refunds"]] == [(body["id"], "succeeded")]
    assert stats["refunds"] == 1


async def test_postgres_down_before_storing_says_nothing_was_stored(
    database_url: str, db: asyncpg.Connection, proxy: TcpProxy
) -> None:
    await proxy.cut()
    async with TestClient(TestServer(create_app(api_settings(through(proxy, database_url))))) as api:
        status, body = await post(api, "/api/payments", "k-down", passivepay())

    assert (status, body["error"]) == (503, "database_unavailable")
    assert "nothing was stored" in " ".join(body["problems"])
    assert await db.fetchval("SELECT count(*) FROM orders") == 0


def test_openapi_documents_the_stored_answer_and_what_a_503_means() -> None:
    spec = openapi_spec()
    for path in ("/api/payments", "/api/payments/{payment_id}/refunds"):
        responses = spec["paths"][path]["post"]["responses"]
        assert "notice" in json.dumps(responses["202"]) and "never a new one" in responses["202"]["description"]
        assert "may have been stored" in responses["503"]["description"]


class ReplyDroppingProxy:
    """A TCP proxy to Postgres that lets a statement run but loses its reply: the client's first message after the
    one preparing `statement` (that is, its Bind, Execute and Sync) reaches the server, nothing after it comes back,
    and the connection drops. An INSERT is committed and the api never hears so (a network failure at the worst
    moment)."""

    def __init__(self, host: str, port: int, statement: bytes) -> None:
        self._target = (host, port)
        self._statement = statement
        self.dropped = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ReplyDroppingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._target)

        async def upstream() -> None:
            prepared = False
            while not self.dropped.is_set() and (chunk := await client_reader.read(65536)):
                if prepared:
                    self.dropped.set()
                prepared = prepared or self._statement in chunk
                server_writer.write(chunk)
                await server_writer.drain()

        async def downstream() -> None:
            while (chunk := await server_reader.read(65536)) and not self.dropped.is_set():
                client_writer.write(chunk)
                await client_writer.drain()
            # Let the server finish the implicit transaction (its Sync arrived), then hang up on both.
            await asyncio.sleep(0.5)
            client_writer.close()
            server_writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)


async def test_payment_whose_insert_reply_was_lost_may_have_been_stored_and_says_so(
    database_url: str, db: asyncpg.Connection
) -> None:
    parts = urlsplit(database_url)
    async with ReplyDroppingProxy(parts.hostname or "127.0.0.1", parts.port or 5432, b"INSERT INTO orders") as proxy:
        user = f"{parts.username}@" if parts.username else ""
        # Plain text, so the proxy can see the server's reply (asyncpg would otherwise try TLS).
        netloc, query = f"{user}127.0.0.1:{proxy.port}", "sslmode=disable"
        settings = api_settings(urlunsplit(parts._replace(netloc=netloc, query=query)))
        async with TestClient(TestServer(create_app(settings))) as api:
            status, body = await post(api, "/api/payments", "k-unknown", passivepay())
        assert proxy.dropped.is_set()

    assert (status, body["error"]) == (503, "database_unavailable")
    problem = " ".join(body["problems"])
    assert "may have been stored" in problem and "never with a new one" in problem
    # It was: the same key would answer it.
    assert await db.fetchval("SELECT idempotency_key FROM orders") == "k-unknown"
