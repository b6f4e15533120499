"""The worker's Prometheus metrics and the scheduled job that refreshes its gauges from Postgres and Redis.

Everything lives in prometheus_client's default registry: one worker process is one scrape target.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import asyncpg
from arq import ArqRedis
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from ottpay.codes import GatewayReply, Outcome
from ottrecon import db
from ottrecon.callbacks.deadletter import dead_letter_count
from ottrecon.callbacks.verdicts import FINISH_TIME_SKEW_LIMIT, RejectReason, VerifiedCallback
from ottrecon.errors import DatabaseUnavailable
from ottrecon.queue import QUEUE_NAME
from ottrecon.reconciliation import overview_queries
from ottrecon.reconciliation.statuses import AlertKind

if TYPE_CHECKING:
    from worker.context import JobContext

logger = logging.getLogger("ottrecon.metrics")

P = ParamSpec("P")
R = TypeVar("R")

# Every worker refreshes the gauges this often; each reads the same shared state (see docs/METRICS.md).
REFRESH_EVERY_S = 15

RECORDED = Counter("ottrecon_callbacks_recorded_total", "Verified callbacks newly recorded.")
DUPLICATE = Counter("ottrecon_callbacks_duplicate_total", "Verified callbacks that were already recorded.")
REJECTED = Counter("ottrecon_callbacks_rejected_total", "Callbacks kept as rejected, by stable reason.", ["reason"])
# Retention (worker/retention.py): what it deleted, and how fast distinct rejected bodies arrive.
REJECTED_PURGED = Counter(
    "ottrecon_rejected_callbacks_purged_total", "Rejected callbacks deleted past OTTRECON_REJECTED_RETENTION_DAYS."
)
REJECTED_LAST_HOUR = Gauge(
    "ottrecon_rejected_callbacks_last_hour", "Distinct rejected callback bodies last delivered within the past hour."
)
DEAD_LETTERED = Counter("ottrecon_callbacks_dead_lettered_total", "Callbacks moved to the dead-letter list.")
FINISH_TIME_SKEWED = Counter(
    "ottrecon_callbacks_finish_time_skewed_total",
    "Newly recorded callbacks whose parsed finish_time is more than an hour from their receipt.",
)
UNEXPECTED_RSP_CODE = Counter(
    "ottrecon_callbacks_unexpected_rsp_code_total",
    "Newly recorded verified callbacks whose unsigned rsp_code is not SUCCESS (an altered copy, or the gateway "
    "changed); their signed data decided what they report.",
)
_submissions = Counter(
    "ottrecon_submissions_total", "Requests sent to OTT Pay by the submitter and refunder.", ["action", "outcome"]
)
# Jobs run from milliseconds (one callback batch) up to the 240 s cron timeout.
JOB_SECONDS = Histogram(
    "ottrecon_job_seconds",
    "Duration of arq jobs, whatever their outcome.",
    ["job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0),
)

REDIS_UP = Gauge("ottrecon_redis_up", "1 while the worker's last Redis command succeeded, 0 during an outage.")
REDIS_OUTAGES = Counter("ottrecon_redis_outages_total", "Redis outages the worker rode out (or is riding out).")

QUEUE_DEPTH = Gauge("ottrecon_queue_depth", "Jobs in the arq queue, due or deferred.")
DEAD_LETTERS = Gauge("ottrecon_dead_letters", "Entries in the dead-letter list awaiting `ottrecon requeue-dead`.")
OPEN_MISMATCHES = Gauge("ottrecon_open_mismatches", "Alerts not resolved, by kind.", ["kind"])
UNPAID_ORDERS = Gauge("ottrecon_unpaid_orders", "Orders flagged unpaid past their deadline.")
GIVEN_UP_ORDERS = Gauge(
    "ottrecon_orders_given_up", "Orders no longer followed without a final answer (unpaid or review), not paid since."
)
AMOUNT_AT_RISK = Gauge("ottrecon_amount_at_risk_cents", "Cents at stake in alerts not resolved.")
ALERTS_UNDELIVERED = Gauge("ottrecon_alerts_undelivered", "Alerts not yet delivered to the alert endpoint.")

# Series exist from 0 at start, so alert rules on a kind or reason work before its first event.
# The reasons are the codes stored in rejected_callbacks (worker/verify.py, ottpay/errors.py).
_REJECT_REASONS = tuple(RejectReason)
_ALERT_KINDS = tuple(AlertKind)
for _reason in _REJECT_REASONS:
    REJECTED.labels(reason=_reason)
for _action in ("PASSIVEPAY", "ACTIVEPAY", "STATUS_QUERY", "REFUND"):
    for _outcome in Outcome:
        _submissions.labels(action=_action, outcome=_outcome.value)
_kinds_seen = set(_ALERT_KINDS)


def count_finish_time_skew(callback: VerifiedCallback) -> None:
    """Count (and log) a newly recorded live callback whose finish_time is far from its receipt (decision 0007).

    An hour is far more than the gateway's delivery delay: a misread zone (12-13 h) or a wrong gateway clock.
    """
    skew = callback.finish_time_skew
    if skew is not None and abs(skew) > FINISH_TIME_SKEW_LIMIT:
        FINISH_TIME_SKEWED.inc()
        logger.warning(
            "callback finish_time far from its receipt",
            extra={
                "merchant_id": callback.merchant_id,
                "order_id": callback.order_id,
                "finish_time_raw": callback.finish_time_raw,
                "skew_s": int(skew.total_seconds()),
            },
        )


def count_submission(reply: GatewayReply) -> None:
    """Count one request sent to the gateway (action and outcome are fixed codes, never request data)."""
    _submissions.labels(action=reply.action, outcome=reply.outcome.value).inc()


def timed(job: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Wrap an arq job so every run, Retry and timeout included, lands in ottrecon_job_seconds{job}.

    arq's on_job_start/on_job_end hooks are not told the function's name, hence a wrapper; it keeps
    the job's __qualname__, from which arq names cron jobs.
    """
    seconds = JOB_SECONDS.labels(job=job.__name__)

    @functools.wraps(job)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with seconds.time():
            return await job(*args, **kwargs)

    return run


