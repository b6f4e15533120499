"""Scheduled: the rejected-callback retention (callbacks/retention.py) and its gauge."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from ottrecon.callbacks import retention
from ottrecon.errors import DatabaseUnavailable
from worker import metrics

if TYPE_CHECKING:
    from worker.context import JobContext

logger = logging.getLogger("ottrecon.retention")


async def purge_rejected_callbacks(ctx: JobContext) -> int:
    """Scheduled: apply the retention and refresh the rejected-rate gauge; returns rows deleted.

    A database outage only postpones it to the next run.
    """
    state = ctx["state"]
    try:
        deleted = await retention.purge(state.pool, timedelta(seconds=state.settings.rejected_retention_s))
        metrics.REJECTED_LAST_HOUR.set(await retention.last_hour(state.pool))
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; rejected-callback retention postponed")
        return 0
    metrics.REJECTED_PURGED.inc(deleted)
    if deleted:
        logger.info("rejected callbacks past retention deleted", extra={"deleted": deleted})
    return deleted
