"""The chaos scenarios: each injects one kind of fault under load and judges what came out.

Each returns a Result: sent / acknowledged / recorded / duplicates / lost / dead-lettered /
time to settle, and the reasons it failed, if any: an acknowledged callback lost while Redis
was durable, any duplicate, any dead letter (every fault here is one a retry heals), a process
that exited by itself, or settling later than the scenario's bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from tests.chaos.cluster import Cluster, kill
from tests.chaos.load import Sender, genuine_callback, settle


@dataclass(frozen=True)
class Size:
    """How hard to push: the full run (`make chaos`) or the small one inside `make test`."""

    callbacks: int
    rate_per_s: float
    worker_kills: int
    kill_every_s: float
    postgres_down_s: float
    redis_down_s: float


FULL = Size(callbacks=3000, rate_per_s=150, worker_kills=8, kill_every_s=2.5, postgres_down_s=10, redis_down_s=3)
SMALL = Size(callbacks=200, rate_per_s=100, worker_kills=1, kill_every_s=1.0, postgres_down_s=2, redis_down_s=1)


@dataclass
class Result:
    scenario: str
    sent: int = 0
    acked: int = 0
    recorded: int = 0
    duplicates: int = 0
    lost: int = 0
    dead_lettered: int = 0
    settle_s: float = 0.0
    bound_s: float = 30.0
    loss_allowed: bool = False
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def judge(self, cluster: Cluster) -> Result:
        if self.lost and not self.loss_allowed:
            self.failures.append(f"{self.lost} acknowledged callbacks lost")
        if self.duplicates:
            self.failures.append(f"{self.duplicates} duplicates")
        if self.dead_lettered:
            self.failures.append(f"{self.dead_lettered} dead-lettered (a retry would have saved them)")
        if self.settle_s > self.bound_s and not (self.loss_allowed and self.lost):
            self.failures.append(f"settled in {self.settle_s:.1f} s, bound {self.bound_s:.0f} s")
        exited = cluster.exited_on_their_own()
        if exited:
            self.failures.append(f"processes exited by themselves with {exited}: a human would have to restart them")
        return self


Scenario = Callable[[Cluster, Size], Awaitable[Result]]


async def _run_load(
    cluster: Cluster,
    name: str,
    size: Size,
    fault: Callable[[], Awaitable[float | None]],
    *,
    bound_s: float = 30.0,
    loss_allowed: bool = False,
) -> Result:
    """Send size.callbacks while `fault` runs; settle; tally.

    Settle time counts from the later of the fault's end and the last acknowledgement, or from
    the moment the fault returns (the last worker kill: the orphan clock starts there).
    """
    prefix = f"{name}-{int(time.time())}"
    async with Sender(cluster.web_url) as sender:
        load = asyncio.create_task(sender.send_many(prefix, size.callbacks, size.rate_per_s))
        fault_clock = await fault()
        fault_over = time.monotonic()
        await load
    since = fault_clock if fault_clock is not None else max(fault_over, sender.sent.last_ack_at)
    tally, settle_s = await settle(
        cluster.database_url,
        cluster.redis_url,
        prefix,
        sender.sent.acked,
        since=since,
        bound_s=bound_s,
        loss_allowed=loss_allowed,
    )
    result = Result(
        scenario=name,
        sent=len(sender.sent.orders),
        acked=len(sender.sent.acked),
        recorded=tally.recorded,
        duplicates=tally.duplicates,
        lost=tally.lost,
        dead_lettered=tally.dead_lettered,
        settle_s=settle_s,
        bound_s=bound_s,
        loss_allowed=loss_allowed,
    )
    answers = {k: v for k, v in sender.sent.answers.items() if k != "200"}
    if answers:
        result.notes.append(f"non-200 answers (resent): {answers}")
    return result


async def worker_sigkill_loop(cluster: Cluster, size: Size) -> Result:
    """SIGKILL a worker mid-load again and again (a new one starts at once): orphaned jobs come back within a lease."""

    async def fault() -> float:
        await asyncio.sleep(1.0)
        last_kill = time.monotonic()
        for n in range(size.worker_kills):
            if n:
                await asyncio.sleep(size.kill_every_s)
            # Writes stall for a moment, so the victim surely dies with a batch in flight (orphans).
            async with _writes_held(cluster):
                victim = random.choice(cluster.living_workers())
                kill(victim, 9)
                last_kill = time.monotonic()
            cluster.start_worker()
        return last_kill

    result = await _run_load(cluster, "worker-kill", size, fault, bound_s=30)
    result.notes.append(f"{size.worker_kills} worker SIGKILLs under load; settle time counts from the last kill")
    return result.judge(cluster)


@contextlib.asynccontextmanager
async def _writes_held(cluster: Cluster, hold_s: float = 0.4) -> AsyncIterator[None]:
    conn = await asyncpg.connect(cluster.database_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE callbacks IN SHARE ROW EXCLUSIVE MODE")
            await asyncio.sleep(hold_s)
            yield
    finally:
        await conn.close()


async def postgres_restart(cluster: Cluster, size: Size) -> Result:
    """Stop Postgres (fast shutdown) under load and start it again: jobs retry, nothing is dead-lettered."""

    async def fault() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.stop_postgres, "fast")
        await asyncio.sleep(size.postgres_down_s)
        await asyncio.to_thread(cluster.start_postgres)

    result = await _run_load(cluster, "postgres-restart", size, fault, bound_s=30)
    result.notes.append(f"Postgres down {size.postgres_down_s:.0f} s; settle time counts from its restart")
    return result.judge(cluster)


def redis_sigkill(appendfsync: str | None) -> Scenario:
    """SIGKILL Redis under load and restart it from its own files; with appendfsync always nothing is lost."""
    name = f"redis-kill-{appendfsync or 'volatile'}"

    async def scenario(cluster: Cluster, size: Size) -> Result:
        config = ("--appendonly", "yes", "--appendfsync", appendfsync) if appendfsync else ("--appendonly", "no")
        await _fresh_redis(cluster, config)

        async def fault() -> None:
            await asyncio.sleep(1.0)
            cluster.kill_redis()
            await asyncio.sleep(size.redis_down_s)
            await asyncio.to_thread(cluster.start_redis)

        try:
            # Only a volatile Redis may lose what it acknowledged; AOF keeps it through a process crash.
            result = await _run_load(cluster, name, size, fault, bound_s=30, loss_allowed=appendfsync is None)
        finally:
            await _fresh_redis(cluster, ("--appendonly", "yes", "--appendfsync", "always"))
        result.notes.append(f"Redis SIGKILLed, down {size.redis_down_s:.0f} s, restarted from its files")
        return result.judge(cluster)

    scenario.__name__ = name.replace("-", "_")
    return scenario


async def _fresh_redis(cluster: Cluster, config: tuple[str, ...]) -> None:
    # Between scenarios the queue is empty: a fresh data directory with another persistence setting.
    cluster.kill_redis()
    await asyncio.to_thread(cluster.start_redis, *config, fresh=True)


async def receiver_sigkill(cluster: Cluster, size: Size) -> Result:
    """SIGKILL the receiver under load and start it again: senders resend, nothing is lost or doubled."""

    async def fault() -> None:
        await asyncio.sleep(1.0)
        cluster.kill_web()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.start_web)

    result = await _run_load(cluster, "receiver-kill", size, fault, bound_s=30)
    return result.judge(cluster)


# Bodies no callback should ever be; `unstorable` ones pass a shape check but Postgres cannot store them.
_NOT_CALLBACKS: list[bytes] = [
    b"not json",
    b"[]",
    b'{"rsp_code": 1}',
    b'{"rsp_code":"SUCCESS","rsp_msg":"x","merchant_id":"QC00005496","data":"@@@","md5":"00"}',
    b'{"a":' * 200 + b"1" + b"}" * 200,
    b"x" * (70 * 1024),
]
_BAD_HTTP: list[bytes] = [
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST /ottpay/callback HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00",
]


def _unstorable(order_id: str, literal: str) -> bytes:
    body = json.dumps(genuine_callback(order_id))
    return (body[:-1] + f', "extra": {literal}}}').encode()


async def malformed_storm(cluster: Cluster, size: Size) -> Result:
    """Garbage, unstorable extras, forgeries and broken HTTP mixed with genuine callbacks.

    Genuine ones are all recorded; an unstorable body the receiver acknowledged is kept as
    rejected ('unstorable'), never dead-lettered; the receiver stays quiet (no error logs) and up.
    """
    prefix = f"storm-{int(time.time())}"
    unstorable_acked: list[str] = []
    quiet_before = _error_lines(cluster)
    async with Sender(cluster.web_url, give_up_s=20) as sender:

        async def raw_post(body: bytes, order_id: str | None) -> None:
            assert sender._session is not None
            try:
                async with sender._session.post(
                    sender.url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status == 200 and order_id is not None:
                        unstorable_acked.append(order_id)
            except (OSError, TimeoutError):
                pass

        async def bad_http(raw: bytes) -> None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", cluster.web_port)
                writer.write(raw)
                await writer.drain()
                await reader.read(100)
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass

        tasks: list[asyncio.Task[object]] = []
        for n in range(size.callbacks):
            tasks.append(asyncio.create_task(sender.send_until_acked(f"{prefix}-{n:06d}")))
            noise = n % 4
            if noise == 0:
                order = f"{prefix}-odd-{n:06d}"
                literal = ("NaN", "Infinity", "1e999", "-Infinity")[(n // 4) % 4]
                tasks.append(asyncio.create_task(raw_post(_unstorable(order, literal), order)))
            elif noise == 1:
                tasks.append(asyncio.create_task(raw_post(random.choice(_NOT_CALLBACKS), None)))
            elif noise == 2:
                tasks.append(asyncio.create_task(bad_http(random.choice(_BAD_HTTP))))
            else:  # a forgery: genuine shape, wrong key
                forged = genuine_callback(f"{prefix}-forged-{n:06d}") | {"md5": "0" * 32}
                tasks.append(asyncio.create_task(raw_post(json.dumps(forged).encode(), None)))
            await asyncio.sleep(1 / size.rate_per_s)
        await asyncio.gather(*tasks)
    genuine = {o for o in sender.sent.acked if o.startswith(prefix) and "-odd-" not in o}
    tally, settle_s = await settle(
        cluster.database_url, cluster.redis_url, prefix, genuine, since=sender.sent.last_ack_at, bound_s=30
    )
    kept = await _unstorable_kept(cluster, expected=len(unstorable_acked))
    errors = _error_lines(cluster) - quiet_before
    result = Result(
        scenario="malformed-storm",
        sent=len(sender.sent.orders),
        acked=len(sender.sent.acked),
        recorded=tally.recorded,
        duplicates=tally.duplicates,
        lost=tally.lost,
        dead_lettered=tally.dead_lettered,
        settle_s=settle_s,
    )
    result.notes.append(
        f"+{size.callbacks * 3 // 4} hostile requests; unstorable bodies acknowledged {len(unstorable_acked)}, "
        f"kept as rejected {kept}; receiver error log lines {errors}"
    )
    if kept < len(unstorable_acked):
        result.failures.append(f"{len(unstorable_acked) - kept} acknowledged unstorable bodies not kept as rejected")
    if errors:
        result.failures.append(f"{errors} error-level log lines from the receiver (malformed requests are noise)")
    return result.judge(cluster)


async def _unstorable_kept(cluster: Cluster, expected: int) -> int:
    """Rejected rows with reason 'unstorable', waiting up to 10 s for the expected number."""
    deadline = time.monotonic() + 10
    conn = await asyncpg.connect(cluster.database_url)
    try:
        while True:
            kept: int = await conn.fetchval("SELECT count(*) FROM rejected_callbacks WHERE reason = 'unstorable'")
            if kept >= expected or time.monotonic() > deadline:
                return kept
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


def _error_lines(cluster: Cluster) -> int:
    return sum(
        path.read_text(errors="replace").count('"level": "error"')
        for path in cluster.root.glob("web-*.log")
        if path.is_file()
    )


SCENARIOS: dict[str, Scenario] = {
    "worker-kill": worker_sigkill_loop,
    "postgres-restart": postgres_restart,
    "redis-kill-always": redis_sigkill("always"),
    "redis-kill-everysec": redis_sigkill("everysec"),
    "redis-kill-volatile": redis_sigkill(None),
    "receiver-kill": receiver_sigkill,
    "malformed-storm": malformed_storm,
}


def table(results: list[Result]) -> str:
    header = (
        f"{'scenario':<20} {'sent':>6} {'acked':>6} {'recorded':>8} {'dupes':>5} {'lost':>5} {'dead':>5} "
        f"{'settle s':>8} {'bound':>5}  verdict"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        verdict = "FAIL: " + "; ".join(r.failures) if r.failures else ("ok (loss expected)" if r.lost else "ok")
        lines.append(
            f"{r.scenario:<20} {r.sent:>6} {r.acked:>6} {r.recorded:>8} {r.duplicates:>5} {r.lost:>5} "
            f"{r.dead_lettered:>5} {r.settle_s:>8.1f} {r.bound_s:>5.0f}  {verdict}"
        )
        lines.extend(f"{'':<20} {note}" for note in r.notes)
    return "\n".join(lines)
