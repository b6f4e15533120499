-- Issue 13: ledger_date_idx (business_date, merchant_id) leads ledger_keyset_idx (business_date, merchant_id,
-- order_id, sql/0005), which serves every query it served (a date range, with or without a merchant). It
-- only cost an index write per ledger row the reconciler writes, and disk.
-- tests/integration/test_schema_indexes.py keeps any plain index from leading another again.
DROP INDEX IF EXISTS ledger_date_idx;
