"""The arq job that ingests queued callbacks: judge each, record the batch, retry or dead-letter."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from arq import ArqRedis, Retry
from redis.exceptions import RedisError

from ottrecon.callbacks.deadletter import park
from ottrecon.callbacks.storable import UNSTORABLE, safe_fingerprint, safe_text, storable_copy, unstorable_problem
from ottrecon.callbacks.verdicts import RejectedCallback, Verdict, VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.errors import DatabaseUnavailable
from ottrecon.queue import QUEUED_KEY_PREFIX
from worker import metrics

if TYPE_CHECKING:
    from worker.context import JobContext, WorkerState

logger = logging.getLogger("ottrecon.worker")

# An unexpected error (neither Postgres away nor bad input) is retried this many times in all
# before the callbacks that met it are dead-lettered: a fluke heals, a poison entry is parked.
UNEXPECTED_TRIES = 3
# Counts a job's unexpected errors (per arq job id), apart from arq's job_try.
ERROR_COUNT_PREFIX = "ottrecon:jobs:errors:"
# arq drops a job, without calling it, once job_try passes the function's max_tries. The job
# keeps its own budget (settings.max_tries, then dead-letter); arq's limit sits this far above it,
# so a try cut short by a killed worker, or a Retry while Redis is away on the last try, never
# makes arq drop callbacks.
ARQ_TRIES_SLACK = 100


async def ingest_callbacks(ctx: JobContext, callbacks: list[Any]) -> dict[str, int]:
    """Verify and record queued callbacks; safe to run any number of times for the same input.

    Each item is ``{"envelope": {...the body as received...}, "received_at": ISO-8601,
    "fingerprint": sha256}``; a job carries every callback the receiver grouped into one write.
    Verified callbacks and their payments, and rejected callbacks with their reason, are
    written in one transaction. While Postgres is unavailable the job is retried with
    backoff (arq Retry) for the configured window, then dead-lettered. An unexpected error
    is retried a few times (UNEXPECTED_TRIES); after that only the callbacks that met it go
    to the dead-letter list, their neighbours are recorded. Never dropped: the job lets no
    exception but Retry escape (arq would drop the job).
    """
    state = ctx["state"]
    redis = ctx["redis"]
    verdicts: list[Verdict | None] = []
    failures: dict[int, Exception] = {}
    for position, item in enumerate(callbacks):
        try:
            verdicts.append(_judge_item(item, state))
        except Exception as exc:  # a bug in judging one body must not cost its neighbours
            verdicts.append(None)
            failures[position] = exc
    writable = [(position, v) for position, v in enumerate(verdicts) if v is not None]
    try:
        # The job bounds its own write below arq's timeout: arq fails (drops) a timed-out job, we retry it.
        async with asyncio.timeout(state.settings.ingest_write_timeout_s):
            outcome = await state.writer.write([v for _, v in writable])
    except (DatabaseUnavailable, TimeoutError) as exc:
        job_try: int = ctx["job_try"]
        if job_try < state.settings.max_tries:
            delay = state.settings.retry_delay(job_try)
            logger.warning("postgres unavailable, will retry", extra={"job_try": job_try, "retry_in_s": delay})
            raise Retry(defer=delay) from exc
        reason = f"retries exhausted: {exc if isinstance(exc, DatabaseUnavailable) else 'write timed out'}"
        await _park(redis, callbacks, reason=reason)
        return {"dead_lettered": len(callbacks)}
    for index, error in outcome.failures.items():
        failures[writable[index][0]] = error
    if failures:
        return await _after_unexpected(ctx, callbacks, verdicts, failures, outcome.new)
    await _release_queued_keys(redis, callbacks, error_count_key=_error_count_key(ctx))
    return _log_outcomes([v for v in verdicts if v is not None], outcome.new)


async def _after_unexpected(
    ctx: JobContext,
    callbacks: list[Any],
    verdicts: list[Verdict | None],
    failures: dict[int, Exception],
    new: set[tuple[str, str]],
) -> dict[str, int]:
    """Retry the job a few times (its recorded neighbours are found duplicates), then park only the failed items."""
    state = ctx["state"]
    redis = ctx["redis"]
    first = next(iter(failures.values()))
    logger.error(
        "unexpected error while recording callbacks",
        exc_info=first,
        extra={"failed": len(failures), "of": len(callbacks)},
    )
    try:
        # Counted apart from job_try, which also counts tries cut short by a killed worker.
        errors = int(await redis.incr(_error_count_key(ctx)))
        await redis.expire(_error_count_key(ctx), 86400)
    except (RedisError, OSError) as exc:
        raise Retry(defer=state.settings.retry_delay(1)) from exc
    if errors < UNEXPECTED_TRIES:
        delay = state.settings.retry_delay(errors)
        logger.warning("will retry after an unexpected error", extra={"errors": errors, "retry_in_s": delay})
        raise Retry(defer=delay)
    failed_items = [callbacks[position] for position in sorted(failures)]
    reason = f"unexpected error after {errors} tries: {first.__class__.__name__}"
    await _park(redis, failed_items, reason=reason)
    await _clear_error_count(redis, ctx)
    kept = [item for position, item in enumerate(callbacks) if position not in failures]
    await _release_queued_keys(redis, kept)
    counts = _log_outcomes([v for p, v in enumerate(verdicts) if v is not None and p not in failures], new)
    return {**counts, "dead_lettered": len(failed_items)}


async def _park(redis: ArqRedis, callbacks: list[Any], *, reason: str) -> None:
    """Dead-letter, then release the queued-keys. Redis away: Retry, so the job stays queued, nothing is dropped."""
    try:
        await dead_letter(redis, callbacks, reason=reason)
    except (RedisError, OSError) as exc:
        logger.warning("redis unavailable while dead-lettering; the job stays queued", extra={"error": str(exc)})
        raise Retry(defer=1) from exc
    await _release_queued_keys(redis, callbacks)


def _error_count_key(ctx: JobContext) -> str:
    return f"{ERROR_COUNT_PREFIX}{ctx.get('job_id', 'unknown')}"


async def _clear_error_count(redis: ArqRedis, ctx: JobContext) -> None:
    try:
        await redis.delete(_error_count_key(ctx))
    except (RedisError, OSError):
        pass  # it expires on its own


async def _release_queued_keys(redis: ArqRedis, callbacks: list[Any], *, error_count_key: str | None = None) -> None:
    """Done with these bodies: a redelivery may be queued again (and will be found a duplicate).

    Best effort: if Redis fails here the keys simply expire with the job's lifetime. error_count_key:
    the job's error count, cleared in the same DEL (one round trip per job fewer; it expires too).
    """
    keys = [
        QUEUED_KEY_PREFIX + item["fingerprint"]
        for item in callbacks
        if isinstance(item, dict) and isinstance(item.get("fingerprint"), str)
    ]
    if error_count_key is not None:
        keys.append(error_count_key)
    if not keys:
        return
    try:
        await redis.delete(*keys)
    except (RedisError, OSError) as exc:
        logger.warning("could not release queued-keys; they expire on their own", extra={"error": str(exc)})


def _judge_item(item: Any, state: WorkerState) -> Verdict:
    envelope = item.get("envelope") if isinstance(item, dict) else None
    received_at = _parse_received_at(item.get("received_at") if isinstance(item, dict) else None)
    # The receiver refuses what Postgres cannot store, but the worker never trusts the edge alone.
    problem = unstorable_problem(envelope)
    if problem is None:
        verdict = judge(envelope if isinstance(envelope, dict) else {}, received_at, state.settings.merchants)
        if isinstance(verdict, VerifiedCallback):
            problem = unstorable_problem(verdict.data)
        if problem is None:
            return verdict
    envelope_dict = envelope if isinstance(envelope, dict) else {}
    return RejectedCallback(
        merchant_id=safe_text(_text(envelope_dict.get("merchant_id"))),
        md5=safe_text(_text(envelope_dict.get("md5"))).upper(),
        envelope=storable_copy(envelope),
        fingerprint=safe_fingerprint(item, envelope),
        reason=UNSTORABLE,
        detail=problem,
        received_at=received_at,
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


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
    """Count what became of a job's callbacks, log it once per job (decision 0035), and return the counts.

    Every rejection is a warning of its own (rare, and each needs a look); each recorded or duplicate
    callback has a DEBUG line only: at INFO, one line per callback cost about a tenth of the worker's
    time, and its row in `callbacks` is the record that matters.
    """
    counts = {"recorded": 0, "duplicate": 0, "rejected": 0}
    each = logger.isEnabledFor(logging.DEBUG)
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
            if verdict.rsp_code_unexpected:
                # Kept and judged by its signed data like any other copy; flagged because it is not what OTT
                # Pay sends: someone replayed a genuine callback with another rsp_code, or the gateway changed.
                metrics.UNEXPECTED_RSP_CODE.inc()
                logger.warning(
                    "callback recorded with an unexpected unsigned rsp_code; its signed data decided",
                    extra={**ids, "order_id": verdict.order_id, "rsp_code": verdict.rsp_code},
                )
        if each:
            logger.debug(f"callback {outcome}", extra={**ids, "order_id": verdict.order_id, "amount": verdict.amount})
    metrics.RECORDED.inc(counts["recorded"])
    metrics.DUPLICATE.inc(counts["duplicate"])
    logger.info("callbacks ingested", extra=counts)
    return counts


async def dead_letter(redis: ArqRedis, callbacks: list[Any], *, reason: str) -> None:
    """Park callbacks that could not be processed in the dead-letter list (counted and logged)."""
    await park(redis, callbacks, reason=reason)
    metrics.DEAD_LETTERED.inc(len(callbacks))
    logger.error("callbacks dead-lettered", extra={"count": len(callbacks), "reason": reason})
