"""Machine facts printed above every result: what the numbers depend on, and whether the machine was idle."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import redis

from bench.children import REPO_ROOT

# A 1-minute load average above this means something else is running and the numbers suffer.
_BUSY_LOAD = 0.5


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(redis_url: str | None, database_url: str | None) -> list[tuple[str, str]]:
    """What the numbers depend on: CPUs, Python and library versions, server versions and settings."""
    facts = [
        ("code", _revision()),
        ("cpus (usable)", str(len(os.sched_getaffinity(0)))),
        ("cpu model", cpu_model()),
        ("kernel", platform.release()),
        # Anything else running shares the same cores and moves the numbers.
        ("load average", " ".join(f"{load:.2f}" for load in os.getloadavg())),
        ("python", platform.python_version()),
        # This machine's speed drifts from run to run, at times by 2x (docs/BENCHMARKS.md): a fixed pure-Python
        # loop, timed here, says how fast this run's machine was, so runs of different days can be compared.
        ("speed probe", f"{cpu_probe_s():.2f} s for 10M Python loop steps (best of 3; lower is faster)"),
    ]
    versions = []
    for package in ("aiohttp", "arq", "asyncpg", "redis", "hiredis", "cryptography"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} -")
    facts.append(("packages", ", ".join(versions)))
    if redis_url is not None:
        client = redis.Redis.from_url(redis_url)
        try:
            info: Any = client.info("server")
            facts.append(("redis", str(info.get("redis_version", "?"))))
        finally:
            client.close()
    if database_url is not None:
        facts.append(("postgres", asyncio.run(_postgres_facts(database_url))))
    return facts


def cpu_probe_s(steps: int = 10_000_000) -> float:
    """Seconds for a fixed pure-Python loop, best of three: one core's speed right now."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(steps):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def _revision() -> str:
    # Read-only git queries; the tree is often mid-change, so say how far it is from the commit.
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} + {len(changed)} uncommitted file(s)" if changed else head


async def _postgres_facts(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    return f"{version} (fsync={fsync}, synchronous_commit={sync_commit})"


def facts_text(facts: Sequence[tuple[str, str]]) -> str:
    """machine_facts as aligned "name  value" lines, with a warning when the machine is not idle."""
    width = max(len(name) for name, _ in facts)
    lines = [f"{name.ljust(width)}  {value}" for name, value in facts]
    load = os.getloadavg()[0]
    if load > _BUSY_LOAD:
        lines.append(f"warning: load average {load:.2f}: other work shares these cores, expect lower numbers")
    return "\n".join(lines)
