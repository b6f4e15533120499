"""The worker benchmark's baseline: a bare arq Worker, configured like the real one, whose job does nothing."""

from __future__ import annotations

import os
from typing import Any

from arq import Worker, func
from arq.connections import RedisSettings

from ottrecon import logs
from ottrecon.queue import INGEST_JOB, QUEUE_NAME, deserialize, serialize
from worker.settings import WorkerSettings


async def ingest_nothing(ctx: dict[str, Any], callbacks: list[Any]) -> dict[str, int]:
    """Stands in for worker.jobs.ingest_callbacks: same name and arguments, no verifying, no Postgres."""
    return {"recorded": 0}


def create_noop_worker(settings: WorkerSettings) -> Worker:
    """arq's own machinery only: the queue, max_jobs, poll_delay, keep_result and JSON serializer of
    worker.main.create_worker, without its start-up (Postgres, HTTP session) or scheduled jobs."""
    return Worker(
        functions=[func(ingest_nothing, name=INGEST_JOB, max_tries=settings.max_tries)],
        queue_name=QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        max_jobs=settings.max_jobs,
        poll_delay=settings.poll_delay_s,
        keep_result=0,
        job_timeout=120,
        job_serializer=serialize,
        job_deserializer=deserialize,
    )


def main() -> None:
    """Run until SIGTERM/SIGINT, like `ottrecon worker`, configured from the same environment."""
    logs.configure(os.environ.get("LOG_LEVEL", "INFO"))
    # from_env, as `ottrecon worker` does, so an OTTRECON_WORKER_* override applies to both.
    create_noop_worker(WorkerSettings.from_env(os.environ)).run()


if __name__ == "__main__":
    main()
