"""Scale-out under load: two `ottrecon web` and two `ottrecon worker` on one Redis and one Postgres, wrk on both.

Each receiver gets its own wrk (its own half of the distinct bodies); the workers drain while the
load runs and after it. Reported: callbacks accepted per second by the two receivers together,
how long the workers needed after the load to record the rest, callbacks recorded per second end
to end, and the check that every acknowledged callback is recorded exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis

from bench.children import Child, child_env, free_port, ottrecon_command, wait_http_ok
from bench.cli import run_benchmark
from bench.databases import ThrowawayDatabases
from bench.redisdb import ClaimedRedisDb
from bench.report import table
from bench.support import BENCH_MERCHANT, make_callbacks, new_sign_key, positive_int, server_url
from bench.wrk import WrkResult, require_wrk, run_wrk, write_bodies
from ottrecon.queue import DEAD_LETTER_KEY, QUEUE_NAME

RECEIVERS = 2
WORKERS = 2
# Issue 13: receivers and workers together on the machine's cores, callbacks recorded end to end per second,
# at least this share of what bare aiohttp answers alone (bench.receiver's bare rounds, in the same run).
TARGET_TOGETHER_RATIO = 0.25


@dataclass(frozen=True)
class ScaleOutOptions:
    """How hard and how long to load the two receivers."""

    duration_s: int = 10
    connections: int = 64  # in all, split over the receivers
    bodies: int = 100_000
    redis_db: int | None = None
    log_level: str = "INFO"
    drain_timeout_s: float = 300.0


@dataclass(frozen=True)
class ScaleOutReport:
    """One loaded run of the two-by-two deployment."""

    options: ScaleOutOptions
    loads: list[WrkResult] = field(default_factory=list)
    recorded: int = 0
    duplicates: int = 0
    rejected: int = 0
    dead_letters: int = 0
    left_queued: int = 0
    drain_after_load_s: float = 0.0
    cpu_pct: dict[str, float] = field(default_factory=dict)

    @property
    def acked(self) -> int:
        """Distinct bodies acknowledged with 200 (no body is sent twice while --bodies covers the run)."""
        return sum(w.ok - w.duplicates for w in self.loads)

    @property
    def in_flight(self) -> int:
        """Requests unanswered at wrk's stop, which a receiver may still have queued."""
        return sum(w.in_flight for w in self.loads)

    @property
    def accepted_per_s(self) -> float:
        """200 responses per second, both receivers together."""
        return sum(w.ok / w.duration_s for w in self.loads)

    @property
    def end_to_end_per_s(self) -> float:
        """Callbacks recorded in Postgres per second, from the load's start to the last one recorded."""
        load_s = max(w.duration_s for w in self.loads)
        return self.recorded / (load_s + self.drain_after_load_s)

    @property
    def checks(self) -> list[str]:
        """What went wrong; empty when every acknowledged callback is recorded exactly once."""
        problems = []
        if not self.acked <= self.recorded <= self.acked + self.in_flight:
            problems.append(f"recorded {self.recorded}, acked {self.acked} (+{self.in_flight} in flight)")
        for name, count in (("duplicate", self.duplicates), ("rejected", self.rejected)):
            if count:
                problems.append(f"{count} {name}")
        if self.dead_letters or self.left_queued:
            problems.append(f"{self.dead_letters} dead letters, {self.left_queued} jobs left queued")
        if any(w.non_2xx or w.socket_errors for w in self.loads):
            problems.append("non-2xx answers or socket errors")
        return problems

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(what, measured, target, met) for the summary."""
        verdict = "; ".join(self.checks) or f"{self.recorded:,} recorded once"
        return [
            ("scale-out 2+2: every acked callback recorded once", verdict, "no loss, no duplicate", not self.checks)
        ]


def run(options: ScaleOutOptions, env: dict[str, str]) -> ScaleOutReport:
    """Start two receivers and two workers, load both receivers at once, wait for the drain; cleans up."""
    require_wrk()
    sign_key = new_sign_key()
    with (
        tempfile.TemporaryDirectory(prefix="ottrecon-bench-") as tmp,
        ThrowawayDatabases(server_url("DATABASE_URL", env)) as databases,
        ClaimedRedisDb(server_url("REDIS_URL", env), options.redis_db) as redis_db,
        ExitStack() as processes,
    ):
        workdir = Path(tmp)
        callbacks = make_callbacks(options.bodies, sign_key)
        shares = [workdir / f"bodies-{n}.txt" for n in range(RECEIVERS)]
        for n, path in enumerate(shares):
            write_bodies(path, (json.dumps(c, separators=(",", ":")) for c in callbacks[n::RECEIVERS]))
        database_url = databases.clone("scaleout")
        variables = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_db.url,
            "OTTPAY_MERCHANTS": f"{BENCH_MERCHANT}={sign_key}",
            "LOG_LEVEL": options.log_level,
            "OTTPAY_BASE_URL": "http://127.0.0.1:9",  # no order is created; nothing may leave the machine
            "HOST": "127.0.0.1",
            "WEB_METRICS_PORT": "0",
            "WORKER_METRICS_PORT": "0",
        }
        children: dict[str, Child] = {}
        ports: list[int] = []
        for n in range(RECEIVERS):
            port = free_port()
            web_env = child_env(variables | {"PORT": str(port)}, env)
            child = processes.enter_context(
                Child(f"web-{n}", ottrecon_command("web"), workdir / f"web-{n}.log", web_env)
            )
            wait_http_ok(port, "/healthz", child)
            children[f"web-{n}"] = child
            ports.append(port)
        for n in range(WORKERS):
            worker_env = child_env(variables, env)
            children[f"worker-{n}"] = processes.enter_context(
                Child(f"worker-{n}", ottrecon_command("worker"), workdir / f"worker-{n}.log", worker_env)
            )
        time.sleep(2)  # the workers start up (migrated schema checked, first cron ticks)
        cpu_before = {name: child.cpu_seconds() for name, child in children.items()}
        per_receiver = max(1, options.connections // RECEIVERS)
        with ThreadPoolExecutor(RECEIVERS) as pool:
            runs = [
                pool.submit(
                    run_wrk,
                    f"http://127.0.0.1:{port}/ottpay/callback",
                    bodies,
                    workdir,
                    threads=1,
                    connections=per_receiver,
                    duration_s=options.duration_s,
                )
                for port, bodies in zip(ports, shares, strict=True)
            ]
            loads = [r.result() for r in runs]
        load_end = time.monotonic()
        expected = sum(w.ok - w.duplicates for w in loads)
        recorded = asyncio.run(_wait_recorded(database_url, redis_db.url, expected, options.drain_timeout_s))
        drain_s = time.monotonic() - load_end
        elapsed = max(w.duration_s for w in loads) + drain_s
        cpu_pct = {name: 100 * (child.cpu_seconds() - cpu_before[name]) / elapsed for name, child in children.items()}
        for child in children.values():
            child.check_alive()
        duplicates, rejected = asyncio.run(_database_counts(database_url))
        dead, left = _redis_counts(redis_db.url)
    report = ScaleOutReport(
        options, loads, recorded, duplicates, rejected, dead, left, drain_s, {k: round(v) for k, v in cpu_pct.items()}
    )
    print(
        f"  scale-out: {report.accepted_per_s:,.0f} accepted/s, {report.end_to_end_per_s:,.0f} recorded/s end to end",
        file=sys.stderr,
        flush=True,
    )
    return report


async def _wait_recorded(database_url: str, redis_url: str, expected: int, timeout_s: float) -> int:
    """Poll until every acked callback is recorded and no ingest job is left queued; the count then."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            # One index probe while the workers still run (count(*) reads every row, on the cores being measured);
            # ids are at least as many as rows, so count(*) is only worth reading once max(id) reaches expected.
            top: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM callbacks")
            late = time.monotonic() > deadline
            if top >= expected or late:
                recorded: int = await conn.fetchval("SELECT count(*) FROM callbacks")
                if (recorded >= expected and _redis_counts(redis_url)[1] == 0) or late:
                    return recorded
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def _database_counts(database_url: str) -> tuple[int, int]:
    """(callbacks recorded more than once for one order, rejected callbacks)."""
    conn = await asyncpg.connect(database_url)
    try:
        duplicates: int = await conn.fetchval(
            "SELECT count(*) - count(DISTINCT (merchant_id, order_id)) FROM callbacks"
        )
        rejected: int = await conn.fetchval("SELECT count(*) FROM rejected_callbacks")
        return duplicates, rejected
    finally:
        await conn.close()


