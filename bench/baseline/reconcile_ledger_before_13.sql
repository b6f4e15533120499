-- The ledger recompute as it was before issue 13 (commit 66e6bda), kept only as bench.reconcile's baseline:
-- the same rules as ottrecon/reconciliation/queries/reconcile_ledger.sql, joined as whole CTEs.
-- Recompute the ledger rows of the given keys from every source of evidence, set-based.
-- $1 text[] merchant ids, $2 text[] order ids (pairs), $3 business time zone name.
-- Rules: docs/RECONCILIATION.md (tests/reconciliation_model.py states the same rules in plain Python and
-- the model-based tests compare the two cent for cent). Amounts match exactly to the cent; the first
-- matching rule of each status table wins. A key left with no evidence at all loses its ledger row.
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
), lines AS (
    -- The current statement lines: a line is superseded when an import that outranks its own (later
    -- period end; same end: imported later) covers its merchant and business date, or lists the same
    -- gateway payment (merchant, order, channel id). nth > 1: the same payment again in current lines.
    SELECT s.*, i.period_end,
           row_number() OVER (PARTITION BY s.merchant_id, s.order_id, coalesce(s.bizpay_order_id, '')
                              ORDER BY s.import_id, s.line_no) AS nth
    FROM statement_lines s JOIN keys USING (merchant_id, order_id)
    JOIN statement_imports i ON i.id = s.import_id
    WHERE NOT EXISTS (
        SELECT 1 FROM statement_imports j
        WHERE (j.period_end > i.period_end OR (j.period_end = i.period_end AND j.id > i.id))
          AND s.merchant_id = ANY (j.merchant_ids)
          AND (s.business_date BETWEEN j.period_start AND j.period_end
               OR EXISTS (
                   SELECT 1 FROM statement_lines t
                   WHERE t.merchant_id = s.merchant_id AND t.order_id = s.order_id AND t.import_id = j.id
                     AND coalesce(t.bizpay_order_id, '') = coalesce(s.bizpay_order_id, '')))
    )
), st AS (
    SELECT merchant_id, order_id, sum(amount) AS amount, sum(tip) AS tip, sum(fee) AS fee, sum(refund) AS refund,
           array_agg(DISTINCT bizpay_order_id) FILTER (WHERE coalesce(bizpay_order_id, '') <> '') AS channel_ids,
           array_agg(DISTINCT import_id ORDER BY import_id) AS import_ids, array_agg(id ORDER BY id) AS line_ids,
           min(business_date) AS business_date, max(period_end) AS period_end,
           count(*) FILTER (WHERE nth > 1) AS extra_lines,
           coalesce(sum(amount + tip) FILTER (WHERE nth > 1), 0) AS extra_amount
    FROM lines
    GROUP BY merchant_id, order_id
), facts AS (
    SELECT k.merchant_id, k.order_id, o.kind, o.biz_type, o.status AS order_status,
           o.amount AS expected_amount, o.tip AS expected_tip, o.unpaid_flagged_at,
           coalesce(p.amount, o.paid_amount) AS received_amount,
           coalesce(p.tip, CASE WHEN o.paid_amount IS NOT NULL THEN o.tip END) AS received_tip,
           coalesce(p.id IS NOT NULL OR o.status IN ('paid', 'partially_refunded', 'refunded'), false) AS paid,
           (o.id IS NOT NULL OR p.id IS NOT NULL OR cb.n IS NOT NULL OR st.amount IS NOT NULL) AS has_evidence,
           coalesce(o.paid_source, p.source) AS paid_source,
           coalesce(cb.n, 0) AS callback_count, cb.min_amount, cb.max_amount, cb.min_tip, cb.max_tip,
           ARRAY(
               SELECT DISTINCT x FROM unnest(
                   coalesce(cb.channel_ids, '{}') || coalesce(q.channel_ids, '{}') || coalesce(st.channel_ids, '{}')
                   || coalesce(ARRAY[p.bizpay_order_id], '{}')
               ) AS x WHERE x IS NOT NULL AND x <> '' ORDER BY x
           ) AS channel_ids,
           coalesce(rf.refunded, 0) AS refunded,
           -- Refunds booked on or before the statement's period end: what its refund column can know of.
           coalesce(rt.refunded, 0) AS refunded_by_statement,
           st.amount AS st_amount, st.tip AS st_tip, st.refund AS st_refund, coalesce(st.fee, 0) AS fee,
           coalesce(st.import_ids, '{}') AS st_import_ids, coalesce(st.line_ids, '{}') AS st_line_ids,
           coalesce(st.extra_lines, 0) AS st_extra_lines,
           coalesce(st.extra_amount, 0) AS st_extra_amount,
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
    LEFT JOIN LATERAL (
        SELECT sum(r.amount) AS refunded FROM refunds r
        WHERE r.order_ref = o.id AND r.status = 'succeeded' AND (r.succeeded_at AT TIME ZONE $3)::date <= st.period_end
    ) rt ON true
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
            WHEN f.st_extra_lines > 0 THEN 'duplicate_settlement'
            WHEN f.st_amount IS NOT NULL AND (f.st_amount <> f.received_amount OR f.st_tip <> f.received_tip)
                THEN 'amount_differs'
            WHEN f.st_amount IS NOT NULL AND f.st_refund <> f.refunded_by_statement THEN 'refund_differs'
            WHEN f.st_amount IS NOT NULL THEN 'matched'
            WHEN f.paid AND EXISTS (
                SELECT 1 FROM statement_imports i
                WHERE f.merchant_id = ANY (i.merchant_ids) AND f.business_date BETWEEN i.period_start AND i.period_end
            ) THEN 'not_in_statement'
        END AS statement_status
    FROM facts f
    WHERE f.has_evidence
), gone AS (
    -- Keys with nothing left to say (say, their only statement line was superseded) leave the ledger.
    DELETE FROM ledger l USING facts f
    WHERE l.merchant_id = f.merchant_id AND l.order_id = f.order_id AND NOT f.has_evidence
)
INSERT INTO ledger AS l (
    merchant_id, order_id, kind, channel, order_status, expected_amount, expected_tip, received_amount,
    received_tip, refunded_amount, fee, channel_payment_ids, callback_count, paid_source, recon_status,
    statement_status, statement_amount, statement_tip, statement_refund, statement_import_ids, statement_line_ids,
    amount_at_risk, statement_amount_at_risk, created_at, paid_at, business_date, reconciled_at
)
SELECT merchant_id, order_id, kind,
       coalesce(biz_type, CASE left(channel_ids[1], 2) WHEN 'AL' THEN 'ALIPAY' WHEN 'WX' THEN 'WECHATPAY'
                                                      WHEN 'UP' THEN 'UNIONPAY' END),
       order_status, expected_amount, expected_tip, received_amount, received_tip, refunded, fee, channel_ids,
       callback_count, paid_source, recon_status, statement_status, st_amount, st_tip, st_refund, st_import_ids,
       st_line_ids,
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
       CASE statement_status
           WHEN 'not_in_statement' THEN coalesce(received_amount, 0) + coalesce(received_tip, 0)
           -- Settled by the gateway while we think the order unpaid; orphan statement lines carry it in amount_at_risk.
           WHEN 'not_in_ledger' THEN CASE WHEN recon_status = 'not_in_ledger' THEN 0 ELSE st_amount + st_tip END
           WHEN 'duplicate_settlement' THEN st_extra_amount
           WHEN 'amount_differs' THEN abs(st_amount + st_tip - received_amount - received_tip)
           WHEN 'refund_differs' THEN abs(st_refund - refunded_by_statement)
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
    statement_tip = EXCLUDED.statement_tip, statement_refund = EXCLUDED.statement_refund,
    statement_import_ids = EXCLUDED.statement_import_ids, statement_line_ids = EXCLUDED.statement_line_ids,
    amount_at_risk = EXCLUDED.amount_at_risk, statement_amount_at_risk = EXCLUDED.statement_amount_at_risk,
    created_at = EXCLUDED.created_at, paid_at = EXCLUDED.paid_at,
    business_date = EXCLUDED.business_date, reconciled_at = now()
