-- Reconciliation: the settlement statement, the reconciled ledger (one row per order or
-- orphan payment), the queue of keys whose evidence changed, and alert delivery and audit.

-- What STATUS_QUERY / PASSIVEPAY answered (verified gateway data: channel id, amounts), as evidence.
ALTER TABLE submission_attempts ADD COLUMN data jsonb;

-- One imported statement file; a file imported twice is recognised by its hash.
CREATE TABLE statement_imports (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_name     text        NOT NULL,
    file_sha256   text        NOT NULL,
    period_start  date        NOT NULL,  -- business dates the statement covers (inclusive)
    period_end    date        NOT NULL,
    merchant_ids  text[]      NOT NULL,  -- merchants it covers
    line_count    integer     NOT NULL,
    imported_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT statement_imports_file_key UNIQUE (file_sha256),
    CONSTRAINT statement_imports_period_check CHECK (period_start <= period_end)
);

-- One transaction line of OTT Pay's settlement statement. Amounts are integer cents.
CREATE TABLE statement_lines (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    import_id       bigint      NOT NULL REFERENCES statement_imports (id),
    line_no         integer     NOT NULL,
    merchant_id     text        NOT NULL,
    order_id        text        NOT NULL,
    bizpay_order_id text,
    amount          bigint      NOT NULL,
    tip             bigint      NOT NULL DEFAULT 0,
    fee             bigint      NOT NULL DEFAULT 0,
    refund          bigint      NOT NULL DEFAULT 0,
    txn_time_raw    text,
    txn_time        timestamptz,
    business_date   date        NOT NULL,
    line_sha256     text        NOT NULL,  -- the line's content: the same line in two files is stored once
    CONSTRAINT statement_lines_line_key UNIQUE (line_sha256)
);
CREATE INDEX statement_lines_order_idx ON statement_lines (merchant_id, order_id);

-- The reconciled ledger: one row per (merchant, order) known from any source.
CREATE TABLE ledger (
    merchant_id          text        NOT NULL,
    order_id             text        NOT NULL,
    kind                 text,                 -- ACTIVEPAY / PASSIVEPAY; NULL when we never created the order
    channel              text,                 -- ALIPAY / WECHATPAY / UNIONPAY (from the order or the channel id)
    order_status         text,
    expected_amount      bigint,               -- what we asked for (NULL: not our order)
    expected_tip         bigint,
    received_amount      bigint,               -- what the gateway reported paid (NULL: nothing)
    received_tip         bigint,
    refunded_amount      bigint      NOT NULL DEFAULT 0,
    fee                  bigint      NOT NULL DEFAULT 0,  -- from the statement
    channel_payment_ids  text[]      NOT NULL DEFAULT '{}',
    callback_count       integer     NOT NULL DEFAULT 0,
    paid_source          text,
    recon_status         text        NOT NULL,
    statement_status     text,                 -- matched, not_in_statement, not_in_ledger, amount_differs; NULL: not covered
    statement_amount     bigint,
    amount_at_risk       bigint      NOT NULL DEFAULT 0,  -- cents at stake in the recon_status mismatch
    statement_amount_at_risk bigint  NOT NULL DEFAULT 0,  -- cents at stake in the statement difference
    created_at           timestamptz,          -- the order's creation (or the first evidence)
    paid_at              timestamptz,
    business_date        date        NOT NULL, -- in the business time zone, for daily reports
    reconciled_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_pkey PRIMARY KEY (merchant_id, order_id),
    CONSTRAINT ledger_recon_status_check CHECK (recon_status IN (
        'matched', 'amount_mismatch', 'orphan_payment', 'duplicate_payment', 'paid_after_flagged',
        'missing_callback', 'unpaid', 'pending', 'not_in_ledger'))
);
CREATE INDEX ledger_date_idx ON ledger (business_date, merchant_id);
CREATE INDEX ledger_recon_status_idx ON ledger (recon_status) WHERE recon_status NOT IN ('matched', 'pending');
CREATE INDEX ledger_statement_status_idx ON ledger (statement_status)
    WHERE statement_status IN ('not_in_statement', 'not_in_ledger', 'amount_differs');

