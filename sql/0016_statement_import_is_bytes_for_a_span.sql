-- A statement import is its file's bytes for one period and its merchants (decision 0050), not the bytes alone.
-- Two quiet days give byte-identical files (a header, no lines) that differ only in the period and merchants
-- they are imported for; with the bytes alone as the key the second day was "already imported" and never
-- covered. The same bytes for the same period and merchants are still one import (the constraint keeps its
-- name: the import's ON CONFLICT names it). Its index leads with file_sha256, so lookups by the bytes stay cheap.
-- The merchants enter the key as a digest: a btree entry holds at most 2704 bytes, which the list of a
-- statement naming a couple of hundred merchants exceeds. Generated, so every writer gets it right; the same
-- digest as ottrecon.reconciliation.statements.merchants_digest (SHA-256 of the ids in code point order,
-- joined by U+001F; "C" orders UTF-8 bytes, which is code point order).
CREATE FUNCTION statement_merchants_sha256(ids text[]) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(coalesce(string_agg(m, chr(31) ORDER BY m COLLATE "C"), ''), 'UTF8')), 'hex')
    FROM unnest(ids) AS m
$$;
ALTER TABLE statement_imports
    ADD COLUMN merchants_sha256 text GENERATED ALWAYS AS (statement_merchants_sha256(merchant_ids)) STORED;
ALTER TABLE statement_imports DROP CONSTRAINT statement_imports_file_key;
ALTER TABLE statement_imports
    ADD CONSTRAINT statement_imports_file_key UNIQUE (file_sha256, period_start, period_end, merchants_sha256);
