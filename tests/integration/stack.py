"""The whole service on loopback ports for payment tests: simulator, receiver, api and a running worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from arq import Worker

from ottpay.keys import MerchantKeys, parse_merchant_keys
from ottrecon.api.app import create_app as create_api
from ottrecon.api.settings import ApiSettings, parse_tokens
from ottrecon.payments.submission import Policy
from ottrecon.queue import QUEUE_NAME
from simulator.app import create_app as create_sim
from simulator.faults import Faults
from simulator.settings import Autopay, SimulatorSettings
from tests.conftest import MERCHANT, NEW_KEY, OLD_KEY
from webhook.app import create_app as create_receiver
from webhook.settings import WebhookSettings
from worker.main import create_worker
from worker.settings import WorkerSettings

OPERATOR = "1234567890"
API_TOKEN = "test-token-0123456789abcdefghij"
# Fast clocks so retry, sweep and deadline paths run in seconds.
FAST_POLICY = Policy(
    passivepay_code_ttl_s=5.0,
    max_attempts=6,
    base_delay_s=0.05,
    max_delay_s=0.3,
    sweep_after_s=0.5,
    unpaid_deadline_s=2.0,
    sweep_max_age_s=30.0,
    passivepay_give_up_s=3.0,
)


@dataclass
class Stack:
    """Handles on every running part, plus helpers to talk to them."""

    api: TestClient[Any, Any]
    sim: TestClient[Any, Any]
    receiver: TestClient[Any, Any]
    worker: Worker
    settings: WorkerSettings
    worker_task: asyncio.Task[None]

    async def pay(self, idempotency_key: str, **body: Any) -> tuple[int, dict[str, Any]]:
        payload = {"merchant_id": MERCHANT, "biz_type": "ALIPAY", "amount": 1000} | body
        response = await self.api.post(
            "/api/payments",
            json=payload,
            headers={"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": idempotency_key},
        )
        return response.status, await response.json()

    async def get(self, path: str) -> dict[str, Any]:
        response = await self.api.get(path, headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result

    async def wait_status(self, payment_id: str, statuses: set[str], timeout_s: float = 15.0) -> dict[str, Any]:
        """Poll the API until the payment reaches one of statuses (fails the test on timeout)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            payment = await self.get(f"/api/payments/{payment_id}")
            if payment["status"] in statuses:
                return payment
            assert asyncio.get_running_loop().time() < deadline, f"still {payment['status']}: {payment}"
            await asyncio.sleep(0.1)

    async def restart_worker(self, merchants: MerchantKeys) -> None:
        """Stop the worker and start a new one with another OTTPAY_MERCHANTS, as a deploy would."""
        await stop_worker(self.worker, self.worker_task)
        self.settings = dataclasses.replace(self.settings, merchants=merchants)
        self.worker = create_worker(dataclasses.replace(self.settings, poll_delay_s=0.01), handle_signals=False)
        self.worker_task = asyncio.create_task(self.worker.main())
        await wait_until_started(self.worker, self.worker_task)

    async def sim_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await (await self.sim.get("/sim/stats")).json()
        return result


def sim_settings(merchants: MerchantKeys, **overrides: Any) -> SimulatorSettings:
    base = SimulatorSettings(
        merchants=merchants,
        operators={MERCHANT: OPERATOR},
        seed=1,
        timeout_hold_s=3.0,
        callback_retry_s=(0.1, 0.2, 0.4, 0.8),
    )
    return dataclasses.replace(base, **overrides)


