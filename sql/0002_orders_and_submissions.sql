-- Orders this system creates (PASSIVEPAY / ACTIVEPAY), every attempt sent to OTT Pay for
-- them, refunds, and alerts (the unpaid-order flag; reconciliation adds more kinds later).

-- Order states may only rise in rank; equal rank never replaces (first evidence wins).
CREATE FUNCTION order_status_rank(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'pending' THEN 0             -- stored; not sent yet, or its outcome is unknown
        WHEN 'awaiting_payment' THEN 10   -- ACTIVEPAY accepted: the customer has the QR code
        WHEN 'unpaid' THEN 20             -- flagged: still unpaid past the deadline (may still be paid)
        WHEN 'review' THEN 20             -- the gateway reported a status we do not know
        WHEN 'declined' THEN 30           -- final: the customer's wallet said no
        WHEN 'failed' THEN 30             -- final: the gateway refused the request (permanent error)
        WHEN 'closed' THEN 30             -- final: the gateway closed the order unpaid
        WHEN 'expired' THEN 30            -- final: PASSIVEPAY never reached the gateway before the code expired
        WHEN 'paid' THEN 40               -- money moved: beats every unpaid state
        WHEN 'partially_refunded' THEN 50
        WHEN 'refunded' THEN 60
    END::smallint
$$;

CREATE TABLE orders (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id         text        NOT NULL,
    order_id            text        NOT NULL,  -- ours, sent to OTT Pay: [A-Za-z0-9], 20 chars
    kind                text        NOT NULL,
    biz_type            text        NOT NULL,
    amount              bigint      NOT NULL,  -- cents
    tip                 bigint      NOT NULL DEFAULT 0,
    sale_num            text,
    auth_code           text,                  -- PASSIVEPAY: the scanned wallet code, needed to re-send
    idempotency_key     text        NOT NULL,
    request_sha256      text        NOT NULL,  -- the request a key was first used with
    status              text        NOT NULL DEFAULT 'pending',
    status_reason       text,
    code_url            text,                  -- ACTIVEPAY: what the QR code encodes
    paid_amount         bigint,
    paid_source         text,                  -- what proved the payment: response, callback, query
    paid_at             timestamptz,
    -- Submission scheduling: the order is looked at again at next_check_at (NULL: nothing due).
    next_check_at       timestamptz,
    check_attempts      integer     NOT NULL DEFAULT 0,
    lease_until         timestamptz,           -- a worker is handling it until then
    unpaid_flagged_at   timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_merchant_order_key UNIQUE (merchant_id, order_id),
    CONSTRAINT orders_idempotency_key UNIQUE (merchant_id, idempotency_key),
    CONSTRAINT orders_kind_check CHECK (kind IN ('PASSIVEPAY', 'ACTIVEPAY')),
    CONSTRAINT orders_biz_type_check CHECK (biz_type IN ('ALIPAY', 'WECHATPAY', 'UNIONPAY')),
    CONSTRAINT orders_amount_check CHECK (amount > 0 AND tip >= 0),
    CONSTRAINT orders_status_check CHECK (order_status_rank(status) IS NOT NULL),
    CONSTRAINT orders_auth_code_check CHECK ((kind = 'PASSIVEPAY') = (auth_code IS NOT NULL))
);
CREATE INDEX orders_due_idx ON orders (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX orders_status_idx ON orders (status, created_at);
-- The API addresses orders by their (generated, globally unique) OTT Pay order id.
CREATE UNIQUE INDEX orders_order_id_key ON orders (order_id);

CREATE TABLE submission_attempts (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_ref     bigint      NOT NULL REFERENCES orders (id),
    action        text        NOT NULL,  -- PASSIVEPAY, ACTIVEPAY, STATUS_QUERY, REFUND
    outcome       text        NOT NULL,  -- success, declined, permanent, unknown
    rsp_code      text,
    rsp_msg       text,
    error         text,                  -- transport or verification problem, never a secret
    sent          boolean     NOT NULL,  -- false only when the request certainly never left
    gateway_status text,                 -- STATUS_QUERY: the order_status it reported
    not_found     boolean     NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL,
    latency_ms    integer     NOT NULL,
    refund_ref    bigint
);
CREATE INDEX submission_attempts_order_idx ON submission_attempts (order_ref, id);

CREATE TABLE refunds (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_ref       bigint      NOT NULL REFERENCES orders (id),
    merchant_id     text        NOT NULL,
    refund_order_id text        NOT NULL,  -- the refund's own OTT Pay order id: a re-send can never refund twice
    amount          bigint      NOT NULL,
    idempotency_key text        NOT NULL,
    request_sha256  text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',  -- pending, succeeded, failed
    status_reason   text,
    next_check_at   timestamptz,
    check_attempts  integer     NOT NULL DEFAULT 0,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_merchant_refund_order_key UNIQUE (merchant_id, refund_order_id),
    CONSTRAINT refunds_idempotency_key UNIQUE (order_ref, idempotency_key),
    CONSTRAINT refunds_amount_check CHECK (amount > 0),
    CONSTRAINT refunds_status_check CHECK (status IN ('pending', 'succeeded', 'failed'))
);
CREATE INDEX refunds_due_idx ON refunds (next_check_at) WHERE next_check_at IS NOT NULL;
ALTER TABLE submission_attempts
    ADD CONSTRAINT submission_attempts_refund_fkey FOREIGN KEY (refund_ref) REFERENCES refunds (id);

CREATE TABLE alerts (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text        NOT NULL,  -- e.g. unpaid_order
    merchant_id    text        NOT NULL,
    order_id       text        NOT NULL,
    amount_at_risk bigint      NOT NULL DEFAULT 0,
    details        jsonb       NOT NULL DEFAULT '{}',
    status         text        NOT NULL DEFAULT 'open',
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alerts_kind_order_key UNIQUE (kind, merchant_id, order_id),
    CONSTRAINT alerts_status_check CHECK (status IN ('open', 'acknowledged', 'resolved'))
);

-- Payments can now also be proven by a PASSIVEPAY response or a status query.
ALTER TABLE payments DROP CONSTRAINT payments_source_check;
ALTER TABLE payments ADD CONSTRAINT payments_source_check CHECK (source IN ('callback', 'query', 'response'));
