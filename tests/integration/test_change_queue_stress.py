"""The change queue that holds a waiting key once (sql/0015, decision 0045), attacked with real concurrency.

sql/0015 lets a change leave its key out of recon_dirty when it can lock a queued row of that key FOR KEY SHARE
SKIP LOCKED. The claims to break: no committed change is ever left unreconciled (its key's ledger row stale
with nothing queued: the race of decision 0012, issue 8), and no writer ever waits for a reconciler.

1. A stress run (test_random_writers_and_reconcilers_leave_nothing_stale): rounds of a few seconds each. In a
   round, several writer connections (asyncio tasks, one asyncpg connection each) run random short
   transactions on a small shared set of keys of two merchants: callbacks recorded by
   ottrecon.callbacks.store.record_on (right, short, another channel payment, for no order of ours), orders
   flagged unpaid and orders paid by a status query (orders_db.apply), succeeded refunds, gateway answers
   (submission_attempts) and, one at a time, statement imports (statement_imports + statement_lines, the
   import's SQL) -- one to five writes a transaction, a key often twice, some in savepoints that roll back,
   pauses inside the transaction, some transactions rolled back. Meanwhile several reconcile_pending loops
   (small batches, concurrency 1..2) run on a pool of their own, one of them through a connection that pauses
   before each statement of a batch (a claim held open while writers commit). A monitor polls pg_stat_activity
   and pg_blocking_pids: a writer blocked by a reconciler, or a reconciler by a writer, fails the test; so does
   any deadlock or lock timeout that involves recon_dirty or a reconciler. At the end of a round, with every
   writer and reconciler stopped: every key whose ledger row differs from the reference model's must still be
   queued (nothing stale with nothing queued); then one concurrent drain, after which the ledger, the daily
   summary and the open alerts must equal the model's and recon_dirty must be empty.
   Statement imports are serialised and dated in 2020 (no payment's ledger row is dated there): concurrent
   imports, and an import racing the reconciliation of a change that moves a key's ledger date into its
   period, lost updates before decision 0047, whatever the triggers (this file's writers run the import's SQL
   without import_statement's books lock; tests/integration/test_statement_import_races.py covers them).
2. Interleavings held open on separate connections at the moments that matter: a writer holding its share
   lock while reconcilers (and bare claims) run; a reconciler paused after its claim, after its ledger write
   or before its commit while several writers commit changes of the key at once; a transaction that touches a
   key twice with reconciles in between; writers that roll back after locking the queued row (alone, and with
   a second writer still holding it); savepoints and PL/pgSQL exception blocks rolled back around the lock;
   and a seeded random schedule of savepoints, writes and paused reconciler batches on three connections.

Knobs: OTTRECON_QUEUE_STRESS_SECONDS (stress time budget, default 6; `make soak` 240), OTTRECON_QUEUE_STRESS_FUZZ
(random schedules, default 8; `make soak` 300), OTTRECON_QUEUE_STRESS_WRITERS (writer connections at most, default 4),
OTTRECON_QUEUE_STRESS_SEED (replay a run; the seed is printed), OTTRECON_QUEUE_STRESS_VERBOSE (print a
writer-writer deadlock). To see that the test has teeth, OTTRECON_QUEUE_STRESS_MUTANT replaces key_is_queued in
the test database only: `nolock` (a plain EXISTS: issue 8's race), `wait` (FOR KEY SHARE without SKIP LOCKED:
writers wait for reconcilers), `append` (never queued: sql/0013's behaviour, which must pass). Both of the first
two fail this file within seconds.

Writers of this test may deadlock each other on order and payment rows (several writes of a key in one
transaction, a callback and a refund say, take those rows in either order): Postgres rolls one back and the test
counts it. A deadlock that involves recon_dirty, or any other error of a writer or a reconciler, fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from ottpay.envelope import build_callback
from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.db import fetch_one
from ottrecon.payments import refund_store
from ottrecon.payments import store as payments_store
from ottrecon.payments.submission import Transition
from ottrecon.reconciliation.reconcile import BOOK_REFUNDS, CLAIM_CHANGES, LOCK_KEYS, reconcile_pending
from ottrecon.reconciliation.statements import INSERT_IMPORT, INSERT_LINES
from tests import reconciliation_model as model
from tests.conftest import MERCHANT, OTHER_MERCHANT
from tests.integration.model_world import (
    BUSINESS_TZ,
    TABLES,
    assert_matches_model,
    evidence_from_db,
    ledger_from_db,
)

SECONDS = float(os.environ.get("OTTRECON_QUEUE_STRESS_SECONDS", "6"))
FUZZ_EXAMPLES = int(os.environ.get("OTTRECON_QUEUE_STRESS_FUZZ", "8"))
WRITERS = int(os.environ.get("OTTRECON_QUEUE_STRESS_WRITERS", "4"))
SEED = int(os.environ.get("OTTRECON_QUEUE_STRESS_SEED", str(random.SystemRandom().randrange(10**9))))
MUTANT = os.environ.get("OTTRECON_QUEUE_STRESS_MUTANT", "")
MERCHANT_IDS = (MERCHANT, OTHER_MERCHANT)
NOW = datetime(2025, 3, 8, 20, tzinfo=UTC)  # the callbacks' and refunds' clock (orders are created at now())
STATEMENT_DAY = date(2020, 1, 1)  # imports of the stress run are dated here, where no payment's row can be
# pg_stat_activity shows the whole server: another test session or a benchmark has connections of its own.
WAITING = """
SELECT a.pid, a.application_name AS waiter, a.wait_event, left(a.query, 120) AS query,
       array(SELECT b.application_name FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid))) AS blockers
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()
"""
QUEUED_KEYS = "SELECT merchant_id, order_id, count(*) AS n FROM recon_dirty GROUP BY 1, 2"
ORDER_VIEW = """
SELECT o.id, o.status, o.amount, o.tip, coalesce(o.paid_amount, o.amount) + o.tip
       - coalesce((SELECT sum(amount) FROM refunds r WHERE r.order_ref = o.id AND r.status <> 'failed'), 0) AS left
