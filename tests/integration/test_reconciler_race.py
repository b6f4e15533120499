"""The reconciler racing open transactions: two connections' writes interleaved with reconciler runs.

Each connection may hold a transaction open across steps while it records callbacks (worker.db.record_on),
marks refunds succeeded (the refunder's SQL) or flags orders unpaid (orders_db.apply); reconciler runs
(worker.reconcile.reconcile_pending, on a pool of its own) happen at any point in between; transactions
commit or roll back. Whenever no transaction is open, everything committed is reconciled and the ledger,
the daily summary and the open alerts must equal the reference model's over the committed evidence.

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
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from api import db as api_db
from ottpay.keys import MerchantKeys
from ottpay.messages import build_callback
from tests.conftest import MERCHANT
from tests.integration.model_world import BUSINESS_TZ, World, assert_matches_model, evidence_from_db, scaled, world
from worker import db as worker_db
from worker import orders_db
from worker.reconcile import reconcile_pending
from worker.refunder import MARK_ORDER_REFUNDED, UPDATE_REFUND
from worker.submission import Transition
from worker.verify import VerifiedCallback, judge

EXAMPLES = scaled("OTTRECON_RACE_EXAMPLES", 100)
STEPS = scaled("OTTRECON_RACE_STEPS", 30)
ORDERS = 3
CONNECTIONS = (0, 1)
# What a writer connection sees of an order: its state and what is left to refund, own uncommitted work included.
ORDER_VIEW = """
SELECT o.id, o.status, coalesce(o.paid_amount, o.amount) + o.tip
       - coalesce((SELECT sum(amount) FROM refunds r WHERE r.order_ref = o.id AND r.status <> 'failed'), 0) AS left
