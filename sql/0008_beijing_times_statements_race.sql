-- Every cent right (issue 8): OTT Pay's zone-less times are Beijing time (decision 0007), statement
-- lines are superseded rather than skipped and their refunds compared (docs/RECONCILIATION.md), refunds
-- are booked on the date they happened (decision 0022), and the change queue cannot lose a change to a
-- concurrent reconciler (decision 0012). Ends by queueing every key, so the ledger is rebuilt.

-- ---------------------------------------------------------------------------------------------------
-- The SQL twin of ottpay.finish_time.parse_finish_time: same grammar, same answers (a property test,
-- tests/integration/test_finish_time_sql.py, holds the two together). Used here to recompute stored
-- rows; kept so that a later migration can do the same. NULL when raw is not a time.
-- default_zone is applied to zone-less times; pick a zone without daylight saving in the range
-- (Asia/Shanghai since 1992): in an ambiguous autumn hour Python takes the earlier instant, Postgres
-- the later one.
CREATE FUNCTION ottpay_parse_time(raw text, default_zone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    s text;
    m text[];
    z text[];
    rest text;
    sec integer;
    micro integer;
    wall timestamp;
    offset_minutes integer;
BEGIN
    -- Non-ASCII: a UTF-8 character other than ASCII takes more than one byte.
    IF raw IS NULL OR octet_length(raw) <> char_length(raw) THEN
        RETURN NULL;
    END IF;
    s := btrim(raw, E' \t\n\r' || chr(11) || chr(12));
    m := regexp_match(s, '^([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})(.*)$');
    IF m IS NOT NULL THEN
        sec := m[6]::integer;
        micro := 0;
        rest := m[7];
    ELSE
        m := regexp_match(
            s, '^([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?(.*)$');
        IF m IS NULL THEN
            RETURN NULL;
        END IF;
        sec := coalesce(m[6], '0')::integer;
        micro := rpad(coalesce(m[7], ''), 6, '0')::integer;
        rest := m[8];
    END IF;
    IF m[1]::integer < 1 OR m[4]::integer > 23 OR m[5]::integer > 59 OR sec > 59 THEN
        RETURN NULL;
    END IF;
    BEGIN
        wall := make_timestamp(m[1]::integer, m[2]::integer, m[3]::integer, m[4]::integer, m[5]::integer, sec)
                + (micro || ' microseconds')::interval;
    EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format OR data_exception THEN
        RETURN NULL;  -- month 13, February 30, …
    END;
    z := regexp_match(rest, '^ *(?:([+-])([0-9]{2})(?::?([0-9]{2}))?|(Z)|([A-Za-z]{2,5}))?$');
    IF z IS NULL THEN
        RETURN NULL;
    ELSIF z[1] IS NOT NULL THEN
        IF z[2]::integer > 23 OR coalesce(z[3], '0')::integer > 59 THEN
            RETURN NULL;
        END IF;
        offset_minutes := (z[2]::integer * 60 + coalesce(z[3], '0')::integer) * CASE z[1] WHEN '-' THEN -1 ELSE 1 END;
    ELSIF z[4] IS NOT NULL THEN
        offset_minutes := 0;
    ELSIF z[5] IS NOT NULL THEN
        -- ottpay.finish_time.ZONE_ABBREVIATIONS: North American names as the fixed offsets they say.
        offset_minutes := CASE upper(z[5])
            WHEN 'UTC' THEN 0 WHEN 'GMT' THEN 0
            WHEN 'NST' THEN -210 WHEN 'NDT' THEN -150
            WHEN 'AST' THEN -240 WHEN 'ADT' THEN -180
            WHEN 'EST' THEN -300 WHEN 'EDT' THEN -240
            WHEN 'CST' THEN -360 WHEN 'CDT' THEN -300
            WHEN 'MST' THEN -420 WHEN 'MDT' THEN -360
            WHEN 'PST' THEN -480 WHEN 'PDT' THEN -420
            WHEN 'AKST' THEN -540 WHEN 'AKDT' THEN -480
            WHEN 'HST' THEN -600
        END;
        IF offset_minutes IS NULL THEN
            RETURN NULL;  -- an abbreviation we do not guess at
        END IF;
    ELSE
        RETURN wall AT TIME ZONE default_zone;
    END IF;
    RETURN (wall - make_interval(mins => offset_minutes)) AT TIME ZONE 'UTC';
END $$;

-- ---------------------------------------------------------------------------------------------------
-- The change queue becomes a log: every change adds a row with its own id, and the reconciler deletes
-- exactly the rows it read (decision 0012). The old (merchant, order) primary key made a second change
-- to an already queued key add nothing and take no lock, so a reconciler could consume the old row and
-- recompute before the second change committed: the ledger stayed stale for ever.
ALTER TABLE recon_dirty DROP CONSTRAINT recon_dirty_pkey;
ALTER TABLE recon_dirty ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE recon_dirty ADD CONSTRAINT recon_dirty_pkey PRIMARY KEY (id);
-- Claims now take the oldest changes by id (the primary key), not by time, then every change of those keys.
DROP INDEX recon_dirty_marked_idx;
CREATE INDEX recon_dirty_key_idx ON recon_dirty (merchant_id, order_id);

CREATE OR REPLACE FUNCTION mark_dirty_from_new_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id) SELECT DISTINCT merchant_id, order_id FROM new_rows;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mark_dirty_from_changed_orders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT n.merchant_id, n.order_id FROM new_rows n JOIN old_rows o USING (id)
    WHERE (n.status, n.paid_amount, n.unpaid_flagged_at) IS DISTINCT FROM (o.status, o.paid_amount, o.unpaid_flagged_at);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mark_dirty_from_order_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT o.merchant_id, o.order_id FROM new_rows n JOIN orders o ON o.id = n.order_ref;
    RETURN NULL;
