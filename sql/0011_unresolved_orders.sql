-- Orders nobody can settle without a person (tester finding 07, decision 0030): the worker stops following
-- an order it cannot resolve, and says when; an order whose gateway status needs review gets an alert.

-- When the worker stopped following an order that had no final answer from the gateway (a PASSIVEPAY still
-- pending past OTTRECON_PASSIVEPAY_GIVE_UP_SECONDS, an ACTIVEPAY past OTTRECON_SWEEP_MAX_AGE_SECONDS, an
-- order in review past either). NULL: still followed, or ended. A late payment still wins (its status only
-- rises) and, the order being flagged, reconciles as paid_after_flagged.
ALTER TABLE orders ADD COLUMN given_up_at timestamptz;

-- The ledger status of an order in review (ottrecon.reconciliation.statuses.ReconStatus.REVIEW): a mismatch,
-- hence an alert of kind 'review'. ledger_recon_status_idx (every status but matched and pending) covers it.
ALTER TABLE ledger DROP CONSTRAINT ledger_recon_status_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_recon_status_check CHECK (recon_status IN (
    'matched', 'amount_mismatch', 'orphan_payment', 'duplicate_payment', 'paid_after_flagged',
    'missing_callback', 'unpaid', 'review', 'pending', 'not_in_ledger'));

-- Orders already in review get their ledger row (and alert) recomputed.
INSERT INTO recon_dirty (merchant_id, order_id) SELECT merchant_id, order_id FROM orders WHERE status = 'review';
