-- Close the books (issue 14, decision 0031): finance closes business dates; a closed date's summary never
-- changes again. At close, every order's contribution to the date's summary is booked as a 'close' entry;
-- afterwards the reconciler books what changes as 'adjustment' entries on the first open business date
-- (docs/RECONCILIATION.md, "Closing the books").

-- One close of one business date, for one merchant or (merchant_id NULL) for every merchant. Never deleted:
-- a reopen stamps who, when and why on the row, and a later close is a new row, so the table is the audit.
CREATE TABLE book_closes (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_date   date        NOT NULL,
    merchant_id     text,                  -- NULL: every merchant, including ones first seen later
    note            text        NOT NULL,
    closed_by       text        NOT NULL,
    closed_at       timestamptz NOT NULL DEFAULT now(),
    forced          boolean     NOT NULL DEFAULT false,  -- closed while mismatches were unacknowledged
    force_reason    text,
    open_mismatches integer     NOT NULL DEFAULT 0,      -- unacknowledged mismatches when it was closed
    reopened_by     text,
    reopened_at     timestamptz,
    reopen_reason   text,
    CONSTRAINT book_closes_force_check CHECK (NOT forced OR force_reason IS NOT NULL),
    CONSTRAINT book_closes_reopen_check CHECK ((reopened_at IS NULL) = (reopened_by IS NULL)
                                               AND (reopened_at IS NULL) = (reopen_reason IS NULL))
);
-- At most one close in force per date and merchant scope (the code also refuses a merchant's close inside
-- a close of every merchant, and the reverse).
CREATE UNIQUE INDEX book_closes_active_key ON book_closes (business_date, coalesce(merchant_id, ''))
    WHERE reopened_at IS NULL;

-- The books: what each order contributed to the summary of a closed date (corrects_date), per channel.
-- kind 'close': booked by the close, on the closed date itself; 'adjustment': booked later by the
-- reconciler on booked_on, the first open business date after the closed one. Append-only: a row is never
-- deleted or changed, except that a reopen of its corrected date marks it folded (once), after which it
-- counts nowhere (the reopened date shows its figures live again).
CREATE TABLE book_entries (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id        text        NOT NULL,
    order_id           text        NOT NULL,
    entry_no           integer     NOT NULL,  -- 1, 2, 3… per order: two writers of one order cannot both book
    kind               text        NOT NULL,
    reason             text,                  -- adjustments only
    close_id           bigint      REFERENCES book_closes (id),  -- the close that booked it (kind 'close')
    corrects_date      date        NOT NULL,
    booked_on          date        NOT NULL,
    channel            text,
    payments           integer     NOT NULL DEFAULT 0,
    gross              bigint      NOT NULL DEFAULT 0,
    tips               bigint      NOT NULL DEFAULT 0,
    refunds            bigint      NOT NULL DEFAULT 0,
    fees               bigint      NOT NULL DEFAULT 0,
    mismatches         integer     NOT NULL DEFAULT 0,
    amount_at_risk     bigint      NOT NULL DEFAULT 0,
    unpaid             integer     NOT NULL DEFAULT 0,
    -- What the order's ledger row showed when this was booked, to name the reason of the next adjustment.
    seen_statement_line_ids bigint[] NOT NULL DEFAULT '{}',
    booked_at          timestamptz NOT NULL DEFAULT now(),
    folded_by          bigint      REFERENCES book_closes (id),  -- the close whose reopen folded it
    CONSTRAINT book_entries_order_entry_key UNIQUE (merchant_id, order_id, entry_no),
    CONSTRAINT book_entries_kind_check CHECK (kind IN ('close', 'adjustment')),
    CONSTRAINT book_entries_reason_check CHECK (
        (kind = 'close' AND reason IS NULL AND close_id IS NOT NULL AND booked_on = corrects_date)
        OR (kind = 'adjustment' AND booked_on > corrects_date
            AND reason IN ('late_callback', 'late_refund', 'statement_correction')))
);
-- The summary of a date reads its entries by booked_on (frozen rows and adjustments shown on it); the
-- reconciler and a reopen read an order's or a date's entries by what they correct.
CREATE INDEX book_entries_booked_on_idx ON book_entries (booked_on, merchant_id) WHERE folded_by IS NULL;
CREATE INDEX book_entries_corrects_idx ON book_entries (corrects_date, merchant_id) WHERE folded_by IS NULL;