-- Keys whose evidence changed since they were last reconciled (filled by triggers below).
CREATE TABLE recon_dirty (
    merchant_id text        NOT NULL,
    order_id    text        NOT NULL,
    marked_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recon_dirty_pkey PRIMARY KEY (merchant_id, order_id)
);

-- Statement-level triggers: one INSERT … SELECT per statement, not per row, so batch writes
-- stay batch writes. Updates mark a key only when a reconciled fact changed (not on leases).
CREATE FUNCTION mark_dirty_from_new_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT merchant_id, order_id FROM new_rows
    ON CONFLICT ON CONSTRAINT recon_dirty_pkey DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION mark_dirty_from_changed_orders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT n.merchant_id, n.order_id FROM new_rows n JOIN old_rows o USING (id)
    WHERE (n.status, n.paid_amount, n.unpaid_flagged_at) IS DISTINCT FROM (o.status, o.paid_amount, o.unpaid_flagged_at)
    ON CONFLICT ON CONSTRAINT recon_dirty_pkey DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION mark_dirty_from_order_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT o.merchant_id, o.order_id FROM new_rows n JOIN orders o ON o.id = n.order_ref
    ON CONFLICT ON CONSTRAINT recon_dirty_pkey DO NOTHING;
    RETURN NULL;
END $$;

-- A new statement can make every ledger row of its merchants and dates "not in statement".
CREATE FUNCTION mark_dirty_from_statement_imports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recon_dirty (merchant_id, order_id)
    SELECT DISTINCT l.merchant_id, l.order_id FROM new_rows i
    JOIN ledger l ON l.merchant_id = ANY (i.merchant_ids) AND l.business_date BETWEEN i.period_start AND i.period_end
    ON CONFLICT ON CONSTRAINT recon_dirty_pkey DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER statement_imports_mark_dirty AFTER INSERT ON statement_imports
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_statement_imports();
CREATE TRIGGER callbacks_mark_dirty AFTER INSERT ON callbacks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_new_rows();
CREATE TRIGGER payments_insert_mark_dirty AFTER INSERT ON payments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_new_rows();
CREATE TRIGGER payments_update_mark_dirty AFTER UPDATE ON payments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_new_rows();
CREATE TRIGGER orders_insert_mark_dirty AFTER INSERT ON orders
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_new_rows();
CREATE TRIGGER orders_update_mark_dirty AFTER UPDATE ON orders
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_changed_orders();
CREATE TRIGGER statement_lines_mark_dirty AFTER INSERT ON statement_lines
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_new_rows();
CREATE TRIGGER submission_attempts_mark_dirty AFTER INSERT ON submission_attempts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_order_children();
CREATE TRIGGER refunds_insert_mark_dirty AFTER INSERT ON refunds
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_order_children();
CREATE TRIGGER refunds_update_mark_dirty AFTER UPDATE ON refunds
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_dirty_from_order_children();

-- Alerts: one per (kind, merchant, order); reopened if the mismatch comes back after resolving.
ALTER TABLE alerts
    ADD COLUMN resolved_at     timestamptz,
    ADD COLUMN resolution      text,             -- 'evidence' (reconciliation cleared it) or 'manual'
    ADD COLUMN notified_at     timestamptz,      -- delivered to the alert endpoint (or logged, if none)
    ADD COLUMN notify_attempts integer     NOT NULL DEFAULT 0,
    ADD COLUMN next_notify_at  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN notify_error    text;
CREATE INDEX alerts_undelivered_idx ON alerts (next_notify_at) WHERE notified_at IS NULL;
CREATE INDEX alerts_open_idx ON alerts (status, first_seen_at) WHERE status <> 'resolved';

-- Who did what to an alert, when and why (acknowledge, resolve, reopen).
CREATE TABLE alert_events (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint      NOT NULL REFERENCES alerts (id),
    action    text        NOT NULL,
    actor     text        NOT NULL,  -- a user, or 'reconciler'
    note      text        NOT NULL DEFAULT '',
    at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_events_action_check CHECK (action IN ('opened', 'acknowledged', 'resolved', 'reopened'))
);
CREATE INDEX alert_events_alert_idx ON alert_events (alert_id, id);
