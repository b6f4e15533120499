"""The reconciler racing open transactions: two connections' writes interleaved with reconciler runs.

Each example is a random history of autocommitted writes and of pairs of overlapping transactions, one
per connection, whose writes (callbacks recorded by ottrecon.callbacks.store.record_on, refunds marked succeeded by the
refunder's SQL, orders flagged unpaid by orders_db.apply) and reconciler runs (ottrecon.reconciliation.reconcile.
reconcile_pending, on a pool of its own) come at drawn points of a drawn schedule, and which then commit
or roll back in a drawn order, with or without a reconciler run in between. Whenever nothing is open,
everything committed is reconciled and the ledger, the daily summary and the open alerts must equal the
reference model's over the committed evidence.

The race of issue 8 (a key already queued, a second change that added nothing to the queue, a reconciler
consuming the old entry before that change committed: the ledger stale for ever) fails this test on the
code before decision 0012's change log. Two open transactions never touch the same order: they would wait
for each other's row locks, which a single-threaded driver cannot resolve (and which is not the race).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

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
from ottrecon.payments import refund_store
from ottrecon.payments import store as orders_db
from ottrecon.payments import store as payments_store
from ottrecon.payments.refund_store import MARK_ORDER_REFUNDED, UPDATE_REFUND
from ottrecon.payments.submission import Transition
from ottrecon.reconciliation.reconcile import reconcile_pending
from tests.conftest import MERCHANT
from tests.integration.model_world import (
    BUSINESS_TZ,
    World,
    assert_matches_model,
    evidence_from_db,
    run_histories,
    scaled,
    world,
)

EXAMPLES = scaled("OTTRECON_RACE_EXAMPLES", 100)
STEPS = scaled("OTTRECON_RACE_STEPS", 12)
ORDERS = 3
CONNECTIONS = (0, 1)
# What a writer connection sees of an order: its state and what is left to refund, own uncommitted work included.
ORDER_VIEW = """
SELECT o.id, o.status, coalesce(o.paid_amount, o.amount) + o.tip
       - coalesce((SELECT sum(amount) FROM refunds r WHERE r.order_ref = o.id AND r.status <> 'failed'), 0) AS left