FROM orders o WHERE o.merchant_id = $1 AND o.order_id = $2
"""
WAITING_STATUSES = ("pending", "awaiting_payment")
PAID_STATUSES = ("paid", "partially_refunded")
MUTANTS = {
    "nolock": "SELECT EXISTS (SELECT 1 FROM recon_dirty d WHERE d.merchant_id = merchant AND d.order_id = ord)",
    "wait": "SELECT EXISTS (SELECT 1 FROM recon_dirty d WHERE d.merchant_id = merchant AND d.order_id = ord"
    " FOR KEY SHARE)",
    "append": "SELECT false",
}
Key = tuple[str, str]


def role(application_name: str) -> str:
    return application_name.split("-")[1] if application_name.startswith("qs-") else application_name or "?"


async def install_mutant(conn: asyncpg.Connection) -> None:
    """OTTRECON_QUEUE_STRESS_MUTANT: replace key_is_queued in this test's database (never the template's)."""
    if MUTANT:
        body = MUTANTS[MUTANT]
        await conn.execute(
            "CREATE OR REPLACE FUNCTION key_is_queued(merchant text, ord text) RETURNS boolean"
            f" LANGUAGE sql VOLATILE AS $$ {body} $$"
        )


async def connect(url: str, name: str) -> asyncpg.Connection:
    # lock_timeout: a wait nobody resolves fails the test instead of hanging it.
    settings = {"application_name": name, "statement_timeout": "20000", "lock_timeout": "8000"}
    return await asyncpg.connect(url, server_settings=settings)


async def reconciler_pool(url: str, size: int) -> asyncpg.Pool:
    settings = {"application_name": "qs-reconciler", "statement_timeout": "20000", "lock_timeout": "8000"}
    return await asyncpg.create_pool(url, min_size=1, max_size=size, server_settings=settings)


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close, or (a test failed while a reconciler was held) terminate: never hang the teardown."""
    try:
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()


async def full_evidence(conn: asyncpg.Connection) -> model.Evidence:
    """evidence_from_db and the statement imports with their lines (the model needs both)."""
    evidence = await evidence_from_db(conn)
    lines: dict[int, list[model.StatementLine]] = defaultdict(list)
    for r in await conn.fetch("SELECT * FROM statement_lines ORDER BY id"):
        lines[r["import_id"]].append(
            model.StatementLine(r["merchant_id"], r["order_id"], r["bizpay_order_id"], r["amount"], r["tip"],
                                r["fee"], r["refund"], r["business_date"], r["line_no"])
        )  # fmt: skip
    for r in await conn.fetch("SELECT id, period_start, period_end FROM statement_imports ORDER BY id"):
        evidence.imports.append(
            model.StatementImport(r["id"], r["period_start"], r["period_end"], tuple(lines[r["id"]]))
        )
    return evidence


async def queued(conn: asyncpg.Connection) -> dict[Key, int]:
    return {(r["merchant_id"], r["order_id"]): r["n"] for r in await conn.fetch(QUEUED_KEYS)}


async def nothing_stale_unqueued(conn: asyncpg.Connection, history: list[str]) -> tuple[int, int]:
    """Everything at rest (no open writer, no reconciler): every key whose ledger row differs from the model's
    is still queued. Returns (stale keys, queued keys)."""
    expected = model.reconcile(await full_evidence(conn), BUSINESS_TZ)
    actual = await ledger_from_db(conn)
    waiting = await queued(conn)
    stale = {k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k)}
    lost = sorted(stale - waiting.keys())
    if lost:
        lines = [f"stale and not queued (a lost change): {lost}"]
        for k in lost:
            want, got = expected.get(k), actual.get(k)
            if want is None or got is None:
                lines.append(f"  {k}: model {want}, ledger {got}")
                continue
            for name in want.__dataclass_fields__:
                if getattr(want, name) != getattr(got, name):
                    lines.append(f"  {k} {name}: model {getattr(want, name)!r}, ledger {getattr(got, name)!r}")
        raise AssertionError("\n".join([*lines, "history (last 80):", *history[-80:]]))
    return len(stale), len(waiting)


# ------------------------------------------------------------------------------------------------ the writes


