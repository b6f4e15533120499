"""The callbacks store: callbacks recorded, rejections listed, replayed and purged (every query of the domain)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from ottrecon import db
from ottrecon.callbacks.verdicts import RejectedCallback, VerifiedCallback
from ottrecon.db import translate_errors

# Insert new verified callbacks and, in the same statement, the payments they report.
# Duplicates (the same body again) insert nothing; a copy with other unsigned fields is a row of its
# own (decision 0026) and reports what its signed data reports; a payment already at an equal or higher
# status is left alone, so state never moves backwards. Returns the md5s newly recorded.
RECORD_VERIFIED = """
WITH incoming AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::int2[], $8::timestamptz[],
        $9::bool[], $10::int8[], $11::int8[], $12::text[], $13::text[], $14::timestamptz[]
    ) WITH ORDINALITY AS t(
        merchant_id, md5, order_id, rsp_code, envelope, data, signkey_index, received_at,
        reports_payment, amount, tip, bizpay_order_id, finish_time_raw, finish_time, position
    )
), inserted AS (
    INSERT INTO callbacks (merchant_id, md5, order_id, rsp_code, envelope, data, signkey_index, received_at)
    SELECT merchant_id, md5, order_id, rsp_code, envelope, data, signkey_index, received_at
    FROM incoming ORDER BY position
    ON CONFLICT ON CONSTRAINT callbacks_body_key DO NOTHING
    RETURNING id, merchant_id, md5
), paid AS (
    INSERT INTO payments (
        merchant_id, order_id, status, amount, tip, bizpay_order_id, finish_time_raw, finish_time, source, callback_id
    )
    SELECT DISTINCT ON (i.merchant_id, i.order_id)
        i.merchant_id, i.order_id, 'paid', i.amount, i.tip, i.bizpay_order_id, i.finish_time_raw, i.finish_time,
        'callback', ins.id
    FROM inserted ins JOIN incoming i USING (merchant_id, md5)
    WHERE i.reports_payment
    -- Sorted so that concurrent batches lock payment rows in the same order (no deadlocks).
    ORDER BY i.merchant_id, i.order_id, ins.id
    ON CONFLICT ON CONSTRAINT payments_merchant_order_key DO UPDATE
        SET status = EXCLUDED.status, updated_at = now()
        WHERE payment_status_rank(payments.status) < payment_status_rank(EXCLUDED.status)
), order_paid AS (
    -- An order this system created is paid once an authentic callback says so.
    UPDATE orders o SET status = 'paid', paid_amount = coalesce(o.paid_amount, p.amount),
        paid_source = coalesce(o.paid_source, 'callback'), paid_at = coalesce(o.paid_at, p.received_at),
        next_check_at = NULL, updated_at = now()
    FROM (
        SELECT DISTINCT ON (i.merchant_id, i.order_id) i.merchant_id, i.order_id, i.amount, i.received_at
        FROM inserted ins JOIN incoming i USING (merchant_id, md5)
        WHERE i.reports_payment ORDER BY i.merchant_id, i.order_id, ins.id
    ) p
    WHERE o.merchant_id = p.merchant_id AND o.order_id = p.order_id
      AND order_status_rank(o.status) < order_status_rank('paid')
)
SELECT merchant_id, md5 FROM inserted
"""

# Keep rejected callbacks, one row per exact body; a repeat only bumps the counters.
RECORD_REJECTED = """
INSERT INTO rejected_callbacks (
    merchant_id, md5, envelope, envelope_sha256, reason, detail, received_at, last_received_at
)
SELECT DISTINCT ON (sha) merchant_id, md5, envelope, sha, reason, detail, received_at, received_at
FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
    AS t(merchant_id, md5, envelope, sha, reason, detail, received_at)
