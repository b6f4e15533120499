"""Set-based generation of N orders of reconciliation evidence for bench/reconcile.py and bench/export_booked.py."""

from __future__ import annotations

import time

from ottrecon import db

# Evidence generation, set-based: each step is one INSERT … SELECT, so the statement-level
# triggers fill recon_dirty exactly as they do for the service's batch writes. $1 is N.
# Scenario of order i: bucket b = i*37 mod 100 (37 is prime to 100, so buckets interleave):
#   0-66 ACTIVEPAY paid by callback         67 … callback amount short (amount_mismatch)
#   68   … two channel payments (duplicate) 69 … paid, then half refunded
#   70-84 PASSIVEPAY paid by its response    85 ACTIVEPAY paid, proven by a status query only (missing_callback)
#   86   ACTIVEPAY flagged unpaid            87 … flagged unpaid, then paid by callback (paid_after_flagged)
#   88-91 ACTIVEPAY awaiting payment         92-95 ACTIVEPAY closed unpaid
#   96-97 PASSIVEPAY declined                98-99 PASSIVEPAY failed
# Plus N/500 orphan payments (callbacks for orders we never created) and a statement with every paid
# order except i mod 250 = 0 (not_in_statement), amounts +1 cent where i mod 333 = 0 (amount_differs),
# and N/1000 lines for unknown orders (not_in_ledger).
GENERATE: tuple[tuple[str, str], ...] = (
    (
        "population",
        # The scenario of every order (a temporary table: generation plumbing, not a service table).
        """
        CREATE TEMP TABLE gen AS
        SELECT g.*,
               CASE WHEN b BETWEEN 70 AND 84 OR b >= 96 THEN 'PASSIVEPAY' ELSE 'ACTIVEPAY' END AS kind,
               CASE WHEN b <= 68 OR b BETWEEN 70 AND 85 OR b = 87 THEN 'paid' WHEN b = 69 THEN 'partially_refunded'
                    WHEN b = 86 THEN 'unpaid' WHEN b BETWEEN 88 AND 91 THEN 'awaiting_payment'
                    WHEN b BETWEEN 92 AND 95 THEN 'closed' WHEN b IN (96, 97) THEN 'declined' ELSE 'failed' END
                   AS status,
               CASE WHEN b <= 69 OR b = 87 THEN 'callback' WHEN b BETWEEN 70 AND 84 THEN 'response'
                    WHEN b = 85 THEN 'query' END AS paid_by,
               CASE WHEN b = 67 THEN amount - 1 - i % 50 ELSE amount END AS received,
               CASE WHEN b = 87 THEN created_at + interval '20 minutes'
                    ELSE created_at + make_interval(secs => 30 + i % 60) END AS paid_at
        FROM (
            -- Merchant and tip must not follow i mod 100 (the bucket), or one merchant would get every unpaid order.
            SELECT i, (i * 37) % 100 AS b, 'BENCH0000' || (i / 100) % 5 AS merchant_id,
                   'B' || lpad(i::text, 19, '0') AS order_id,
                   100 + (i * 7919) % 99900 AS amount, CASE WHEN (i / 7) % 4 = 0 THEN i % 500 ELSE 0 END AS tip,
                   (ARRAY['ALIPAY', 'WECHATPAY', 'UNIONPAY'])[1 + i % 3] AS biz_type,
                   (ARRAY['AL', 'WX', 'UP'])[1 + i % 3] || lpad(i::text, 16, '0') AS chan,
                   timestamptz '2024-05-01 00:00:00 America/Toronto' + make_interval(secs => (i - 1) * 2592000.0 / $1)
                       AS created_at
            FROM generate_series(1, $1::int8) AS i
        ) g
        """,
    ),
    (
        "orders",
        # Orders as the API stores them, already carried to their final state by the submission worker.
        """
        INSERT INTO orders (
            merchant_id, order_id, kind, biz_type, amount, tip, auth_code, idempotency_key, request_sha256, status,
            code_url, paid_amount, paid_source, paid_at, unpaid_flagged_at, check_attempts, created_at, updated_at
        )
        SELECT merchant_id, order_id, kind, biz_type, amount, tip,
               CASE WHEN kind = 'PASSIVEPAY' THEN '28' || lpad(i::text, 16, '0') END, 'key-' || i, md5(order_id),
               status, CASE WHEN kind = 'ACTIVEPAY' THEN 'https://qr.example/' || order_id END,
               CASE WHEN paid_by IS NOT NULL THEN received END, paid_by,
               CASE WHEN paid_by IS NOT NULL THEN paid_at END,
               CASE WHEN b IN (86, 87) THEN created_at + interval '15 minutes' END, 1, created_at, created_at
        FROM gen
        """,
    ),
    (
        "paid",
        # Every payment the gateway reports: our paid orders and the orphans (order ids we never created).
        """
        CREATE TEMP TABLE paid AS
        SELECT i, b, merchant_id, order_id, received, tip, chan, paid_at, paid_by FROM gen WHERE paid_by IS NOT NULL
        UNION ALL
        SELECT j, -1, 'BENCH0000' || (j % 5), 'ORPH' || lpad(j::text, 16, '0'), 100 + (j * 131) % 9900, 0,
               'AL9' || lpad(j::text, 15, '0'),
               timestamptz '2024-05-01 00:00:00 America/Toronto'
                   + make_interval(secs => j * 2592000.0 / ($1 / 500 + 1)),
               'callback'
        FROM generate_series(1, $1::int / 500) AS j
        """,
    ),
    (
        "callbacks",
        # Verified callbacks as the worker records them (a second channel payment for duplicates).
        """
        INSERT INTO callbacks (merchant_id, md5, order_id, rsp_code, envelope, data, signkey_index, received_at)
        SELECT merchant_id, digest, order_id, 'SUCCESS',
               jsonb_build_object('rsp_code', 'SUCCESS', 'rsp_msg', 'success', 'merchant_id', merchant_id,
                   'md5', digest,
                   'data', translate(encode(sha512(convert_to(digest, 'UTF8')) || sha512(convert_to(order_id, 'UTF8'))
                                            || sha256(convert_to(chan_n, 'UTF8')), 'base64'), E'\n', '')),
               jsonb_build_object('amount', received::text, 'tip', tip::text, 'bizpay_order_id', chan_n,
                   'merchant_id', merchant_id, 'order_id', order_id,
                   'finish_time', to_char(paid_at AT TIME ZONE 'Asia/Shanghai', 'YYYYMMDDHH24MISS')),
               0, paid_at + make_interval(secs => 2 + n)
        FROM (
            SELECT p.*, n, upper(md5(order_id || '/' || n)) AS digest,
                   CASE n WHEN 1 THEN chan ELSE chan || 'D' END AS chan_n
            FROM paid p CROSS JOIN LATERAL generate_series(1, CASE WHEN b = 68 THEN 2 ELSE 1 END) AS n
            WHERE paid_by = 'callback'
        ) c
        """,
    ),
    (
        "payments",
        # One payment per order: the first callback's, or the PASSIVEPAY response's / status query's.
        """
        INSERT INTO payments (
            merchant_id, order_id, status, amount, tip, bizpay_order_id, finish_time_raw, finish_time, source,
            callback_id, created_at, updated_at
        )
        SELECT p.merchant_id, p.order_id, CASE WHEN p.b = 69 THEN 'partially_refunded' ELSE 'paid' END,
               p.received, p.tip, p.chan, to_char(p.paid_at AT TIME ZONE 'Asia/Shanghai', 'YYYYMMDDHH24MISS'),
               p.paid_at, p.paid_by, c.id, p.paid_at, p.paid_at
        FROM paid p
        LEFT JOIN callbacks c ON c.merchant_id = p.merchant_id AND c.md5 = upper(md5(p.order_id || '/1'))
        """,
    ),
    (
        "attempts",
        # What the submission worker sent: one request per order, plus the status query that proved b = 85.
        """
        INSERT INTO submission_attempts (order_ref, action, outcome, rsp_code, sent, gateway_status, started_at,
                                         latency_ms, data)
        SELECT o.id, o.kind,
               CASE o.status WHEN 'failed' THEN 'permanent' WHEN 'declined' THEN 'declined' ELSE 'success' END,
               CASE o.status WHEN 'failed' THEN 'FAIL' ELSE 'SUCCESS' END, true, NULL, o.created_at, 40 + o.id % 200,
               CASE WHEN o.kind = 'PASSIVEPAY' AND g.paid_by IS NOT NULL
                        THEN jsonb_build_object('bizpay_order_id', g.chan, 'order_status', 'SUCCESS',
                                                'amount', g.received::text)
                    WHEN o.kind = 'ACTIVEPAY' THEN jsonb_build_object('code_url', o.code_url) END
        FROM orders o JOIN gen g USING (merchant_id, order_id)
        UNION ALL
        SELECT o.id, 'STATUS_QUERY', 'success', 'SUCCESS', true, 'SUCCESS', g.paid_at, 80,
               jsonb_build_object('bizpay_order_id', g.chan, 'order_status', 'SUCCESS', 'amount', g.received::text)
        FROM orders o JOIN gen g USING (merchant_id, order_id) WHERE g.b = 85
        """,
    ),
    (
        "refunds",
        # Half of every b = 69 order refunded, and the refund confirmed.
        """
        INSERT INTO refunds (order_ref, merchant_id, refund_order_id, amount, idempotency_key, request_sha256, status,
                             created_at, updated_at, succeeded_at)
        SELECT o.id, o.merchant_id, 'R' || substr(o.order_id, 2), o.amount / 2, 'refund-' || g.i,
               md5(o.order_id || 'r'), 'succeeded', g.paid_at + interval '1 day', g.paid_at + interval '1 day',
               g.paid_at + interval '1 day'
        FROM orders o JOIN gen g USING (merchant_id, order_id) WHERE g.b = 69
        """,
    ),
    (
        "statement",
        # One settlement statement for May covering the five merchants.
        """
        INSERT INTO statement_imports (file_name, file_sha256, period_start, period_end, merchant_ids, line_count)
        SELECT 'may.csv', md5('may' || $1::int), date '2024-05-01', date '2024-05-31',
               ARRAY(SELECT 'BENCH0000' || m FROM generate_series(0, 4) AS m), 0
        """,
    ),
    (
        "statement lines",
        # Its lines: the paid orders (a few left out or off by a cent) and some we never heard of.
        """
        INSERT INTO statement_lines (import_id, line_no, merchant_id, order_id, bizpay_order_id, amount, tip, fee,
                                     refund, txn_time_raw, txn_time, business_date, line_sha256)
        SELECT (SELECT max(id) FROM statement_imports), 1 + row_number() OVER (), merchant_id, order_id, chan,
               amount, tip, (amount + tip) * 2 / 100, refund,
               to_char(paid_at AT TIME ZONE 'America/Toronto', 'YYYY-MM-DD HH24:MI:SS'), paid_at,
               (paid_at AT TIME ZONE 'America/Toronto')::date,
               encode(sha256(convert_to(
                   concat_ws('|', merchant_id, order_id, chan, amount, tip, refund, paid_at), 'UTF8')), 'hex')
        FROM (
            SELECT merchant_id, order_id, chan, received + CASE WHEN i % 333 = 0 THEN 1 ELSE 0 END AS amount, tip,
                   CASE WHEN b = 69 THEN received / 2 ELSE 0 END AS refund, paid_at
            FROM paid WHERE i % 250 <> 0
            UNION ALL
            SELECT 'BENCH0000' || (k % 5), 'XTRA' || lpad(k::text, 16, '0'), 'WX8' || lpad(k::text, 15, '0'),
                   500 + k % 1000, 0, 0,
                   timestamptz '2024-05-01 12:00:00 America/Toronto' + make_interval(days => k % 30)
            FROM generate_series(1, $1::int / 1000) AS k
        ) lines
        """,
    ),
)

