"""What `appendfsync always` costs the receiver: `ottrecon web` under wrk against Redis without
persistence, with `appendfsync everysec` and with `appendfsync always`, alternating in one run.

    python -m bench.redis_fsync [--rounds 2] [--duration 8] [--connections 64]

Each Redis is a throwaway redis-server of its own (port 56300-56399, a temporary directory on the
same disk as the checkout's /tmp), never the developer's. The ratio of each mode to the
no-persistence run of the same round is what docs/BENCHMARKS.md reports: the machine is shared,
so absolute numbers vary between runs, ratios measured side by side much less.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_client

from bench.children import Child, child_env, free_port, ottrecon_command, wait_http_ok
from bench.report import table
from bench.support import make_callbacks, new_sign_key
from bench.wrk import WrkResult, require_wrk, run_wrk, write_bodies
from ottrecon.queue import QUEUE_NAME, QUEUED_KEY_PREFIX

MODES = {
    "no persistence": ["--appendonly", "no"],
    "appendfsync everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
    "appendfsync always": ["--appendonly", "yes", "--appendfsync", "always"],
}
REDIS_PORTS = range(56300, 56400)


def _redis_port() -> int:
    for port in REDIS_PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 56300-56399")


def measure(mode: str, args: argparse.Namespace, bodies: Path, workdir: Path) -> tuple[WrkResult, float]:
    """One receiver run against a fresh Redis in this mode: wrk's result and callbacks per Redis write."""
    redis_port = _redis_port()
    data = Path(tempfile.mkdtemp(dir=workdir))
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
        + MODES[mode],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        port = free_port()
        variables = {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "WEB_METRICS_PORT": "0",
        }
        url = f"http://127.0.0.1:{port}/ottpay/callback"
        load = {"threads": 2, "connections": args.connections}
        with Child("web", ottrecon_command("web"), workdir / f"web-{port}.log", child_env(variables)) as child:
            wait_http_ok(port, "/healthz", child)
            run_wrk(url, bodies, workdir, duration_s=2, **load)
            client = redis_client.Redis(port=redis_port)
            client.flushdb()
            result = run_wrk(url, bodies, workdir, duration_s=args.duration, **load)
            child.check_alive()
            time.sleep(0.5)
            # Each receiver write is one job (one EVAL); with appendfsync always, one fsync covers it.
            callbacks = sum(1 for _ in client.scan_iter(match=QUEUED_KEY_PREFIX + "*", count=5000))
            writes = int(client.zcard(QUEUE_NAME))  # type: ignore[arg-type]  # redis-py types commands sync|async
            client.close()
        return result, callbacks / max(1, writes)
    finally:
        redis.kill()
        redis.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_fsync", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    require_wrk()
    rows = []
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="ottrecon-fsync-") as tmp:
        workdir = Path(tmp)
        bodies = workdir / "bodies.txt"
        write_bodies(bodies, (json.dumps(c, separators=(",", ":")) for c in make_callbacks(60_000, new_sign_key())))
        for round_no in range(1, args.rounds + 1):
            baseline = 0.0
            for mode in MODES:
                result, per_write = measure(mode, args, bodies, workdir)
                baseline = baseline or result.rps
                ratios[mode].append(result.rps / baseline)
                rows.append(
                    [
                        str(round_no),
                        mode,
                        f"{result.rps:,.0f}",
                        f"{result.rps / baseline:.0%}",
                        f"{result.p50_ms:.1f} / {result.p99_ms:.1f} ms",
                        f"{per_write:.1f}",
                        str(result.non_2xx + result.socket_errors),
                    ]
                )
                print(f"  round {round_no} {mode:<22} {result.rps:8,.0f} req/s", file=sys.stderr, flush=True)
    print(
        table(
            ["round", "redis", "receiver req/s", "vs no persistence", "p50 / p99", "callbacks per write", "errors"],
            rows,
        )
    )
    for mode, values in ratios.items():
        print(f"{mode}: median {statistics.median(values):.0%} of the no-persistence throughput")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
