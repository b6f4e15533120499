-- Make the alerts of the given keys match their ledger rows: one alert per (kind, merchant, order)
-- for each mismatch; a cleared mismatch resolves its alert ('evidence'), as does a key whose ledger row
-- is gone; one that comes back after that is reopened and notified again. A manually resolved alert
-- stays resolved.
-- $1 text[] merchant ids, $2 text[] order ids. Returns how many were opened, reopened, resolved.
WITH keys AS (
    SELECT DISTINCT merchant_id, order_id FROM unnest($1::text[], $2::text[]) AS k(merchant_id, order_id)
), rows AS MATERIALIZED (
    -- One primary-key lookup per key; the mismatch filters below then run on these few rows
    -- (left to itself, the planner could scan a whole partial status index once per key).
    SELECT l.* FROM keys JOIN ledger l USING (merchant_id, order_id)
), want AS (
    SELECT DISTINCT ON (kind, merchant_id, order_id) kind, merchant_id, order_id, amount FROM (
        SELECT recon_status AS kind, merchant_id, order_id, amount_at_risk AS amount
        FROM rows
        WHERE recon_status NOT IN ('matched', 'pending')
        UNION ALL
        SELECT CASE statement_status WHEN 'amount_differs' THEN 'statement_amount_differs'
                                     WHEN 'refund_differs' THEN 'statement_refund_differs'
                                     ELSE statement_status END,
               merchant_id, order_id, statement_amount_at_risk
        FROM rows
        WHERE statement_status IN ('not_in_statement', 'not_in_ledger', 'amount_differs', 'duplicate_settlement',
                                   'refund_differs')
    ) mismatches
    ORDER BY kind, merchant_id, order_id, amount DESC
), prev AS (
    SELECT a.id, a.kind, a.merchant_id, a.order_id, a.status, a.resolution
    FROM alerts a JOIN keys USING (merchant_id, order_id)
), upserted AS (
    INSERT INTO alerts AS a (kind, merchant_id, order_id, amount_at_risk)
    SELECT kind, merchant_id, order_id, amount FROM want
    ON CONFLICT ON CONSTRAINT alerts_kind_order_key DO UPDATE SET
        last_seen_at = now(),
        amount_at_risk = EXCLUDED.amount_at_risk,
        status = CASE WHEN a.resolution = 'evidence' THEN 'open' ELSE a.status END,
        resolved_at = CASE WHEN a.resolution = 'evidence' THEN NULL ELSE a.resolved_at END,
        notified_at = CASE WHEN a.resolution = 'evidence' THEN NULL ELSE a.notified_at END,
        next_notify_at = CASE WHEN a.resolution = 'evidence' THEN now() ELSE a.next_notify_at END,
        resolution = CASE WHEN a.resolution = 'evidence' THEN NULL ELSE a.resolution END
    RETURNING a.id
), resolved AS (
    UPDATE alerts a SET status = 'resolved', resolution = 'evidence', resolved_at = now()
    FROM prev
    WHERE a.id = prev.id AND prev.status <> 'resolved'
      AND NOT EXISTS (
          SELECT 1 FROM want w WHERE w.kind = prev.kind AND w.merchant_id = prev.merchant_id AND w.order_id = prev.order_id
      )
    RETURNING a.id
), events AS (
    INSERT INTO alert_events (alert_id, action, actor, note)
    SELECT u.id, CASE WHEN p.id IS NULL THEN 'opened' ELSE 'reopened' END, 'reconciler', ''
    FROM upserted u LEFT JOIN prev p ON p.id = u.id
    WHERE p.id IS NULL OR p.resolution = 'evidence'
    UNION ALL
    SELECT id, 'resolved', 'reconciler', 'new evidence cleared the mismatch' FROM resolved
    RETURNING action
)
SELECT count(*) FILTER (WHERE action = 'opened') AS opened,
       count(*) FILTER (WHERE action = 'reopened') AS reopened,
       count(*) FILTER (WHERE action = 'resolved') AS resolved
FROM events
