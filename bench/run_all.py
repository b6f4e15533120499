"""`make bench`: the receiver, worker, scale-out and reconciliation benchmarks in one run, then one summary table."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict

from bench import receiver, recon_report, scaleout, worker
from bench import reconcile as reconciliation
from bench.children import stop_on_sigterm
from bench.drain import NOOP, REAL
from bench.errors import BenchError
from bench.machine import facts_text, machine_facts
from bench.recon_results import SizeResult
from bench.report import dump_json, met, table
from bench.support import add_common_arguments, server_url
from worker.settings import WorkerSettings


def summary_rows(
    rec: receiver.ReceiverReport | None,
    wrk: worker.WorkerReport | None,
    scale: scaleout.ScaleOutReport | None = None,
) -> list[list[str]]:
    """One row per target, plus the worker's share of bare arq and the scale-out rates for context."""
    rows: list[list[str]] = []
    if rec is not None:
        bare, real = rec.median_rps("bare"), rec.median_rps("receiver")
        ratio, p99 = rec.median_ratio, rec.worst_p99_ms
        rows.append(
            [
                f"receiver / bare aiohttp, median of {len(rec.ratios)}",
                f"{ratio:.0%} ({real:,.0f} vs {bare:,.0f} req/s)",
                f">= {receiver.TARGET_RATIO:.0%}",
                met(ratio >= receiver.TARGET_RATIO),
            ]
        )
        rows.append(
            [
                f"receiver p99 at {rec.options.connections} connections, worst",
                f"{p99:.1f} ms",
                f"< {receiver.TARGET_P99_MS:.0f} ms",
                met(p99 < receiver.TARGET_P99_MS),
            ]
        )
    if wrk is not None:
        real_rate = statistics.median(wrk.rates(REAL))
        noop_rate = statistics.median(wrk.rates(NOOP))
        rows.append(
            [
                f"one worker end to end, median of {len(wrk.rates(REAL))}",
                f"{real_rate:,.0f} callbacks/s",
                f">= {worker.TARGET_RATE:,.0f}/s",
                met(real_rate >= worker.TARGET_RATE),
            ]
        )
        rows.append(
            [
                "worker / bare arq no-op, median",
                f"{statistics.median(wrk.ratios):.0%} ({real_rate:,.0f} vs {noop_rate:,.0f} jobs/s)",
                "-",
                "-",
            ]
        )
    if scale is not None:
        rows.append(
            [
                "scale-out 2 receivers + 2 workers: accepted, recorded end to end",
                f"{scale.accepted_per_s:,.0f}/s, {scale.end_to_end_per_s:,.0f}/s",
                "-",
                "-",
            ]
        )
        rows += [[what, measured, target, met(ok)] for what, measured, target, ok in scale.targets()]
    if scale is not None and rec is not None:
        # The bare rounds ran minutes earlier in the same run: the nearest baseline this target has.
        bare = rec.median_rps("bare")
        together = scale.end_to_end_per_s / bare
        rows.append(
            [
                f"{scaleout.RECEIVERS}+{scaleout.WORKERS} recorded end to end / bare aiohttp",
                f"{together:.1%} ({scale.end_to_end_per_s:,.0f} vs {bare:,.0f}/s)",  # 24.6 % must not read 25 %
                f">= {scaleout.TARGET_TOGETHER_RATIO:.0%}",
                met(together >= scaleout.TARGET_TOGETHER_RATIO),
            ]
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks (or --only one); exit 1 when one could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--only", choices=["receiver", "worker", "scaleout", "reconcile"], help="run just one of them")
    parser.add_argument(
        "--recon-sizes",
        type=reconciliation.parse_sizes,
        default=list(reconciliation.DEFAULT_SIZES),
        help="orders per reconciliation run (default 100000,1000000)",
    )
    receiver.add_arguments(parser)
    worker.add_arguments(parser)
    scaleout.add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    env = dict(os.environ)
    rec: receiver.ReceiverReport | None = None
    wrk: worker.WorkerReport | None = None
    recon: list[SizeResult] | None = None
    scale: scaleout.ScaleOutReport | None = None
    try:
        facts = machine_facts(server_url("REDIS_URL", env), server_url("DATABASE_URL", env))
        print(facts_text(facts) + "\n", flush=True)
        if args.only in (None, "receiver"):
            print("receiver benchmark…", file=sys.stderr, flush=True)
            rec = receiver.run(receiver.options_from(args), env)
            print(receiver.summary(rec) + "\n", flush=True)
        if args.only in (None, "worker"):
            print("worker benchmark…", file=sys.stderr, flush=True)
            wrk = worker.run(worker.options_from(args), env)
            print(worker.summary(wrk) + "\n", flush=True)
        if args.only in (None, "scaleout"):
            print("scale-out benchmark…", file=sys.stderr, flush=True)
            scale = scaleout.run(scaleout.options_from(args), env)
            print(scaleout.summary(scale) + "\n", flush=True)
        if args.only in (None, "reconcile"):
            print("reconciliation benchmark…", file=sys.stderr, flush=True)
            recon, settings = reconciliation.run(
                args.recon_sizes,
                server_url("DATABASE_URL", env),
                "auto",
                concurrency=WorkerSettings.reconcile_concurrency,
            )
            maintained = settings["autovacuum"] == "off"
            print(recon_report.summary(recon, settings, maintained) + "\n", flush=True)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; processes stopped, Redis db flushed, database dropped", file=sys.stderr)
        return 130
    rows = summary_rows(rec, wrk, scale)
    if recon is not None:
        rows += [[what, measured, goal, met(ok)] for what, measured, goal, ok in recon_report.targets(recon)]
    print(table(["summary", "measured", "target", "met"], rows))
    if args.json is not None:
        results = {
            "receiver": rec and asdict(rec),
            "worker": wrk and asdict(wrk),
            "scaleout": scale and asdict(scale),
            "reconcile": None if recon is None else [asdict(r) for r in recon],
        }
        dump_json(args.json, {"machine": dict(facts)} | results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