async def refresh_metrics(ctx: JobContext) -> None:
    """Scheduled: refresh the gauges. Never fails the job: a source that is away keeps its last values."""
    state = ctx["state"]
    try:
        await refresh_queue_gauges(ctx["redis"])
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("redis unavailable; queue gauges not refreshed", extra={"error": exc.__class__.__name__})
    try:
        await refresh_ledger_gauges(state.pool)
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; ledger gauges not refreshed")


async def refresh_queue_gauges(redis: ArqRedis) -> None:
    """Set the queue depth and dead-letter count from Redis (two O(1) reads)."""
    QUEUE_DEPTH.set(await redis.zcard(QUEUE_NAME))
    DEAD_LETTERS.set(await dead_letter_count(redis))


async def refresh_ledger_gauges(pool: asyncpg.Pool) -> None:
    """Set the alert and unpaid-order gauges from Postgres; raises DatabaseUnavailable when it is away."""
    async with db.translate_errors(), pool.acquire() as conn:
        by_kind = await conn.fetch(overview_queries.OPEN_ALERTS_BY_KIND)
        backlogs = await db.fetch_one(conn, overview_queries.BACKLOGS)
    open_by_kind = {row["kind"]: row["open"] for row in by_kind}
    # A kind whose alerts were all resolved must drop to 0, not keep its last count.
    _kinds_seen.update(open_by_kind)
    for kind in _kinds_seen:
        OPEN_MISMATCHES.labels(kind=kind).set(open_by_kind.get(kind, 0))
    AMOUNT_AT_RISK.set(sum(int(row["at_risk"]) for row in by_kind))
    UNPAID_ORDERS.set(backlogs["unpaid"])
    GIVEN_UP_ORDERS.set(backlogs["given_up"])
    ALERTS_UNDELIVERED.set(backlogs["undelivered"])
