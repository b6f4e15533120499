"""What a worker process's jobs share (arq's ctx): the state startup builds, one dataclass per job family."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import asyncpg

from ottpay.keys import MerchantKeys
from ottrecon.money import DEFAULT_CURRENCY
from ottrecon.payments.refunder import Refunder
from ottrecon.payments.submitter import Submitter
from worker.settings import WorkerSettings
from worker.writer import BatchWriter


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
    http: aiohttp.ClientSession
    alert_webhook_url: str | None
    alert_storm_threshold: int
    merchants: MerchantKeys
    # Alert texts show times in the zone the finance console shows (OTTRECON_DISPLAY_TZ).
    display_tz: str = "America/Toronto"
    currency: str = DEFAULT_CURRENCY
