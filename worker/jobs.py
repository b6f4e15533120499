"""The arq job that ingests queued callbacks: judge each, record the batch, retry or dead-letter."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from arq import ArqRedis, Retry
from redis.exceptions import RedisError

from worker import metrics
from worker.errors import DatabaseUnavailable
from worker.queue import DEAD_LETTER_KEY, QUEUED_KEY_PREFIX, serialize
from worker.settings import WorkerSettings
from worker.verify import RejectedCallback, Verdict, judge
from worker.writer import BatchWriter

logger = logging.getLogger("ottrecon.worker")


@dataclass
class WorkerState:
    """What every job shares inside one worker process."""

    settings: WorkerSettings
    pool: asyncpg.Pool
    writer: BatchWriter


async def ingest_callbacks(ctx: dict[str, Any], callbacks: list[Any]) -> dict[str, int]:
    """Verify and record queued callbacks; safe to run any number of times for the same input.

    Each item is ``{"envelope": {...the body as received...}, "received_at": ISO-8601,
    "fingerprint": sha256}``; a job carries every callback the receiver grouped into one write.
    Verified callbacks and their payments, and rejected callbacks with their reason, are
    written in one transaction. While Postgres is unavailable the job is retried with
    backoff (arq Retry) for the configured window; after that, or on an unexpected error,
    the items go to the dead-letter list for `ottrecon requeue-dead`: never dropped.
    """
    state: WorkerState = ctx["state"]
    verdicts = [_judge_item(item, state) for item in callbacks]
    try:
        new = await state.writer.write(verdicts)
    except DatabaseUnavailable as exc:
        job_try: int = ctx["job_try"]
        if job_try < state.settings.max_tries:
            delay = state.settings.retry_delay(job_try)
            logger.warning("postgres unavailable, will retry", extra={"job_try": job_try, "retry_in_s": delay})
            raise Retry(defer=delay) from exc
        await dead_letter(ctx["redis"], callbacks, reason=f"retries exhausted: {exc}")
        await _release_queued_keys(ctx["redis"], callbacks)
        return {"dead_lettered": len(callbacks)}
    except Exception as exc:
        logger.exception("unexpected error while recording callbacks")
        await dead_letter(ctx["redis"], callbacks, reason=f"unexpected error: {exc.__class__.__name__}")
        await _release_queued_keys(ctx["redis"], callbacks)
        return {"dead_lettered": len(callbacks)}
    await _release_queued_keys(ctx["redis"], callbacks)
    return _log_outcomes(verdicts, new)


async def _release_queued_keys(redis: ArqRedis, callbacks: list[Any]) -> None:
    """Done with these bodies: a redelivery may be queued again (and will be found a duplicate).

    Best effort: if Redis fails here the keys simply expire with the job's lifetime.
    """
    keys = [
        QUEUED_KEY_PREFIX + item["fingerprint"]
        for item in callbacks
        if isinstance(item, dict) and isinstance(item.get("fingerprint"), str)
    ]
    if not keys:
        return
    try:
        await redis.delete(*keys)
    except (RedisError, OSError) as exc:
        logger.warning("could not release queued-keys; they expire on their own", extra={"error": str(exc)})


def _judge_item(item: Any, state: WorkerState) -> Verdict:
    envelope = item.get("envelope") if isinstance(item, dict) else None
    received_at = _parse_received_at(item.get("received_at") if isinstance(item, dict) else None)
    return judge(envelope if isinstance(envelope, dict) else {}, received_at, state.settings.merchants)


def _parse_received_at(raw: object) -> datetime:
    # The receiver always sends ISO-8601 UTC; anything else (a hand-made replay) falls back to now.
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _log_outcomes(verdicts: list[Verdict], new: set[tuple[str, str]]) -> dict[str, int]:
    counts = {"recorded": 0, "duplicate": 0, "rejected": 0}
    for verdict in verdicts:
        ids = {"merchant_id": verdict.merchant_id, "md5": verdict.md5}
        if isinstance(verdict, RejectedCallback):
            counts["rejected"] += 1
            metrics.REJECTED.labels(reason=verdict.reason).inc()
            logger.warning("callback rejected", extra={**ids, "reason": verdict.reason, "detail": verdict.detail})
            continue
        outcome = "recorded" if (verdict.merchant_id, verdict.md5) in new else "duplicate"
        counts[outcome] += 1
        if outcome == "recorded":
            metrics.count_finish_time_skew(verdict)
        logger.info(f"callback {outcome}", extra={**ids, "order_id": verdict.order_id, "amount": verdict.amount})
    metrics.RECORDED.inc(counts["recorded"])
    metrics.DUPLICATE.inc(counts["duplicate"])
    return counts


async def dead_letter(redis: ArqRedis, callbacks: list[Any], *, reason: str) -> None:
    """Park callbacks that could not be processed in a Redis list, for `ottrecon requeue-dead`."""
    entry = {"callbacks": callbacks, "reason": reason, "failed_at": datetime.now(UTC).isoformat()}
    await redis.rpush(DEAD_LETTER_KEY, serialize(entry))  # type: ignore[misc]  # redis-py types list commands sync|async
    metrics.DEAD_LETTERED.inc(len(callbacks))
    logger.error("callbacks dead-lettered", extra={"count": len(callbacks), "reason": reason})