FROM orders o WHERE o.merchant_id = $1 AND o.order_id = $2
"""


WRITES = ("callback", "callback", "short_callback", "other_callback", "refund", "flag_unpaid")


class Interleavings(RuleBasedStateMachine):
    world: World
    writers: list[asyncpg.Connection]
    examples = 0
    steps = 0

    def __init__(self) -> None:
        super().__init__()
        self.w = type(self).world
        type(self).examples += 1
        self.order_ids: list[str] = []
        self.history: list[str] = []
        self.n = 0
        self.failed = False

    def step(self, text: str) -> None:
        type(self).steps += 1
        self.history.append(text)

    def next(self) -> int:
        self.n += 1
        return self.n

    @initialize(amounts=st.lists(st.integers(1, 3000), min_size=ORDERS, max_size=ORDERS))
    def begin_history(self, amounts: list[int]) -> None:
        self.w.reset(datetime(2025, 3, 8, 20, tzinfo=UTC))
        self.w.run(self._orders(amounts))
        self.step(f"orders {list(zip(self.order_ids, amounts, strict=True))}")

    async def _orders(self, amounts: list[int]) -> None:
        async with self.w.pool.acquire() as conn:
            for n, amount in enumerate(amounts):
                args = (MERCHANT, f"RACE{n:016d}", "ACTIVEPAY", "ALIPAY", amount, 0, None, None, f"k{n}", "sha")
                row = await fetch_one(conn, payments_store.INSERT_ORDER, *args)
                self.order_ids.append(row["order_id"])

    @rule(c=st.sampled_from(CONNECTIONS), order=st.integers(0, ORDERS - 1), kind=st.sampled_from(WRITES))
    def autocommit_write(self, c: int, order: int, kind: str) -> None:
        """A write committed at once: leaves its key queued for the reconciler."""
        self.w.run(self.write(self.writers[c], self.order_ids[order], kind))
        self.step(f"{c}: {kind} {self.order_ids[order]} (autocommit)")

    @rule(
        schedule=st.lists(
            st.one_of(
                st.tuples(st.sampled_from(CONNECTIONS), st.integers(0, ORDERS - 1), st.sampled_from(WRITES)),
                st.just("reconcile"),
            ),
            min_size=1,
            max_size=6,
        ),
        outcomes=st.tuples(st.booleans(), st.booleans()),
        first=st.sampled_from(CONNECTIONS),
        reconcile_between=st.booleans(),
    )
    def overlapping_transactions(
        self, schedule: list[Any], outcomes: tuple[bool, bool], first: int, reconcile_between: bool
    ) -> None:
        """Both connections open a transaction; their writes and reconciler runs happen in the drawn order;
        then both end (commit or roll back) in the drawn order, a reconciler run between them if drawn."""
        self.w.run(self._overlapping(schedule, outcomes, first, reconcile_between))

    async def _overlapping(
        self, schedule: list[Any], outcomes: tuple[bool, bool], first: int, reconcile_between: bool
    ) -> None:
        owner: dict[str, int] = {}
        transactions = [conn.transaction() for conn in self.writers]
        for c, transaction in enumerate(transactions):
            await transaction.start()
            self.step(f"{c}: BEGIN")
        for event in schedule:
            if event == "reconcile":
                await reconcile_pending(self.w.pool, business_tz=BUSINESS_TZ)
                self.step("reconcile")
                continue
            c, order, kind = event
            order_id = self.order_ids[order]
            if owner.setdefault(order_id, c) != c:
                continue  # the other transaction holds this order: its row locks would make us wait
            await self.write(self.writers[c], order_id, kind)
            self.step(f"{c}: {kind} {order_id}")
        for c in (first, 1 - first):
            commit = outcomes[c]
            await (transactions[c].commit() if commit else transactions[c].rollback())
            self.step(f"{c}: {'COMMIT' if commit else 'ROLLBACK'}")
            if reconcile_between and c == first:
                await reconcile_pending(self.w.pool, business_tz=BUSINESS_TZ)
                self.step("reconcile")

    async def write(self, conn: asyncpg.Connection, order_id: str, kind: str) -> None:
        view = await fetch_one(conn, ORDER_VIEW, MERCHANT, order_id)
        if kind.endswith("callback"):
            await self._callback(conn, order_id, view["id"], kind)
        elif kind == "refund" and view["status"] in ("paid", "partially_refunded") and view["left"] > 0:
            await self._refund(conn, view["id"], max(1, view["left"] // 2))
        elif kind == "flag_unpaid" and view["status"] in ("pending", "awaiting_payment"):
            row = await fetch_one(conn, orders_db.LOAD_ORDER, view["id"])
            transition = Transition("unpaid", "still unpaid past the deadline", flag_unpaid=True)
            await orders_db.apply(conn, row, transition, "query")

    async def _callback(self, conn: asyncpg.Connection, order_id: str, order_pk: int, kind: str) -> None:
        """What the callback writer records (ottrecon.callbacks.store.record_on), for a body signed for real."""
        amount = await conn.fetchval("SELECT amount FROM orders WHERE id = $1", order_pk)
        channel_id = f"AL9{self.next():014d}" if kind == "other_callback" else f"AL{order_pk:015d}"
        fields = {"order_id": order_id, "amount": str(amount - 1 if kind == "short_callback" else amount), "tip": "0",
                  "bizpay_order_id": channel_id, "merchant_id": MERCHANT,
                  # A new body each time (its own finish second): recorded, so the ledger has something to miss.
                  "finish_time": f"{self.w.now + timedelta(hours=8, seconds=self.next()):%Y%m%d%H%M%S}"}  # fmt: skip
        body = build_callback(fields, MERCHANT, self.w.merchants.keys_for(MERCHANT)[-1])
        verdict = judge(body, self.w.now, self.w.merchants)
        assert isinstance(verdict, VerifiedCallback)
        await callback_store.record_on(conn, [verdict], [])

    async def _refund(self, conn: asyncpg.Connection, order_pk: int, amount: int) -> None:
        """What create_refund stores and what the refunder writes when the gateway said SUCCESS."""
        n = self.next()
        row = await fetch_one(
            conn, refund_store.INSERT_REFUND, order_pk, MERCHANT, f"R{n:019d}", amount, f"refund-{n}", "sha"
        )
        await conn.execute(UPDATE_REFUND, row["id"], "succeeded", None, None, self.w.now)
        await conn.execute(MARK_ORDER_REFUNDED, order_pk)

    @rule()
    def settled(self) -> None:
        """Everything committed is reconciled; the ledger must then equal the model."""
        self.step("reconcile (nothing open)")
        self.w.run(self.check())

    def teardown(self) -> None:
        if not self.failed:
            self.w.run(self.check())

    async def check(self) -> None:
        self.failed = True
        await reconcile_pending(self.w.pool, business_tz=BUSINESS_TZ)
        async with self.w.pool.acquire() as conn:
            evidence = await evidence_from_db(conn)
        await assert_matches_model(self.w.pool, evidence, self.history)
        self.failed = False


@pytest.mark.timeout(max(120, EXAMPLES * STEPS // 4))
def test_ledger_is_never_left_stale_by_a_reconciler_racing_open_transactions(
    database_url: str, redis_url: str, merchants: MerchantKeys
) -> None:
    started = time.monotonic()
    with world(database_url, redis_url, merchants) as shared, _writers(shared, database_url) as writers:
        Interleavings.world, Interleavings.writers = shared, writers
        Interleavings.examples = Interleavings.steps = 0
        run_histories(Interleavings, EXAMPLES, STEPS)
    print(
        f"\nrace interleavings: {Interleavings.examples} histories, {Interleavings.steps} steps, "
        f"{time.monotonic() - started:.1f} s"
    )


class _writers:
    """Two writer connections on the world's loop; a write that waits on a lock fails instead of hanging."""

    def __init__(self, shared: World, database_url: str) -> None:
        self.shared, self.url = shared, database_url
        self.conns: list[asyncpg.Connection] = []

    def __enter__(self) -> list[asyncpg.Connection]:
        for _ in CONNECTIONS:
            conn = asyncpg.connect(self.url, server_settings={"statement_timeout": "10000"})
            self.conns.append(self.shared.run(conn))
        return self.conns

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns:
            self.shared.run(conn.close())
