"""Rejected callbacks are kept for a configured time, not forever: a flood of forgeries stays bounded and visible."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from prometheus_client import REGISTRY

from ottpay.keys import MerchantKeys
from ottrecon import db as worker_db
from ottrecon.callbacks import store as callback_store
from tests.conftest import MERCHANT, OLD_KEY
from tests.integration.support import worker_settings
from worker.context import WorkerState
from worker.main import create_worker
from worker.retention_jobs import purge_rejected_callbacks
from worker.settings import WorkerSettings
from worker.writer import BatchWriter

INSERT = """
INSERT INTO rejected_callbacks (merchant_id, md5, envelope, envelope_sha256, reason, detail, received_at,
                                last_received_at)
VALUES ('M1', 'X', '{}'::jsonb, $1, 'digest_mismatch', 'forged', now() - $2::interval, now() - $2::interval)
RETURNING id
"""


def test_retention_is_configurable_and_defaults_to_thirty_days() -> None:
    env = {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://x", "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY}"}
    assert WorkerSettings.from_env(env).rejected_retention_s == 30 * 86400
    assert WorkerSettings.from_env(env | {"OTTRECON_REJECTED_RETENTION_DAYS": "7"}).rejected_retention_s == 7 * 86400


async def test_old_rejections_are_purged_but_audited_and_recent_ones_kept(
    database_url: str, redis_url: str, db: asyncpg.Connection, merchants: MerchantKeys
) -> None:
    old = [await db.fetchval(INSERT, f"old{n}", timedelta(days=40)) for n in range(3)]
    audited = await db.fetchval(INSERT, "audited", timedelta(days=40))
    await db.execute(
        "INSERT INTO rejected_callback_events (rejected_id, action, actor) VALUES ($1, 'replay_requested', 'ann')",
        audited,
    )
    recent = await db.fetchval(INSERT, "recent", timedelta(minutes=5))
    older_but_kept = await db.fetchval(INSERT, "week", timedelta(days=7))
    settings = worker_settings(database_url, redis_url, merchants, rejected_retention_s=30 * 86400)
    pool = await worker_db.create_pool(database_url, 2)
    purged_before = REGISTRY.get_sample_value("ottrecon_rejected_callbacks_purged_total") or 0.0
    try:
        state = WorkerState(
            settings=settings, pool=pool, writer=BatchWriter(lambda v, r: callback_store.record(pool, v, r), 10)
        )
        purged = await purge_rejected_callbacks({"state": state})
    finally:
        await pool.close()

    kept = {row["id"] for row in await db.fetch("SELECT id FROM rejected_callbacks")}
    assert purged == 3
    assert kept == {audited, recent, older_but_kept}
    assert not kept & set(old)
    assert REGISTRY.get_sample_value("ottrecon_rejected_callbacks_purged_total") == purged_before + 3
    # The rate of distinct rejected bodies is visible: one was delivered within the last hour.
    assert REGISTRY.get_sample_value("ottrecon_rejected_callbacks_last_hour") == 1


def test_worker_schedules_the_retention_job(database_url: str, redis_url: str, merchants: MerchantKeys) -> None:
    worker = create_worker(worker_settings(database_url, redis_url, merchants), handle_signals=False)
    assert "cron:purge_rejected_callbacks" in worker.functions