def _redis_counts(redis_url: str) -> tuple[int, int]:
    """(dead letters, ingest jobs still queued); scheduled (cron) jobs are not counted."""
    client = redis.Redis.from_url(redis_url)
    try:
        dead = int(client.llen(DEAD_LETTER_KEY))  # type: ignore[arg-type]  # redis-py types commands sync|async
        queued: list[bytes] = client.zrange(QUEUE_NAME, 0, -1)  # type: ignore[assignment]  # sync|async typing
        return dead, len([job for job in queued if not job.startswith(b"cron:")])
    finally:
        client.close()


def summary(report: ScaleOutReport) -> str:
    """The per-receiver table, the drain and the end-to-end rate."""
    rows = [
        [f"web-{n}", f"{w.rps:,.0f}", f"{w.p50_ms:.1f}", f"{w.p99_ms:.1f}", str(w.non_2xx), str(w.socket_errors)]
        for n, w in enumerate(report.loads)
    ]
    o = report.options
    cpu = ", ".join(f"{name} {pct:.0f}%" for name, pct in report.cpu_pct.items())
    return "\n".join(
        [
            f"scale-out: {RECEIVERS} receivers + {WORKERS} workers, one Redis, one Postgres; "
            f"wrk -t1 -c{max(1, o.connections // RECEIVERS)} -d{o.duration_s}s on each receiver, "
            f"{o.bodies:,} distinct callbacks",
            table(["receiver", "req/s", "p50 ms", "p99 ms", "non-2xx", "sock err"], rows),
            f"accepted {report.accepted_per_s:,.0f}/s together; {report.recorded:,} recorded "
            f"({report.acked:,} acked + up to {report.in_flight} in flight), drained {report.drain_after_load_s:.1f} s "
            f"after the load: {report.end_to_end_per_s:,.0f} callbacks/s end to end",
            f"cpu: {cpu}",
            "checks: " + ("; ".join(report.checks) or "ok (each acked callback recorded once, none rejected or dead)"),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser, defaults: ScaleOutOptions = ScaleOutOptions()) -> None:
    """The scale-out benchmark's own flags (bench.run_all shares them)."""
    parser.add_argument(
        "--scaleout-duration", type=positive_int, default=defaults.duration_s, help="seconds of load (scale-out)"
    )
    parser.add_argument(
        "--scaleout-connections", type=positive_int, default=defaults.connections, help="wrk connections in all"
    )


def options_from(args: argparse.Namespace) -> ScaleOutOptions:
    """ScaleOutOptions from parsed flags."""
    return ScaleOutOptions(
        duration_s=args.scaleout_duration,
        connections=args.scaleout_connections,
        bodies=getattr(args, "bodies", ScaleOutOptions.bodies),
        redis_db=args.redis_db,
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.scaleout`: run, print the table; exit 1 when it could not run."""
    return run_benchmark(
        argv,
        name="bench.scaleout",
        description=__doc__,
        add_arguments=add_arguments,
        options_from=options_from,
        run=run,
        summary=summary,
        uses_database=True,
        cleaned_up="servers and workers stopped, Redis db flushed, database dropped",
    )


if __name__ == "__main__":
    raise SystemExit(main())
