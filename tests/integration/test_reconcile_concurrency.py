"""reconcile_pending(concurrency=N): N batch loops at once must leave what one loop leaves.

The oracle is the reference model (tests/reconciliation_model.py, tests/books_model.py): random evidence
(orders of two merchants, callbacks right, short, of another channel payment or for no order of ours, dated
back onto dates that may be closed, refunds, orders flagged unpaid, closes of past dates) is reconciled by
several loops with small batches, so that many batches interleave on their own connections, and then the
ledger, the daily summary with its adjustment rows (ledger_refunds and book_entries behind it) and the open
alerts must equal the model's, cent for cent. Writes are also committed while a concurrent reconcile runs;
after a final drain nothing may be stale.

Then the deterministic edges: max_batches bounds the batches started across every loop; a batch that fails
(a trigger of this test's database raises, real Postgres) makes reconcile_pending raise, and leaves every
key either reconciled by a committed batch or still queued; a transient failure is reported as one
(DatabaseUnavailable) whatever the concurrency; concurrency below 1 is refused.

Bounded for `make test`; OTTRECON_CONC_EXAMPLES / OTTRECON_CONC_STEPS raise it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from ottpay.envelope import build_callback
from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.db import fetch_one
from ottrecon.errors import DatabaseUnavailable
from ottrecon.payments import refund_store
from ottrecon.payments import store as payments_store
from ottrecon.payments.refund_store import MARK_ORDER_REFUNDED, UPDATE_REFUND
from ottrecon.payments.submission import Transition
from ottrecon.reconciliation import closing
from ottrecon.reconciliation.reconcile import KEY_LOCK_SPACE, reconcile_pending
from tests import books_model
from tests import reconciliation_model as model
from tests.conftest import MERCHANT, OTHER_MERCHANT
from tests.integration.model_world import (
    BUSINESS_TZ,
    World,
    assert_matches_model,
    evidence_from_db,
    run_histories,
    scaled,
    world,
)

TORONTO = ZoneInfo(BUSINESS_TZ)
BEIJING = ZoneInfo("Asia/Shanghai")
EXAMPLES = scaled("OTTRECON_CONC_EXAMPLES", 50)
STEPS = scaled("OTTRECON_CONC_STEPS", 10)
MERCHANT_IDS = (MERCHANT, OTHER_MERCHANT)
ORDERS = 6
WRITES = ("callback", "callback", "short_callback", "other_callback", "orphan", "refund", "flag_unpaid")
CONCURRENCY = st.integers(2, 4)
BATCH = st.integers(1, 5)
# pg_locks lists the whole server's locks: another test session or a benchmark on another database holds its own.
THIS_DATABASE = "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
# What a writer sees of an order: its state and what is left to refund.
ORDER_VIEW = """
SELECT o.id, o.status, coalesce(o.paid_amount, o.amount) + o.tip
       - coalesce((SELECT sum(amount) FROM refunds r WHERE r.order_ref = o.id AND r.status <> 'failed'), 0) AS left
