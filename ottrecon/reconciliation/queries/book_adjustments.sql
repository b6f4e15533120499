-- Keep closed dates' books true for the given keys (decision 0031): for every closed (date, merchant) a key
-- contributes to now or was booked on, book the difference between what it contributes now (its ledger
-- row and refund bookings, after the ledger and refund steps of this batch) and what is booked for it
-- there (its close entries and earlier adjustments, not folded) as an adjustment entry on the first open
-- business date after the closed one, per channel. Idempotent: run again, every difference is 0.
-- Runs under the key locks and the books lock held shared (reconcile.py): no close can slip in between
-- reading the closes and booking, and no other reconciler books the same key at once (and should one,
-- book_entries_order_entry_key refuses the second's entry numbers).
-- $1 text[] merchant ids, $2 text[] order ids (pairs). The CTE now_contributes is closing.CONTRIBUTIONS.
WITH keys AS (
    SELECT DISTINCT merchant_id, order_id FROM unnest($1::text[], $2::text[]) AS k(merchant_id, order_id)
), now_contributes AS (
    {contributions}
), booked AS (
    SELECT e.merchant_id, e.order_id, e.corrects_date AS day, e.channel,
           sum(e.payments)::int4 AS payments, sum(e.gross)::int8 AS gross, sum(e.tips)::int8 AS tips,
           sum(e.refunds)::int8 AS refunds, sum(e.fees)::int8 AS fees, sum(e.mismatches)::int4 AS mismatches,
           sum(e.amount_at_risk)::int8 AS amount_at_risk, sum(e.unpaid)::int4 AS unpaid
    FROM book_entries e JOIN keys USING (merchant_id, order_id)
    WHERE e.folded_by IS NULL
    GROUP BY e.merchant_id, e.order_id, e.corrects_date, e.channel
), delta AS (
    SELECT merchant_id, order_id, day, channel,
           coalesce(n.payments, 0) - coalesce(b.payments, 0) AS payments,
           coalesce(n.gross, 0) - coalesce(b.gross, 0) AS gross,
           coalesce(n.tips, 0) - coalesce(b.tips, 0) AS tips,
           coalesce(n.refunds, 0) - coalesce(b.refunds, 0) AS refunds,
           coalesce(n.fees, 0) - coalesce(b.fees, 0) AS fees,
           coalesce(n.mismatches, 0) - coalesce(b.mismatches, 0) AS mismatches,
           coalesce(n.amount_at_risk, 0) - coalesce(b.amount_at_risk, 0) AS amount_at_risk,
           coalesce(n.unpaid, 0) - coalesce(b.unpaid, 0) AS unpaid
    FROM now_contributes n FULL JOIN booked b USING (merchant_id, order_id, day, channel)
), changed AS (
    SELECT d.* FROM delta d
    WHERE (d.payments, d.gross, d.tips, d.refunds, d.fees, d.mismatches, d.amount_at_risk, d.unpaid)
          <> (0, 0, 0, 0, 0, 0, 0, 0)
      AND EXISTS (SELECT 1 FROM book_closes c
                  WHERE c.reopened_at IS NULL AND c.business_date = d.day
                    AND (c.merchant_id IS NULL OR c.merchant_id = d.merchant_id))
), last_entry AS (
    -- What the key's ledger row showed at its latest booking: a change of its statement lines since then
    -- names the adjustment a statement correction.
    SELECT DISTINCT ON (e.merchant_id, e.order_id) e.merchant_id, e.order_id, e.entry_no, e.seen_statement_line_ids
    FROM book_entries e JOIN (SELECT DISTINCT merchant_id, order_id FROM changed) k USING (merchant_id, order_id)
    ORDER BY e.merchant_id, e.order_id, e.entry_no DESC
)
INSERT INTO book_entries (merchant_id, order_id, entry_no, kind, reason, corrects_date, booked_on, channel,
                          payments, gross, tips, refunds, fees, mismatches, amount_at_risk, unpaid,
                          seen_statement_line_ids)
SELECT d.merchant_id, d.order_id,
       coalesce(le.entry_no, 0)
           + row_number() OVER (PARTITION BY d.merchant_id, d.order_id ORDER BY d.day, d.channel NULLS LAST)::int4,
       'adjustment',
       CASE WHEN d.refunds <> 0 THEN 'late_refund'
            -- An order new to the books saw no lines before.
            WHEN coalesce(l.statement_line_ids, '{}') <> coalesce(le.seen_statement_line_ids, '{}')
                THEN 'statement_correction'
            ELSE 'late_callback' END,
       d.day,
       -- The first open business date after the closed one: the day after it, or the day after one of the
       -- closed dates that follow it, whichever is earliest and not closed for this merchant.
       (SELECT min(x.day) FROM (
            SELECT d.day + 1 AS day
            UNION
            SELECT c.business_date + 1 FROM book_closes c
            WHERE c.reopened_at IS NULL AND c.business_date > d.day
              AND (c.merchant_id IS NULL OR c.merchant_id = d.merchant_id)
        ) x
        WHERE NOT EXISTS (SELECT 1 FROM book_closes c
                          WHERE c.reopened_at IS NULL AND c.business_date = x.day
                            AND (c.merchant_id IS NULL OR c.merchant_id = d.merchant_id))),
       d.channel, d.payments, d.gross, d.tips, d.refunds, d.fees, d.mismatches, d.amount_at_risk, d.unpaid,
       coalesce(l.statement_line_ids, '{}')
FROM changed d
LEFT JOIN last_entry le USING (merchant_id, order_id)
LEFT JOIN ledger l USING (merchant_id, order_id)
