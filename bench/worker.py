"""Worker throughput: one `ottrecon worker` from a pre-filled queue to rows in Postgres, against bare arq."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg

from bench.databases import ThrowawayDatabases
from bench.redisdb import ClaimedRedisDb
from bench.support import (
    BENCH_MERCHANT,
    BenchError,
    Child,
    add_common_arguments,
    child_env,
    dump_json,
    facts_text,
    machine_facts,
    make_callbacks,
    new_sign_key,
    ottrecon_command,
    positive_int,
    server_url,
    stop_on_sigterm,
    table,
)
from webhook.batcher import EnqueueBatcher
from webhook.queue import QUEUE_NAME, connect
from worker.queue import DEAD_LETTER_KEY
from worker.settings import WorkerSettings

TARGET_RATE = 1000.0
NOOP = "arq no-op"
REAL = "ottrecon worker"
_POLL_S = 0.02


@dataclass(frozen=True)
class WorkerOptions:
    """How many callbacks, how many rounds."""

    callbacks: int = 20_000
    rounds: int = 2
    redis_db: int | None = None  # None: the first empty, unclaimed index
    log_level: str = "INFO"
    timeout_s: float = 600.0


@dataclass(frozen=True)
class Drain:
    """One worker process emptying a pre-filled queue."""

    kind: str  # NOOP or REAL
    jobs: int
    wall_s: float  # process start until the last job is done (rows in Postgres, or off the queue)
    first_s: float  # process start until the first poll that saw a job done
    first_count: int
    cpu_s: float  # the worker process's CPU time over wall_s
    checks: list[str] = field(default_factory=list)  # problems found afterwards; empty when all is well

    @property
    def rate(self) -> float:
        """Jobs per second, end to end (start-up included)."""
        return self.jobs / self.wall_s

    @property
    def steady_rate(self) -> float:
        """Jobs per second once the first job was done (start-up excluded)."""
        span = self.wall_s - self.first_s
        return (self.jobs - self.first_count) / span if span > 0 else float("nan")


@dataclass(frozen=True)
class WorkerReport:
    """Every drain of one run, in order, and the worker settings they ran with."""

    options: WorkerOptions
    settings: dict[str, float]
    drains: list[Drain] = field(default_factory=list)

    def rates(self, kind: str) -> list[float]:
        """End-to-end rates of one kind of drain, in run order."""
        return [d.rate for d in self.drains if d.kind == kind]

    @property
    def ratios(self) -> list[float]:
        """Real pipeline rate over the no-op rate measured just before it, per round."""
        return [r / n for n, r in zip(self.rates(NOOP), self.rates(REAL), strict=False)]

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(what, measured, target, met) for the summary."""
        rate = statistics.median(self.rates(REAL))
        return [
            (
                "one worker, callbacks/s end to end (median)",
                f"{rate:,.0f}/s",
                f">= {TARGET_RATE:,.0f}/s",
                rate >= TARGET_RATE,
            )
        ]