@dataclass
class Writes:
    """The service's writes of evidence, on a connection whose transaction the caller owns."""

    merchants: MerchantKeys
    n: int = 0

    def next(self) -> int:
        self.n += 1
        return self.n

    async def callback(self, conn: asyncpg.Connection, key: Key, variant: str, hours_ago: int = 0) -> str:
        merchant_id, order_id = key
        row = await conn.fetchrow("SELECT id, amount FROM orders WHERE merchant_id = $1 AND order_id = $2", *key)
        n = self.next()
        if row is None:  # a payment for no order of ours
            amount, channel_id = 100 + n % 50, f"AL8{abs(hash(key)) % 10**14:014d}"
        else:
            amount = row["amount"] - (1 if variant == "short" else 0)
            channel_id = f"AL9{n:014d}" if variant == "other" else f"AL{row['id']:015d}"
        finish = NOW - timedelta(hours=hours_ago, seconds=n)
        fields = {"order_id": order_id, "amount": str(amount), "tip": "0", "bizpay_order_id": channel_id,
                  "merchant_id": merchant_id, "finish_time": f"{finish + timedelta(hours=8):%Y%m%d%H%M%S}"}  # fmt: skip
        body = build_callback(fields, merchant_id, self.merchants.keys_for(merchant_id)[-1])
        verdict = judge(body, NOW, self.merchants)
        assert isinstance(verdict, VerifiedCallback), verdict
        await callback_store.record_on(conn, [verdict], [])
        return f"callback/{variant} {amount} {channel_id} {hours_ago}h ago"

    async def flag_unpaid(self, conn: asyncpg.Connection, key: Key) -> str | None:
        view = await conn.fetchrow(ORDER_VIEW, *key)
        if view is None or view["status"] not in WAITING_STATUSES:
            return None
        row = await fetch_one(conn, payments_store.LOAD_ORDER, view["id"])
        await payments_store.apply(conn, row, Transition("unpaid", "still unpaid", flag_unpaid=True), "query")
        return "flag unpaid"

    async def paid_by_query(self, conn: asyncpg.Connection, key: Key) -> str | None:
        """A status query answered paid: its attempt, the payment and the order's transition."""
        view = await conn.fetchrow(ORDER_VIEW, *key)
        if view is None or view["status"] not in (*WAITING_STATUSES, "unpaid"):
            return None
        channel_id = f"AL{view['id']:015d}"
        await self._attempt(conn, view["id"], channel_id)
        await conn.execute(payments_store.RECORD_PAYMENT, *key, view["amount"], view["tip"], channel_id, None, None,
                           "query")  # fmt: skip
        row = await fetch_one(conn, payments_store.LOAD_ORDER, view["id"])
        await payments_store.apply(conn, row, Transition("paid", "query", paid_amount=view["amount"]), "query")
        return "paid by query"

    async def attempt(self, conn: asyncpg.Connection, key: Key, other: bool = False) -> str | None:
        order_pk = await conn.fetchval("SELECT id FROM orders WHERE merchant_id = $1 AND order_id = $2", *key)
        if order_pk is None:
            return None
        channel_id = f"WX{self.next():015d}" if other else f"AL{order_pk:015d}"
        await self._attempt(conn, order_pk, channel_id)
        return f"attempt {channel_id}"

    async def _attempt(self, conn: asyncpg.Connection, order_pk: int, channel_id: str) -> None:
        data = json.dumps({"bizpay_order_id": channel_id})
        await conn.execute(payments_store.RECORD_ATTEMPT, order_pk, None, "STATUS_QUERY", "success", "SUCCESS", None,
                           None, True, "SUCCESS", False, NOW, 5, data)  # fmt: skip

    async def refund(self, conn: asyncpg.Connection, key: Key) -> str | None:
        """create_refund and the refunder's settlement of a SUCCESS, in one transaction, order locked first."""
        order_pk = await conn.fetchval("SELECT id FROM orders WHERE merchant_id = $1 AND order_id = $2", *key)
        if order_pk is None:
            return None
        await refund_store.lock_order_for_refund(conn, order_pk)
        view = await fetch_one(conn, ORDER_VIEW, *key)
        if view["status"] not in PAID_STATUSES or view["left"] <= 0:
            return None
        n, amount = self.next(), max(1, view["left"] // 2)
        row = await fetch_one(
            conn, refund_store.INSERT_REFUND, order_pk, key[0], f"R{n:019d}", amount, f"rf-{n}", "sha"
        )
        await conn.execute(refund_store.UPDATE_REFUND, row["id"], "succeeded", None, None, NOW)
        await conn.execute(refund_store.MARK_ORDER_REFUNDED, order_pk)
        return f"refund {amount}"

    async def statement(
        self, conn: asyncpg.Connection, period: tuple[date, date], lines: list[tuple[Key, str | None, int, int, date]]
    ) -> tuple[int, str]:
        """import_statement's two statements: the import (its trigger queues the period's earlier keys), then
        its lines (key, channel id, amount, refund, business date)."""
        merchant_ids = sorted({key[0] for key, *_ in lines})
        n = self.next()
        import_id = await conn.fetchval(INSERT_IMPORT, f"s{n}.csv", uuid.uuid4().hex, *period, merchant_ids, len(lines))
        columns: list[list[Any]] = [[] for _ in range(12)]
        for line_no, (key, channel_id, amount, refund, day) in enumerate(lines, start=2):
            values = [line_no, key[0], key[1], channel_id, amount, 0, 3, refund, None, None, day, uuid.uuid4().hex]
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        await conn.fetchval(INSERT_LINES, import_id, *columns)
        said = ", ".join(f"{k[1]} {c} {a} r{r} {d}" for k, c, a, r, d in lines)
        return import_id, f"statement #{import_id} {period[0]}..{period[1]}: {said}"


async def new_orders(conn: asyncpg.Connection, prefix: str, count: int, rng: random.Random) -> list[Key]:
    keys = []
    for n in range(count):
        merchant_id = MERCHANT_IDS[n % 2]
        order_id = f"{prefix}{n:016d}"
        args = (merchant_id, order_id, "ACTIVEPAY", "ALIPAY", rng.randint(1, 3000), 0, None, None, order_id, "sha")
        await conn.execute(payments_store.INSERT_ORDER, *args)
        keys.append((merchant_id, order_id))
    return keys


# ------------------------------------------------------------------------------------------ reconcilers


class PausingConn:
    """A reconciler's connection: before chosen statements (or each, for a random time) it waits, so that the
    batch's claim stays open while writers commit. Runs the real batch code unchanged."""

    def __init__(self, conn: Any, pause: Callable[[str], Awaitable[None]]) -> None:
        self._conn, self._pause = conn, pause

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, query: str, *args: Any) -> Any:
        await self._pause(query)
        return await self._conn.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> Any:
        await self._pause(query)
        return await self._conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        await self._pause(query)
        return await self._conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        await self._pause(query)
        return await self._conn.fetchval(query, *args)

    def transaction(self) -> Any:
        inner, pause = self._conn.transaction(), self._pause

        class Paused:
            async def __aenter__(self) -> Any:
                return await inner.__aenter__()

            async def __aexit__(self, *exc: Any) -> Any:
                if exc[0] is None:
                    await pause("COMMIT")
                return await inner.__aexit__(*exc)

        return Paused()


class PausingPool:
    """reconcile_pending's view of a pool whose connections pause (see PausingConn)."""

    def __init__(self, pool: asyncpg.Pool, pause: Callable[[str], Awaitable[None]], only_first: bool = False) -> None:
        self.pool, self.pause, self.only_first, self.acquired = pool, pause, only_first, 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        self.acquired += 1
        async with self.pool.acquire() as conn:
            yield PausingConn(conn, self.pause) if self.acquired == 1 or not self.only_first else conn


def paused_pool(pool: asyncpg.Pool, gate: Callable[[str], Awaitable[None]]) -> Any:
    """A pool whose first connection handed out pauses at the gate (typed Any: reconcile_pending's duck)."""
    return PausingPool(pool, gate, only_first=True)


class Gate:
    """Holds a reconciler's batch before the first statement matching `before` ("COMMIT": before its commit)."""

    def __init__(self, before: str) -> None:
        self.before, self.reached, self.open, self.used = before, asyncio.Event(), asyncio.Event(), False

    async def __call__(self, query: str) -> None:
        if not self.used and query == self.before:
            self.used = True
            self.reached.set()
            await self.open.wait()


# Where a batch is held: its claim made (rows locked and deleted, no key lock yet), its ledger rows written from
# the old state (key locks held), everything done but the commit.
GATE_POINTS = {"after its claim": LOCK_KEYS, "after its ledger write": BOOK_REFUNDS, "before its commit": "COMMIT"}


def gate_at(point: str) -> Gate:
    return Gate(GATE_POINTS[point])


# ------------------------------------------------------------------------------------------------ stress


@dataclass
class Stats:
    rounds: int = 0
    committed: int = 0
    rolled_back: int = 0
    writes: int = 0
    savepoints_rolled_back: int = 0
    imports: int = 0
    reconciles: int = 0
    keys_reconciled: int = 0
    stale_at_rest: int = 0
    most_rows_of_a_key: int = 0
    waits: Counter[tuple[str, str]] = field(default_factory=Counter)
    writer_conflicts: Counter[str] = field(default_factory=Counter)
    conflict_example: str = ""
    violations: list[str] = field(default_factory=list)


