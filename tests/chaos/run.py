"""`make chaos`: every fault scenario against a cluster of its own, with a table of what came out.

    python -m tests.chaos.run [--small] [--only NAME ...]

Exits 1 if any scenario failed (lost, doubled or dead-lettered callbacks, a process that did not
heal by itself, or settling later than its bound). Bounded: a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from ottrecon import logs
from tests.chaos.cluster import running_cluster
from tests.chaos.scenarios import FULL, SCENARIOS, SMALL, Result, table

# The small run (inside `make test`) shortens the job lease so a killed worker's batch is back in
# seconds; the full run keeps the default (15 s), which is what its table reports.
SMALL_LEASE_S = "4"


async def run(names: list[str], small: bool) -> list[Result]:
    size = SMALL if small else FULL
    worker_env = {"OTTRECON_JOB_LEASE_SECONDS": SMALL_LEASE_S} if small else {}
    results = []
    with running_cluster(workers=2, **worker_env) as cluster:
        for name in names:
            started = time.monotonic()
            print(f"chaos: {name} …", file=sys.stderr, flush=True)
            result = await SCENARIOS[name](cluster, size)
            print(f"chaos: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            if result.failures:
                print(cluster.log_tails(), file=sys.stderr)
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    parser.add_argument("--small", action="store_true", help="the small sizes used inside make test")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args(argv)
    logs.configure("WARNING")
    started = time.monotonic()
    results = asyncio.run(run(args.only, args.small))
    print(table(results))
    print(f"\n{len(results)} scenarios in {time.monotonic() - started:.0f} s (loopback, machine shared)")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
