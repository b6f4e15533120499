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
from bench.drain import BASELINE, NOOP, REAL, Drain, measure_drain
from bench.redisdb import ClaimedRedisDb
from bench.report import table
from bench.support import (
    BENCH_MERCHANT,
    REPO_ROOT,
    child_env,
    free_port,
    make_callbacks,
    new_sign_key,
    positive_int,
    server_url,
)
from worker.settings import WorkerSettings

# Issue 13: one worker drains a pre-filled queue into Postgres at 10,000 callbacks/s or more.
TARGET_RATE = 10_000.0


@dataclass(frozen=True)
class WorkerOptions:
    """How many callbacks, how many rounds."""

    callbacks: int = 20_000
    rounds: int = 2
    redis_db: int | None = None  # None: the first empty, unclaimed index
    log_level: str = "INFO"
    timeout_s: float = 600.0
    # Another checkout (e.g. a worktree of main) whose worker is drained in each round too, old against new.
    baseline_code: Path | None = None


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

    @property
    def baseline_ratios(self) -> list[float]:
        """Real pipeline rate over the baseline checkout's rate of the same round (empty without --baseline-code)."""
        return [r / b for b, r in zip(self.rates(BASELINE), self.rates(REAL), strict=False)]

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
            # Its /metrics on a free port, as deployed (9102 may be another worker's on this machine).
            "WORKER_METRICS_PORT": str(free_port()),
        }
        worker_env = child_env(variables, env)
        settings = WorkerSettings.from_env(worker_env)
        used = {"max_jobs": settings.max_jobs, "poll_delay_s": settings.poll_delay_s}
        used |= {"write_batch_max": settings.write_batch_max, "db_pool_max": settings.db_pool_max}
        report = WorkerReport(options, used)
        for round_no in range(1, options.rounds + 1):
            for kind in _round_order(round_no, options.baseline_code is not None):
                code_dir = options.baseline_code if kind == BASELINE and options.baseline_code else REPO_ROOT
                if kind != NOOP:
                    worker_env["DATABASE_URL"] = databases.clone(f"r{round_no}{kind[0]}")
                drain = measure_drain(
                    kind, options.timeout_s, callbacks, redis_db, Path(tmp), worker_env, code_dir=code_dir
                )
                report.drains.append(drain)
                print(
                    f"  round {round_no} {kind:<16} {drain.rate:7,.0f} jobs/s "
                    f"(steady {drain.steady_rate:,.0f}/s, {drain.wall_s:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return report


def _round_order(round_no: int, with_baseline: bool) -> tuple[str, ...]:
    """The no-op first, then the baseline and the real worker, taking turns going first (drift hits both alike)."""
    if not with_baseline:
        return (NOOP, REAL)
    return (NOOP, BASELINE, REAL) if round_no % 2 else (NOOP, REAL, BASELINE)


def summary(report: WorkerReport) -> str:
    """The per-drain table and the ratio to bare arq."""
    rows = []
    for index, d in enumerate(report.drains):
        rows.append(
            [
                f"{_round_of(report, index)}. {d.kind}",
                f"{d.jobs:,}",
                f"{d.wall_s:.2f}",
                f"{d.rate:,.0f}",
                f"{d.first_s:.2f}",
                f"{d.steady_rate:,.0f}",
                f"{100 * d.cpu_s / d.wall_s:.0f}",
                f"{1e6 * d.cpu_s / d.jobs:.0f}",
                "; ".join(d.checks) or "ok",
            ]
        )
    header = ["run", "jobs", "wall s", "jobs/s", "1st done s", "steady/s", "cpu%", "cpu µs each", "checks"]
    s = report.settings
    ratios = ", ".join(f"{r:.0%}" for r in report.ratios)
    lines = []
    if report.baseline_ratios:
        per_round = ", ".join(f"{r:.2f}x" for r in report.baseline_ratios)
        lines.append(
            f"real/baseline ({report.options.baseline_code}) per round: {per_round}; "
            f"median {statistics.median(report.baseline_ratios):.2f}x"
        )
    return "\n".join(
        [
            f"worker drain: {report.options.callbacks:,} queued callbacks, one process, "
            f"max_jobs={s['max_jobs']}, poll_delay={s['poll_delay_s']}s, write_batch_max={s['write_batch_max']}, "
            f"db_pool_max={s['db_pool_max']}, LOG_LEVEL={report.options.log_level}",
            table(header, rows),
            f"real/no-op per round: {ratios}; median {statistics.median(report.ratios):.0%}",
            *lines,
        ]
    )


def _round_of(report: WorkerReport, index: int) -> int:
    return index // (3 if report.options.baseline_code is not None else 2) + 1


def add_arguments(parser: argparse.ArgumentParser, defaults: WorkerOptions = WorkerOptions()) -> None:
    """The worker benchmark's flags (shared with bench.run_all)."""
    parser.add_argument(
        "--callbacks", type=positive_int, default=defaults.callbacks, help="callbacks to queue and drain"
    )
    parser.add_argument("--worker-rounds", type=positive_int, default=defaults.rounds, help="no-op+real pairs to run")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="give up a drain after this")
    parser.add_argument(
        "--baseline-code",
        type=Path,
        default=defaults.baseline_code,
        metavar="DIR",
        help="also drain with the worker of this checkout (e.g. `git worktree add DIR main`) in every round, "
        "with its own .venv if it has one (else this interpreter), and print new/old; its schema must match this "
        "checkout's migrations",
    )


def options_from(args: argparse.Namespace) -> WorkerOptions:
    """WorkerOptions from parsed flags."""
    return WorkerOptions(
        callbacks=args.callbacks,
        rounds=args.worker_rounds,
        redis_db=args.redis_db,
        log_level=args.log_level,
        timeout_s=args.timeout,
        baseline_code=args.baseline_code.resolve() if args.baseline_code is not None else None,
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