ORDER BY sha, received_at
ON CONFLICT ON CONSTRAINT rejected_callbacks_envelope_key DO UPDATE
    SET times_received = rejected_callbacks.times_received + 1,
        last_received_at = greatest(rejected_callbacks.last_received_at, EXCLUDED.last_received_at)
"""
# How many rejections a replay will look at (rejected_callbacks_open_idx: an index-only count).
COUNT_OPEN = "SELECT count(*) FROM rejected_callbacks WHERE resolved_at IS NULL"
# Open rejections after a given id, oldest first (keyset pagination: constant cost per page).
NEXT_OPEN_PAGE = """
SELECT id, envelope, received_at FROM rejected_callbacks
WHERE resolved_at IS NULL AND id > $1 ORDER BY id LIMIT $2
"""
# A rejection that now verifies: link it to the callback recorded from this very body, and close it.
MARK_RESOLVED = """
UPDATE rejected_callbacks
SET resolved_at = now(), last_replayed_at = now(), resolution = $2,
    callback_id = (
        SELECT id FROM callbacks
        WHERE merchant_id = $3 AND md5 = $4 AND envelope_sha256 = encode(sha256(jsonb_send($5::jsonb)), 'hex')
    )
WHERE id = $1 AND resolved_at IS NULL
"""
# A rejection that still fails: keep it open with the current reason.
MARK_STILL_REJECTED = """
UPDATE rejected_callbacks SET reason = $2, detail = $3, last_replayed_at = now() WHERE id = $1
"""
# One open rejection, locked so two replays of it cannot run at once.
LOCK_OPEN = """
SELECT id, envelope, received_at FROM rejected_callbacks WHERE id = $1 AND resolved_at IS NULL FOR UPDATE
"""
# Who replayed what, with which result (finance's audit trail).
RECORD_REPLAY_EVENT = "INSERT INTO rejected_callback_events (rejected_id, action, actor) VALUES ($1, $2, $3)"
# Merchant ids this worker holds keys for (never the keys), so the console can offer replays.
REPORT_MERCHANTS = """
INSERT INTO configured_merchants (merchant_id, key_count, reported_at)
SELECT * , now() FROM unnest($1::text[], $2::int4[])
ON CONFLICT (merchant_id) DO UPDATE SET key_count = EXCLUDED.key_count, reported_at = now()
"""
# Oldest first, through rejected_callbacks_last_received_idx; rows another worker is deleting are skipped.
PURGE_REJECTED = """
WITH doomed AS (
    SELECT r.id FROM rejected_callbacks r
    WHERE r.last_received_at < now() - $1::interval
      AND NOT EXISTS (SELECT 1 FROM rejected_callback_events e WHERE e.rejected_id = r.id)
    ORDER BY r.last_received_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM rejected_callbacks r USING doomed WHERE r.id = doomed.id
"""
# Distinct rejected bodies delivered within the last hour (an index range scan).
REJECTED_LAST_HOUR = "SELECT count(*) FROM rejected_callbacks WHERE last_received_at > now() - interval '1 hour'"
# A merchant counts as configured while a worker has reported holding its keys within this interval.
FRESH_REPORT = "interval '1 hour'"
# Reasons a key fixes (a missing, wrong or rotated key garbles decryption): only these are worth
# a replay. A malformed envelope, a merchant mismatch or unusable fields stay what they are.
KEY_REASONS = "('unknown_merchant', 'decryption_failed', 'not_json_object', 'malformed_plaintext', 'digest_mismatch')"
# Rejections, newest first by keyset on id; replayable when open and a worker recently reported the merchant.
LIST_REJECTED = f"""
SELECT r.id, r.merchant_id, r.reason, r.detail, r.received_at, r.last_received_at, r.times_received,
       r.last_replayed_at, r.resolved_at, r.resolution,
       (r.resolved_at IS NULL AND c.merchant_id IS NOT NULL AND r.reason IN {KEY_REASONS}) AS replayable,
       e.action AS last_action, e.actor AS last_actor, e.at AS last_at
FROM rejected_callbacks r
LEFT JOIN configured_merchants c ON c.merchant_id = r.merchant_id AND c.reported_at > now() - {FRESH_REPORT}
LEFT JOIN LATERAL (
    SELECT action, actor, at FROM rejected_callback_events WHERE rejected_id = r.id ORDER BY id DESC LIMIT 1
) e ON true
WHERE (r.resolved_at IS NULL) = $1 AND r.id < $2
ORDER BY r.id DESC
LIMIT $3
"""
ONE_REJECTED = f"""
SELECT r.*, (r.resolved_at IS NULL AND c.merchant_id IS NOT NULL AND r.reason IN {KEY_REASONS}) AS replayable,
       c.reported_at
FROM rejected_callbacks r
LEFT JOIN configured_merchants c ON c.merchant_id = r.merchant_id AND c.reported_at > now() - {FRESH_REPORT}
WHERE r.id = $1
"""
REJECTED_EVENTS = "SELECT * FROM rejected_callback_events WHERE rejected_id = $1 ORDER BY id"
# Lock the rejection while the request is recorded, so it cannot be resolved halfway through.
LOCK_REJECTED = "SELECT id FROM rejected_callbacks WHERE id = $1 FOR UPDATE"
RECORD_REPLAY_REQUEST = """
INSERT INTO rejected_callback_events (rejected_id, action, actor) VALUES ($1, 'replay_requested', $2) RETURNING id
"""


async def record(
    pool: asyncpg.Pool, verified: Sequence[VerifiedCallback], rejected: Sequence[RejectedCallback]
) -> set[tuple[str, str]]:
    """Store a batch in one transaction; return the (merchant_id, md5) of newly recorded callbacks.

    Idempotent: running it again with the same batch records nothing new. Raises
    DatabaseUnavailable when the work should be retried later.
    """
    async with translate_errors(), pool.acquire() as conn:
        if verified and rejected:
            async with conn.transaction():
                return await record_on(conn, verified, rejected)
        # One statement is atomic on its own: skipping BEGIN/COMMIT saves two round trips per batch.
        return await record_on(conn, verified, rejected)


async def record_on(
    conn: db.Connection, verified: Sequence[VerifiedCallback], rejected: Sequence[RejectedCallback]
) -> set[tuple[str, str]]:
    """record() on a connection whose transaction the caller owns."""
    new: set[tuple[str, str]] = set()
    if verified:
        rows = await conn.fetch(RECORD_VERIFIED, *_verified_columns(verified))
        new = {(row["merchant_id"], row["md5"]) for row in rows}
    if rejected:
        await conn.execute(RECORD_REJECTED, *_rejected_columns(rejected))
    return new


def _verified_columns(batch: Sequence[VerifiedCallback]) -> list[list[Any]]:
    return [
        [c.merchant_id for c in batch],
        [c.md5 for c in batch],
        [c.order_id for c in batch],
        [c.rsp_code for c in batch],
        [_json(c.envelope) for c in batch],
        [_json(c.data) for c in batch],
        [c.signkey_index for c in batch],
        [c.received_at for c in batch],
        [c.reports_payment for c in batch],
        [c.amount for c in batch],
        [c.tip for c in batch],
        [c.bizpay_order_id for c in batch],
        [c.finish_time_raw for c in batch],
        [c.finish_time for c in batch],
    ]


def _rejected_columns(batch: Sequence[RejectedCallback]) -> list[list[Any]]:
    return [
        [c.merchant_id for c in batch],
        [c.md5 for c in batch],
        [_json(c.envelope) for c in batch],
        [c.fingerprint for c in batch],
        [c.reason for c in batch],
        [c.detail for c in batch],
        [c.received_at for c in batch],
    ]


# One encoder for every value: json.dumps with options builds a new JSONEncoder per call, twice per callback.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _json(value: object) -> str:
    return _ENCODER.encode(value)