@contextlib.asynccontextmanager
async def running_stack(
    database_url: str,
    redis_url: str,
    *,
    faults: Faults | None = None,
    autopay: Autopay | None = None,
    policy: Policy = FAST_POLICY,
    api_wait_s: float = 3.0,
    gateway_timeout_s: float = 1.0,
    sim: TestClient[Any, Any] | None = None,
    merchants: MerchantKeys | None = None,
) -> AsyncIterator[Stack]:
    """Start everything on loopback; the worker runs until the block ends. A simulator the caller started
    (`running_simulator`) outlives the block, so that two stacks one after the other share the gateway.

    merchants is the worker's OTTPAY_MERCHANTS (default: both keys, mid-rotation); the simulated
    gateway holds the first key of each merchant.
    """
    merchants = merchants or parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}")
    async with contextlib.AsyncExitStack() as stack:
        if sim is None:
            sim_app = create_sim(sim_settings(merchants, faults=faults or Faults(), autopay=autopay))
            started: TestClient[Any, Any] = await stack.enter_async_context(TestClient(TestServer(sim_app)))
            sim = started
        receiver = await stack.enter_async_context(
            TestClient(TestServer(create_receiver(WebhookSettings(redis_url=redis_url))))
        )
        settings = WorkerSettings(
            database_url=database_url,
            redis_url=redis_url,
            merchants=merchants,
            operators={MERCHANT: OPERATOR},
            gateway_base_url=str(sim.make_url("/")),
            gateway_timeout_s=gateway_timeout_s,
            callback_url=str(receiver.make_url("/ottpay/callback")),
            policy=policy,
            cron_every_s=1,
            retry_window_s=30,
            retry_base_delay_s=0.05,
            retry_max_delay_s=0.2,
        )
        api_settings = ApiSettings(
            database_url=database_url,
            redis_url=redis_url,
            token_digests=parse_tokens(API_TOKEN),
            merchant_ids=frozenset({MERCHANT}),
            wait_s=api_wait_s,
        )
        api = await stack.enter_async_context(TestClient(TestServer(create_api(api_settings))))
        worker = create_worker(dataclasses.replace(settings, poll_delay_s=0.01), handle_signals=False)
        task = asyncio.create_task(worker.main())
        await wait_until_started(worker, task)
        running = Stack(api=api, sim=sim, receiver=receiver, worker=worker, settings=settings, worker_task=task)
        try:
            yield running
        finally:
            await stop_worker(running.worker, running.worker_task)


@contextlib.asynccontextmanager
async def running_simulator() -> AsyncIterator[TestClient[Any, Any]]:
    """The simulator alone, as running_stack starts it, for a test that runs several stacks against it."""
    merchants = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}")
    async with TestClient(TestServer(create_sim(sim_settings(merchants)))) as sim:
        yield sim


async def wait_until_started(worker: Worker, task: asyncio.Task[None], timeout_s: float = 15) -> None:
    """Wait for the worker's startup hook to finish, so a short test never stops a half-started
    worker (which would then outlive the test and its database)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while "recon" not in worker.ctx:
        if task.done():
            task.result()  # startup failed: raise its error here
        assert asyncio.get_running_loop().time() < deadline, "worker did not start"
        await asyncio.sleep(0.01)


async def stop_worker(worker: Worker, task: asyncio.Task[None]) -> None:
    """Stop a running worker the gentle way: drop queued follow-ups, let burst mode finish the
    jobs in flight. Cancelling mid-command would strand a Redis connection (and fail the test
    on the ResourceWarning)."""
    worker.burst = True
    # Start nothing more: the scheduled jobs are enqueued a second ahead, so the queue is never
    # empty and burst mode alone would wait out the whole timeout below.
    worker.max_burst_jobs = 0
    await worker.pool.delete(QUEUE_NAME)
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=15)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await worker.close()


async def customer_pays(sim: TestClient[Any, Any], payment_id: str) -> None:
    response = await sim.post(f"/sim/orders/{MERCHANT}/{payment_id}/pay")
    assert response.status == 200, await response.text()


@contextlib.asynccontextmanager
async def second_worker(stack: Stack) -> AsyncIterator[Worker]:
    """Another worker on the stack's Redis and Postgres, with its settings (polling fast), stopped on exit."""
    worker = create_worker(dataclasses.replace(stack.settings, poll_delay_s=0.01), handle_signals=False)
    task = asyncio.create_task(worker.main())
    await wait_until_started(worker, task)
    try:
        yield worker
    finally:
        await stop_worker(worker, task)