class Round:
    """One round of the stress run: writers and reconcilers at once on a fresh set of keys."""

    def __init__(self, number: int, rng: random.Random, writes: Writes, writers: list[asyncpg.Connection],
                 pool: asyncpg.Pool, admin: asyncpg.Connection, stats: Stats) -> None:  # fmt: skip
        self.number, self.rng, self.w, self.writers, self.pool = number, rng, writes, writers, pool
        self.admin, self.stats = admin, stats
        self.history: list[str] = []
        self.keys: list[Key] = []
        self.orphans: list[Key] = []
        self.unknown: list[Key] = []
        self.stop_writers = asyncio.Event()
        self.stop_reconcilers = asyncio.Event()
        self.import_lock = asyncio.Lock()
        self.started = time.monotonic()

    def log(self, text: str) -> None:
        self.history.append(f"{time.monotonic() - self.started:7.3f} {text}")

    async def run(self, seconds: float) -> None:
        rng = self.rng
        await self.admin.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        self.keys = await new_orders(self.admin, f"Q{self.number:03d}", rng.randint(3, 6), rng)
        self.unknown = [(MERCHANT_IDS[n % 2], f"S{self.number:03d}{n:08d}") for n in range(2)]
        self.log(f"orders {self.keys}")
        if rng.random() < 0.5:  # sometimes start from a reconciled ledger, sometimes from a full queue
            await reconcile_pending(self.pool, business_tz=BUSINESS_TZ)
        writers = rng.randint(2, len(self.writers))
        fast, slow = rng.randint(1, 2), rng.randint(0, 1)
        self.log(f"{writers} writers, {fast} reconcile loops, {slow} pausing loop(s)")
        tasks = [asyncio.create_task(self.writer(i, random.Random(rng.random()))) for i in range(writers)]
        loops = [
            asyncio.create_task(self.reconciler(f"loop{i}", random.Random(rng.random()), False)) for i in range(fast)
        ]
        loops += [
            asyncio.create_task(self.reconciler(f"slow{i}", random.Random(rng.random()), True)) for i in range(slow)
        ]
        monitor = asyncio.create_task(self.monitor())
        await asyncio.sleep(seconds)
        self.stop_writers.set()
        await asyncio.gather(*tasks)
        self.stop_reconcilers.set()
        await asyncio.gather(*loops)
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        assert not self.stats.violations, "\n".join([*self.stats.violations[:20], "history:", *self.history[-80:]])
        # At rest: what is stale must be queued; then a drain, and the model cent for cent.
        counts = await queued(self.admin)
        self.stats.most_rows_of_a_key = max([self.stats.most_rows_of_a_key, *counts.values()])
        stale, waiting = await nothing_stale_unqueued(self.admin, self.history)
        self.stats.stale_at_rest += stale
        self.log(f"at rest: {stale} stale key(s), {waiting} queued")
        batch, concurrency = rng.randint(1, 4), rng.randint(1, 3)
        await reconcile_pending(self.pool, business_tz=BUSINESS_TZ, batch=batch, concurrency=concurrency)
        await assert_matches_model(self.pool, await full_evidence(self.admin), self.history)
        self.stats.rounds += 1

    # -------------------------------------------------------------------------------------------- writers

    async def writer(self, index: int, rng: random.Random) -> None:
        conn = self.writers[index]
        while not self.stop_writers.is_set():
            if rng.random() < 0.07:
                async with self.import_lock:  # imports one at a time (see the module's docstring)
                    await self.transaction(conn, f"w{index}", rng, statement=True)
            else:
                await self.transaction(conn, f"w{index}", rng, statement=False)
            await asyncio.sleep(rng.choice((0, 0, 0.001, 0.004)))

    async def transaction(self, conn: asyncpg.Connection, who: str, rng: random.Random, statement: bool) -> None:
        if statement:
            plan: list[tuple[Key, str]] = [((MERCHANT, ""), "statement")]
            if rng.random() < 0.5:
                plan.append((rng.choice(self.keys), rng.choice(("callback", "attempt"))))
        else:
            plan = []
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.12:
                    plan.append((self._orphan(rng), "orphan"))
                else:
                    kind = rng.choice(("callback", "callback", "short", "other", "flag", "query", "attempt",
                                       "attempt", "other_attempt", "refund", "refund"))  # fmt: skip
                    plan.append((rng.choice(self.keys), kind))
            if rng.random() < 0.35:  # the same key twice in one transaction
                key = plan[0][0]
                plan.append((key, rng.choice(("attempt", "callback", "refund", "flag"))))
            plan.sort(key=lambda step: step[0])  # row locks in key order: writers do not deadlock each other
        done: list[str] = []
        tx = conn.transaction()
        await tx.start()
        try:
            for key, kind in plan:
                savepoint = None
                if rng.random() < 0.25:
                    savepoint = conn.transaction()
                    await savepoint.start()
                said = await self.write(conn, rng, key, kind)
                if rng.random() < 0.4:
                    await asyncio.sleep(rng.uniform(0, 0.02))  # hold the transaction open while reconcilers run
                if savepoint is not None and rng.random() < 0.5:
                    await savepoint.rollback()
                    self.stats.savepoints_rolled_back += 1
                    said = f"({said}: rolled back to its savepoint)" if said else None
                elif savepoint is not None:
                    await savepoint.commit()
                if said:
                    done.append(f"{key[1]}: {said}")
                    self.stats.writes += 1
            if rng.random() < 0.12:
                await tx.rollback()
                self.stats.rolled_back += 1
                self.log(f"{who} ROLLBACK [{'; '.join(done)}]")
            else:
                await tx.commit()
                self.stats.committed += 1
                self.log(f"{who} COMMIT [{'; '.join(done)}]")
        except asyncpg.PostgresError as exc:
            await tx.rollback()
            self._conflict(who, exc, done)

    def _conflict(self, who: str, exc: asyncpg.PostgresError, done: list[str]) -> None:
        """Writers may deadlock each other on order and payment rows (the service's own lock order: a callback
        locks the payment, then the order; a refund the order, then the payment): rolled back and counted. A
        conflict on the change queue, or any other error, is a failure."""
        text = f"{type(exc).__name__}: {exc} {exc.as_dict()}"
        self.log(f"{who} ERROR {text} [{'; '.join(done)}]")
        if isinstance(exc, asyncpg.DeadlockDetectedError) and "recon_dirty" not in text:
            self.stats.writer_conflicts[type(exc).__name__] += 1
            self.stats.conflict_example = self.stats.conflict_example or f"{exc.as_dict()}"
            return
        self.stats.violations.append(f"writer {who}: {text}")

    def _orphan(self, rng: random.Random) -> Key:
        if self.orphans and rng.random() < 0.6:
            return rng.choice(self.orphans)
        key = (rng.choice(MERCHANT_IDS), f"X{self.number:03d}{self.w.next():08d}")
        self.orphans.append(key)
        return key

    async def write(self, conn: asyncpg.Connection, rng: random.Random, key: Key, kind: str) -> str | None:
        w = self.w
        if kind in ("callback", "short", "other", "orphan"):
            variant = "right" if kind in ("callback", "orphan") else kind
            return await w.callback(conn, key, variant, rng.choice((0, 0, 5, 30, 70)))
        if kind == "flag":
            return await w.flag_unpaid(conn, key)
        if kind == "query":
            return await w.paid_by_query(conn, key)
        if kind in ("attempt", "other_attempt"):
            return await w.attempt(conn, key, other=kind == "other_attempt")
        if kind == "refund":
            return await w.refund(conn, key)
        assert kind == "statement"
        start = STATEMENT_DAY + timedelta(days=rng.randint(0, 3))
        end = start + timedelta(days=rng.randint(0, 2))
        lines = []
        for _ in range(rng.randint(1, 4)):
            line_key = rng.choice(self.keys + self.unknown)
            amount = await conn.fetchval(
                "SELECT amount FROM orders WHERE merchant_id = $1 AND order_id = $2", *line_key
            )
            amount = (amount or 500) + rng.choice((0, 0, 0, 7))
            day = start + timedelta(days=rng.randint(0, (end - start).days))
            lines.append(
                (line_key, rng.choice((None, f"AL{rng.randint(1, 9):015d}")), amount, rng.choice((0, 0, 40)), day)
            )
        self.stats.imports += 1
        _, said = await w.statement(conn, (start, end), lines)
        return said

    # ----------------------------------------------------------------------------------------- reconcilers

    async def reconciler(self, name: str, rng: random.Random, pausing: bool) -> None:
        async def pause(query: str) -> None:
            await asyncio.sleep(rng.uniform(0, 0.015))

        pool: Any = PausingPool(self.pool, pause) if pausing else self.pool
        while not self.stop_reconcilers.is_set():
            batch, concurrency = rng.randint(1, 3), rng.randint(1, 2)
            try:
                report = await reconcile_pending(
                    pool, business_tz=BUSINESS_TZ, batch=batch, concurrency=concurrency,
                    max_batches=rng.choice((None, 1, 2)),
                )  # fmt: skip
            except Exception as exc:  # every failure of a reconciler is one
                cause = exc.__cause__ or exc
                extra = cause.as_dict() if isinstance(cause, asyncpg.PostgresError) else ""
                self.stats.violations.append(f"reconciler {name}: {exc!r} <- {cause!r} {extra}")
                self.log(f"{name} ERROR {exc!r} <- {cause!r}")
                return
            self.stats.reconciles += 1
            self.stats.keys_reconciled += report.keys
            if report.keys:
                self.log(f"{name} reconciled {report.keys} key(s) (batch {batch}, concurrency {concurrency})")
            await asyncio.sleep(rng.choice((0, 0.002, 0.01)))

    async def monitor(self) -> None:
        """No writer ever waits for a reconciler (nor a reconciler for a writer)."""
        while True:
            for r in await self.admin.fetch(WAITING):
                waiter = role(r["waiter"])
                for blocker in r["blockers"]:  # none: the blocker was gone by the time we asked
                    pair = (waiter, role(blocker))
                    self.stats.waits[pair] += 1
                    if pair in (("writer", "reconciler"), ("reconciler", "writer")):
                        self.stats.violations.append(
                            f"{r['waiter']} waits ({r['wait_event']}) for {blocker}: {r['query']}"
                        )
            await asyncio.sleep(0.01)


