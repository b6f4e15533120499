"""`make demo`: the whole service against a faulty OTT Pay simulator, proving no payment is charged twice."""

# The docstring above is also the --help description; scripts/demo.py only calls main().

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import signal
import sys
import time
from collections.abc import Sequence

import aiohttp
import asyncpg
from redis.exceptions import RedisError

from .environment import process_envs, required_env, with_path
from .errors import DemoError
from .payments import create_payments, plan_payments, replay_payments
from .processes import Child, Stack, error_lines, running_service
from .report import Report
from .resources import demo_database, demo_redis, log_directory
from .settle import database_counts, get_json, list_payments, reconcile, wait_callbacks_done, wait_settled


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=40, help="how many payments to take (default 40)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulator and of the payment mix")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for payments to settle")
    parser.add_argument("--redis-db", type=int, default=13, help="Redis db index, flushed: one demo at a time")
    parser.add_argument("--keep-logs", action="store_true", help="keep the child logs even when all went well")
    args = parser.parse_args(argv)
    if args.payments < 1:
        parser.error("--payments must be at least 1")
    return args


async def rehearse(args: argparse.Namespace, stack: Stack, children: Sequence[Child], started: float) -> Report:
    run_id = secrets.token_hex(3)
    plans = plan_payments(args.payments, random.Random(args.seed), run_id)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        print(f"· taking {len(plans)} payments through the API (faults on, seed {args.seed})")
        created = await create_payments(session, stack, plans)
        await replay_payments(session, stack, plans, created)
        print(f"· {len(created.ids)} created; waiting for them to settle (at most {args.timeout:.0f}s)")
        payments = await wait_settled(session, stack, args.timeout)
        stats = await wait_callbacks_done(session, stack, 20)
        counts = await database_counts(stack.database_url)
        sim_orders = (await get_json(session, f"{stack.sim_url}/sim/orders"))["orders"]
        payments = await list_payments(session, stack)
    disagreements = reconcile(payments, sim_orders)
    elapsed = time.monotonic() - started
    return Report(payments, created, stats, counts, disagreements, error_lines(children), elapsed)


async def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    database_url, redis_url = required_env("DATABASE_URL"), required_env("REDIS_URL")
    redis_url = with_path(redis_url, f"/{args.redis_db}")
    children: list[Child] = []
    with log_directory(args.keep_logs) as logs:
        async with demo_database(database_url) as demo_db, demo_redis(redis_url) as redis:
            envs = process_envs(demo_db, redis_url, args.seed, secrets.token_hex(24))
            async with running_service(envs, redis, logs.path, children) as stack:
                report = await rehearse(args, stack, children, started)
        print("\n" + report.render())
        for line in report.log_errors[:10]:
            print(f"  ! {line}")
        reasons = report.failures(args.payments)
        logs.keep = bool(logs.keep or reasons or report.log_errors)
        if reasons:
            print("\nFAIL\n" + "\n".join(f"  - {reason}" for reason in reasons))
            return 1
        print("\nPASS: nothing charged twice, nothing stuck pending")
        return 0


async def run_until_signalled(args: argparse.Namespace) -> int:
    """SIGTERM cancels the demo like Ctrl-C does, so the cleanup runs in both cases."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 on PASS, 1 on FAIL or when it could not run, 130 when interrupted."""
    args = parse_args(argv)
    try:
        return asyncio.run(run_until_signalled(args))
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError, aiohttp.ClientError) as exc:
        print(f"demo: a server did not answer as expected: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("demo: interrupted; processes stopped, database dropped", file=sys.stderr)
        return 130
