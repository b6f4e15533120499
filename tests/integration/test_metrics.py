"""Prometheus metrics of the receiver, the worker and the api, scraped over HTTP after real traffic.

The registry is process-global, so tests compare a scrape before with one after (deltas);
gauges are absolute and are checked after the refresh job set them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq import ArqRedis
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from ottpay.keys import MerchantKeys
from ottrecon import db as worker_db
from ottrecon.api.app import create_app as create_api
from ottrecon.api.settings import ApiSettings, parse_tokens
from ottrecon.callbacks import store as callback_store
from ottrecon.errors import ConfigError as WebhookConfigError
from ottrecon.errors import ConfigError as WorkerConfigError
from tests.conftest import MERCHANT, OLD_KEY, OTHER_KEY
from tests.integration.stack import API_TOKEN, running_stack
from tests.integration.support import drain, make_callback, receiver, worker_settings
from webhook.app import create_app as create_receiver
from webhook.settings import WebhookSettings
from worker.context import JobContext, WorkerState
from worker.jobs import dead_letter
from worker.main import create_worker
from worker.metrics import refresh_metrics
from worker.settings import WorkerSettings
from worker.writer import BatchWriter

OTTRECON = str(Path(sys.executable).with_name("ottrecon"))
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def metrics_server() -> AsyncIterator[str]:
    """The exposition server that `ottrecon web` and `ottrecon worker` start, on a free loopback port."""
    server, thread = start_http_server(0, addr="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join()


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return parse(await response.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; a KeyError if the series is not exported at all."""
    return samples[(name, frozenset(labels.items()))]


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after[key] - before.get(key, 0.0)


