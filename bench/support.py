"""Shared benchmark plumbing: loopback-only server URLs, real callbacks, the flags every benchmark takes.

Child processes, machine facts and result tables live in bench.children, bench.machine and
bench.report; they are re-exported here because benchmarks (bench.reconcile among them) import
them from this module.
"""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.children import (
    REPO_ROOT,
    Child,
    child_env,
    children_cpu_seconds,
    free_port,
    ottrecon_command,
    stop_on_sigterm,
    wait_http_ok,
)
from bench.errors import BenchError
from bench.machine import cpu_model, facts_text, machine_facts
from bench.report import dump_json, table
from ottpay.envelope import build_callback
from ottpay.finish_time import BEIJING

__all__ = [
    "BENCH_MERCHANT",
    "REPO_ROOT",
    "BenchError",
    "Child",
    "add_common_arguments",
    "child_env",
    "children_cpu_seconds",
    "cpu_model",
    "dump_json",
    "facts_text",
    "free_port",
    "machine_facts",
    "make_callbacks",
    "new_sign_key",
    "ottrecon_command",
    "positive_int",
    "server_url",
    "stop_on_sigterm",
    "table",
    "wait_http_ok",
    "with_database",
    "with_redis_db",
]

# The merchant every benchmark callback comes from; its sign key is fresh per run (new_sign_key).
BENCH_MERCHANT = "BENCH00001"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


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
    """count distinct callback bodies, truly encrypted and signed as OTT Pay sends them.

    Their finish_time is now, in Beijing time as OTT Pay writes it: a live callback arrives seconds
    after the payment. (A fixed 2020 time made the worker log a finish_time skew warning for every
    callback, which is the rare misconfiguration case, not the load a worker normally carries.)
    """
    finish_time = datetime.now(BEIJING).strftime("%Y%m%d%H%M%S")
    bodies = []
    for index in range(count):
        order_id = f"BENCH-{index:08d}"
        data = {"amount": str(100 + index % 9900), "bizpay_order_id": f"AL{index:012d}", "tip": "0"}
        data.update({"merchant_id": merchant_id, "order_id": order_id, "finish_time": finish_time})
        bodies.append(build_callback(data, merchant_id, sign_key))
    return bodies


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
