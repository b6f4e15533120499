"""End to end: POST to the receiver, run the worker, look at Postgres."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from arq import ArqRedis

from ottpay.keys import MerchantKeys, parse_merchant_keys
from ottrecon.queue import QUEUE_NAME
from tests.conftest import MERCHANT, NEW_KEY, OLD_KEY, OTHER_KEY, OTHER_MERCHANT
from tests.integration.support import drain, enqueue_callback, make_callback, receiver, worker_settings

VERIFICATION_FAILURES = {"decryption_failed", "not_json_object", "malformed_plaintext", "digest_mismatch"}


async def post_all(redis_url: str, *bodies: dict[str, Any]) -> None:
    async with receiver(redis_url) as client:
        for body in bodies:
            response = await client.post("/ottpay/callback", json=body)
            assert response.status == 200, await response.text()
            assert await response.json() == {"rsp_code": "SUCCESS", "rsp_msg": "success"}


async def test_callback_posted_is_recorded_with_its_payment(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    body = make_callback("ORDER1", "1250", tip="150", remarks="谢谢", exchange_rate="5.1234")
    await post_all(redis_url, body)
    await drain(worker_settings(database_url, redis_url, merchants))

    payment = await db.fetchrow("SELECT * FROM payments")
    assert payment is not None
    assert (payment["merchant_id"], payment["order_id"], payment["status"]) == (MERCHANT, "ORDER1", "paid")
    assert (payment["amount"], payment["tip"], payment["source"]) == (1250, 150, "callback")
    assert payment["bizpay_order_id"] == "ALORDER1"
    assert payment["finish_time_raw"] == "20200416050429"
    assert payment["finish_time"] is not None
    callback = await db.fetchrow("SELECT * FROM callbacks")
    assert callback is not None
    assert callback["id"] == payment["callback_id"]
    assert callback["md5"] == body["md5"]
    assert json.loads(callback["envelope"]) == body
    data = json.loads(callback["data"])
    # Unknown extra fields are kept verbatim, non-ASCII included.
    assert (data["remarks"], data["exchange_rate"]) == ("谢谢", "5.1234")
    assert await db.fetchval("SELECT count(*) FROM rejected_callbacks") == 0


async def test_exact_redelivery_is_stored_once(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    body = make_callback("ORDER2")
    await post_all(redis_url, body, body)
    # While the first copy is queued, the second joins it instead of becoming a second job.
    assert await redis.zcard(QUEUE_NAME) == 1
    await drain(worker_settings(database_url, redis_url, merchants))
    # Delivered again after it was processed: a new job, recorded nothing new.
    await post_all(redis_url, body)
    assert await redis.zcard(QUEUE_NAME) == 1
    await drain(worker_settings(database_url, redis_url, merchants))

    assert await db.fetchval("SELECT count(*) FROM callbacks") == 1
    assert await db.fetchval("SELECT count(*) FROM payments") == 1


async def test_redeliveries_in_any_order_give_one_payment_per_order(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    first = make_callback("ORDER3", "500")
    # The same payment reported again with another time format: a distinct callback (new md5).
    again = make_callback("ORDER3", "500", finish_time="2020-04-16 05:04:29 CST")
    other = make_callback("ORDER4", "700")
    await post_all(redis_url, again, other, first, other, again)
    await drain(worker_settings(database_url, redis_url, merchants))

    rows = await db.fetch("SELECT order_id, amount FROM payments ORDER BY order_id")
    assert [(r["order_id"], r["amount"]) for r in rows] == [("ORDER3", 500), ("ORDER4", 700)]
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 3


async def test_payment_state_never_moves_backwards(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await post_all(redis_url, make_callback("ORDER5"))
    await drain(worker_settings(database_url, redis_url, merchants))
    # Later evidence (a refund, recorded by a later feature) moved the payment forward...
    await db.execute("UPDATE payments SET status = 'refunded' WHERE order_id = 'ORDER5'")
    # ...then a late, different callback for the same order reports it paid.
    await post_all(redis_url, make_callback("ORDER5", finish_time="2020-04-16 05:04:29"))
    await drain(worker_settings(database_url, redis_url, merchants))

    assert await db.fetchval("SELECT status FROM payments WHERE order_id = 'ORDER5'") == "refunded"
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 2


async def test_tampered_callback_is_rejected_and_kept(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    genuine = make_callback("ORDER6", "100")
    forged_amount = make_callback("ORDER6", "100000")
    # Someone re-uses the genuine md5 with other ciphertext: must not verify.
    tampered = {**genuine, "data": forged_amount["data"]}
    await post_all(redis_url, tampered)
    await drain(worker_settings(database_url, redis_url, merchants))

    assert await db.fetchval("SELECT count(*) FROM payments") == 0
    rejected = await db.fetchrow("SELECT * FROM rejected_callbacks")
    assert rejected is not None
    # The AES key derives from the md5, so swapped ciphertext fails at decryption or after.
    assert rejected["reason"] in VERIFICATION_FAILURES
    assert json.loads(rejected["envelope"]) == tampered

    # The forgery shares merchant + md5 with the genuine callback, yet cannot shadow it.
    await post_all(redis_url, genuine)
    await drain(worker_settings(database_url, redis_url, merchants))
    assert await db.fetchval("SELECT amount FROM payments WHERE order_id = 'ORDER6'") == 100


async def test_forgery_queued_first_does_not_block_the_genuine_callback(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    genuine = make_callback("ORDER7", "100")
    forged = {**genuine, "data": make_callback("ORDER7", "1")["data"]}
    assert await enqueue_callback(redis, forged)
    assert await enqueue_callback(redis, genuine)
    await drain(worker_settings(database_url, redis_url, merchants))

    assert await db.fetchval("SELECT amount FROM payments WHERE order_id = 'ORDER7'") == 100
    assert await db.fetchval("SELECT reason FROM rejected_callbacks") in VERIFICATION_FAILURES


async def test_unknown_merchant_is_kept_then_replayed_after_adding_its_key(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    from ottrecon import db as worker_db
    from ottrecon.callbacks.replay import replay_rejected

    stranger = make_callback("ORDER8", "990", merchant_id="NB00000001", key=OTHER_KEY)
    await post_all(redis_url, stranger, stranger)
    await drain(worker_settings(database_url, redis_url, merchants))
    rejected = await db.fetchrow("SELECT * FROM rejected_callbacks")
    assert rejected is not None
    assert (rejected["merchant_id"], rejected["reason"]) == ("NB00000001", "unknown_merchant")
    assert rejected["resolved_at"] is None

    fixed = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},NB00000001={OTHER_KEY}")
    pool = await worker_db.create_pool(database_url, 2)
    try:
        report = await replay_rejected(pool, fixed)
        again = await replay_rejected(pool, fixed)
    finally:
        await pool.close()

    assert (report.recorded, report.duplicate, report.still_rejected) == (1, 0, 0)
    assert (again.recorded, again.duplicate, again.still_rejected) == (0, 0, 0)
    assert await db.fetchval("SELECT amount FROM payments WHERE merchant_id = 'NB00000001'") == 990
    resolved = await db.fetchrow("SELECT resolution, callback_id FROM rejected_callbacks")
    assert resolved is not None
    assert resolved["resolution"] == "recorded"
    assert resolved["callback_id"] == await db.fetchval("SELECT id FROM callbacks")


async def test_replay_keeps_callbacks_that_still_fail(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    from ottrecon import db as worker_db
    from ottrecon.callbacks.replay import replay_rejected

    await post_all(redis_url, make_callback("ORDER9", merchant_id=OTHER_MERCHANT, key=OLD_KEY))
    await drain(worker_settings(database_url, redis_url, merchants))
    pool = await worker_db.create_pool(database_url, 2)
    try:
        report = await replay_rejected(pool, merchants)
    finally:
        await pool.close()

    assert report.still_rejected == 1
    row = await db.fetchrow("SELECT reason, resolved_at, last_replayed_at FROM rejected_callbacks")
    assert row is not None
    assert row["reason"] in VERIFICATION_FAILURES
    assert row["resolved_at"] is None and row["last_replayed_at"] is not None


async def test_both_keys_verify_during_rotation(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await post_all(redis_url, make_callback("OLDKEY1", key=OLD_KEY), make_callback("NEWKEY1", key=NEW_KEY))
    await drain(worker_settings(database_url, redis_url, merchants))

    rows = await db.fetch("SELECT order_id, signkey_index FROM callbacks ORDER BY order_id")
    assert [(r["order_id"], r["signkey_index"]) for r in rows] == [("NEWKEY1", 1), ("OLDKEY1", 0)]
    assert await db.fetchval("SELECT count(*) FROM rejected_callbacks") == 0


async def test_verified_callback_with_unusable_amount_is_rejected_with_reason(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await post_all(redis_url, make_callback("ORDER10", "12.50"), make_callback("ORDER11", "1", finish_time="soon"))
    await drain(worker_settings(database_url, redis_url, merchants))

    assert await db.fetchval("SELECT reason FROM rejected_callbacks") == "invalid_fields"
    # An odd finish_time never rejects a callback: raw kept, parsed left empty.
    row = await db.fetchrow("SELECT finish_time_raw, finish_time FROM payments WHERE order_id = 'ORDER11'")
    assert row is not None
    assert (row["finish_time_raw"], row["finish_time"]) == ("soon", None)


async def test_replay_requested_by_a_person_is_run_by_the_worker_and_audited(
    database_url: str, redis_url: str, redis: ArqRedis, db: asyncpg.Connection
) -> None:
    from ottrecon.queue import REPLAY_REJECTED_JOB

    stranger = make_callback("ORDER12", "1500", merchant_id="NB00000001", key=OTHER_KEY)
    await post_all(redis_url, stranger)
    before = parse_merchant_keys(f"{MERCHANT}={OLD_KEY}")
    await drain(worker_settings(database_url, redis_url, before))
    rejected_id = await db.fetchval("SELECT id FROM rejected_callbacks")

    fixed = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},NB00000001={OTHER_KEY}")
    await redis.enqueue_job(REPLAY_REJECTED_JOB, rejected_id, "alice", _queue_name=QUEUE_NAME)
    await drain(worker_settings(database_url, redis_url, fixed))

    assert await db.fetchval("SELECT amount FROM payments WHERE merchant_id = 'NB00000001'") == 1500
    events = await db.fetch("SELECT action, actor FROM rejected_callback_events WHERE rejected_id = $1", rejected_id)
    assert [(e["action"], e["actor"]) for e in events] == [("recorded", "alice")]
    # The worker reported which merchants it can verify (ids and key counts, never keys).
    configured = await db.fetch("SELECT merchant_id, key_count FROM configured_merchants ORDER BY 1")
    assert [(c["merchant_id"], c["key_count"]) for c in configured] == [("NB00000001", 1), (MERCHANT, 1)]