END $$;

-- A new statement can change every ledger row of its merchants and dates (not in statement), and every key
-- with an earlier statement line on those dates (superseded), wherever that key's ledger row is dated (an
-- unpaid order's row is dated by its creation). Keys it lists itself are marked by its lines' trigger.
CREATE OR REPLACE FUNCTION mark_dirty_from_statement_imports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT l.merchant_id, l.order_id FROM new_rows i
    JOIN ledger l ON l.merchant_id = ANY (i.merchant_ids) AND l.business_date BETWEEN i.period_start AND i.period_end
    UNION
    SELECT s.merchant_id, s.order_id FROM new_rows i
    JOIN statement_lines s ON s.merchant_id = ANY (i.merchant_ids) AND s.business_date BETWEEN i.period_start AND i.period_end;
    RETURN NULL;
END $$;

-- ---------------------------------------------------------------------------------------------------
-- When a refund happened: the gateway's refund_time (Beijing time) when it answered one, else when we
-- learned it succeeded. Refunds are booked on this instant's business date (decision 0022).
ALTER TABLE refunds ADD COLUMN succeeded_at timestamptz;
UPDATE refunds r SET succeeded_at = coalesce(
    (SELECT ottpay_parse_time(a.data->>'refund_time', 'Asia/Shanghai') FROM submission_attempts a
     WHERE a.refund_ref = r.id AND a.outcome = 'success' AND a.data ? 'refund_time' ORDER BY a.id LIMIT 1),
    r.updated_at)
WHERE r.status = 'succeeded';
ALTER TABLE refunds ADD CONSTRAINT refunds_succeeded_at_check CHECK ((status = 'succeeded') = (succeeded_at IS NOT NULL));

-- ---------------------------------------------------------------------------------------------------
-- Statement lines: every line of every import is kept; a newer statement supersedes an older one's line
-- instead of being skipped as "already known" (docs/RECONCILIATION.md, "Which statement line counts").
-- line_sha256 stays as a content hash (the import report counts repeats with it), no longer unique.
ALTER TABLE statement_lines DROP CONSTRAINT statement_lines_line_key;
CREATE INDEX statement_lines_sha_idx ON statement_lines (line_sha256);
CREATE INDEX statement_lines_import_idx ON statement_lines (import_id);
-- A new import queues the keys of earlier lines on its merchants' dates (they may be superseded now).
CREATE INDEX statement_lines_date_idx ON statement_lines (merchant_id, business_date);