FROM orders o WHERE o.merchant_id = $1 AND o.order_id = $2
"""
Write = tuple[int, str, int]  # (order index, kind, hours the payment's finish_time lies before now)


class ConcurrentReconciles(RuleBasedStateMachine):
    """One random history per example, reconciled only by concurrent loops; the world is shared."""

    world: World
    writer: asyncpg.Connection
    examples = 0
    steps = 0
    concurrent_runs = 0
    writes_during_runs = 0

    def __init__(self) -> None:
        super().__init__()
        self.w = type(self).world
        type(self).examples += 1
        self.keys: list[tuple[str, str]] = []
        self.history: list[str] = []
        self.n = 0
        self.failed = False
        self.books = books_model.Books()
        self.ledger: dict[model.Key, model.LedgerRow] = {}
        self.contributions: dict[books_model.Place, books_model.Figures] = {}
        self.lines: dict[model.Key, books_model.LineIds] = {}

    def step(self, text: str) -> None:
        type(self).steps += 1
        self.history.append(text)

    def next(self) -> int:
        self.n += 1
        return self.n

    @initialize(amounts=st.lists(st.integers(1, 3000), min_size=ORDERS, max_size=ORDERS))
    def begin(self, amounts: list[int]) -> None:
        self.w.reset(datetime(2025, 3, 8, 20, tzinfo=UTC))
        self.w.run(self._orders(amounts))
        self.step(f"orders {list(zip(self.keys, amounts, strict=True))}")

    async def _orders(self, amounts: list[int]) -> None:
        for n, amount in enumerate(amounts):
            merchant_id = MERCHANT_IDS[n % 2]
            args = (merchant_id, f"CONC{n:016d}", "ACTIVEPAY", "ALIPAY", amount, 0, None, None, f"k{n}", "sha")
            row = await fetch_one(self.writer, payments_store.INSERT_ORDER, *args)
            self.keys.append((merchant_id, row["order_id"]))

    @rule(order=st.integers(0, ORDERS - 1), kind=st.sampled_from(WRITES), hours_ago=st.integers(0, 72))
    def write(self, order: int, kind: str, hours_ago: int) -> None:
        """A write committed while no reconciler runs."""
        self.w.run(self._write((order, kind, hours_ago)))

    @rule(hours=st.integers(1, 30))
    def time_passes(self, hours: int) -> None:
        self.w.now += timedelta(hours=hours)
        self.step(f"{hours} h pass")

    @rule(
        concurrency=CONCURRENCY,
        batch=BATCH,
        during=st.lists(st.tuples(st.integers(0, ORDERS - 1), st.sampled_from(WRITES), st.integers(0, 72)), max_size=6),
        drain_concurrency=CONCURRENCY,
        drain_batch=BATCH,
    )
    def reconcile_while_writing(
        self, concurrency: int, batch: int, during: list[Write], drain_concurrency: int, drain_batch: int
    ) -> None:
        """Writes committed (each on its own) while a concurrent reconcile runs; then a final concurrent drain
        must leave nothing stale."""
        self.w.run(self._reconcile_while_writing(concurrency, batch, during))
        self.check(drain_concurrency, drain_batch)

    async def _reconcile_while_writing(self, concurrency: int, batch: int, during: list[Write]) -> None:
        self.step(f"reconcile concurrency={concurrency} batch={batch} while writing {during}")
        type(self).concurrent_runs += 1

        async def writes() -> None:
            for write in during:
                # Let the reconciler's loops run some statements between two writes.
                await asyncio.sleep(0.002)
                await self._write(write)
                type(self).writes_during_runs += 1

        await asyncio.gather(
            reconcile_pending(self.w.pool, business_tz=BUSINESS_TZ, batch=batch, concurrency=concurrency), writes()
        )

    @rule(concurrency=CONCURRENCY, batch=BATCH)
    def reconcile(self, concurrency: int, batch: int) -> None:
        self.check(concurrency, batch)

    @rule(
        back=st.integers(1, 3),
        span=st.integers(0, 1),
        scope=st.sampled_from((None, *MERCHANT_IDS)),
        concurrency=CONCURRENCY,
        batch=BATCH,
    )
    def close_books(self, back: int, span: int, scope: str | None, concurrency: int, batch: int) -> None:
        """Close past dates (forced: open alerts do not matter here), so that later writes dated onto them are
        booked as adjustments by the concurrent batches."""
        self.check(concurrency, batch)  # finance closes what was reconciled
        today = self.w.now.astimezone(TORONTO).date()
        first, last = today - timedelta(days=back + span), today - timedelta(days=back)
        model_books = books_model.Books(set(self.books.closes), list(self.books.entries), set(self.books.folded))
        try:
            closed_now: list[date] | None = model_books.close(
                closing.dates(first, last), scope, self.contributions, self.lines
            )
        except books_model.Refused:
            closed_now = None
        try:
            report = self.w.run(
                closing.close_dates(self.w.pool, first, last, merchant_id=scope, note="conc", actor="conc",
                                    today=today, force_reason="concurrency test")
            )  # fmt: skip
        except closing.ClosingError as exc:
            assert closed_now is None, f"the model closed {closed_now}, the system refused: {exc}"
            self.step(f"close {first}..{last} for {scope} -> refused")
            return
        self.step(f"close {first}..{last} for {scope} -> {report.closed}")
        assert report.closed == closed_now, (report.closed, closed_now)
        self.books = model_books

    def teardown(self) -> None:
        if not self.failed:
            self.check(2, 1)

    def check(self, concurrency: int, batch: int) -> None:
        self.step(f"drain concurrency={concurrency} batch={batch}")
        self.failed = True
        self.w.run(self._check(concurrency, batch))
        self.failed = False

    async def _check(self, concurrency: int, batch: int) -> None:
        await reconcile_pending(self.w.pool, business_tz=BUSINESS_TZ, batch=batch, concurrency=concurrency)
        async with self.w.pool.acquire() as conn:
            evidence = await evidence_from_db(conn)
        await assert_matches_model(self.w.pool, evidence, self.history, self.books)
        self.ledger = model.reconcile(evidence, BUSINESS_TZ)
        self.contributions = books_model.contributions(self.ledger, model.refund_bookings(evidence, BUSINESS_TZ))
        self.lines = books_model.line_ids(evidence)

    # ------------------------------------------------------------------------------- the writes

    async def _write(self, write: Write) -> None:
        order, kind, hours_ago = write
        merchant_id, order_id = self.keys[order]
        conn = self.writer
        view = await fetch_one(conn, ORDER_VIEW, merchant_id, order_id)
        finish = self.w.now - timedelta(hours=hours_ago, seconds=self.next())
        if kind == "orphan":
            n = self.next()
            await self._callback(merchant_id, f"X{n:011d}", 100 + n, f"AL8{n:014d}", finish)
        elif kind.endswith("callback"):
            amount = await conn.fetchval("SELECT amount FROM orders WHERE id = $1", view["id"])
            channel_id = f"AL9{self.next():014d}" if kind == "other_callback" else f"AL{view['id']:015d}"
            amount = amount - 1 if kind == "short_callback" else amount
            await self._callback(merchant_id, order_id, amount, channel_id, finish)
        elif kind == "refund" and view["status"] in ("paid", "partially_refunded") and view["left"] > 0:
            n = self.next()
            async with conn.transaction():
                row = await fetch_one(
                    conn, refund_store.INSERT_REFUND, view["id"], merchant_id, f"R{n:019d}",
                    max(1, view["left"] // 2), f"refund-{n}", "sha",
                )  # fmt: skip
                await conn.execute(UPDATE_REFUND, row["id"], "succeeded", None, None, self.w.now)
                await conn.execute(MARK_ORDER_REFUNDED, view["id"])
        elif kind == "flag_unpaid" and view["status"] in ("pending", "awaiting_payment"):
            async with conn.transaction():
                row = await fetch_one(conn, payments_store.LOAD_ORDER, view["id"])
                transition = Transition("unpaid", "still unpaid past the deadline", flag_unpaid=True)
                await payments_store.apply(conn, row, transition, "query")
        else:
            return
        self.step(f"{kind} {merchant_id}/{order_id} finished {hours_ago} h ago")

    async def _callback(self, merchant_id: str, order_id: str, amount: int, channel_id: str, finish: datetime) -> None:
        """What the callback writer records (ottrecon.callbacks.store.record_on), for a body signed for real."""
        fields = {"order_id": order_id, "amount": str(amount), "tip": "0", "bizpay_order_id": channel_id,
                  "merchant_id": merchant_id, "finish_time": f"{finish.astimezone(BEIJING):%Y%m%d%H%M%S}"}  # fmt: skip
        body = build_callback(fields, merchant_id, self.w.merchants.keys_for(merchant_id)[-1])
        verdict = judge(body, self.w.now, self.w.merchants)
        assert isinstance(verdict, VerifiedCallback), verdict
        async with self.writer.transaction():
            await callback_store.record_on(self.writer, [verdict], [])


@pytest.mark.timeout(max(120, EXAMPLES * STEPS))
def test_concurrent_reconciles_equal_the_reference_model(
    database_url: str, redis_url: str, merchants: MerchantKeys
) -> None:
    started = time.monotonic()
    with world(database_url, redis_url, merchants) as shared, _writer(shared, database_url) as writer:
        ConcurrentReconciles.world, ConcurrentReconciles.writer = shared, writer
        ConcurrentReconciles.examples = ConcurrentReconciles.steps = 0
        ConcurrentReconciles.concurrent_runs = ConcurrentReconciles.writes_during_runs = 0
        run_histories(ConcurrentReconciles, EXAMPLES, STEPS)
    print(
        f"\nconcurrent reconciles: {ConcurrentReconciles.examples} histories, {ConcurrentReconciles.steps} steps, "
        f"{ConcurrentReconciles.concurrent_runs} runs with {ConcurrentReconciles.writes_during_runs} writes "
        f"during them, {time.monotonic() - started:.1f} s"
    )
    # A run that never raced a write against a reconcile tested only half of what it claims.
    assert ConcurrentReconciles.writes_during_runs > 0


class _writer:
    """A connection of its own on the world's loop (not the pool's, which the reconciler's loops use up)."""

    def __init__(self, shared: World, database_url: str) -> None:
        self.shared, self.url = shared, database_url
        self.conn: asyncpg.Connection | None = None

    def __enter__(self) -> asyncpg.Connection:
        self.conn = self.shared.run(asyncpg.connect(self.url, server_settings={"statement_timeout": "10000"}))
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.shared.run(self.conn.close())


