"""The envelope's rsp_code and rsp_msg are not signed: a copy that differs only there can neither
change what a callback says about money nor shadow the genuine callback (decision 0026)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from arq import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis.asyncio import ConnectionPool

from ottpay.keys import MerchantKeys, parse_merchant_keys
from ottrecon import db as worker_db
from ottrecon.callbacks.replay import replay_rejected
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.queue import deserialize, serialize
from ottrecon.reconciliation.reconcile import mark_all_dirty, reconcile_pending
from tests.conftest import LOCK_KEY, MERCHANT, OLD_KEY, OTHER_KEY, OTHER_MERCHANT
from tests.integration.support import drain, enqueue_callback, make_callback, worker_settings
from webhook.queue import enqueue_callbacks, prepare

ORDER = "U0000000000000000001"


def altered(genuine: dict[str, str], rsp_code: str = "FAIL", rsp_msg: str = "payment failed") -> dict[str, str]:
    """What anyone who saw the genuine callback can send: the same signed data and md5, other unsigned fields."""
    return {**genuine, "rsp_code": rsp_code, "rsp_msg": rsp_msg}


async def _insert_unpaid_order(db: asyncpg.Connection, order_id: str, amount: int = 100) -> None:
    # An ACTIVEPAY order this system created, past its deadline: a callback must mark it paid.
    await db.execute(
        """INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, idempotency_key, request_sha256, status)
           VALUES ($1, $2, 'ACTIVEPAY', 'ALIPAY', $3, $2, 'x', 'unpaid')""",
        MERCHANT,
        order_id,
        amount,
    )


async def _deliver_one_by_one(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, bodies: list[dict[str, str]]
) -> None:
    for body in bodies:
        assert await enqueue_callback(redis, body)
        await drain(worker_settings(database_url, redis_url, merchants))


async def _ledger_status(database_url: str, db: asyncpg.Connection, order_id: str) -> Any:
    pool = await worker_db.create_pool(database_url, 2)
    try:
        await mark_all_dirty(pool)
        await reconcile_pending(pool, business_tz="America/Toronto")
    finally:
        await pool.close()
    return await db.fetchrow("SELECT recon_status, callback_count FROM ledger WHERE order_id = $1", order_id)


async def _rsp_codes(db: asyncpg.Connection, order_id: str) -> list[str]:
    return sorted(await db.fetchval("SELECT array_agg(rsp_code) FROM callbacks WHERE order_id = $1", order_id) or [])


async def test_a_fail_copy_arriving_first_neither_hides_the_payment_nor_drops_the_genuine_callback(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await _insert_unpaid_order(db, ORDER)
    genuine = make_callback(ORDER)

    await _deliver_one_by_one(database_url, redis_url, redis, merchants, [altered(genuine), genuine])

    assert await db.fetchval("SELECT status FROM payments WHERE order_id = $1", ORDER) == "paid"
    assert await db.fetchval("SELECT status FROM orders WHERE order_id = $1", ORDER) == "paid"
    # Both copies are kept as evidence; the genuine one is not dropped as a "duplicate".
    assert await _rsp_codes(db, ORDER) == ["FAIL", "SUCCESS"]
    ledger = await _ledger_status(database_url, db, ORDER)
    assert (ledger["recon_status"], ledger["callback_count"]) == ("matched", 1)


async def test_a_recorded_copy_with_another_rsp_code_is_flagged_for_a_person(
    database_url: str,
    redis_url: str,
    redis: ArqRedis,
    merchants: MerchantKeys,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ottrecon.worker")
    genuine = make_callback("FLAGGED")
    before = REGISTRY.get_sample_value("ottrecon_callbacks_unexpected_rsp_code_total") or 0.0

    await _deliver_one_by_one(database_url, redis_url, redis, merchants, [genuine, altered(genuine, " FAIL ")])

    assert REGISTRY.get_sample_value("ottrecon_callbacks_unexpected_rsp_code_total") == before + 1
    [flagged] = [r for r in caplog.records if "unexpected unsigned rsp_code" in r.getMessage()]
    assert (flagged.__dict__["order_id"], flagged.__dict__["rsp_code"]) == ("FLAGGED", " FAIL ")


async def test_replaying_rejected_copies_links_each_to_its_own_callback(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    genuine = make_callback("REPLAYED")
    # A worker without the merchant's keys rejects both; once the keys are there, a replay records both.
    keyless = parse_merchant_keys(f"{OTHER_MERCHANT}={OTHER_KEY}")
    await _deliver_one_by_one(database_url, redis_url, redis, keyless, [altered(genuine), genuine])
    assert await db.fetchval("SELECT count(*) FROM rejected_callbacks WHERE resolved_at IS NULL") == 2

    pool = await worker_db.create_pool(database_url, 2)
    try:
        report = await replay_rejected(pool, merchants)
    finally:
        await pool.close()

    assert (report.recorded, report.duplicate, report.still_rejected) == (2, 0, 0)
    links = await db.fetch(
        "SELECT r.envelope->>'rsp_code' AS rejected, c.rsp_code AS recorded, r.resolution "
        "FROM rejected_callbacks r JOIN callbacks c ON c.id = r.callback_id ORDER BY r.id"
    )
    assert [tuple(row) for row in links] == [("FAIL", "FAIL", "recorded"), ("SUCCESS", "SUCCESS", "recorded")]
    assert await db.fetchval("SELECT status FROM payments WHERE order_id = 'REPLAYED'") == "paid"


async def test_a_fail_copy_arriving_after_the_genuine_callback_changes_nothing_and_is_kept(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await _insert_unpaid_order(db, ORDER)
    genuine = make_callback(ORDER)

    await _deliver_one_by_one(database_url, redis_url, redis, merchants, [genuine, altered(genuine)])

    assert await db.fetchval("SELECT status FROM orders WHERE order_id = $1", ORDER) == "paid"
    assert await _rsp_codes(db, ORDER) == ["FAIL", "SUCCESS"]
    ledger = await _ledger_status(database_url, db, ORDER)
    assert (ledger["recon_status"], ledger["callback_count"]) == ("matched", 1)


async def test_copies_in_one_job_in_either_order_record_the_payment_and_every_copy(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    first, second = make_callback("BATCH1"), make_callback("BATCH2")
    now = datetime.now(UTC)
    bodies = [altered(first), first, second, altered(second, "SYSTEM_ERROR", "")]
    assert await enqueue_callbacks(redis, [prepare(body, now) for body in bodies]) == [True] * 4

    await drain(worker_settings(database_url, redis_url, merchants))

    paid = await db.fetch("SELECT order_id, status, amount FROM payments ORDER BY order_id")
    assert [tuple(row) for row in paid] == [("BATCH1", "paid", 100), ("BATCH2", "paid", 100)]
    assert await _rsp_codes(db, "BATCH1") == ["FAIL", "SUCCESS"]
    assert await _rsp_codes(db, "BATCH2") == ["SUCCESS", "SYSTEM_ERROR"]


async def test_a_success_copy_of_a_callback_whose_signed_data_says_failed_does_not_make_it_paid(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    # The signed order status decides; the unsigned rsp_code is only evidence, in whichever order they come.
    failed = altered(make_callback("FAILED1", order_status="failure"), "FAIL", "failure")
    failed_too = altered(make_callback("FAILED2", order_status="failure"), "FAIL", "failure")

    await _deliver_one_by_one(
        database_url, redis_url, redis, merchants, [failed, altered(failed, "SUCCESS", "success")]
    )
    await _deliver_one_by_one(
        database_url, redis_url, redis, merchants, [altered(failed_too, "SUCCESS", "success"), failed_too]
    )

    assert await db.fetchval("SELECT count(*) FROM payments") == 0
    assert await _rsp_codes(db, "FAILED1") == ["FAIL", "SUCCESS"]
    assert await _rsp_codes(db, "FAILED2") == ["FAIL", "SUCCESS"]


async def test_an_exact_redelivery_is_still_one_callback(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    genuine = make_callback("AGAIN")
    copy = altered(genuine)

    await _deliver_one_by_one(database_url, redis_url, redis, merchants, [genuine, copy, genuine, copy])

    assert await _rsp_codes(db, "AGAIN") == ["FAIL", "SUCCESS"]


unsigned_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    rsp_code=unsigned_text,
    rsp_msg=unsigned_text,
    order_status=st.sampled_from([None, "success", "captured", "failure", "notpay", "orderclosed", "weird"]),
)
def test_the_money_decision_never_depends_on_unsigned_fields(
    rsp_code: str, rsp_msg: str, order_status: str | None
) -> None:
    # Oracle: the genuine callback's own verdict. Any copy with other unsigned fields reports the same payment.
    merchants = parse_merchant_keys(f"{MERCHANT}={OLD_KEY}")
    fields = {} if order_status is None else {"order_status": order_status}
    genuine = make_callback("PROP", **fields)
    now = datetime.now(UTC)
    original, copy = judge(genuine, now, merchants), judge(altered(genuine, rsp_code, rsp_msg), now, merchants)

    assert isinstance(original, VerifiedCallback) and isinstance(copy, VerifiedCallback)
    assert copy.reports_payment == original.reports_payment == (order_status in (None, "success", "captured"))
    assert (copy.amount, copy.tip, copy.order_id, copy.md5) == (original.amount, original.tip, "PROP", original.md5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    copies=st.lists(st.tuples(st.sampled_from(["SUCCESS", "FAIL", "PROCESSING", ""]), unsigned_text), max_size=3),
    data=st.data(),
)
def test_any_arrival_order_of_genuine_and_altered_copies_records_the_payment_and_every_distinct_copy(
    database_url: str,
    redis_url: str,
    merchants: MerchantKeys,
    copies: list[tuple[str, str]],
    data: st.DataObject,
) -> None:
    """Oracle: the genuine callback always makes the order paid; the set of stored (rsp_code, rsp_msg) pairs
    equals the set delivered. Arrival order and grouping into jobs are drawn at random."""
    asyncio.run(_arrivals(database_url, redis_url, merchants, copies, data))


async def _arrivals(
    database_url: str, redis_url: str, merchants: MerchantKeys, copies: list[tuple[str, str]], data: st.DataObject
) -> None:
    order_id = f"P{uuid.uuid4().hex[:16]}"  # the database is shared by the examples
    genuine = make_callback(order_id)
    bodies = [genuine] + [altered(genuine, code, msg) for code, msg in copies]
    bodies = data.draw(st.permutations(bodies))
    cut = data.draw(st.integers(0, len(bodies)))
    redis = ArqRedis(ConnectionPool.from_url(redis_url), job_serializer=serialize, job_deserializer=deserialize)
    db = await asyncpg.connect(database_url)
    try:
        lock = await redis.get(LOCK_KEY)
        await redis.flushdb()
        await redis.set(LOCK_KEY, lock or b"held", ex=3600)
        for group in (bodies[:cut], bodies[cut:]):
            if group:
                await enqueue_callbacks(redis, [prepare(body, datetime.now(UTC)) for body in group])
                await drain(worker_settings(database_url, redis_url, merchants))
        assert await db.fetchval("SELECT status FROM payments WHERE order_id = $1", order_id) == "paid"
        stored = await db.fetch(
            "SELECT rsp_code, envelope->>'rsp_msg' AS rsp_msg FROM callbacks WHERE order_id = $1", order_id
        )
        assert {(row["rsp_code"], row["rsp_msg"]) for row in stored} == {(b["rsp_code"], b["rsp_msg"]) for b in bodies}
        assert len(stored) == len({(b["rsp_code"], b["rsp_msg"]) for b in bodies})
    finally:
        await db.close()
        await redis.aclose(close_connection_pool=True)
