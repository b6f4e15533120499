"""Metrics ports expose money at risk: they listen on loopback unless an operator says otherwise."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import asyncpg

from tests.conftest import MERCHANT, OLD_KEY
from tests.integration.test_metrics import command, free_port, scrape_when
from webhook.settings import WebhookSettings
from worker.settings import WorkerSettings


def listening_hosts(port: int) -> set[str]:
    """The addresses sockets listen on for a TCP port, read from the kernel's tables (IPv4 and IPv6)."""
    hosts = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            hosts.add(str(ipaddress.ip_address(words)))
    return hosts


def test_metrics_hosts_default_to_loopback_and_are_configurable() -> None:
    assert WebhookSettings.from_env({"REDIS_URL": "redis://x"}).metrics_host == "127.0.0.1"
    web = WebhookSettings.from_env({"REDIS_URL": "redis://x", "WEB_METRICS_HOST": "10.0.0.2"})
    assert web.metrics_host == "10.0.0.2"
    env = {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://x", "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY}"}
    assert WorkerSettings.from_env(env).metrics_host == "127.0.0.1"
    assert WorkerSettings.from_env({**env, "WORKER_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


async def test_public_receiver_keeps_its_metrics_port_on_loopback(redis_url: str, tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {"REDIS_URL": redis_url, "HOST": "0.0.0.0", "PORT": str(port), "WEB_METRICS_PORT": str(metrics_port)}
    log = tmp_path / "web.log"
    async with command(["web"], env, log):
        await scrape_when(f"http://127.0.0.1:{metrics_port}/metrics", lambda samples: True, log)
        assert listening_hosts(port) == {"0.0.0.0"}  # the receiver itself is public, as configured
        assert listening_hosts(metrics_port) == {"127.0.0.1"}


async def test_worker_metrics_port_listens_on_loopback_by_default(
    database_url: str, redis_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY}",
        "WORKER_METRICS_PORT": str(metrics_port),
    }
    log = tmp_path / "worker.log"
    async with command(["worker"], env, log):
        await scrape_when(f"http://127.0.0.1:{metrics_port}/metrics", lambda samples: True, log)
        assert listening_hosts(metrics_port) == {"127.0.0.1"}