# ------------------------------------------------------------------------------------------- deterministic


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # A statement that blocks (a deadlock, a lock never released) fails the test instead of hanging it.
    made = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, server_settings={"statement_timeout": "20000"}
    )
    yield made
    await made.close()


def _order_ids(count: int) -> list[str]:
    return [f"EDGE{n:016d}" for n in range(count)]


async def _queue_orders(conn: asyncpg.Connection, order_ids: list[str]) -> None:
    """One order each (its insert queues its key), in this order of the change log."""
    for n, order_id in enumerate(order_ids):
        args = (MERCHANT, order_id, "ACTIVEPAY", "ALIPAY", 100 + n, 0, None, None, f"edge-{n}", "sha")
        await fetch_one(conn, payments_store.INSERT_ORDER, *args)


async def _ledger_keys(conn: asyncpg.Connection) -> set[str]:
    return {r["order_id"] for r in await conn.fetch("SELECT order_id FROM ledger")}


async def _queued_keys(conn: asyncpg.Connection) -> set[str]:
    return {r["order_id"] for r in await conn.fetch("SELECT DISTINCT order_id FROM recon_dirty")}


@pytest.mark.parametrize(("max_batches", "concurrency"), [(3, 2), (3, 4), (1, 3), (0, 2)])
async def test_max_batches_bounds_the_batches_of_every_loop_together(
    pool: asyncpg.Pool, db: asyncpg.Connection, max_batches: int, concurrency: int
) -> None:
    order_ids = _order_ids(8)
    await _queue_orders(db, order_ids)
    report = await reconcile_pending(
        pool, business_tz=BUSINESS_TZ, batch=1, max_batches=max_batches, concurrency=concurrency
    )
    # batch=1: each batch claims the oldest change and its key's others, so one batch is one key.
    reconciled, queued = await _ledger_keys(db), await _queued_keys(db)
    assert report.keys == max_batches, report
    assert len(reconciled) == max_batches, sorted(reconciled)
    assert queued == set(order_ids) - reconciled, (sorted(queued), sorted(reconciled))
    # The oldest changes go first, whichever loop took them.
    assert reconciled == set(order_ids[:max_batches])


