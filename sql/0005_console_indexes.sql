-- Indexes for the finance console's pages, so they stay fast at millions of ledger rows.

-- The ledger page pages through rows in report order (business date, merchant, order id) by keyset;
-- with one merchant chosen it walks that merchant's rows in the same order.
CREATE INDEX ledger_keyset_idx ON ledger (business_date, merchant_id, order_id);
CREATE INDEX ledger_merchant_keyset_idx ON ledger (merchant_id, business_date, order_id);
-- A status filter walks only that status's rows in the same order (a rare status in a long range would
-- otherwise scan most of the range to fill one page).
CREATE INDEX ledger_status_keyset_idx ON ledger (recon_status, business_date, merchant_id, order_id);
-- Finance searches an order id without knowing its merchant.
CREATE INDEX ledger_order_id_idx ON ledger (order_id);
-- The alerts page lists one status at a time, newest first, by keyset on (first_seen_at, id).
CREATE INDEX alerts_status_seen_idx ON alerts (status, first_seen_at DESC, id DESC);
-- An order's evidence page shows every alert for it (alerts_kind_order_key leads with the kind).
CREATE INDEX alerts_merchant_order_idx ON alerts (merchant_id, order_id);