async def test_receiver_metrics_count_queued_redelivered_refused_and_unavailable(redis_url: str) -> None:
    # Nothing listens on this port: the second receiver's enqueues fail with 503.
    down = create_receiver(WebhookSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", enqueue_timeout_s=0.5))
    body = make_callback("M1")
    async with metrics_server() as url:
        before = await scrape(url)
        async with receiver(redis_url) as client:
            assert (await client.post("/ottpay/callback", json=body)).status == 200
            assert (await client.post("/ottpay/callback", json=body)).status == 200  # redelivered while queued
            assert (await client.post("/ottpay/callback", data=b"not json")).status == 400
            oversized = {**body, "padding": "x" * (70 * 1024)}
            assert (await client.post("/ottpay/callback", json=oversized)).status == 413
        async with TestClient(TestServer(down)) as client:
            assert (await client.post("/ottpay/callback", json=make_callback("M2"))).status == 503
        after = await scrape(url)

    assert delta(before, after, "ottrecon_callbacks_received_total") == 5
    assert delta(before, after, "ottrecon_callbacks_enqueued_total", outcome="queued") == 1
    assert delta(before, after, "ottrecon_callbacks_enqueued_total", outcome="already_queued") == 1
    assert delta(before, after, "ottrecon_callbacks_refused_total", reason="not_a_callback") == 1
    assert delta(before, after, "ottrecon_callbacks_refused_total", reason="body_too_large") == 1
    assert delta(before, after, "ottrecon_callbacks_refused_total", reason="queue_unavailable") == 1
    # Timed per Redis write: the two confirmed writes and the failed one; the refusals never reached Redis.
    assert delta(before, after, "ottrecon_enqueue_seconds_count") == 3
    # One callback in each confirmed write (sent one after the other, so none were grouped).
    assert delta(before, after, "ottrecon_enqueue_batch_callbacks_count") == 2
    assert delta(before, after, "ottrecon_enqueue_batch_callbacks_sum") == 2


async def test_receiver_public_port_has_no_metrics_endpoint(redis_url: str) -> None:
    async with receiver(redis_url) as client:
        assert (await client.get("/metrics")).status == 404


async def test_worker_metrics_count_recorded_duplicate_and_rejected_after_a_drain(
    database_url: str, redis_url: str, merchants: MerchantKeys
) -> None:
    settings = worker_settings(database_url, redis_url, merchants)
    unknown_merchant = make_callback("W3", merchant_id="NB00000001", key=OTHER_KEY)
    async with metrics_server() as url:
        before = await scrape(url)
        async with receiver(redis_url) as client:
            for body in (make_callback("W1"), make_callback("W2"), unknown_merchant):
                assert (await client.post("/ottpay/callback", json=body)).status == 200
        await drain(settings)
        # W1 again after its job finished: a new job, for a callback already recorded.
        async with receiver(redis_url) as client:
            assert (await client.post("/ottpay/callback", json=make_callback("W1"))).status == 200
        await drain(settings)
        after = await scrape(url)

    assert delta(before, after, "ottrecon_callbacks_recorded_total") == 2
    assert delta(before, after, "ottrecon_callbacks_duplicate_total") == 1
    assert delta(before, after, "ottrecon_callbacks_rejected_total", reason="unknown_merchant") == 1
    assert delta(before, after, "ottrecon_callbacks_rejected_total", reason="digest_mismatch") == 0
    assert delta(before, after, "ottrecon_callbacks_dead_lettered_total") == 0
    assert delta(before, after, "ottrecon_job_seconds_count", job="ingest_callbacks") == 4
    # Each burst run also ran the scheduled jobs at startup, the gauge refresh among them.
    assert delta(before, after, "ottrecon_job_seconds_count", job="refresh_metrics") >= 2


async def _insert_unpaid_order(db: asyncpg.Connection, order_id: str) -> None:
    await db.execute(
        """INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, idempotency_key, request_sha256, status)
           VALUES ($1, $2, 'ACTIVEPAY', 'ALIPAY', 900, $2, 'x', 'unpaid')""",
        MERCHANT,
        order_id,
    )


async def _insert_alerts(db: asyncpg.Connection, alerts: list[tuple[str, str, int, str, bool]]) -> None:
    await db.executemany(
        """INSERT INTO alerts (kind, merchant_id, order_id, amount_at_risk, status, notified_at)
           VALUES ($1, $6, $2, $3, $4, CASE WHEN $5 THEN now() END)""",
        [(*alert, MERCHANT) for alert in alerts],
    )


@contextlib.asynccontextmanager
async def job_context(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys
) -> AsyncIterator[JobContext]:
    """The ctx arq hands a job in a started worker: its state (pool, writer) and its Redis."""
    pool = await worker_db.create_pool(database_url, 2)
    writer = BatchWriter(lambda v, r: callback_store.record(pool, v, r), 10)
    settings = worker_settings(database_url, redis_url, merchants)
    try:
        yield {"state": WorkerState(settings=settings, pool=pool, writer=writer), "redis": redis}
    finally:
        await pool.close()


async def test_worker_gauges_after_refresh_show_queue_dead_letters_alerts_and_unpaid_orders(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    async with receiver(redis_url) as client:
        for order_id in ("G1", "G2"):
            assert (await client.post("/ottpay/callback", json=make_callback(order_id))).status == 200
    await _insert_unpaid_order(db, "G0000000000000000001")
    # Given up (decision 0030): one still in review counts, one paid since does not.
    for order_id, status in (("G0000000000000000002", "review"), ("G0000000000000000003", "paid")):
        await db.execute(
            """INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, idempotency_key, request_sha256,
                                   status, given_up_at)
               VALUES ($1, $2, 'ACTIVEPAY', 'ALIPAY', 900, $2, 'x', $3, now())""",
            MERCHANT,
            order_id,
            status,
        )
    await _insert_alerts(
        db,
        [
            ("amount_mismatch", "A1", 500, "open", False),
            ("amount_mismatch", "A2", 250, "acknowledged", True),
            ("unpaid", "A3", 900, "open", False),
            ("orphan_payment", "A4", 7000, "resolved", True),  # resolved: neither open nor at risk
        ],
    )
    async with metrics_server() as url, job_context(database_url, redis_url, redis, merchants) as ctx:
        before = await scrape(url)
        await dead_letter(redis, [{"envelope": make_callback("G3")}], reason="test")
        await refresh_metrics(ctx)
        samples = await scrape(url)
        # Once every amount_mismatch is resolved, its series must read 0, not its last count.
        await db.execute("UPDATE alerts SET status = 'resolved' WHERE kind = 'amount_mismatch'")
        await refresh_metrics(ctx)
        later = await scrape(url)

    assert delta(before, samples, "ottrecon_callbacks_dead_lettered_total") == 1
    assert value(samples, "ottrecon_queue_depth") == 2
    assert value(samples, "ottrecon_dead_letters") == 1
    assert value(samples, "ottrecon_open_mismatches", kind="amount_mismatch") == 2
    assert value(samples, "ottrecon_open_mismatches", kind="unpaid") == 1
    assert value(samples, "ottrecon_open_mismatches", kind="orphan_payment") == 0
    assert value(samples, "ottrecon_amount_at_risk_cents") == 500 + 250 + 900
    assert value(samples, "ottrecon_unpaid_orders") == 1
    assert value(samples, "ottrecon_orders_given_up") == 1
    assert value(samples, "ottrecon_alerts_undelivered") == 2
    assert value(later, "ottrecon_open_mismatches", kind="amount_mismatch") == 0
    assert value(later, "ottrecon_amount_at_risk_cents") == 900


async def test_refresh_job_updates_queue_gauges_while_postgres_is_unreachable(
    redis_url: str, redis: ArqRedis, merchants: MerchantKeys
) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/ottrecon"
    async with receiver(redis_url) as client:
        assert (await client.post("/ottpay/callback", json=make_callback("P1"))).status == 200
    async with metrics_server() as url, job_context(unreachable, redis_url, redis, merchants) as ctx:
        await refresh_metrics(ctx)  # must not raise: the job would count as failed every tick
        samples = await scrape(url)
    assert value(samples, "ottrecon_queue_depth") == 1


async def test_submissions_and_api_requests_counted_after_a_payment_and_a_refund(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with metrics_server() as url:
        before = await scrape(url)
        async with running_stack(database_url, redis_url) as stack:
            status, payment = await stack.pay("k-m-1", kind="PASSIVEPAY", amount=1000, auth_code="283456789012343333")
            assert (status, payment["status"]) == (201, "paid")
            refund = await stack.api.post(
                f"/api/payments/{payment['id']}/refunds", json={"amount": 400}, headers={**AUTH, "Idempotency-Key": "r"}
            )
            assert refund.status == 201 and (await refund.json())["status"] == "succeeded"
            await stack.get(f"/api/payments/{payment['id']}")
        after = await scrape(url)

    rows = await db.fetch("SELECT action, outcome, count(*) AS n FROM submission_attempts GROUP BY action, outcome")
    sent = {(row["action"], row["outcome"]): row["n"] for row in rows}
    assert sent[("PASSIVEPAY", "success")] >= 1 and sent[("REFUND", "success")] == 1
    # Every request the worker made is counted once, under the action and outcome it recorded.
    for (action, outcome), count in sent.items():
        assert delta(before, after, "ottrecon_submissions_total", action=action, outcome=outcome) == count
    counted = sum(after[key] - before.get(key, 0.0) for key in after if key[0] == "ottrecon_submissions_total")
    assert counted == sum(sent.values())
    assert delta(before, after, "ottrecon_api_requests_total", route="/api/payments", status="201") == 1
    refunds_route = "/api/payments/{payment_id}/refunds"
    assert delta(before, after, "ottrecon_api_requests_total", route=refunds_route, status="201") == 1
    assert delta(before, after, "ottrecon_api_requests_total", route="/api/payments/{payment_id}", status="200") == 1


async def test_api_metrics_endpoint_needs_no_token_and_labels_requests_by_route_pattern(
    database_url: str, redis_url: str
) -> None:
    settings = ApiSettings(
        database_url=database_url,
        redis_url=redis_url,
        token_digests=parse_tokens(API_TOKEN),
        merchant_ids=frozenset({MERCHANT}),
    )
    async with TestClient(TestServer(create_api(settings))) as client:
        before = parse(await (await client.get("/metrics")).text())
        assert (await client.get("/api/payments/NOSUCHPAYMENT", headers=AUTH)).status == 404
        assert (await client.get("/api/payments")).status == 401
        assert (await client.get("/no/such/path", headers=AUTH)).status == 404
        response = await client.get("/metrics")
        assert response.status == 200 and response.content_type == "text/plain"
        after = parse(await response.text())

    route = "/api/payments/{payment_id}"
    assert delta(before, after, "ottrecon_api_requests_total", route=route, status="404") == 1
    assert delta(before, after, "ottrecon_api_requests_total", route="/api/payments", status="401") == 1
    assert delta(before, after, "ottrecon_api_requests_total", route="unmatched", status="404") == 1
    assert not any("NOSUCHPAYMENT" in label for _, labels in after for _, label in labels)


def test_web_metrics_port_defaults_to_9101_and_zero_disables() -> None:
    assert WebhookSettings.from_env({"REDIS_URL": "redis://x"}).metrics_port == 9101
    assert WebhookSettings.from_env({"REDIS_URL": "redis://x", "WEB_METRICS_PORT": "0"}).metrics_port == 0


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"WEB_METRICS_PORT": "metrics"}, "WEB_METRICS_PORT must be a TCP port number"),
        ({"WEB_METRICS_PORT": "70000"}, "WEB_METRICS_PORT must be a TCP port number"),
        ({"PORT": "9000", "WEB_METRICS_PORT": "9000"}, "WEB_METRICS_PORT must differ from PORT"),
    ],
)
def test_web_metrics_port_invalid_or_public_is_refused(env: dict[str, str], problem: str) -> None:
    with pytest.raises(WebhookConfigError, match=problem):
        WebhookSettings.from_env({"REDIS_URL": "redis://x", **env})


