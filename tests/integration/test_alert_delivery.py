"""Alert delivery against real Postgres and a real HTTP endpoint on 127.0.0.1 standing in for Slack."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from ottrecon.logs import JsonFormatter
from ottrecon.reconciliation.delivery import DeliveryReport, deliver_due_alerts
from tests.conftest import MERCHANT, OTHER_MERCHANT

# Slack incoming-webhook URLs carry their credential in the path.
SECRET = "XXsecretTOKEN1234abcdXX"
SECRET_PATH = f"/services/T0000TEAM/B0000HOOK/{SECRET}"
FIRST_SEEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class AlertEndpoint:
    """A Slack-like incoming webhook: records every message and answers with `status` after `delay_s`."""

    def __init__(self) -> None:
        self.status = 200
        self.body = "ok"
        self.delay_s = 0.0
        self.received: list[str] = []  # every message text, whatever the answer
        self.accepted: list[str] = []  # texts answered with 2xx
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/services/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # The same port on a restart, as a webhook URL does not change when its server comes back.
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        text = (await request.json())["text"]
        self.received.append(text)
        self.paths.append(request.path)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if 200 <= self.status < 300:
            self.accepted.append(text)
        return web.Response(status=self.status, text=self.body.replace("{path}", request.path))


@pytest.fixture
async def endpoint() -> AsyncIterator[AlertEndpoint]:
    server = AlertEndpoint()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # Connected up front, so that concurrent calls start together rather than one per connect.
    pool = await asyncpg.create_pool(database_url, min_size=5, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def add_alert(
    db: asyncpg.Connection,
    order_id: str,
    amount: int = 1250,
    *,
    kind: str = "unpaid",
    merchant_id: str = MERCHANT,
    status: str = "open",
) -> int:
    """An alert row as the reconciler writes it (resolved ones as auto-resolved by evidence)."""
    resolved = status == "resolved"
    alert_id: int = await db.fetchval(
        """INSERT INTO alerts (kind, merchant_id, order_id, amount_at_risk, status, first_seen_at, resolved_at,
                               resolution)
           VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END, CASE WHEN $7 THEN 'evidence' END)
           RETURNING id""",
        kind,
        merchant_id,
        order_id,
        amount,
        status,
        FIRST_SEEN,
        resolved,
    )
    return alert_id


async def delivery_state(db: asyncpg.Connection, alert_id: int) -> asyncpg.Record:
    row = await db.fetchrow(
        """SELECT notified_at, notify_attempts, notify_error,
                  extract(epoch FROM next_notify_at - clock_timestamp())::float8 AS due_in_s
           FROM alerts WHERE id = $1""",
        alert_id,
    )
    assert row is not None
    return row


async def make_due(db: asyncpg.Connection) -> None:
    await db.execute("UPDATE alerts SET next_notify_at = now() WHERE notified_at IS NULL")


def alert_ids(texts: list[str]) -> list[int]:
    return sorted(int(i) for text in texts for i in re.findall(r"\(alert #(\d+)\)", text))


async def test_alert_texts_show_money_in_the_configured_currency(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, endpoint: AlertEndpoint
) -> None:
    # One money formatter for the console, the CLI and the alerts (OTTRECON_CURRENCY): texts said "$12.50".
    one = await add_alert(db, "ORDER-1", 1250)
    await deliver_due_alerts(pool, lambda: session, endpoint.url, currency="USD")
    assert endpoint.accepted == [
        f"ALERT unpaid: merchant {MERCHANT}, order ORDER-1, 12.50 USD at risk (alert #{one}), "
        "first seen 2024-05-01 08:00 EDT"
    ]


async def test_deliver_due_alerts_sends_one_message_per_alert(
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    endpoint: AlertEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ottrecon.alerts")
    first = await add_alert(db, "ORDER-1", 1250)
    second = await add_alert(db, "ORDER-2", 123456, kind="amount_mismatch", merchant_id=OTHER_MERCHANT)

    report = await deliver_due_alerts(pool, lambda: session, endpoint.url)

    assert report == DeliveryReport(claimed=2, delivered=2, failed=0, summarised=False)
    assert sorted(endpoint.accepted) == [
        f"ALERT amount_mismatch: merchant {OTHER_MERCHANT}, order ORDER-2, 1,234.56 CAD at risk (alert #{second}), "
        "first seen 2024-05-01 08:00 EDT",
        f"ALERT unpaid: merchant {MERCHANT}, order ORDER-1, 12.50 CAD at risk (alert #{first}), "
        "first seen 2024-05-01 08:00 EDT",
    ]
    assert endpoint.paths == [SECRET_PATH, SECRET_PATH]
    for alert_id in (first, second):
        state = await delivery_state(db, alert_id)
        assert state["notified_at"] is not None and state["notify_error"] is None
    logged = {r.__dict__["alert_id"]: r.__dict__ for r in caplog.records if r.getMessage() == "alert delivered"}
    assert sorted(logged) == [first, second]
    assert (logged[first]["kind"], logged[first]["merchant_id"], logged[first]["order_id"]) == (
        "unpaid",
        MERCHANT,
        "ORDER-1",
    )
    assert logged[second]["amount_at_risk"] == 123456

    assert await deliver_due_alerts(pool, lambda: session, endpoint.url) == DeliveryReport(0, 0, 0, False)
    assert len(endpoint.received) == 2


async def test_deliver_due_alerts_endpoint_down_retries_with_backoff_until_delivered_once(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, endpoint: AlertEndpoint
) -> None:
    alert_id = await add_alert(db, "ORDER-DOWN", 990)
    endpoint.status, endpoint.body = 500, "no_service"

    report = await deliver_due_alerts(pool, lambda: session, endpoint.url, base_delay_s=10)

    assert report == DeliveryReport(claimed=1, delivered=0, failed=1, summarised=False)
    state = await delivery_state(db, alert_id)
    assert (state["notified_at"], state["notify_attempts"], state["notify_error"]) == (None, 1, "HTTP 500: no_service")
    assert 4.5 < state["due_in_s"] <= 10  # first retry: the base delay, jittered to half..full
    again = await deliver_due_alerts(pool, lambda: session, endpoint.url, base_delay_s=10)
    assert again == DeliveryReport(0, 0, 0, False)

    await endpoint.stop()  # nothing listening any more
    await make_due(db)
    report = await deliver_due_alerts(pool, lambda: session, endpoint.url, base_delay_s=10)
    assert (report.delivered, report.failed) == (0, 1)
    state = await delivery_state(db, alert_id)
    assert state["notify_attempts"] == 2 and state["notify_error"] == "cannot send: ClientConnectorError"
    assert 9.5 < state["due_in_s"] <= 20  # doubled

    endpoint.status = 200
    await endpoint.start()
    await make_due(db)
    report = await deliver_due_alerts(pool, lambda: session, endpoint.url, base_delay_s=10)
    assert (report.delivered, report.failed) == (1, 0)
    await make_due(db)
    assert await deliver_due_alerts(pool, lambda: session, endpoint.url) == DeliveryReport(0, 0, 0, False)

    assert alert_ids(endpoint.accepted) == [alert_id]
    state = await delivery_state(db, alert_id)
    assert state["notified_at"] is not None and state["notify_error"] is None


async def test_deliver_due_alerts_backoff_is_capped_at_max_delay(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, endpoint: AlertEndpoint
) -> None:
    alert_id = await add_alert(db, "ORDER-LONG-DOWN")
    await db.execute("UPDATE alerts SET notify_attempts = 5000")  # days of outage: 2**5000 overflows a float
    endpoint.status = 503

    await deliver_due_alerts(pool, lambda: session, endpoint.url, base_delay_s=5, max_delay_s=60)

    state = await delivery_state(db, alert_id)
    assert state["notify_attempts"] == 5001 and state["notified_at"] is None
    assert 29.5 < state["due_in_s"] <= 60


async def test_deliver_due_alerts_concurrent_calls_send_each_alert_once(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, endpoint: AlertEndpoint
) -> None:
    ids = [await add_alert(db, f"ORDER-C{i}", 100 + i) for i in range(8)]
    endpoint.delay_s = 0.3  # every call is still sending while the others claim

    reports = await asyncio.gather(
        *(deliver_due_alerts(pool, lambda: session, endpoint.url, batch=3, storm_threshold=100) for _ in range(4))
    )

    assert sorted(r.claimed for r in reports) == [0, 2, 3, 3]
    assert sum(r.delivered for r in reports) == 8
    assert endpoint.max_in_flight > 3  # the calls really overlapped
    assert alert_ids(endpoint.received) == sorted(ids)
    assert await db.fetchval("SELECT count(*) FROM alerts WHERE notified_at IS NULL") == 0


async def test_deliver_due_alerts_storm_sends_one_summary(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, endpoint: AlertEndpoint
) -> None:
    for i in range(1, 13):
        await add_alert(db, f"ORDER-S{i}", i * 100, kind="unpaid" if i % 2 else "amount_mismatch")

    report = await deliver_due_alerts(pool, lambda: session, endpoint.url, storm_threshold=10)

    assert report == DeliveryReport(claimed=12, delivered=12, failed=0, summarised=True)
    assert len(endpoint.accepted) == 1
    lines = endpoint.accepted[0].splitlines()
    assert lines[:3] == [
        "ALERT STORM: 12 new alerts, 78.00 CAD at risk in total",
        "by kind: amount_mismatch 6, unpaid 6",
        "largest 5:",
    ]
    assert re.findall(r"order (\S+),", "\n".join(lines[3:8])) == [
        "ORDER-S12",
        "ORDER-S11",
        "ORDER-S10",
        "ORDER-S9",
        "ORDER-S8",
    ]
    assert "12.00 CAD at risk" in lines[3] and "ORDER-S7" not in endpoint.accepted[0]
    assert await db.fetchval("SELECT count(*) FROM alerts WHERE notified_at IS NOT NULL") == 12


async def test_deliver_due_alerts_failed_storm_is_retried_as_one_summary(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, endpoint: AlertEndpoint
) -> None:
    for i in range(10):
        await add_alert(db, f"ORDER-F{i}", 500)
    endpoint.status = 429

    report = await deliver_due_alerts(pool, lambda: session, endpoint.url, storm_threshold=10)

    assert report == DeliveryReport(claimed=10, delivered=0, failed=10, summarised=True)
    # One delay for the whole storm, so it comes back together rather than as ten messages.
    assert await db.fetchval("SELECT count(DISTINCT next_notify_at) FROM alerts") == 1
    endpoint.status = 200
    await make_due(db)
    report = await deliver_due_alerts(pool, lambda: session, endpoint.url, storm_threshold=10)
    assert report == DeliveryReport(claimed=10, delivered=10, failed=0, summarised=True)
    assert len(endpoint.received) == 2 and len(endpoint.accepted) == 1


async def test_deliver_due_alerts_without_url_logs_and_marks_notified(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ottrecon.alerts")
    alert_id = await add_alert(db, "ORDER-LOG", 4200)

    report = await deliver_due_alerts(pool, lambda: session, None)

    assert report == DeliveryReport(claimed=1, delivered=1, failed=0, summarised=False)
    [record] = [r for r in caplog.records if r.name == "ottrecon.alerts"]
    assert record.levelno == logging.WARNING and "42.00 CAD at risk" in record.getMessage()
    fields = {k: record.__dict__[k] for k in ("alert_id", "kind", "merchant_id", "order_id", "amount_at_risk")}
    assert fields == {
        "alert_id": alert_id,
        "kind": "unpaid",
        "merchant_id": MERCHANT,
        "order_id": "ORDER-LOG",
        "amount_at_risk": 4200,
    }
    assert (await delivery_state(db, alert_id))["notified_at"] is not None
    assert await deliver_due_alerts(pool, lambda: session, None) == DeliveryReport(0, 0, 0, False)


async def test_deliver_due_alerts_never_expose_webhook_url(
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    endpoint: AlertEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alert_id = await add_alert(db, "ORDER-SECRET")
    errors = []
    # An endpoint echoing the path, briefly or at length; one too slow; then one that is gone.
    failures = [(400, "no such hook {path}", 0.0), (404, "x" * 80 + "{path}", 0.0), (200, "ok", 1.0)]
    for status, body, delay in failures:
        endpoint.status, endpoint.body, endpoint.delay_s = status, body, delay
        await make_due(db)
        assert (await deliver_due_alerts(pool, lambda: session, endpoint.url, timeout_s=0.2)).failed == 1
        errors.append((await delivery_state(db, alert_id))["notify_error"])
    await endpoint.stop()
    await make_due(db)
    await deliver_due_alerts(pool, lambda: session, endpoint.url, timeout_s=0.2)
    errors.append((await delivery_state(db, alert_id))["notify_error"])

    assert errors == [
        "HTTP 400: no such hook [redacted]",
        "HTTP 404",
        "timeout after 0.2s",
        "cannot send: ClientConnectorError",
    ]
    logs = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert "alert delivery failed" in logs
    assert SECRET not in logs and "B0000HOOK" not in logs


async def test_deliver_due_alerts_resolved_before_delivery_is_sent_marked_resolved(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, endpoint: AlertEndpoint
) -> None:
    alert_id = await add_alert(db, "ORDER-GONE", status="resolved")

    assert (await deliver_due_alerts(pool, lambda: session, endpoint.url)).delivered == 1

    assert endpoint.accepted == [
        f"ALERT (already resolved: evidence) unpaid: merchant {MERCHANT}, order ORDER-GONE, 12.50 CAD at risk "
        f"(alert #{alert_id}), first seen 2024-05-01 08:00 EDT"
    ]


async def test_deliver_due_alerts_escapes_slack_markup_in_ids(
    db: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession, endpoint: AlertEndpoint
) -> None:
    await add_alert(db, "<!channel>&<http://evil|pay>", merchant_id="M1\nALERT fake")

    await deliver_due_alerts(pool, lambda: session, endpoint.url)

    [text] = endpoint.accepted
    assert "order &lt;!channel&gt;&amp;&lt;http://evil|pay&gt;," in text
    assert "merchant M1?ALERT fake," in text and "<" not in text and "\n" not in text
