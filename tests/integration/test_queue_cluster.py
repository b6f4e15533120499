"""The receiver's enqueue script is Redis-Cluster-ready: it declares every key it touches, all in one slot."""

from __future__ import annotations

import asyncio
import codecs
import re
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from ottrecon.queue import QUEUE_NAME, deserialize
from tests.integration.processes import redis_server
from tests.integration.redis_cluster import redis_cluster
from tests.integration.support import make_callback
from webhook.queue import ARQ_JOB_KEY_PREFIX, enqueue_callbacks, prepare

# One argument of a MONITOR line: "…" with C-style escapes (Redis's sdscatrepr).
_MONITOR_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def _batch(prefix: str, count: int) -> list[object]:
    now = datetime.now(UTC)
    return [prepare(make_callback(f"{prefix}-{n:04d}"), now) for n in range(count)]


async def test_enqueue_script_runs_unchanged_on_a_three_node_redis_cluster() -> None:
    # 300 bodies: without one hash tag their keys would spread over all three nodes, and the
    # cluster client (or the node running the script) refuses keys of several slots.
    with redis_cluster() as nodes:
        cluster = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes])
        try:
            batch = _batch("CL", 300)
            assert await enqueue_callbacks(cluster, batch[:200]) == [True] * 200  # type: ignore[arg-type]
            # A redelivery joins its queued job; new bodies in the same write are queued.
            assert await enqueue_callbacks(cluster, batch[150:]) == [False] * 50 + [True] * 100  # type: ignore[arg-type]
            job_ids = await cluster.zrange(QUEUE_NAME, 0, -1)
            assert len(job_ids) == 2
            queued = []
            for job_id in job_ids:
                job = deserialize(await cluster.get(ARQ_JOB_KEY_PREFIX + job_id.decode()))
                queued += [item["envelope"]["md5"] for item in job["a"][0]]
            assert sorted(queued) == sorted(deserialize(c.item)["envelope"]["md5"] for c in batch)  # type: ignore[attr-defined]
        finally:
            await cluster.aclose()


async def test_enqueue_script_touches_only_the_keys_it_declares(tmp_path: Path) -> None:
    # MONITOR shows every command a script runs; COMMAND GETKEYS says which of its arguments are
    # keys. Every key the script touched must be one the call declared in KEYS (the cluster rule).
    async with redis_server(tmp_path) as server:
        client = Redis.from_url(server.url)
        reader, writer = await asyncio.open_unix_connection(str(server.socket))
        try:
            writer.write(b"MONITOR\r\n")
            assert await reader.readline() == b"+OK\r\n"
            batch = _batch("MO", 20)
            await enqueue_callbacks(client, batch[:10])  # type: ignore[arg-type]
            await enqueue_callbacks(client, batch[5:])  # type: ignore[arg-type]  # five already queued
            await client.ping()  # marks the end of what the script did
            declared: set[bytes] = set()
            touched: list[tuple[bytes, ...]] = []
            while True:
                line = await asyncio.wait_for(reader.readline(), 5)
                args = tuple(codecs.escape_decode(arg)[0] for arg in _MONITOR_ARG.findall(line))
                name = args[0].upper()
                if name == b"PING":
                    break
                if name in (b"EVAL", b"EVALSHA"):
                    declared |= set(args[3 : 3 + int(args[2])])
                elif b" lua] " in line:
                    touched.append(args)
            assert touched, "the script ran no command"
            for command in touched:
                keys = {key.encode() if isinstance(key, str) else key for key in await client.command_getkeys(*command)}
                undeclared = keys - declared
                assert not undeclared, f"{command[0]!r} touched undeclared keys {undeclared}"
            slots = {key_slot(key) for key in declared}
            assert len(slots) == 1, "declared keys hash to several slots"
        finally:
            writer.close()
            await client.aclose()