@pytest.mark.timeout(SECONDS + 180)
async def test_random_writers_and_reconcilers_leave_nothing_stale(database_url: str, merchants: MerchantKeys) -> None:
    rng = random.Random(SEED)
    stats = Stats()
    writers = [await connect(database_url, f"qs-writer-{i}") for i in range(WRITERS)]
    admin = await connect(database_url, "qs-admin")
    await install_mutant(admin)
    pool = await reconciler_pool(database_url, 12)
    writes = Writes(merchants)
    started = time.monotonic()
    try:
        number = 0
        while number == 0 or time.monotonic() - started < SECONDS:
            number += 1
            current = Round(number, random.Random(rng.random()), writes, writers, pool, admin, stats)
            try:
                await current.run(rng.uniform(1.0, 3.0))
            except AssertionError as exc:
                raise AssertionError(f"round {number} of seed {SEED} (mutant {MUTANT or 'none'}): {exc}") from None
    finally:
        await close_pool(pool)
        for conn in [*writers, admin]:
            await conn.close()
    print(
        f"\nchange queue stress (seed {SEED}, mutant {MUTANT or 'none'}): {stats.rounds} rounds in"
        f" {time.monotonic() - started:.1f} s; {stats.committed} transactions committed, {stats.rolled_back} rolled"
        f" back, {stats.writes} writes ({stats.savepoints_rolled_back} savepoints rolled back, {stats.imports}"
        f" statement imports); {stats.reconciles} reconcile runs, {stats.keys_reconciled} keys reconciled;"
        f" {stats.stale_at_rest} stale keys at rest (all queued); at most {stats.most_rows_of_a_key} queued rows"
        f" per key; lock waits seen {dict(stats.waits)}; writer-writer conflicts {dict(stats.writer_conflicts)}"
    )
    if os.environ.get("OTTRECON_QUEUE_STRESS_VERBOSE"):
        print(f"first writer-writer conflict: {stats.conflict_example}")
    assert stats.committed > 0 and stats.keys_reconciled > 0 and stats.rounds > 0


# ------------------------------------------------------------------------------------- held interleavings


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    made = await reconciler_pool(database_url, 10)
    yield made
    await close_pool(made)


@pytest.fixture
async def conns(database_url: str, db: asyncpg.Connection) -> AsyncIterator[list[asyncpg.Connection]]:
    """Three writer connections (and the mutant, if one was asked for)."""
    await install_mutant(db)
    made = [await connect(database_url, f"qs-writer-{i}") for i in range(3)]
    yield made
    for conn in made:
        await conn.close()


async def rows_of(conn: asyncpg.Connection, key: Key) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM recon_dirty WHERE merchant_id = $1 AND order_id = $2", *key))