FROM orders o WHERE o.merchant_id = $1 AND o.order_id = $2
"""


class Interleavings(RuleBasedStateMachine):
    world: World
    writers: list[asyncpg.Connection]
    examples = 0
    steps = 0

    def __init__(self) -> None:
        super().__init__()
        self.w = type(self).world
        type(self).examples += 1
        self.open: dict[int, Any] = {}
        self.owner: dict[str, int] = {}  # order id -> the connection whose open transaction wrote it
        self.order_ids: list[str] = []
        self.history: list[str] = []
        self.n = 0
        self.failed = False

    def step(self, text: str) -> None:
        type(self).steps += 1
        self.history.append(text)

    def pick(self, data: st.DataObject, c: int) -> str | None:
        """An order connection c may write now: none that the other connection's open transaction holds."""
        free = [o for o in self.order_ids if self.owner.get(o, c) == c]
        return data.draw(st.sampled_from(free)) if free else None

    @initialize(amounts=st.lists(st.integers(1, 3000), min_size=ORDERS, max_size=ORDERS))
    def begin_history(self, amounts: list[int]) -> None:
        self.w.reset(datetime(2025, 3, 8, 20, tzinfo=UTC))
        self.w.run(self._orders(amounts))
        self.step(f"orders {list(zip(self.order_ids, amounts, strict=True))}")

    async def _orders(self, amounts: list[int]) -> None:
        async with self.w.pool.acquire() as conn:
            for n, amount in enumerate(amounts):
                args = (MERCHANT, f"RACE{n:016d}", "ACTIVEPAY", "ALIPAY", amount, 0, None, None, f"k{n}", "sha")
                row = await conn.fetchrow(api_db.INSERT_ORDER, *args)
                self.order_ids.append(row["order_id"])

    @precondition(lambda self: len(self.open) < len(CONNECTIONS))
    @rule(c=st.sampled_from(CONNECTIONS))
    def begin(self, c: int) -> None:
        if c in self.open:
            return
        transaction = self.writers[c].transaction()
        self.w.run(transaction.start())
        self.open[c] = transaction
        self.step(f"{c}: BEGIN")

    @precondition(lambda self: self.open)
    @rule(data=st.data(), commit=st.booleans())
    def end(self, data: st.DataObject, commit: bool) -> None:
        c = data.draw(st.sampled_from(sorted(self.open)))
        transaction = self.open.pop(c)
        self.w.run(transaction.commit() if commit else transaction.rollback())
        self.owner = {o: owner for o, owner in self.owner.items() if owner != c}
        self.step(f"{c}: {'COMMIT' if commit else 'ROLLBACK'}")

    def written(self, c: int, order_id: str, what: str) -> None:
        if c in self.open:
            self.owner[order_id] = c
        self.step(f"{c}: {what} {order_id}{'' if c in self.open else ' (autocommit)'}")

    @rule(data=st.data(), c=st.sampled_from(CONNECTIONS), variant=st.sampled_from(("paid", "paid", "short", "other")))
    def callback(self, data: st.DataObject, c: int, variant: str) -> None:
        order_id = self.pick(data, c)
        if order_id is None:
            return
        view = self.w.run(self.writers[c].fetchrow(ORDER_VIEW, MERCHANT, order_id))
        amount = self.w.run(self.writers[c].fetchval("SELECT amount FROM orders WHERE id = $1", view["id"]))
        channel_id = f"AL{view['id']:015d}" if variant != "other" else f"AL9{self.next():014d}"
        fields = {"order_id": order_id, "amount": str(amount - 1 if variant == "short" else amount), "tip": "0",
                  "bizpay_order_id": channel_id, "merchant_id": MERCHANT,
                  "finish_time": f"{self.w.now + timedelta(hours=8):%Y%m%d%H%M%S}"}  # fmt: skip
        body = build_callback(fields, MERCHANT, self.w.merchants.keys_for(MERCHANT)[-1])
        verdict = judge(body, self.w.now, self.w.merchants)
        assert isinstance(verdict, VerifiedCallback)
        self.w.run(worker_db.record_on(self.writers[c], [verdict], []))
        self.written(c, order_id, f"callback {variant}")

    @rule(data=st.data(), c=st.sampled_from(CONNECTIONS), share=st.integers(1, 100))
    def refund(self, data: st.DataObject, c: int, share: int) -> None:
        order_id = self.pick(data, c)
        if order_id is None:
            return
        view = self.w.run(self.writers[c].fetchrow(ORDER_VIEW, MERCHANT, order_id))
        if view["status"] not in ("paid", "partially_refunded") or view["left"] <= 0:
            return
        amount = max(1, view["left"] * share // 100)
        self.w.run(self._refund(self.writers[c], view["id"], amount))
        self.written(c, order_id, f"refund {amount}")

    async def _refund(self, conn: asyncpg.Connection, order_pk: int, amount: int) -> None:
        """What create_refund stores and what the refunder writes when the gateway said SUCCESS."""
        n = self.next()
        row = await conn.fetchrow(
            api_db.INSERT_REFUND,
            order_pk,
            MERCHANT,
            f"R{n:019d}",
            amount,
            f"refund-{n}",
            "sha",
        )
        await conn.execute(UPDATE_REFUND, row["id"], "succeeded", None, None, self.w.now)
        await conn.execute(MARK_ORDER_REFUNDED, order_pk)

    @rule(data=st.data(), c=st.sampled_from(CONNECTIONS))
    def flagged_unpaid(self, data: st.DataObject, c: int) -> None:
        order_id = self.pick(data, c)
        if order_id is None:
            return
        conn = self.writers[c]
        view = self.w.run(conn.fetchrow(ORDER_VIEW, MERCHANT, order_id))
        if view["status"] not in ("pending", "awaiting_payment"):
            return
        row = self.w.run(conn.fetchrow(orders_db.LOAD_ORDER, view["id"]))
        transition = Transition("unpaid", "still unpaid past the deadline", flag_unpaid=True)
        self.w.run(orders_db.apply(conn, row, transition, "query"))
        self.written(c, order_id, "flagged unpaid")

    # The interesting moment: a reconciler runs while a transaction holds uncommitted changes.
    @precondition(lambda self: self.open)
    @rule()
    def reconciler_runs(self) -> None:
        self.w.run(reconcile_pending(self.w.pool, business_tz=BUSINESS_TZ))
        self.step("reconcile")

    @precondition(lambda self: not self.open)
    @rule()
    def settled(self) -> None:
        self.step("reconcile (nothing open)")
        self.w.run(self.check())

    def teardown(self) -> None:
        for c in sorted(self.open):
            self.w.run(self.open.pop(c).rollback())
        if not self.failed:
            self.w.run(self.check())

    async def check(self) -> None:
        self.failed = True
        await reconcile_pending(self.w.pool, business_tz=BUSINESS_TZ)
        async with self.w.pool.acquire() as conn:
            evidence = await evidence_from_db(conn)
        await assert_matches_model(self.w.pool, evidence, self.history)
        self.failed = False

    def next(self) -> int:
        self.n += 1
        return self.n


@pytest.mark.timeout(max(120, EXAMPLES * STEPS // 4))
def test_ledger_is_never_left_stale_by_a_reconciler_racing_open_transactions(
    database_url: str, redis_url: str, merchants: MerchantKeys
) -> None:
    started = time.monotonic()
    with world(database_url, redis_url, merchants) as shared, _writers(shared, database_url) as writers:
        Interleavings.world, Interleavings.writers = shared, writers
        Interleavings.examples = Interleavings.steps = 0
        run_state_machine_as_test(
            Interleavings,
            settings=settings(
                max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, suppress_health_check=list(HealthCheck)
            ),
        )
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
