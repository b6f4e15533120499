-- Issue 13: a key already waiting in the change queue is not queued again (decision 0045).
-- Every change used to add a row, so a key was queued once per statement that touched it: a callback's own
-- write queued its key three times (callback, payment, order), and each key of the reconcile benchmark
-- 4.5 times. The reconciler's claim locked and deleted every one of them, a fifth of its time.
--
-- A change now leaves out a key that has a queued row it can lock FOR KEY SHARE, SKIP LOCKED. Why nothing
-- can be lost (the race of decision 0012 stays closed):
--   * the row is unlocked: this transaction now holds it until it ends, and a claim (FOR UPDATE SKIP LOCKED)
--     passes it by meanwhile, so the row is claimed only after this transaction has committed, by a claim
--     whose statements see this change;
--   * a reconciler has claimed the row (it holds it FOR UPDATE, or deleted it): SKIP LOCKED, or READ
--     COMMITTED's recheck of a deleted row, leaves it out, and the key is queued as before;
--   * the row is this transaction's own (an earlier statement or trigger queued the key): it is claimed
--     only after this commit.
-- SKIP LOCKED: a change never waits for a reconciler (no new lock wait, no deadlock). KEY SHARE locks do not
-- conflict with each other, so concurrent changes of one key share the row.
-- Same rows as sql/0013's functions otherwise, in key order (decision 0038).

CREATE OR REPLACE FUNCTION key_is_queued(merchant text, ord text) RETURNS boolean LANGUAGE sql VOLATILE AS $$
    SELECT EXISTS (
        SELECT 1 FROM recon_dirty d WHERE d.merchant_id = merchant AND d.order_id = ord
        FOR KEY SHARE SKIP LOCKED
    )
$$;

CREATE OR REPLACE FUNCTION mark_dirty_from_new_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT k.merchant_id, k.order_id FROM (SELECT DISTINCT merchant_id, order_id FROM new_rows) k
    WHERE NOT key_is_queued(k.merchant_id, k.order_id)
    ORDER BY k.merchant_id, k.order_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mark_dirty_from_changed_orders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT k.merchant_id, k.order_id FROM (
        SELECT DISTINCT n.merchant_id, n.order_id FROM new_rows n JOIN old_rows o USING (id)
        WHERE (n.status, n.paid_amount, n.unpaid_flagged_at) IS DISTINCT FROM (o.status, o.paid_amount, o.unpaid_flagged_at)
    ) k
    WHERE NOT key_is_queued(k.merchant_id, k.order_id)
    ORDER BY k.merchant_id, k.order_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mark_dirty_from_order_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT k.merchant_id, k.order_id FROM (
        SELECT DISTINCT o.merchant_id, o.order_id FROM new_rows n JOIN orders o ON o.id = n.order_ref
    ) k
    WHERE NOT key_is_queued(k.merchant_id, k.order_id)
    ORDER BY k.merchant_id, k.order_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mark_dirty_from_statement_imports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT k.merchant_id, k.order_id FROM (
        SELECT l.merchant_id, l.order_id FROM new_rows i
        JOIN ledger l ON l.merchant_id = ANY (i.merchant_ids) AND l.business_date BETWEEN i.period_start AND i.period_end
        UNION
        SELECT s.merchant_id, s.order_id FROM new_rows i
        JOIN statement_lines s ON s.merchant_id = ANY (i.merchant_ids) AND s.business_date BETWEEN i.period_start AND i.period_end
    ) k
    WHERE NOT key_is_queued(k.merchant_id, k.order_id)
    ORDER BY k.merchant_id, k.order_id;
    RETURN NULL;
END $$;