async def no_wait(awaitable: Awaitable[Any], what: str, seconds: float = 3) -> Any:
    """A writer's statement must not wait for anyone: it finishes within seconds or the test fails."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise AssertionError(f"{what} waited (a lock held by a reconciler or another transaction)") from None


async def drain_and_check(pool: asyncpg.Pool, db: asyncpg.Connection, history: list[str]) -> None:
    await nothing_stale_unqueued(db, history)
    await reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=2, concurrency=2)
    await assert_matches_model(pool, await full_evidence(db), history)


@dataclass
class Scene:
    """Orders of this test, keyed by name, and the writes."""

    db: asyncpg.Connection
    writes: Writes
    keys: dict[str, Key]


@pytest.fixture
async def scene(db: asyncpg.Connection, merchants: MerchantKeys) -> Scene:
    keys = await new_orders(db, "HELD", 4, random.Random(7))
    return Scene(db, Writes(merchants), dict(zip("ABCD", keys, strict=True)))


# Changes of a waiting key, each through a different trigger. For a paid order: a callback (callbacks, payments,
# orders), a refund (refunds, orders, payments), an attempt (submission_attempts), statement lines, a statement
# import whose period holds an earlier line of the key (statement_imports).
async def change(s: Scene, conn: asyncpg.Connection, key: Key, kind: str) -> str:
    if kind == "callback":
        return await s.writes.callback(conn, key, "short", 30)
    if kind == "refund":
        said = await s.writes.refund(conn, key)
        assert said, "the order was not paid"
        return said
    if kind == "attempt":
        return await s.writes.attempt(conn, key, other=True) or ""
    if kind == "lines":
        _, said = await s.writes.statement(conn, (STATEMENT_DAY, STATEMENT_DAY), [(key, None, 77, 0, STATEMENT_DAY)])
        return said
    if kind == "import":  # a newer statement of the key's merchant and date, not listing the key: supersedes its line
        period = (STATEMENT_DAY, STATEMENT_DAY + timedelta(days=1))
        _, said = await s.writes.statement(conn, period, [((key[0], "S-ELSEWHERE"), None, 5, 0, STATEMENT_DAY)])
        return said
    raise AssertionError(kind)


CHANGES = ("callback", "refund", "attempt", "lines", "import")


async def paid_and_queued(s: Scene, pool: asyncpg.Pool, key: Key) -> None:
    """The key paid, with a statement line, and reconciled; then changed again (committed): one queued row,
    unlocked."""
    async with s.db.transaction():
        await s.writes.callback(s.db, key, "right", 5)
        await change(s, s.db, key, "lines")
    await reconcile_pending(pool, business_tz=BUSINESS_TZ)
    async with s.db.transaction():
        await s.writes.attempt(s.db, key)
    assert await rows_of(s.db, key) == 1


async def paid(s: Scene, pool: asyncpg.Pool, key: Key, *, queued: bool) -> None:
    """The key paid and reconciled; queued: changed again since (paid_and_queued), else nothing queued."""
    if queued:
        await paid_and_queued(s, pool, key)
        return
    async with s.db.transaction():
        await s.writes.callback(s.db, key, "right", 5)
    await reconcile_pending(pool, business_tz=BUSINESS_TZ)


@pytest.mark.parametrize("kind", CHANGES)
async def test_a_writer_holding_its_share_lock_keeps_every_reconciler_off_the_key(
    scene: Scene, pool: asyncpg.Pool, conns: list[asyncpg.Connection], database_url: str, kind: str
) -> None:
    s, (a, b) = scene, (scene.keys["A"], scene.keys["B"])
    await paid_and_queued(s, pool, a)
    async with s.db.transaction():
        await s.writes.attempt(s.db, b)  # another key waiting, which the reconcilers may take
    w = conns[0]
    tx = w.transaction()
    await tx.start()
    said = await no_wait(change(s, w, a, kind), kind)
    assert await w.fetchval("SELECT count(*) FROM recon_dirty WHERE order_id = $1", a[1]) == 1 or MUTANT, (
        "the change queued its key again although it could rely on the waiting row"
    )
    # Two concurrent reconcile_pending (two batch loops each) and bare claims on connections of their own.
    reports = await no_wait(
        asyncio.gather(*(reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=2) for _ in "xy")),
        "the reconcilers",
        10,
    )
    bare = [await connect(database_url, "qs-reconciler-bare") for _ in range(2)]
    try:
        claims = []
        for conn in bare:
            claim = conn.transaction()
            await claim.start()
            claims.append((claim, await no_wait(conn.fetch(CLAIM_CHANGES, 100), "a claim")))
        for claim, _ in claims:
            await claim.rollback()
    finally:
        for conn in bare:
            await conn.close()
    taken = {(r["merchant_id"], r["order_id"]) for _, rows in claims for r in rows}
    if not MUTANT:
        assert a not in taken, "a claim took the row an open change relies on"
        assert await rows_of(s.db, a) == 1, "the row the open change relies on was consumed"
    assert sum(r.keys for r in reports) >= 1, "the other waiting key was not reconciled meanwhile"
    await tx.commit()
    await drain_and_check(
        pool, s.db, ["A paid, reconciled, changed (queued)", f"open: {said}", "reconcilers", "commit"]
    )


@pytest.mark.parametrize("point", list(GATE_POINTS))
@pytest.mark.parametrize("kinds", [("callback", "attempt", "lines"), ("refund", "attempt", "attempt")])
async def test_writers_committing_while_a_reconciler_holds_the_key_neither_wait_nor_get_lost(
    scene: Scene, pool: asyncpg.Pool, conns: list[asyncpg.Connection], point: str, kinds: tuple[str, ...]
) -> None:
    s, a = scene, scene.keys["A"]
    await paid_and_queued(s, pool, a)
    gate = gate_at(point)
    running = asyncio.create_task(
        reconcile_pending(paused_pool(pool, gate), business_tz=BUSINESS_TZ, batch=10, concurrency=1)
    )
    try:
        await asyncio.wait_for(gate.reached.wait(), 10)
        await held_while_writers_commit(s, conns, kinds, point, a)
    finally:
        gate.open.set()
        await asyncio.wait_for(running, 20)
    await drain_and_check(pool, s.db, [f"reconciler holds A {point}", *(f"{k} committed" for k in kinds)])


async def held_while_writers_commit(
    s: Scene, conns: list[asyncpg.Connection], kinds: tuple[str, ...], point: str, a: Key
) -> None:
    history = [f"reconciler holds A {point}"]

    async def commit_one(conn: asyncpg.Connection, kind: str) -> None:
        async with conn.transaction():
            said = await change(s, conn, a, kind)
            await asyncio.sleep(0.05)  # three transactions open at once, all holding what they locked
        history.append(f"{kind} committed: {said}")

    # Writers of one key wait for each other's row locks (order, payment), never for the reconciler: each in turn.
    await no_wait(commit_one(conns[0], kinds[0]), kinds[0])
    await no_wait(asyncio.gather(*(commit_one(c, k) for c, k in zip(conns[1:], kinds[1:], strict=True))), "writers")
    if not MUTANT:
        assert await rows_of(s.db, a) >= 1, "changes committed under a claim left nothing queued"


@pytest.mark.parametrize("queued_before", [True, False])
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_transaction_touching_a_key_twice_around_reconciles(
    scene: Scene, pool: asyncpg.Pool, conns: list[asyncpg.Connection], queued_before: bool, outcome: str
) -> None:
    s, a = scene, scene.keys["A"]
    await paid(s, pool, a, queued=queued_before)
    w, other = conns[0], conns[1]
    history = [f"A paid, queued={queued_before}"]
    tx = w.transaction()
    await tx.start()
    history.append(await change(s, w, a, "callback"))
    await reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=2)
    # Another writer commits a change of the same key meanwhile (an attempt: no row lock the first one holds).
    async with other.transaction():
        history.append(await no_wait(change(s, other, a, "attempt"), "the other writer"))
    await reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=2)
    history.append(await change(s, w, a, "refund"))
    history.append(await change(s, w, a, "lines"))
    await reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=2)
    await (tx.commit() if outcome == "commit" else tx.rollback())
    history.append(outcome)
    await drain_and_check(pool, s.db, history)


@pytest.mark.parametrize("second_holds", [False, True])
async def test_a_writer_that_rolls_back_after_locking_the_waiting_row(
    scene: Scene, pool: asyncpg.Pool, conns: list[asyncpg.Connection], second_holds: bool
) -> None:
    s, a = scene, scene.keys["A"]
    await paid_and_queued(s, pool, a)
    w1, w2 = conns[0], conns[1]
    t1, t2 = w1.transaction(), w2.transaction()
    await t1.start()
    history = [f"w1: {await change(s, w1, a, 'attempt')}"]
    if second_holds:
        await t2.start()
        history.append(f"w2: {await no_wait(change(s, w2, a, 'attempt'), 'w2')}")
    await t1.rollback()
    history.append("w1 ROLLBACK")
    await reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=2)
    history.append("reconcile")
    if second_holds:
        if not MUTANT:
            assert await rows_of(s.db, a) == 1, "a reconciler took the row the second writer still relies on"
        await t2.commit()
        history.append("w2 COMMIT")
    await drain_and_check(pool, s.db, history)


# Savepoint scripts: (connection, action) steps; "write:<kind>" changes key A, "reconcile" runs reconcile_pending,
# "other:<kind>" commits a change of A on the second connection.
SAVEPOINT_SCRIPTS = {
    "change, savepoint change rolled back": ["write:attempt", "sp", "write:attempt", "rollback_to", "reconcile"],
    "savepoint change released": ["sp", "write:attempt", "release", "reconcile", "sp", "write:lines", "rollback_to",
                                  "reconcile"],
    "savepoint change rolled back, then change": ["sp", "write:attempt", "rollback_to", "reconcile", "write:attempt",
                                                  "reconcile"],
    "nested savepoints": ["sp", "write:attempt", "sp", "write:lines", "rollback_to", "release", "reconcile"],
    "another writer shares the lock, then rollback": ["sp", "write:attempt", "other:attempt", "rollback_to",
                                                      "write:lines", "reconcile"],
    "rollback leaves the other writer's lock": ["sp", "write:attempt", "other_open:attempt", "rollback_to",
                                                "reconcile", "other_commit", "reconcile", "write:attempt"],
    "plpgsql exception block": ["plpgsql", "reconcile", "write:attempt", "reconcile"],
    "own row in a released savepoint": ["sp", "write:attempt", "release", "sp", "write:lines", "rollback_to",
                                        "reconcile"],
}  # fmt: skip


@pytest.mark.parametrize("queued_before", [True, False])
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
@pytest.mark.parametrize("script", list(SAVEPOINT_SCRIPTS))
async def test_savepoints_rolled_back_around_the_lock(
    scene: Scene, pool: asyncpg.Pool, conns: list[asyncpg.Connection], script: str, queued_before: bool, outcome: str
) -> None:
    s, a = scene, scene.keys["A"]
    await paid(s, pool, a, queued=queued_before)
    w, other = conns[0], conns[1]
    history = [f"A paid, queued={queued_before}", script]
    tx = w.transaction()
    await tx.start()
    savepoints: list[Any] = []
    other_tx, other_open = None, False
    for step in SAVEPOINT_SCRIPTS[script]:
        verb, _, kind = step.partition(":")
        if verb == "sp":
            savepoints.append(w.transaction())
            await savepoints[-1].start()
        elif verb == "rollback_to":
            await savepoints.pop().rollback()
        elif verb == "release":
            await savepoints.pop().commit()
        elif verb == "write":
            history.append(await no_wait(change(s, w, a, kind), step))
        elif verb == "other":
            async with other.transaction():
                history.append("other: " + await no_wait(change(s, other, a, kind), step))
        elif verb == "other_open":
            other_tx, other_open = other.transaction(), True
            await other_tx.start()
            history.append("other (open): " + await no_wait(change(s, other, a, kind), step))
        elif verb == "other_commit":
            assert other_tx is not None
            await other_tx.commit()
            other_open = False
        elif verb == "plpgsql":
            order_pk = await w.fetchval("SELECT id FROM orders WHERE order_id = $1", a[1])
            # The block's statements run in a subtransaction, rolled back by the exception; then one more attempt.
            await w.execute(f"""
                DO $$ BEGIN
                    BEGIN
                        INSERT INTO submission_attempts (order_ref, action, outcome, sent, started_at, latency_ms, data)
                        VALUES ({order_pk}, 'STATUS_QUERY', 'success', true, now(), 1, '{{"bizpay_order_id": "UP1"}}');
                        RAISE EXCEPTION 'undo';
                    EXCEPTION WHEN raise_exception THEN NULL;
                    END;
                    INSERT INTO submission_attempts (order_ref, action, outcome, sent, started_at, latency_ms, data)
                    VALUES ({order_pk}, 'STATUS_QUERY', 'success', true, now(), 1, '{{"bizpay_order_id": "UP2"}}');
                END $$
            """)  # fmt: skip
            history.append("plpgsql: attempt rolled back by its exception block, then one kept")
        else:
            assert verb == "reconcile"
            await no_wait(reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=2), "reconcile", 10)
        history.append(step)
    await (tx.commit() if outcome == "commit" else tx.rollback())
    if other_tx is not None and other_open:
        await other_tx.commit()
    history.append(outcome)
    await drain_and_check(pool, s.db, history)


# ------------------------------------------------------------------------------------ random schedules


async def test_random_schedules_of_savepoints_writes_and_paused_batches(
    scene: Scene, pool: asyncpg.Pool, conns: list[asyncpg.Connection]
) -> None:
    """Seeded random schedules on three writer connections (BEGIN, SAVEPOINT, ROLLBACK TO, RELEASE, writes,
    COMMIT, ROLLBACK) and reconcilers, some paused at a drawn point of a batch (run as tasks: a reconciler may
    wait for another's key lock, a writer step must never wait). Keys that need row locks (callbacks, refunds)
    belong to the first open transaction that wrote them; the others write attempts and statement lines, which
    lock no row of another writer. One uncommitted statement import at a time (the imports' own race, below)."""
    rng = random.Random(SEED)
    s = scene
    keys = list(s.keys.values())
    steps = 0
    started = time.monotonic()
    for example in range(FUZZ_EXAMPLES):
        await s.db.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        keys = await new_orders(s.db, f"F{example:03d}", 3, rng)
        history: list[str] = [f"example {example} of seed {SEED}"]
        for key in keys:
            if rng.random() < 0.6:
                async with s.db.transaction():
                    history.append(f"{key[1]}: {await s.writes.callback(s.db, key, 'right', 5)}")
        if rng.random() < 0.5:
            await reconcile_pending(pool, business_tz=BUSINESS_TZ)
            history.append("reconcile")
        reconcilers: list[tuple[asyncio.Task[Any], Gate | None]] = []
        try:
            steps += await one_schedule(s, pool, conns, rng, keys, history, reconcilers)
        finally:  # a failure must not leave a reconciler held (the pool could never close)
            for _, gate in reconcilers:
                if gate:
                    gate.open.set()
            if reconcilers:
                _done, pending = await asyncio.wait([task for task, _ in reconcilers], timeout=30)
                for task in pending:
                    task.cancel()
        for task, _ in reconcilers:
            task.result()
        history.append("every reconciler done")
        await drain_and_check(pool, s.db, history)
    print(
        f"\nrandom schedules (seed {SEED}): {FUZZ_EXAMPLES} examples, {steps} steps, {time.monotonic() - started:.1f} s"
    )


async def one_schedule(
    s: Scene,
    pool: asyncpg.Pool,
    conns: list[asyncpg.Connection],
    rng: random.Random,
    keys: list[Key],
    history: list[str],
    reconcilers: list[tuple[asyncio.Task[Any], Gate | None]],
) -> int:
    open_tx: dict[int, list[Any]] = {}
    owner: dict[Key, int] = {}
    importer: int | None = None
    count = rng.randint(6, 18)
    for _ in range(count):
        c = rng.randrange(len(conns))
        conn = conns[c]
        action = rng.choice(("begin", "write", "write", "write", "savepoint", "undo", "release", "end", "reconcile",
                                 "paused", "open_gate"))  # fmt: skip
        if action == "begin" and c not in open_tx:
            open_tx[c] = [conn.transaction()]
            await open_tx[c][0].start()
            history.append(f"{c}: BEGIN")
        elif action == "savepoint" and c in open_tx:
            open_tx[c].append(conn.transaction())
            await open_tx[c][-1].start()
            history.append(f"{c}: SAVEPOINT")
        elif action in ("undo", "release") and len(open_tx.get(c, ())) > 1:
            sp = open_tx[c].pop()
            await (sp.rollback() if action == "undo" else sp.commit())
            history.append(f"{c}: {'ROLLBACK TO' if action == 'undo' else 'RELEASE'} SAVEPOINT")
        elif action == "end" and c in open_tx:
            commit = rng.random() < 0.75
            await (open_tx.pop(c)[0].commit() if commit else open_tx.pop(c)[0].rollback())
            for key in [k for k, o in owner.items() if o == c]:
                del owner[key]
            importer = None if importer == c else importer
            history.append(f"{c}: {'COMMIT' if commit else 'ROLLBACK'}")
        elif action == "write":
            key = rng.choice(keys)
            kind = rng.choice(("attempt", "lines", "callback", "refund"))
            if kind in ("callback", "refund"):
                holder = owner.get(key)
                if holder is not None and holder != c:
                    kind = "attempt"
                elif c in open_tx:
                    owner[key] = c
            if kind == "lines":
                if importer is not None and importer != c:
                    kind = "attempt"
                elif c in open_tx:
                    importer = c
            if kind == "refund":
                view = await fetch_one(conn, ORDER_VIEW, *key)
                if view["status"] not in PAID_STATUSES or view["left"] <= 0:
                    kind = "attempt"
            said = await no_wait(change(s, conn, key, kind), f"{c}: {kind} {key}\n" + "\n".join(history))
            history.append(f"{c}: {kind} {key[1]}{'' if c in open_tx else ' (autocommit)'}: {said}")
        elif action == "reconcile":
            reconcilers.append(
                (
                    asyncio.create_task(
                        reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=rng.randint(1, 3), concurrency=2)
                    ),
                    None,
                )
            )
            history.append("reconcile (running)")
        elif action == "paused" and sum(1 for _, g in reconcilers if g and not g.open.is_set()) < 2:
            gate = gate_at(rng.choice(list(GATE_POINTS)))
            task = asyncio.create_task(
                reconcile_pending(paused_pool(pool, gate), business_tz=BUSINESS_TZ, batch=rng.randint(1, 3))
            )
            reconcilers.append((task, gate))
            reached = asyncio.create_task(gate.reached.wait())
            await asyncio.wait([task, reached], timeout=2, return_when=asyncio.FIRST_COMPLETED)
            reached.cancel()
            history.append(f"reconciler paused {gate.before[:20]!r} (reached: {gate.reached.is_set()})")
        elif action == "open_gate":
            for _, held in reconcilers:
                if held and not held.open.is_set():
                    held.open.set()
                    history.append("paused reconciler resumes")
                    break
        await asyncio.sleep(0.005)
    for c, stack in list(open_tx.items()):
        commit = rng.random() < 0.75
        await (stack[0].commit() if commit else stack[0].rollback())
        history.append(f"{c}: {'COMMIT' if commit else 'ROLLBACK'} (end)")
    return count


async def test_a_repeatable_read_writer_fails_loudly_rather_than_losing_its_change(
    scene: Scene, pool: asyncpg.Pool, conns: list[asyncpg.Connection]
) -> None:
    """Decision 0045's caveat: a writer whose snapshot still shows a row a reconciler has since claimed (and
    committed) cannot lock it; under REPEATABLE READ that is a serialization failure, never a change left out
    of the queue. Every writer of the service runs in READ COMMITTED; this pins what happens if one did not."""
    s, a = scene, scene.keys["A"]
    await paid_and_queued(s, pool, a)
    w = conns[0]
    tx = w.transaction(isolation="repeatable_read")
    await tx.start()
    assert await w.fetchval("SELECT count(*) FROM recon_dirty") == 1  # the snapshot holds the waiting row
    await reconcile_pending(pool, business_tz=BUSINESS_TZ)  # claims and deletes it, commits
    with pytest.raises(asyncpg.SerializationError):
        await no_wait(change(s, w, a, "attempt"), "the repeatable-read writer")
    await tx.rollback()
    await drain_and_check(pool, s.db, ["A queued", "RR writer's snapshot", "reconciled", "RR write fails"])


# ----------------------------------------------------------------- pre-existing: the imports' own race