def test_worker_metrics_port_defaults_to_9102_and_invalid_is_refused() -> None:
    env = {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x", "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY}"}
    assert WorkerSettings.from_env(env).metrics_port == 9102
    assert WorkerSettings.from_env({**env, "WORKER_METRICS_PORT": "9202"}).metrics_port == 9202
    with pytest.raises(WorkerConfigError, match="WORKER_METRICS_PORT must be a TCP port number"):
        WorkerSettings.from_env({**env, "WORKER_METRICS_PORT": "-1"})


async def test_worker_without_metrics_port_schedules_no_gauge_refresh(
    database_url: str, redis_url: str, merchants: MerchantKeys
) -> None:
    with_metrics = create_worker(worker_settings(database_url, redis_url, merchants), handle_signals=False)
    without = create_worker(worker_settings(database_url, redis_url, merchants, metrics_port=0), handle_signals=False)
    assert "cron:refresh_metrics" in with_metrics.functions
    assert "cron:refresh_metrics" not in without.functions
    # The other scheduled jobs keep the names arq derives from them, timing wrapper or not.
    assert "cron:reconcile_ledger" in without.functions


@contextlib.asynccontextmanager
async def command(args: list[str], env: Mapping[str, str], log: Path) -> AsyncIterator[None]:
    """Run an `ottrecon` command as an operator would, and stop it with SIGTERM as a supervisor does."""
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            OTTRECON,
            *args,
            env={"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "WARNING", **env},
            stdout=stderr,
            stderr=stderr,
        )
        try:
            yield
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def scrape_when(url: str, ready: Callable[[Samples], bool], log: Path, timeout_s: float = 20.0) -> Samples:
    """Scrape until ready(samples) holds; fails with the process's log when it never does."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        with contextlib.suppress(aiohttp.ClientConnectionError):
            samples = await scrape(url)
            if ready(samples):
                return samples
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"no ready scrape from {url}; the process logged:\n{await asyncio.to_thread(log.read_text)}")
        await asyncio.sleep(0.1)


async def test_web_command_serves_metrics_on_its_own_port_only(redis_url: str, tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {"REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(port), "WEB_METRICS_PORT": str(metrics_port)}
    log = tmp_path / "web.log"
    async with command(["web"], env, log):
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        await scrape_when(url, lambda samples: True, log)
        async with aiohttp.ClientSession() as session:
            posted = await session.post(f"http://127.0.0.1:{port}/ottpay/callback", json=make_callback("C1"))
            assert posted.status == 200
            assert (await session.get(f"http://127.0.0.1:{port}/metrics")).status == 404
        # A fresh process: its counters start at 0, so these are absolute.
        samples = await scrape(url)
    assert value(samples, "ottrecon_callbacks_received_total") == 1
    assert value(samples, "ottrecon_callbacks_enqueued_total", outcome="queued") == 1
    # The receiver imports neither the worker nor the api, so it exports none of their series.
    assert not [name for name, _ in samples if name.startswith(("ottrecon_queue", "ottrecon_job", "ottrecon_api"))]


async def test_worker_command_serves_refreshed_gauges_on_its_metrics_port(
    database_url: str, redis_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await _insert_unpaid_order(db, "C0000000000000000001")
    await _insert_alerts(db, [("amount_mismatch", "C2", 500, "open", False)])
    metrics_port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY}",
        "WORKER_METRICS_PORT": str(metrics_port),
    }
    log = tmp_path / "worker.log"
    async with command(["worker"], env, log):
        refreshed = ("ottrecon_job_seconds_count", frozenset({("job", "refresh_metrics")}))
        samples = await scrape_when(f"http://127.0.0.1:{metrics_port}/metrics", lambda s: s.get(refreshed, 0) >= 1, log)
    # A fresh process: non-zero gauges can only come from the refresh reading this database.
    assert value(samples, "ottrecon_unpaid_orders") == 1
    assert value(samples, "ottrecon_open_mismatches", kind="amount_mismatch") == 1
    assert value(samples, "ottrecon_amount_at_risk_cents") >= 500
