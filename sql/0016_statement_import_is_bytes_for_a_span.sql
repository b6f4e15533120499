-- A statement import is its file's bytes for one period and its merchants (decision 0050), not the bytes alone.
-- Two quiet days give byte-identical files (a header, no lines) that differ only in the period and merchants
-- they are imported for; with the bytes alone as the key the second day was "already imported" and never
-- covered. The same bytes for the same period and merchants are still one import (the constraint keeps its
-- name: the import's ON CONFLICT names it). Its index leads with file_sha256, so lookups by the bytes stay cheap.
-- The merchants enter the key as a digest: a btree entry holds at most 2704 bytes, which the list of a
-- statement naming a couple of hundred merchants exceeds. The import writes the same digest
-- (ottrecon.reconciliation.statements.merchants_digest: SHA-256 of the sorted ids joined by U+001F).
ALTER TABLE statement_imports ADD COLUMN merchants_sha256 text;
UPDATE statement_imports
SET merchants_sha256 = encode(sha256(convert_to(array_to_string(merchant_ids, chr(31)), 'UTF8')), 'hex');
ALTER TABLE statement_imports ALTER COLUMN merchants_sha256 SET NOT NULL;
ALTER TABLE statement_imports DROP CONSTRAINT statement_imports_file_key;
ALTER TABLE statement_imports
    ADD CONSTRAINT statement_imports_file_key UNIQUE (file_sha256, period_start, period_end, merchants_sha256);
