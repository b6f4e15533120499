-- A statement import is its file's bytes for one period and its merchants (decision 0050), not the bytes alone.
-- Two quiet days give byte-identical files (a header, no lines) that differ only in the period and merchants
-- they are imported for; with the bytes alone as the key the second day was "already imported" and never
-- covered. The same bytes for the same period and merchants are still one import (the constraint keeps its
-- name: the import's ON CONFLICT names it). Its index leads with file_sha256, so lookups by the bytes stay cheap.
ALTER TABLE statement_imports DROP CONSTRAINT statement_imports_file_key;
ALTER TABLE statement_imports
    ADD CONSTRAINT statement_imports_file_key UNIQUE (file_sha256, period_start, period_end, merchant_ids);