async def test_a_failing_batch_raises_and_loses_no_change(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    order_ids = _order_ids(30)
    doomed = order_ids[6]
    await _queue_orders(db, order_ids)
    # A fault in one batch, raised by Postgres itself inside the batch's transaction (nothing of ours mocked).
    await db.execute(f"""
        CREATE FUNCTION conc_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.order_id = '{doomed}' THEN RAISE EXCEPTION 'injected failure for %', NEW.order_id; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER conc_test_boom BEFORE INSERT OR UPDATE ON ledger FOR EACH ROW EXECUTE FUNCTION conc_test_boom();
    """)  # fmt: skip
    # Any type: what was raised (the error itself or a group holding it) is what _injected checks.
    with pytest.raises(BaseException) as raised:
        await asyncio.wait_for(reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=3), timeout=30)
    assert _injected(raised.value), f"not the injected failure: {raised.value!r}"
    reconciled, queued = await _ledger_keys(db), await _queued_keys(db)
    # The other loops were stopped, not left draining behind the caller's back.
    await asyncio.sleep(0.3)
    assert (await _ledger_keys(db), await _queued_keys(db)) == (reconciled, queued), "loops ran on after the raise"
    assert queued, "every change consumed: the other loops were not cancelled"
    # The failed batch rolled back: its change is still queued, its key has no ledger row.
    assert doomed in queued and doomed not in reconciled, (sorted(queued), sorted(reconciled))
    # Every key is either reconciled by a committed batch or still queued, never consumed without its ledger row
    # (a cancelled loop's batch rolled back its claim too), never both.
    assert reconciled | queued == set(order_ids), sorted(set(order_ids) - reconciled - queued)
    assert not reconciled & queued, sorted(reconciled & queued)
    # The doomed change was 7th in the queue: with 3 loops, at least the batches of two loops' earlier claims
    # had committed before a loop could claim it, and they stay committed.
    assert len(reconciled) >= 2, sorted(reconciled)
    # Nothing is held: the transactions of the cancelled loops were rolled back.
    assert await db.fetchval(f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND {THIS_DATABASE}") == 0
    await db.execute("DROP TRIGGER conc_test_boom ON ledger")
    report = await reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=3)
    assert report.keys == len(order_ids) - len(reconciled)
    assert await _ledger_keys(db) == set(order_ids) and not await _queued_keys(db)