def run(options: WorkerOptions, env: dict[str, str]) -> WorkerReport:
    """No-op drain then real drain, options.rounds times; every database it creates is dropped."""
    admin_url = server_url("DATABASE_URL", env)
    sign_key = new_sign_key()
    callbacks = make_callbacks(options.callbacks, sign_key)
    with (
        tempfile.TemporaryDirectory(prefix="ottrecon-bench-") as tmp,
        ThrowawayDatabases(admin_url) as databases,
        ClaimedRedisDb(server_url("REDIS_URL", env), options.redis_db) as redis_db,
    ):
        variables = {
            "DATABASE_URL": databases.template_url,  # each real drain gets its own clone instead
            "REDIS_URL": redis_db.url,
            "OTTPAY_MERCHANTS": f"{BENCH_MERCHANT}={sign_key}",
            "LOG_LEVEL": options.log_level,
            # The worker also talks to the OTT Pay gateway (orders); point it at a closed local port so
            # nothing it does during a benchmark can leave this machine. The benchmark creates no orders.
            "OTTPAY_BASE_URL": "http://127.0.0.1:9",
        }
        worker_env = child_env(variables, env)
        settings = WorkerSettings.from_env(worker_env)
        used = {"max_jobs": settings.max_jobs, "poll_delay_s": settings.poll_delay_s}
        used |= {"write_batch_max": settings.write_batch_max, "db_pool_max": settings.db_pool_max}
        report = WorkerReport(options, used)
        for round_no in range(1, options.rounds + 1):
            for kind in (NOOP, REAL):
                if kind == REAL:
                    worker_env["DATABASE_URL"] = databases.clone(f"r{round_no}")
                drain = _drain(kind, options, callbacks, redis_db, Path(tmp), worker_env)
                report.drains.append(drain)
                print(
                    f"  round {round_no} {kind:<16} {drain.rate:7,.0f} jobs/s "
                    f"(steady {drain.steady_rate:,.0f}/s, {drain.wall_s:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return report


def _drain(
    kind: str,
    options: WorkerOptions,
    callbacks: list[dict[str, str]],
    redis_db: ClaimedRedisDb,
    workdir: Path,
    env: dict[str, str],
) -> Drain:
    redis_db.flush()
    asyncio.run(_fill(redis_db.url, callbacks))
    argv = [sys.executable, "-m", "bench.arq_noop"] if kind == NOOP else ottrecon_command("worker")
    log_path = workdir / f"{kind.replace(' ', '-')}-{time.monotonic_ns()}.log"
    database_url = env["DATABASE_URL"] if kind == REAL else None
    with Child(kind, argv, log_path, env) as child:
        return asyncio.run(_watch(kind, child, len(callbacks), redis_db.url, database_url, options.timeout_s))


async def _watch(
    kind: str, child: Child, total: int, redis_url: str, database_url: str | None, timeout_s: float
) -> Drain:
    """Poll until every job is done: a row in callbacks for the real worker, off the queue for the no-op."""
    redis = connect(redis_url, 5.0)
    conn = await asyncpg.connect(database_url) if database_url is not None else None
    try:

        async def queued() -> int:
            return int(await redis.zcard(QUEUE_NAME))

        async def done_count() -> int:
            if conn is None:
                return total - await queued()
            return int(await conn.fetchval("SELECT count(*) FROM callbacks"))

        first_s, first_count = 0.0, 0
        while True:
            count = await done_count()
            elapsed = time.perf_counter() - child.started_at
            if count and not first_count:
                first_s, first_count = elapsed, count
            if count >= total:
                wall_s = elapsed
                break
            child.check_alive()
            if elapsed > timeout_s:
                raise BenchError(f"{kind}: only {count} of {total} done after {timeout_s:.0f}s:\n{child.log_tail()}")
            await asyncio.sleep(_POLL_S)
        cpu_s = child.cpu_seconds()
        checks = []
        # A job leaves the queue just after its commit; give the last ones a moment.
        for _ in range(250):
            if await queued() == 0:
                break
            await asyncio.sleep(_POLL_S)
        else:
            checks.append(f"{await queued()} jobs still queued")
        if conn is not None:
            checks += await _database_checks(conn, total)
            dead = int(await redis.llen(DEAD_LETTER_KEY))  # type: ignore[misc]  # redis-py types sync|async
            if dead:
                checks.append(f"{dead} dead-lettered")
        return Drain(kind, total, wall_s, first_s, first_count, cpu_s, checks)
    finally:
        if conn is not None:
            await conn.close()
        await redis.aclose(close_connection_pool=True)


async def _database_checks(conn: asyncpg.Connection, total: int) -> list[str]:
    problems = []
    callbacks = await conn.fetchval("SELECT count(*) FROM callbacks")
    payments = await conn.fetchval("SELECT count(*) FROM payments WHERE status = 'paid'")
    rejected = await conn.fetchval("SELECT count(*) FROM rejected_callbacks")
    if callbacks != total:
        problems.append(f"{callbacks} callbacks recorded, expected {total}")
    if payments != total:
        problems.append(f"{payments} paid payments, expected {total}")
    if rejected:
        problems.append(f"{rejected} callbacks rejected")
    return problems


async def _fill(redis_url: str, callbacks: list[dict[str, str]]) -> None:
    """Queue every callback exactly as the receiver does: 64 concurrent senders through the same
    EnqueueBatcher, so jobs carry as many callbacks as the receiver would group under that load."""
    redis = connect(redis_url, 5.0)
    batcher = EnqueueBatcher(redis, 5.0)
    limit = asyncio.Semaphore(64)

    async def one(envelope: dict[str, str]) -> bool:
        async with limit:
            return await batcher.enqueue(envelope)

    try:
        fresh = await asyncio.gather(*(one(envelope) for envelope in callbacks))
        jobs = int(await redis.zcard(QUEUE_NAME))
    finally:
        await redis.aclose(close_connection_pool=True)
    if sum(fresh) != len(callbacks):
        raise BenchError(f"queued {sum(fresh)} of {len(callbacks)} distinct callbacks")
    print(f"  queued {len(callbacks)} callbacks as {jobs} jobs ({len(callbacks) / jobs:.1f} per job)", file=sys.stderr)


def summary(report: WorkerReport) -> str:
    """The per-drain table and the ratio to bare arq."""
    rows = []
    for index, d in enumerate(report.drains):
        rows.append(
            [
                f"{index // 2 + 1}. {d.kind}",
                f"{d.jobs:,}",
                f"{d.wall_s:.2f}",
                f"{d.rate:,.0f}",
                f"{d.first_s:.2f}",
                f"{d.steady_rate:,.0f}",
                f"{100 * d.cpu_s / d.wall_s:.0f}",
                "; ".join(d.checks) or "ok",
            ]
        )
    header = ["run", "jobs", "wall s", "jobs/s", "1st done s", "steady/s", "cpu%", "checks"]
    s = report.settings
    ratios = ", ".join(f"{r:.0%}" for r in report.ratios)
    return "\n".join(
        [
            f"worker drain: {report.options.callbacks:,} queued callbacks, one process, "
            f"max_jobs={s['max_jobs']}, poll_delay={s['poll_delay_s']}s, write_batch_max={s['write_batch_max']}, "
            f"db_pool_max={s['db_pool_max']}, LOG_LEVEL={report.options.log_level}",
            table(header, rows),
            f"real/no-op per round: {ratios}; median {statistics.median(report.ratios):.0%}",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser, defaults: WorkerOptions = WorkerOptions()) -> None:
    """The worker benchmark's flags (shared with bench.run_all)."""
    parser.add_argument(
        "--callbacks", type=positive_int, default=defaults.callbacks, help="callbacks to queue and drain"
    )
    parser.add_argument("--worker-rounds", type=positive_int, default=defaults.rounds, help="no-op+real pairs to run")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="give up a drain after this")


def options_from(args: argparse.Namespace) -> WorkerOptions:
    """WorkerOptions from parsed flags."""
    return WorkerOptions(
        callbacks=args.callbacks,
        rounds=args.worker_rounds,
        redis_db=args.redis_db,
        log_level=args.log_level,
        timeout_s=args.timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.worker`: run, print the table; exit 1 when it could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__)
    add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    env = dict(os.environ)
    try:
        facts = machine_facts(server_url("REDIS_URL", env), server_url("DATABASE_URL", env))
        print(facts_text(facts) + "\n", flush=True)
        report = run(options_from(args), env)
    except BenchError as exc:
        print(f"bench.worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.worker: interrupted; workers stopped, Redis db flushed, database dropped", file=sys.stderr)
        return 130
    print(summary(report))
    print(table(["target", "measured", "goal", "met"], [[*t[:3], "yes" if t[3] else "NO"] for t in report.targets()]))
    if args.json is not None:
        dump_json(args.json, asdict(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
