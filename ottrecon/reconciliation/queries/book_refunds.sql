-- Book the succeeded refunds of the given keys on the business date they happened (decision 0022): the
-- daily summary takes refunds from here, so a refund never rewrites the summary of the payment's date.
-- $1 text[] merchant ids, $2 text[] order ids (pairs), $3 business time zone name. Idempotent.
WITH keys AS (
    SELECT DISTINCT merchant_id, order_id FROM unnest($1::text[], $2::text[]) AS k(merchant_id, order_id)
), want AS (
    SELECT o.merchant_id, o.order_id, r.refund_order_id, o.biz_type AS channel, r.amount, r.succeeded_at,
           (r.succeeded_at AT TIME ZONE $3)::date AS business_date
    FROM keys JOIN orders o USING (merchant_id, order_id) JOIN refunds r ON r.order_ref = o.id
    WHERE r.status = 'succeeded'
), stale AS (
    -- Refunds never disappear; this only keeps the table exactly the refunds that exist.
    DELETE FROM ledger_refunds l USING keys k
    WHERE l.merchant_id = k.merchant_id AND l.order_id = k.order_id
      AND NOT EXISTS (SELECT 1 FROM want w WHERE w.merchant_id = l.merchant_id AND w.refund_order_id = l.refund_order_id)
)
INSERT INTO ledger_refunds AS l (merchant_id, order_id, refund_order_id, channel, amount, refunded_at, business_date)
SELECT merchant_id, order_id, refund_order_id, channel, amount, succeeded_at, business_date FROM want
ON CONFLICT ON CONSTRAINT ledger_refunds_pkey DO UPDATE SET
    order_id = EXCLUDED.order_id, channel = EXCLUDED.channel, amount = EXCLUDED.amount,
    refunded_at = EXCLUDED.refunded_at, business_date = EXCLUDED.business_date
