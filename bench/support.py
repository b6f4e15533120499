"""Shared benchmark plumbing: loopback-only server URLs, real callbacks, child processes, machine facts."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

from ottpay.messages import build_callback

# The merchant every benchmark callback comes from; its sign key is fresh per run (new_sign_key).
BENCH_MERCHANT = "BENCH00001"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
# A 1-minute load average above this means something else is running and the numbers suffer.
_BUSY_LOAD = 0.5
_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
# Children run from the repository root, so `python -m bench.…` and `-m ottrecon.cli` resolve there.
REPO_ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A benchmark could not run; the message says why."""


def server_url(name: str, env: Mapping[str, str] = os.environ) -> str:
    """The URL in env[name], refused unless it points at this machine (benchmarks only load 127.0.0.1)."""
    url = env.get(name, "").strip()
    if not url:
        raise BenchError(f'{name} is not set: run `eval "$(scripts/local_services.sh env)"` first, or `make bench`')
    parts = urlsplit(url)
    if parts.hostname not in _LOOPBACK_HOSTS:
        raise BenchError(f"{name} must point at 127.0.0.1: the benchmarks never send traffic to another host")
    if parts.hostname == "localhost":
        # "localhost" may resolve to ::1; pin the IPv4 loopback the receiver and wrk use too.
        userinfo, _, hostport = parts.netloc.rpartition("@")
        hostport = hostport.replace("localhost", "127.0.0.1", 1)
        parts = parts._replace(netloc=f"{userinfo}@{hostport}" if userinfo else hostport)
    return urlunsplit(parts)


def with_redis_db(url: str, index: int) -> str:
    """The same Redis server, another database index."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{index}"))


def with_database(url: str, database: str) -> str:
    """The same Postgres server, another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def new_sign_key() -> str:
    """A throwaway sign key, so no benchmark ever needs a real merchant's key."""
    return secrets.token_hex(8).upper()


def make_callbacks(count: int, sign_key: str, merchant_id: str = BENCH_MERCHANT) -> list[dict[str, str]]:
    """count distinct callback bodies, truly encrypted and signed as OTT Pay sends them."""
    bodies = []
    for index in range(count):
        order_id = f"BENCH-{index:08d}"
        data = {"amount": str(100 + index % 9900), "bizpay_order_id": f"AL{index:012d}", "tip": "0"}
        data.update({"merchant_id": merchant_id, "order_id": order_id, "finish_time": "20200416050429"})
        bodies.append(build_callback(data, merchant_id, sign_key))
    return bodies


def child_env(variables: Mapping[str, str], env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """A minimal environment for a measured process: the variables given plus PATH, HOME and locale.

    Nothing else leaks in from the caller's shell: services run with their code defaults
    (the settings the benchmark reports), and no URL there can send traffic off this machine.
    """
    kept = {name: env[name] for name in _PASSED_THROUGH if name in env}
    return {**kept, **variables}


def ottrecon_command(*args: str) -> list[str]:
    """argv running the `ottrecon` CLI of this checkout (the console script's own entry point,
    ottrecon.cli:main), so the code measured is the working tree's even if the install is stale."""
    return [sys.executable, "-m", "ottrecon.cli", *args]


class Child:
    """A child process writing to a log file; stopped (SIGTERM, then SIGKILL) when the block exits."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def __enter__(self) -> Child:
        with self.log_path.open("ab") as log:
            self.started_at = time.perf_counter()
            self._proc = subprocess.Popen(
                self._argv,
                cwd=REPO_ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._proc is None:
            raise BenchError(f"{self.name} was not started")
        return self._proc.pid

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask the process to exit, kill it if it does not within timeout_s; idempotent."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def check_alive(self) -> None:
        """Raise BenchError, with the end of the log, if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self._proc.returncode}; log ends:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the (still running) process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        # After the command name: state is field 3, utime field 14, stime field 15 (proc(5)).
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def wait_http_ok(port: int, path: str, child: Child, timeout_s: float = 30.0) -> None:
    """Poll http://127.0.0.1:port/path until it answers 200; the process dying or the timeout is a BenchError."""
    deadline = time.monotonic() + timeout_s
    while True:
        child.check_alive()
        # http.client, not urllib: urllib would honour an http_proxy variable and leave the machine.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{child.name} did not answer GET {path} within {timeout_s:.0f}s; log:\n{child.log_tail()}"
            )
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children_cpu_seconds() -> float:
    """CPU time of this process's finished and reaped children (resource.RUSAGE_CHILDREN)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so `finally` blocks clean up on either signal."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


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
    ]
    versions = []
    for package in ("aiohttp", "arq", "asyncpg", "redis", "hiredis", "pycryptodome"):
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


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: left-aligned first column, right-aligned numbers."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def facts_text(facts: Sequence[tuple[str, str]]) -> str:
    """machine_facts as aligned "name  value" lines, with a warning when the machine is not idle."""
    width = max(len(name) for name, _ in facts)
    lines = [f"{name.ljust(width)}  {value}" for name, value in facts]
    load = os.getloadavg()[0]
    if load > _BUSY_LOAD:
        lines.append(f"warning: load average {load:.2f}: other work shares these cores, expect lower numbers")
    return "\n".join(lines)


def positive_int(text: str) -> int:
    """argparse type for counts and durations that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every benchmark entry point takes."""
    parser.add_argument(
        "--redis-db", type=int, help="Redis db index to claim and flush (default: the first empty one from 1 up)"
    )
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the measured services (INFO as deployed)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")


def dump_json(path: Path, value: object) -> None:
    """Write a result as indented JSON (for --json)."""
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")