def _injected(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_injected(inner) for inner in exc.exceptions)
    return isinstance(exc, asyncpg.RaiseError) and "injected failure" in str(exc)


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_a_transient_failure_in_a_batch_is_database_unavailable(
    pool: asyncpg.Pool, db: asyncpg.Connection, concurrency: int
) -> None:
    """Callers (the CLI's exit code, the console's 503 page, a worker's retry) tell "try again later" from a bug
    by DatabaseUnavailable; a serialization failure inside one of the loops is still the former."""
    order_ids = _order_ids(4)
    await _queue_orders(db, order_ids)
    await db.execute(f"""
        CREATE FUNCTION conc_test_transient() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.order_id = '{order_ids[1]}' THEN
                RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = 'serialization_failure';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER conc_test_transient BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION conc_test_transient();
    """)  # fmt: skip
    with pytest.raises(DatabaseUnavailable):
        await reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=concurrency)
    assert order_ids[1] in await _queued_keys(db)


@pytest.mark.parametrize("concurrency", [0, -1])
async def test_concurrency_below_one_is_refused(pool: asyncpg.Pool, db: asyncpg.Connection, concurrency: int) -> None:
    order_ids = _order_ids(2)
    await _queue_orders(db, order_ids)
    with pytest.raises(ValueError, match="concurrency"):
        await reconcile_pending(pool, business_tz=BUSINESS_TZ, concurrency=concurrency)
    # Refused before any work: nothing consumed.
    assert await _queued_keys(db) == set(order_ids) and not await _ledger_keys(db)


