"""A throwaway 3-node Redis Cluster started from the installed redis-server, for the queue's cluster tests.

Three primaries on loopback ports of their own (never the shared Redis), slots split in three,
joined with CLUSTER MEET; ready once every node reports cluster_state:ok. Every process is ended
by its own handle and the directory removed afterwards.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from tests.integration.processes import REDIS_SERVER

SLOTS = 16384
NODES = 3


def _free_ports(count: int) -> list[int]:
    # Bound together so no two of them collide; the kernel may hand them out again after close,
    # which redis-server then fails loudly on (the test does not hang).
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@contextlib.contextmanager
def redis_cluster(timeout_s: float = 20.0) -> Iterator[list[tuple[str, int]]]:
    """Start the cluster; yield its nodes as (host, port)."""
    ports = _free_ports(2 * NODES)  # a client port and a cluster-bus port per node
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ottrecon-cluster-") as tmp:
        try:
            for index in range(NODES):
                port, bus = ports[index], ports[NODES + index]
                directory = Path(tmp) / str(port)
                directory.mkdir()
                command = [REDIS_SERVER, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1"]
                command += ["--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf")]
                command += ["--dir", str(directory), "--save", "", "--appendonly", "no"]
                processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            clients = [Redis(port=port, socket_timeout=2) for port in ports[:NODES]]
            deadline = time.monotonic() + timeout_s
            _wait(lambda: all(c.ping() for c in clients), deadline, processes)
            per_node = SLOTS // NODES
            for index, client in enumerate(clients):
                last = SLOTS - 1 if index == NODES - 1 else (index + 1) * per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * per_node, last)  # type: ignore[no-untyped-call]
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0], ports[NODES])  # type: ignore[no-untyped-call]
            _wait(lambda: all(_cluster_ok(c) for c in clients), deadline, processes)
            for client in clients:
                client.close()
            yield [("127.0.0.1", port) for port in ports[:NODES]]
        finally:
            for process in processes:
                process.kill()
                process.wait(timeout=10)


def _cluster_ok(client: Redis) -> bool:
    info: bytes = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    return b"cluster_state:ok" in info


def _wait(ready: Callable[[], bool], deadline: float, processes: list[subprocess.Popen[bytes]]) -> None:
    while True:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a redis-server of the test cluster exited")
        with contextlib.suppress(RedisError, OSError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the test Redis Cluster did not become ready")
        time.sleep(0.05)
