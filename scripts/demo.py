"""`make demo`: the whole service against a faulty OTT Pay simulator, proving no payment is charged twice."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.migrations import migrate
from worker.queue import QUEUE_NAME

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
MERCHANT = "DEMO000001"
OPERATOR = "1000000001"
DECLINE_SUFFIX = "0000"  # PASSIVEPAY auth codes ending so are declined by the simulator
# Every fault on at once, with short clocks so the whole rehearsal fits in about a minute.
SIM_ENV = {
    "SIM_FAULTS": "timeout=0.15,error_5xx=0.05,processing=0.2,processing_delay_s=1,"
    "drop_callback=0.3,duplicate_callback=0.3,reorder_callback=0.3,reorder_delay_s=1",
    "SIM_TIMEOUT_HOLD_S": "4",
    "SIM_CALLBACK_RETRY_S": "0.5,1",
    "SIM_AUTOPAY": "fraction=0.8,delay_s=1",
    "SIM_DECLINE_SUFFIX": DECLINE_SUFFIX,
    "SIM_HOST": LOOPBACK,
}
FAST_CLOCKS = {
    "OTTPAY_TIMEOUT_SECONDS": "2",
    "OTTRECON_SWEEP_AFTER_SECONDS": "3",
    "OTTRECON_UNPAID_DEADLINE_SECONDS": "10",
    "OTTRECON_PASSIVEPAY_CODE_TTL_SECONDS": "30",
    "OTTRECON_SUBMIT_BASE_DELAY_SECONDS": "0.3",
    "OTTRECON_SUBMIT_MAX_DELAY_SECONDS": "3",
    "OTTRECON_CRON_EVERY_SECONDS": "1",
}
# Variables a developer's shell (or .env) may hold that must not leak into the demo's processes.
SCRUBBED_PREFIXES = ("OTTPAY_", "OTTRECON_", "SIM_")
SCRUBBED_NAMES = frozenset({"DATABASE_URL", "REDIS_URL", "PORT", "HOST", "API_PORT", "API_HOST", "LOG_LEVEL"})
PENDING = frozenset({"pending", "awaiting_payment"})
GATEWAY_PAID = frozenset({"success", "partial_refunded", "fully_refunded"})
LEDGER_PAID = frozenset({"paid", "partially_refunded", "refunded"})
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
REPLAYS = 3


class DemoError(Exception):
    """The demo could not run (a process did not start, a server did not answer)."""


@dataclass
class LogDir:
    """Where the children write; keep is set when something went wrong and the logs matter."""

    path: Path
    keep: bool


@dataclass(frozen=True)
class Child:
    """One `ottrecon` subprocess and the file its output goes to."""

    name: str
    process: asyncio.subprocess.Process
    log: Path


@dataclass(frozen=True)
class Stack:
    """Where the running service is, and the secrets the demo shares with it."""

    api_url: str
    sim_url: str
    token: str
    database_url: str


@dataclass(frozen=True)
class Planned:
    """One payment request the demo will POST, under its own idempotency key."""

    key: str
    body: dict[str, Any]


@dataclass
class Created:
    """What POST /api/payments answered for each planned payment and for the replays."""

    ids: dict[str, str] = field(default_factory=dict)  # idempotency key -> payment id
    errors: list[str] = field(default_factory=list)
    replays_same: int = 0
    replays_wrong: list[str] = field(default_factory=list)
    conflict_refused: bool = False


# ------------------------------------------------------------------ configuration


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


def with_path(url: str, path: str) -> str:
    """The same server URL with another path (database name, Redis index); credentials kept."""
    return urlunsplit(urlsplit(url)._replace(path=path))


def required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise DemoError(f'{name} is not set: run `eval "$(scripts/local_services.sh env)"` first (or `make demo`)')
    return value


def ottrecon_command() -> str:
    local = ROOT / ".venv" / "bin" / "ottrecon"
    found = str(local) if local.exists() else shutil.which("ottrecon")
    if found is None:
        raise DemoError("the ottrecon command is not installed: run `make run` or `make test` once")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def base_env() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name not in SCRUBBED_NAMES and not name.startswith(SCRUBBED_PREFIXES)
    } | {"LOG_LEVEL": "WARNING"}


def process_envs(database_url: str, redis_url: str, seed: int, token: str) -> dict[str, dict[str, str]]:
    """Each process gets only what it needs: the receiver has no keys, the API no sign keys."""
    ports = {"sim": free_port(), "web": free_port(), "api": free_port()}
    merchants = {"OTTPAY_MERCHANTS": f"{MERCHANT}={secrets.token_hex(8).upper()}"}
    operators = {"OTTPAY_OPERATORS": f"{MERCHANT}={OPERATOR}"}
    base = base_env()
    return {
        "sim": base | merchants | operators | SIM_ENV | {"SIM_PORT": str(ports["sim"]), "SIM_SEED": str(seed)},
        "web": base | {"REDIS_URL": redis_url, "HOST": LOOPBACK, "PORT": str(ports["web"])},
        "worker": base
        | merchants
        | operators
        | FAST_CLOCKS
        | {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OTTPAY_BASE_URL": f"http://{LOOPBACK}:{ports['sim']}",
            "OTTRECON_CALLBACK_URL": f"http://{LOOPBACK}:{ports['web']}/ottpay/callback",
        },
        "api": base
        | operators
        | {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OTTRECON_API_TOKENS": f"demo:{token}",
            "API_HOST": LOOPBACK,
            "API_PORT": str(ports["api"]),
            # A till waits this long for the gateway's answer; short, so Ctrl-C is not held up by open requests.
            "OTTRECON_API_WAIT_SECONDS": "4",
        },
    }


# ------------------------------------------------------------------ throwaway resources


@contextlib.asynccontextmanager
async def demo_database(server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database on the server of server_url, dropped afterwards whatever happens."""
    name = f"ottrecon_demo_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = with_path(server_url, f"/{name}")
            await migrate(url)
            print(f"· database {name} created and migrated")
            yield url
        finally:
            # FORCE: a child killed mid-query may leave a session behind.
            await asyncio.shield(admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await asyncio.shield(admin.close())


@contextlib.asynccontextmanager
async def demo_redis(url: str) -> AsyncIterator[Redis]:
    """A dedicated Redis database index, flushed before and after the demo."""
    redis = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        await redis.flushdb()
        yield redis
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(redis.flushdb())
        await redis.aclose()


# ------------------------------------------------------------------ child processes


async def start_child(name: str, command: str, env: Mapping[str, str], log_dir: Path) -> Child:
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        # A session of its own: Ctrl-C reaches only the demo, which then stops every child in order.
        process = await asyncio.create_subprocess_exec(
            command,
            name,
            env=dict(env),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, process, log)


async def stop_child(child: Child) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    if child.process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()
        await child.process.wait()


async def wait_ready(child: Child, probe: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await probe():
        if child.process.returncode is not None:
            raise DemoError(f"{child.name} exited with code {child.process.returncode}:\n{tail(child.log)}")
        if time.monotonic() > deadline:
            raise DemoError(f"{child.name} not ready after {READY_TIMEOUT_S:.0f}s:\n{tail(child.log)}")
        await asyncio.sleep(0.1)


def http_probe(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        try:
            async with session.get(url) as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    return probe


def tcp_probe(url: str) -> Callable[[], Awaitable[bool]]:
    parts = urlsplit(url)

    async def probe() -> bool:
        try:
            _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    return probe


def worker_probe(redis: Redis) -> Callable[[], Awaitable[bool]]:
    # arq writes its health-check key on its first poll, after on_startup succeeded.
    async def probe() -> bool:
        return bool(await redis.exists(f"{QUEUE_NAME}:health-check"))

    return probe


def tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text[-lines:]) or "  (empty log)"


def error_lines(children: Sequence[Child]) -> list[str]:
    """Log lines of level error/critical and tracebacks: worth a look even when the demo passes."""
    found = []
    for child in children:
        with contextlib.suppress(OSError):
            for line in child.log.read_text(errors="replace").splitlines():
                if any(mark in line for mark in ('"level": "error"', '"level": "critical"', "Traceback")):
                    found.append(f"{child.name}: {line[:300]}")
    return found


@contextlib.asynccontextmanager
async def running_service(
    envs: Mapping[str, Mapping[str, str]], redis: Redis, log_dir: Path, children: list[Child]
) -> AsyncIterator[Stack]:
    """Start sim, web, worker and api, wait until each answers; stop all of them on the way out."""
    command = ottrecon_command()
    sim_url = f"http://{LOOPBACK}:{envs['sim']['SIM_PORT']}"
    web_url = f"http://{LOOPBACK}:{envs['web']['PORT']}"
    api_url = f"http://{LOOPBACK}:{envs['api']['API_PORT']}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            probes = {
                "sim": tcp_probe(sim_url),
                "web": http_probe(session, f"{web_url}/healthz"),
                "worker": worker_probe(redis),
                "api": http_probe(session, f"{api_url}/healthz"),
            }
            for name, probe in probes.items():
                children.append(await start_child(name, command, envs[name], log_dir))
                await wait_ready(children[-1], probe)
        print(f"· started sim {sim_url}, web {web_url}, worker, api {api_url} (logs in {log_dir})")
        token = envs["api"]["OTTRECON_API_TOKENS"].partition(":")[2]
        yield Stack(api_url, sim_url, token, envs["worker"]["DATABASE_URL"])
    finally:
        await asyncio.shield(asyncio.gather(*(stop_child(child) for child in children)))


# ------------------------------------------------------------------ taking payments


def plan_payments(count: int, rng: random.Random, run_id: str) -> list[Planned]:
    """A realistic till: QR and scanned payments, both wallets, odd amounts, some tips, ~10 % declined."""
    declined = set(rng.sample(range(count), max(1, round(count * 0.1))))
    plans = []
    for index in range(count):
        kind = "PASSIVEPAY" if index in declined or rng.random() < 0.5 else "ACTIVEPAY"
        body: dict[str, Any] = {
            "merchant_id": MERCHANT,
            "kind": kind,
            "biz_type": rng.choice(("ALIPAY", "WECHATPAY")),
            "amount": rng.randint(150, 25_000),
        }
        if rng.random() < 0.3:
            body["tip"] = rng.choice((100, 150, 200, 275, 500))
        if kind == "PASSIVEPAY":
            body["auth_code"] = auth_code(index, index in declined, rng)
        plans.append(Planned(f"demo-{run_id}-{index:04d}", body))
    return plans


def auth_code(index: int, decline: bool, rng: random.Random) -> str:
    """An 18-digit wallet code, unique per payment (a shared code would look like a double charge)."""
    suffix = DECLINE_SUFFIX if decline else f"{rng.randint(1, 9998):04d}"  # never 0000 nor 9999 (wrong PIN)
    return f"28{index:06d}{rng.randrange(10**6):06d}{suffix}"


async def post_payment(
    session: aiohttp.ClientSession, stack: Stack, key: str, body: Mapping[str, Any]
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {stack.token}", "Idempotency-Key": key}
    async with session.post(f"{stack.api_url}/api/payments", json=body, headers=headers) as response:
        answer: dict[str, Any] = await response.json(content_type=None)
        return response.status, answer


async def create_payments(session: aiohttp.ClientSession, stack: Stack, plans: Sequence[Planned]) -> Created:
    """POST every planned payment, a few at a time, as several tills would."""
    created = Created()
    limit = asyncio.Semaphore(8)

    async def one(plan: Planned) -> None:
        async with limit:
            try:
                status, answer = await post_payment(session, stack, plan.key, plan.body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                created.errors.append(f"{plan.key}: {exc!r}")
                return
        if status == 201 and "id" in answer:
            created.ids[plan.key] = answer["id"]
        else:
            created.errors.append(f"{plan.key}: HTTP {status} {answer}")

    await asyncio.gather(*(one(plan) for plan in plans))
    return created


async def replay_payments(
    session: aiohttp.ClientSession, stack: Stack, plans: Sequence[Planned], created: Created
) -> None:
    """Re-POST a few requests under their keys (a till retrying): same payment, HTTP 200, nothing new sent.

    Then reuse one key for a different amount, which must be refused (409).
    """
    for plan in [p for p in plans if p.key in created.ids][:REPLAYS]:
        status, answer = await post_payment(session, stack, plan.key, plan.body)
        if status == 200 and answer.get("id") == created.ids[plan.key]:
            created.replays_same += 1
        else:
            created.replays_wrong.append(f"{plan.key}: HTTP {status} id {answer.get('id')}")
    plan = plans[0]
    status, _answer = await post_payment(session, stack, plan.key, plan.body | {"amount": plan.body["amount"] + 1})
    created.conflict_refused = status == 409


# ------------------------------------------------------------------ watching them settle


async def get_json(session: aiohttp.ClientSession, url: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as response:
        response.raise_for_status()
        answer: dict[str, Any] = await response.json()
        return answer


async def list_payments(session: aiohttp.ClientSession, stack: Stack) -> list[dict[str, Any]]:
    payments: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await get_json(session, f"{stack.api_url}/api/payments?limit=200{cursor}", stack.token)
        payments += page["payments"]
        if page["next"] is None:
            return payments
        cursor = f"&after={page['next']}"


async def wait_settled(session: aiohttp.ClientSession, stack: Stack, timeout_s: float) -> list[dict[str, Any]]:
    """Poll the API until no payment is pending or awaiting payment, or timeout_s passed."""
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic() + 5
    while True:
        payments = await list_payments(session, stack)
        pending = Counter(p["status"] for p in payments if p["status"] in PENDING)
        if not pending or time.monotonic() > deadline:
            return payments
        if time.monotonic() > next_report:
            print(f"  … still waiting on {sum(pending.values())}: {dict(pending)}")
            next_report += 5
        await asyncio.sleep(0.5)


async def wait_callbacks_done(session: aiohttp.ClientSession, stack: Stack, timeout_s: float) -> dict[str, Any]:
    """Simulator stats once every scheduled callback copy was acknowledged or given up on."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await get_json(session, f"{stack.sim_url}/sim/stats")
        calls = stats["callbacks"]
        if calls["sent"] + calls["dropped"] >= calls["scheduled"] + calls["duplicated"]:
            return stats
        if time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.3)


async def database_counts(database_url: str) -> dict[str, int]:
    """Ledger-side numbers, taken once the callback queue has stopped moving."""
    queries = {
        "orders": "SELECT count(*) FROM orders",
        "callbacks": "SELECT count(*) FROM callbacks",
        "rejected": "SELECT count(*) FROM rejected_callbacks",
        "ledger_paid": "SELECT count(*) FROM payments WHERE status = 'paid'",
        # Paid orders whose ledger row is missing or reports other amounts than were ordered.
        "ledger_mismatch": "SELECT count(*) FROM orders o LEFT JOIN payments p USING (merchant_id, order_id) "
        "WHERE o.paid_amount IS NOT NULL AND (p.id IS NULL OR p.amount <> o.amount OR p.tip <> o.tip)",
        "attempts": "SELECT count(*) FROM submission_attempts",
        "queries": "SELECT count(*) FROM submission_attempts WHERE action = 'STATUS_QUERY'",
        "lost_answers": "SELECT count(*) FROM submission_attempts WHERE error = 'timeout'",
        "http_5xx": "SELECT count(*) FROM submission_attempts WHERE error LIKE 'http_5%'",
        "processing": "SELECT count(*) FROM submission_attempts WHERE rsp_code = 'PROCESSING'",
    }
    conn = await asyncpg.connect(database_url)
    try:
        previous: dict[str, int] = {}
        for _ in range(20):
            counts = {name: int(await conn.fetchval(sql)) for name, sql in queries.items()}
            if counts == previous:
                return counts
            previous = counts
            await asyncio.sleep(0.5)
        return previous
    finally:
        await conn.close()


def reconcile(payments: Sequence[dict[str, Any]], sim_orders: Sequence[dict[str, Any]]) -> list[str]:
    """Where the gateway's truth and ours disagree about money having moved."""
    truth = {order["order_id"]: order["status"] for order in sim_orders if order["merchant_id"] == MERCHANT}
    problems = []
    for payment in payments:
        gateway = truth.get(payment["id"])
        ours_paid, gateway_paid = payment["status"] in LEDGER_PAID, gateway in GATEWAY_PAID
        if ours_paid != gateway_paid and payment["status"] not in PENDING:
            problems.append(f"{payment['id']}: ours {payment['status']}, gateway {gateway or 'no order'}")
        if ours_paid and payment["paid_amount"] != payment["amount"]:
            problems.append(f"{payment['id']}: {payment['paid_amount']} paid for an order of {payment['amount']}")
    ours = {payment["id"] for payment in payments}
    problems += [f"{oid}: gateway has an order we never stored" for oid in sorted(set(truth) - ours)]
    return problems


# ------------------------------------------------------------------ the report


@dataclass(frozen=True)
class Report:
    """Everything the summary shows, and the verdict."""

    payments: list[dict[str, Any]]
    created: Created
    stats: dict[str, Any]
    counts: dict[str, int]
    disagreements: list[str]
    log_errors: list[str]
    elapsed_s: float

    @property
    def charged_twice(self) -> int:
        return len(self.stats["orders_charged_more_than_once"]) + len(self.stats["auth_codes_charged_more_than_once"])

    @property
    def pending(self) -> list[dict[str, Any]]:
        return [p for p in self.payments if p["status"] in PENDING]

    def failures(self, expected: int) -> list[str]:
        """Why the demo failed; empty when it passed."""
        reasons = []
        if self.charged_twice:
            reasons.append(
                f"charged twice: orders {self.stats['orders_charged_more_than_once']}, "
                f"auth codes {self.stats['auth_codes_charged_more_than_once']}"
            )
        if self.pending:
            reasons.append("stuck pending: " + ", ".join(f"{p['id']} ({p['status']})" for p in self.pending))
        if self.created.errors or len(self.payments) != expected:
            reasons.append(f"{expected} payments requested, {len(self.payments)} exist: {self.created.errors}")
        if self.created.replays_wrong or not self.created.conflict_refused:
            reasons.append(f"idempotency broken: {self.created.replays_wrong or 'conflicting reuse accepted'}")
        if self.disagreements:
            reasons.append("gateway and ledger disagree: " + "; ".join(self.disagreements))
        if self.counts["ledger_mismatch"]:
            reasons.append(f"{self.counts['ledger_mismatch']} paid orders whose payments row is missing or differs")
        return reasons

    def render(self) -> str:
        by_status = Counter(p["status"] for p in self.payments)
        sources = Counter(p["paid_source"] for p in self.payments if p["status"] in LEDGER_PAID)
        calls, counts = self.stats["callbacks"], self.counts
        other = {s: n for s, n in sorted(by_status.items()) if s not in {"paid", "declined", "unpaid", *PENDING}}
        rows = [
            ("payments", f"{len(self.payments)}"),
            (
                "  paid",
                f"{sum(by_status[s] for s in LEDGER_PAID)}   (response {sources['response']} · callback "
                f"{sources['callback']} · recovered by query {sources['query']})",
            ),
            ("  declined", f"{by_status['declined']}"),
            ("  flagged unpaid", f"{by_status['unpaid']}"),
            ("  other", ", ".join(f"{s} {n}" for s, n in other.items()) or "0"),
            ("  still pending", f"{len(self.pending)}"),
            (
                "idempotent replays",
                f"{self.created.replays_same} re-POSTs -> same payment, HTTP 200; conflicting reuse "
                f"{'refused (409)' if self.created.conflict_refused else 'ACCEPTED'}; {counts['orders']} orders stored",
            ),
            ("callbacks received", f"{counts['callbacks']} verified · {counts['rejected']} rejected"),
            (
                "ledger",
                f"{counts['ledger_paid']} paid rows · {counts['ledger_mismatch']} not matching their order · "
                f"{len(self.disagreements)} disagreements with the gateway",
            ),
            (
                "gateway requests",
                f"{counts['attempts']} ({counts['queries']} STATUS_QUERY) · answers lost {counts['lost_answers']} · "
                f"HTTP 5xx {counts['http_5xx']} · PROCESSING {counts['processing']}",
            ),
            (
                "simulator",
                f"{self.stats['orders']} orders {self.stats['orders_by_status']} · callbacks scheduled "
                f"{calls['scheduled']}, sent {calls['sent']}, dropped {calls['dropped']}, duplicated "
                f"{calls['duplicated']}, failed attempts {calls['failed']}",
            ),
            ("child log errors", f"{len(self.log_errors)}"),
        ]
        width = max(len(label) for label, _ in rows)
        lines = [f"  {label.ljust(width)}  {value}" for label, value in rows]
        unusual = [p for p in self.payments if p["status"] in other]
        if unusual:
            lines += ["", "  why not paid, declined or unpaid:"]
            lines += [f"    {p['id']} {p['status']}: {p['status_reason']}" for p in unusual[:10]]
        return "\n".join([*lines, "", f"  charged twice = {self.charged_twice}", f"  took {self.elapsed_s:.0f}s"])


# ------------------------------------------------------------------ main


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


@contextlib.contextmanager
def log_directory(keep: bool) -> Iterator[LogDir]:
    """A temporary directory for the children's logs: deleted after a clean pass, kept (and named) otherwise."""
    logs = LogDir(Path(tempfile.mkdtemp(prefix="ottrecon-demo-")), keep)
    try:
        yield logs
    except BaseException:
        logs.keep = True
        raise
    finally:
        if logs.keep and any(logs.path.iterdir()):
            print(f"child logs kept in {logs.path}", file=sys.stderr)
        else:
            shutil.rmtree(logs.path, ignore_errors=True)


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


if __name__ == "__main__":
    raise SystemExit(main())
