-- The reconciler claims the oldest changed keys first (ORDER BY marked_at … FOR UPDATE SKIP
-- LOCKED LIMIT n). Without this index every claim sorted the whole backlog: 554 ms per claim
-- with a million keys queued (a statement import marks a month of ledger rows at once).
CREATE INDEX recon_dirty_marked_idx ON recon_dirty (marked_at);