-- The ledger keeps what the current statement lines say and which imports they came from.
ALTER TABLE ledger
    ADD COLUMN statement_tip        bigint,
    ADD COLUMN statement_refund     bigint,
    ADD COLUMN statement_import_ids bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN statement_line_ids   bigint[] NOT NULL DEFAULT '{}';  -- the current lines (others: superseded)
DROP INDEX ledger_statement_status_idx;
CREATE INDEX ledger_statement_status_idx ON ledger (statement_status)
    WHERE statement_status IN ('not_in_statement', 'not_in_ledger', 'amount_differs', 'duplicate_settlement',
                               'refund_differs');

-- One row per succeeded refund, dated by when it happened: the daily summary books refunds here, on the
-- refund's business date, never on the (possibly closed) date of the payment it refunds.
CREATE TABLE ledger_refunds (
    merchant_id      text        NOT NULL,
    order_id         text        NOT NULL,  -- the refunded payment's order
    refund_order_id  text        NOT NULL,
    channel          text,
    amount           bigint      NOT NULL,
    refunded_at      timestamptz NOT NULL,
    business_date    date        NOT NULL,
    CONSTRAINT ledger_refunds_pkey PRIMARY KEY (merchant_id, refund_order_id)
);
CREATE INDEX ledger_refunds_date_idx ON ledger_refunds (business_date, merchant_id);
CREATE INDEX ledger_refunds_order_idx ON ledger_refunds (merchant_id, order_id);

-- ---------------------------------------------------------------------------------------------------
-- Recompute the parsed times stored under the old reading (zone-less = Toronto, abbreviations ignored).
-- Callbacks' finish_time and gateway answers' trade_time: Beijing time. The update marks the keys.
UPDATE payments SET finish_time = ottpay_parse_time(finish_time_raw, 'Asia/Shanghai'), updated_at = now()
WHERE finish_time_raw IS NOT NULL
  AND finish_time IS DISTINCT FROM ottpay_parse_time(finish_time_raw, 'Asia/Shanghai');

-- Statement lines were read in the business time zone, which is still right for zone-less lines; only a
-- line ending in a recognised abbreviation reads differently now. Its business date moves by the same
-- amount as its instant: the business zone's offset then (wall time − old instant) applied to the new
-- instant (exact unless the zone changes offset within those hours, which no North American zone does
-- near midnight).
WITH moved AS (
    SELECT s.id, s.txn_time AS old_time, ottpay_parse_time(s.txn_time_raw, 'UTC') AS new_time,
           ottpay_parse_time(regexp_replace(s.txn_time_raw, ' *[A-Za-z]{2,5}[[:space:]]*$', ''), 'UTC') AS wall
    FROM statement_lines s
    WHERE s.txn_time IS NOT NULL AND s.txn_time_raw ~ '[0-9] *[A-Za-z]{2,5}[[:space:]]*$'
)
UPDATE statement_lines s
SET txn_time = moved.new_time,
    business_date = ((moved.new_time AT TIME ZONE 'UTC') + (moved.wall - moved.old_time))::date
FROM moved
WHERE s.id = moved.id AND moved.new_time IS NOT NULL AND moved.new_time <> moved.old_time;

-- The rules changed (statement supersession, refunds, duplicates, business dates): rebuild every row.
INSERT INTO recon_dirty (merchant_id, order_id)
SELECT merchant_id, order_id FROM orders
UNION SELECT merchant_id, order_id FROM payments
UNION SELECT merchant_id, order_id FROM callbacks
UNION SELECT merchant_id, order_id FROM statement_lines
UNION SELECT merchant_id, order_id FROM ledger;
