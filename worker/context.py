"""What a worker process's jobs share: arq's ctx as a TypedDict, and the state startup builds, one per job family."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypedDict, TypeVar, cast

import asyncpg
from arq import ArqRedis
from arq.typing import WorkerCoroutine

from ottpay.keys import MerchantKeys
from ottrecon.money import DEFAULT_CURRENCY
from ottrecon.payments.refunder import Refunder
from ottrecon.payments.submitter import Submitter
from ottrecon.reconciliation.reconcile import DEFAULT_CONCURRENCY
from ottrecon.redis_persistence import PersistenceWatch
from worker.settings import WorkerSettings
from worker.writer import BatchWriter

if TYPE_CHECKING:
    from worker.http import LazySession


@dataclass
class WorkerState:
    """What every job shares inside one worker process."""

    settings: WorkerSettings
    pool: asyncpg.Pool
    writer: BatchWriter


@dataclass
class PaymentState:
    """What payment jobs share inside one worker process."""

    submitter: Submitter
    refunder: Refunder
    batch: int


@dataclass
class ReconState:
    """What reconciliation jobs share inside one worker process."""

    pool: asyncpg.Pool
    business_tz: str
    http: LazySession
    alert_webhook_url: str | None
    alert_storm_threshold: int
    merchants: MerchantKeys
    # Alert texts show times in the zone the finance console shows (OTTRECON_DISPLAY_TZ).
    display_tz: str = "America/Toronto"
    currency: str = DEFAULT_CURRENCY
    # Batches one reconcile tick runs at once (OTTRECON_RECONCILE_CONCURRENCY, decision 0040).
    reconcile_concurrency: int = DEFAULT_CONCURRENCY


class JobContext(TypedDict, total=False):
    """arq's ctx as the jobs read it: arq's own keys per run, and what the worker's startup put there.

    total=False: arq fills the first group for every job it runs, startup the second; a test may build
    only what the job under test reads.
    """

    # Set by arq for each job run.
    redis: ArqRedis
    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int
    # Set by worker/main.py's startup.
    state: WorkerState
    http: LazySession
    payments: PaymentState
    recon: ReconState
    persistence: tuple[PersistenceWatch, asyncio.Task[None]]


P = ParamSpec("P")
R = TypeVar("R")


def arq_job(job: Callable[Concatenate[JobContext, P], Awaitable[R]]) -> WorkerCoroutine:
    """Register a job typed with JobContext: arq types its ctx as a plain dict, which at run time it is."""
    return cast(WorkerCoroutine, job)
