-- Issue 13: a statement that changes many keys queues them in key order (decision 0038).
-- The reconciler claims the oldest changes first (by id). The triggers used to append a bulk write's keys in
-- the order of a hash (DISTINCT, UNION), so each batch of a large backlog (a statement import, a rebuild, a
-- bulk load) was 2,000 keys spread over the whole key space: every lookup of their evidence read another
-- page, and at 1M orders most missed the buffer cache (the ledger statement took 2.7 s a batch instead of
-- 0.8 s). In key order, a batch is a run of neighbouring keys and the claim stays oldest-first.
-- Same rows as sql/0008's functions, only ordered.

CREATE OR REPLACE FUNCTION mark_dirty_from_new_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT merchant_id, order_id FROM new_rows ORDER BY merchant_id, order_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mark_dirty_from_changed_orders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT n.merchant_id, n.order_id FROM new_rows n JOIN old_rows o USING (id)
    WHERE (n.status, n.paid_amount, n.unpaid_flagged_at) IS DISTINCT FROM (o.status, o.paid_amount, o.unpaid_flagged_at)
    ORDER BY n.merchant_id, n.order_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mark_dirty_from_order_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT o.merchant_id, o.order_id FROM new_rows n JOIN orders o ON o.id = n.order_ref
    ORDER BY o.merchant_id, o.order_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mark_dirty_from_statement_imports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT l.merchant_id, l.order_id FROM new_rows i
    JOIN ledger l ON l.merchant_id = ANY (i.merchant_ids) AND l.business_date BETWEEN i.period_start AND i.period_end
    UNION
    SELECT s.merchant_id, s.order_id FROM new_rows i
    JOIN statement_lines s ON s.merchant_id = ANY (i.merchant_ids) AND s.business_date BETWEEN i.period_start AND i.period_end
    ORDER BY 1, 2;
    RETURN NULL;
END $$;