# Books closed for every ledger row, for the ledger export's second measurement (where a finance team closes
# each day, nearly every row of a full export has a close entry, which export ledger's closed_in cell reads):
# one close per business date for all merchants, one close entry per ledger row. Run after reconciliation.
CLOSE_EVERY_DATE = (
    """
    INSERT INTO book_closes (business_date, merchant_id, note, closed_by)
    SELECT DISTINCT business_date, NULL::text, 'benchmark', 'bench' FROM ledger
    """,
    """
    INSERT INTO book_entries (merchant_id, order_id, entry_no, kind, close_id, corrects_date, booked_on, channel,
                              payments, gross, tips)
    SELECT l.merchant_id, l.order_id, 1, 'close', c.id, l.business_date, l.business_date, l.channel,
           CASE WHEN l.received_amount IS NULL THEN 0 ELSE 1 END, coalesce(l.received_amount, 0),
           coalesce(l.received_tip, 0)
    FROM ledger l JOIN book_closes c ON c.business_date = l.business_date AND c.merchant_id IS NULL
    """,
    "ANALYZE book_closes",
    "ANALYZE book_entries",
)


async def generate(conn: db.Connection, orders: int) -> dict[str, float]:
    """Run every GENERATE step for N orders; the seconds each took, by step."""
    seconds = {}
    for label, sql in GENERATE:
        started = time.perf_counter()
        await conn.execute(sql, *([orders] if "$1" in sql else []))
        seconds[label] = time.perf_counter() - started
    return seconds


async def close_every_date(conn: db.Connection) -> None:
    """CLOSE_EVERY_DATE, on a reconciled database."""
    for sql in CLOSE_EVERY_DATE:
        await conn.execute(sql)
