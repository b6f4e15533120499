-- Recompute the ledger rows of the given keys from every source of evidence, set-based.
-- $1 text[] merchant ids, $2 text[] order ids (pairs), $3 business time zone name.
-- Rules (docs/RECONCILIATION.md): amounts match exactly to the cent; the first matching
-- rule in recon_status wins.
WITH keys AS (
    SELECT DISTINCT merchant_id, order_id FROM unnest($1::text[], $2::text[]) AS k(merchant_id, order_id)
), o AS (
    SELECT o.* FROM orders o JOIN keys USING (merchant_id, order_id)
), p AS (
    SELECT p.* FROM payments p JOIN keys USING (merchant_id, order_id)
), cb AS (
    -- Only authentic callbacks reach this table; their amounts were checked to be integer cents.
    SELECT c.merchant_id, c.order_id, count(*) AS n,
           min((c.data->>'amount')::bigint) AS min_amount, max((c.data->>'amount')::bigint) AS max_amount,
           min(coalesce(nullif(trim(c.data->>'tip'), ''), '0')::bigint) AS min_tip,
           max(coalesce(nullif(trim(c.data->>'tip'), ''), '0')::bigint) AS max_tip,
           array_agg(DISTINCT c.data->>'bizpay_order_id') FILTER (WHERE coalesce(c.data->>'bizpay_order_id', '') <> '')
               AS channel_ids,
           min(c.received_at) AS first_received_at
    FROM callbacks c JOIN keys USING (merchant_id, order_id)
    WHERE c.rsp_code = 'SUCCESS'
    GROUP BY c.merchant_id, c.order_id
), q AS (
    -- Channel ids the gateway named in successful answers (PASSIVEPAY responses, status queries).
    SELECT o.merchant_id, o.order_id,
           array_agg(DISTINCT a.data->>'bizpay_order_id') FILTER (WHERE coalesce(a.data->>'bizpay_order_id', '') <> '')
               AS channel_ids
    FROM submission_attempts a JOIN o ON o.id = a.order_ref
    WHERE a.outcome = 'success' AND a.refund_ref IS NULL AND a.data IS NOT NULL
    GROUP BY o.merchant_id, o.order_id
), rf AS (
    SELECT o.merchant_id, o.order_id, sum(r.amount) AS refunded
    FROM refunds r JOIN o ON o.id = r.order_ref
    WHERE r.status = 'succeeded'
    GROUP BY o.merchant_id, o.order_id
), st AS (
    SELECT s.merchant_id, s.order_id, sum(s.amount) AS amount, sum(s.tip) AS tip, sum(s.fee) AS fee,
           array_agg(DISTINCT s.bizpay_order_id) FILTER (WHERE coalesce(s.bizpay_order_id, '') <> '') AS channel_ids,
           min(s.business_date) AS business_date
    FROM (
        -- One line per channel payment: a later statement repeats a payment with its refund grown.
        SELECT DISTINCT ON (s.merchant_id, s.order_id, coalesce(s.bizpay_order_id, ''), s.txn_time) s.*
        FROM statement_lines s JOIN keys USING (merchant_id, order_id)
        ORDER BY s.merchant_id, s.order_id, coalesce(s.bizpay_order_id, ''), s.txn_time, s.import_id DESC, s.id DESC
    ) s
    GROUP BY s.merchant_id, s.order_id
), facts AS (
    SELECT k.merchant_id, k.order_id, o.kind, o.biz_type, o.status AS order_status,
           o.amount AS expected_amount, o.tip AS expected_tip, o.unpaid_flagged_at,
           coalesce(p.amount, o.paid_amount) AS received_amount,
           coalesce(p.tip, CASE WHEN o.paid_amount IS NOT NULL THEN o.tip END) AS received_tip,
           coalesce(p.id IS NOT NULL OR o.status IN ('paid', 'partially_refunded', 'refunded'), false) AS paid,
           coalesce(o.paid_source, p.source) AS paid_source,
           coalesce(cb.n, 0) AS callback_count, cb.min_amount, cb.max_amount, cb.min_tip, cb.max_tip,
           ARRAY(
               SELECT DISTINCT x FROM unnest(
                   coalesce(cb.channel_ids, '{}') || coalesce(q.channel_ids, '{}') || coalesce(st.channel_ids, '{}')
                   || coalesce(ARRAY[p.bizpay_order_id], '{}')
               ) AS x WHERE x IS NOT NULL AND x <> '' ORDER BY x
           ) AS channel_ids,
           coalesce(rf.refunded, 0) AS refunded,
           st.amount AS st_amount, st.tip AS st_tip, coalesce(st.fee, 0) AS fee,
           coalesce(o.created_at, p.created_at, cb.first_received_at) AS created_at,
           coalesce(o.paid_at, p.created_at, cb.first_received_at) AS paid_at,
           coalesce(
               (coalesce(p.finish_time, o.paid_at, p.created_at, cb.first_received_at, o.created_at) AT TIME ZONE $3)::date,
               st.business_date
           ) AS business_date
    FROM keys k
    LEFT JOIN o USING (merchant_id, order_id)
    LEFT JOIN p USING (merchant_id, order_id)
    LEFT JOIN cb USING (merchant_id, order_id)
    LEFT JOIN q USING (merchant_id, order_id)
    LEFT JOIN rf USING (merchant_id, order_id)
    LEFT JOIN st USING (merchant_id, order_id)
), judged AS (
    SELECT f.*,
        CASE
            WHEN f.kind IS NULL AND f.paid THEN 'orphan_payment'
            WHEN f.kind IS NULL AND f.st_amount IS NOT NULL THEN 'not_in_ledger'
            WHEN f.kind IS NULL THEN 'pending'
            WHEN cardinality(f.channel_ids) > 1 THEN 'duplicate_payment'
            WHEN f.paid AND (f.received_amount IS DISTINCT FROM f.expected_amount
                             OR f.received_tip IS DISTINCT FROM f.expected_tip
                             OR f.min_amount <> f.expected_amount OR f.max_amount <> f.expected_amount
                             OR f.min_tip <> f.expected_tip OR f.max_tip <> f.expected_tip) THEN 'amount_mismatch'
            WHEN f.paid AND f.unpaid_flagged_at IS NOT NULL THEN 'paid_after_flagged'
            -- PASSIVEPAY is never called back (PROTOCOL.md section 2); only ACTIVEPAY expects one.
            WHEN f.paid AND f.kind = 'ACTIVEPAY' AND f.callback_count = 0 THEN 'missing_callback'
            WHEN f.paid THEN 'matched'
            WHEN f.order_status = 'unpaid' THEN 'unpaid'
            -- Ended unpaid at the gateway: nothing was expected and nothing arrived.
            WHEN f.order_status IN ('declined', 'failed', 'closed', 'expired') THEN 'matched'
            ELSE 'pending'
        END AS recon_status,
        CASE
            WHEN f.st_amount IS NOT NULL AND NOT f.paid THEN 'not_in_ledger'
            WHEN f.st_amount IS NOT NULL AND (f.st_amount <> f.received_amount OR f.st_tip <> f.received_tip)
                THEN 'amount_differs'
            WHEN f.st_amount IS NOT NULL THEN 'matched'
            WHEN f.paid AND EXISTS (
                SELECT 1 FROM statement_imports i
                WHERE f.merchant_id = ANY (i.merchant_ids) AND f.business_date BETWEEN i.period_start AND i.period_end
            ) THEN 'not_in_statement'
        END AS statement_status
    FROM facts f
)
INSERT INTO ledger AS l (
    merchant_id, order_id, kind, channel, order_status, expected_amount, expected_tip, received_amount,
    received_tip, refunded_amount, fee, channel_payment_ids, callback_count, paid_source, recon_status,
    statement_status, statement_amount, amount_at_risk, statement_amount_at_risk, created_at, paid_at,
    business_date, reconciled_at
)
SELECT merchant_id, order_id, kind,
       coalesce(biz_type, CASE left(channel_ids[1], 2) WHEN 'AL' THEN 'ALIPAY' WHEN 'WX' THEN 'WECHATPAY'
                                                      WHEN 'UP' THEN 'UNIONPAY' END),
       order_status, expected_amount, expected_tip, received_amount, received_tip, refunded, fee, channel_ids,
       callback_count, paid_source, recon_status, statement_status, st_amount,
       CASE recon_status
           WHEN 'amount_mismatch' THEN greatest(
               abs(coalesce(received_amount, 0) + coalesce(received_tip, 0) - expected_amount - expected_tip),
               abs(coalesce(max_amount, expected_amount) - expected_amount),
               abs(coalesce(min_amount, expected_amount) - expected_amount))
           WHEN 'orphan_payment' THEN coalesce(received_amount, 0) + coalesce(received_tip, 0)
           WHEN 'duplicate_payment' THEN (cardinality(channel_ids) - 1) * (expected_amount + expected_tip)
           WHEN 'paid_after_flagged' THEN coalesce(received_amount, 0) + coalesce(received_tip, 0)
           WHEN 'unpaid' THEN expected_amount + expected_tip
           WHEN 'not_in_ledger' THEN coalesce(st_amount, 0) + coalesce(st_tip, 0)
           ELSE 0
       END,
       CASE
           WHEN statement_status = 'not_in_statement' THEN coalesce(received_amount, 0) + coalesce(received_tip, 0)
           -- Settled by the gateway while we think the order unpaid; orphan statement lines carry it in amount_at_risk.
           WHEN statement_status = 'not_in_ledger' AND recon_status <> 'not_in_ledger'
               THEN coalesce(st_amount, 0) + coalesce(st_tip, 0)
           WHEN statement_status = 'amount_differs'
               THEN abs(st_amount + st_tip - coalesce(received_amount, 0) - coalesce(received_tip, 0))
           ELSE 0
       END,
       created_at, paid_at, coalesce(business_date, (now() AT TIME ZONE $3)::date), now()
FROM judged
ON CONFLICT ON CONSTRAINT ledger_pkey DO UPDATE SET
    kind = EXCLUDED.kind, channel = EXCLUDED.channel, order_status = EXCLUDED.order_status,
    expected_amount = EXCLUDED.expected_amount, expected_tip = EXCLUDED.expected_tip,
    received_amount = EXCLUDED.received_amount, received_tip = EXCLUDED.received_tip,
    refunded_amount = EXCLUDED.refunded_amount, fee = EXCLUDED.fee,
    channel_payment_ids = EXCLUDED.channel_payment_ids, callback_count = EXCLUDED.callback_count,
    paid_source = EXCLUDED.paid_source, recon_status = EXCLUDED.recon_status,
    statement_status = EXCLUDED.statement_status, statement_amount = EXCLUDED.statement_amount,
    amount_at_risk = EXCLUDED.amount_at_risk, statement_amount_at_risk = EXCLUDED.statement_amount_at_risk,
    created_at = EXCLUDED.created_at, paid_at = EXCLUDED.paid_at,
    business_date = EXCLUDED.business_date, reconciled_at = now()
