"""Worker throughput: one `ottrecon worker` from a pre-filled queue to rows in Postgres, against bare arq."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.cli import run_benchmark
from bench.databases import ThrowawayDatabases
from bench.drain import NOOP, REAL, Drain, measure_drain
from bench.redisdb import ClaimedRedisDb
from bench.report import table
from bench.support import (
    BENCH_MERCHANT,
    child_env,
    make_callbacks,
    new_sign_key,
    positive_int,
    server_url,
)
from worker.settings import WorkerSettings

TARGET_RATE = 1000.0


@dataclass(frozen=True)
class WorkerOptions:
    """How many callbacks, how many rounds."""

    callbacks: int = 20_000
    rounds: int = 2
    redis_db: int | None = None  # None: the first empty, unclaimed index
    log_level: str = "INFO"
    timeout_s: float = 600.0


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
                drain = measure_drain(kind, options.timeout_s, callbacks, redis_db, Path(tmp), worker_env)
                report.drains.append(drain)
                print(
                    f"  round {round_no} {kind:<16} {drain.rate:7,.0f} jobs/s "
                    f"(steady {drain.steady_rate:,.0f}/s, {drain.wall_s:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return report


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
    return run_benchmark(
        argv,
        name="bench.worker",
        description=__doc__,
        add_arguments=add_arguments,
        options_from=options_from,
        run=run,
        summary=summary,
        uses_database=True,
        cleaned_up="workers stopped, Redis db flushed, database dropped",
    )


if __name__ == "__main__":
    raise SystemExit(main())