async def test_a_newer_change_of_a_key_waits_for_the_loop_reconciling_it(
    pool: asyncpg.Pool, db: asyncpg.Connection, database_url: str, merchants: MerchantKeys
) -> None:
    """Two loops on one key: loop A recomputes the key from a snapshot without the new callback; the callback
    commits and loop B claims its change. B must wait for A (the key locks), or A's older result, written
    last, leaves the ledger stale with nothing queued. Postgres triggers of this test pause the loops at the
    points that make the race certain."""
    key, filler = _order_ids(2)
    await _queue_orders(db, [key, filler])
    # Each loop's ledger write waits on a lock the test holds: key's (while the gate is up) on 4242, filler's on
    # 4243. The trigger runs inside the statement, after its snapshot was taken.
    await db.execute(f"""
        CREATE TABLE conc_gate (up boolean NOT NULL);
        INSERT INTO conc_gate VALUES (true);
        CREATE FUNCTION conc_test_pause() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.order_id = '{key}' AND (SELECT up FROM conc_gate) THEN PERFORM pg_advisory_xact_lock_shared(4242);
            ELSIF NEW.order_id = '{filler}' THEN PERFORM pg_advisory_xact_lock_shared(4243);
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER conc_test_pause BEFORE INSERT OR UPDATE ON ledger
            FOR EACH ROW EXECUTE FUNCTION conc_test_pause();
    """)  # fmt: skip
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock(4242), pg_advisory_lock(4243)")
        running = asyncio.create_task(reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=2))
        # Both loops are inside their ledger statement: one on key (older snapshot), one on filler.
        await _until(db, "SELECT count(*) = 2 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                         f" AND classid = 0 AND objid IN (4242, 4243) AND {THIS_DATABASE}")  # fmt: skip
        await db.execute("UPDATE conc_gate SET up = false")
        await _record_callback(db, merchants, key)
        # Filler's loop commits and claims the callback's change of key.
        await holder.execute("SELECT pg_advisory_unlock(4243)")
        # Right: that loop waits for key's lock. Wrong: it writes key's row with the callback (the ledger shows it).
        waits = f"locktype = 'advisory' AND NOT granted AND classid = {KEY_LOCK_SPACE} AND {THIS_DATABASE}"
        await _until(db, f"SELECT EXISTS (SELECT FROM pg_locks WHERE {waits})"
                         f" OR EXISTS (SELECT FROM ledger WHERE order_id = '{key}')")  # fmt: skip
        await holder.execute("SELECT pg_advisory_unlock(4242)")
        await asyncio.wait_for(running, timeout=30)
    finally:
        await holder.close()
    evidence = await evidence_from_db(db)
    assert evidence.callbacks, "the callback was not recorded"
    await assert_matches_model(pool, evidence, ["orders", "loop A pauses in its ledger write", "callback commits"])


async def test_every_batch_commits_asynchronously(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    """The batch transactions, and only they, run with synchronous_commit off (decision 0040)."""
    order_ids = _order_ids(6)
    await _queue_orders(db, order_ids)
    await db.execute("""
        CREATE TABLE conc_seen (order_id text, setting text);
        CREATE FUNCTION conc_test_seen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO conc_seen VALUES (NEW.order_id, current_setting('synchronous_commit'));
            RETURN NEW;
        END $$;
        CREATE TRIGGER conc_test_seen BEFORE INSERT OR UPDATE ON ledger FOR EACH ROW EXECUTE FUNCTION conc_test_seen();
    """)  # fmt: skip
    await reconcile_pending(pool, business_tz=BUSINESS_TZ, batch=1, concurrency=2)
    seen = {(r["order_id"], r["setting"]) for r in await db.fetch("SELECT * FROM conc_seen")}
    assert seen == {(order_id, "off") for order_id in order_ids}
    # Derived data only: a write outside the reconciler keeps waiting for the disk.
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW synchronous_commit") == "on"


async def _until(conn: asyncpg.Connection, condition: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await conn.fetchval(condition):
        assert time.monotonic() < deadline, f"never true: {condition}"
        await asyncio.sleep(0.02)


async def _record_callback(conn: asyncpg.Connection, merchants: MerchantKeys, order_id: str) -> None:
    """A paid callback for the order, signed for real and recorded as the callback writer does."""
    amount = await conn.fetchval("SELECT amount FROM orders WHERE order_id = $1", order_id)
    now = datetime(2025, 3, 8, 20, tzinfo=UTC)
    fields = {"order_id": order_id, "amount": str(amount), "tip": "0", "bizpay_order_id": f"AL{1:015d}",
              "merchant_id": MERCHANT, "finish_time": f"{now.astimezone(BEIJING):%Y%m%d%H%M%S}"}  # fmt: skip
    verdict = judge(build_callback(fields, MERCHANT, merchants.keys_for(MERCHANT)[-1]), now, merchants)
    assert isinstance(verdict, VerifiedCallback), verdict
    async with conn.transaction():
        await callback_store.record_on(conn, [verdict], [])
