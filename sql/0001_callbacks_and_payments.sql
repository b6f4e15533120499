-- Verified callbacks, the payments they report, and callbacks we could not verify.
-- Money is bigint cents; OTT Pay's raw time strings are kept beside the parsed ones.

-- The order in which payment states may advance; a payment never moves to a lower rank.
CREATE FUNCTION payment_status_rank(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'paid' THEN 10
        WHEN 'partially_refunded' THEN 20
        WHEN 'refunded' THEN 30
    END::smallint
$$;

CREATE TABLE callbacks (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id   text        NOT NULL,
    md5           text        NOT NULL,  -- upper-cased digest of the plaintext values
    order_id      text        NOT NULL,
    rsp_code      text        NOT NULL,
    envelope      jsonb       NOT NULL,  -- the body as received, data still encrypted: re-verifiable
    data          jsonb       NOT NULL,  -- the verified plaintext, unknown fields included
    signkey_index smallint    NOT NULL,  -- position of the configured key that verified it, never the key
    received_at   timestamptz NOT NULL,  -- when the receiver accepted it (the business clock)
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    -- Only verified callbacks live here, so an unverified copy can never occupy this key.
    CONSTRAINT callbacks_merchant_md5_key UNIQUE (merchant_id, md5)
);
CREATE INDEX callbacks_merchant_order_idx ON callbacks (merchant_id, order_id);

CREATE TABLE payments (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     text        NOT NULL,
    order_id        text        NOT NULL,
    status          text        NOT NULL,
    amount          bigint      NOT NULL,  -- cents, exactly as OTT Pay reported them
    tip             bigint      NOT NULL,
    bizpay_order_id text,                  -- the channel's id (AL… Alipay, WX… WeChat)
    finish_time_raw text,                  -- as received; formats and zones vary
    finish_time     timestamptz,           -- parsed leniently, NULL when unparseable
    source          text        NOT NULL,  -- what first reported the payment: 'callback'
    callback_id     bigint      REFERENCES callbacks (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_merchant_order_key UNIQUE (merchant_id, order_id),
    CONSTRAINT payments_status_check CHECK (payment_status_rank(status) IS NOT NULL),
    CONSTRAINT payments_amount_check CHECK (amount >= 0 AND tip >= 0),
    CONSTRAINT payments_source_check CHECK (source IN ('callback', 'query'))
);
CREATE INDEX payments_status_idx ON payments (status, merchant_id);

CREATE TABLE rejected_callbacks (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id        text        NOT NULL,  -- as claimed by the unverified envelope
    md5                text        NOT NULL,
    envelope           jsonb       NOT NULL,  -- the body as received, for replay
    envelope_sha256    text        NOT NULL,  -- identity of this exact body
    reason             text        NOT NULL,  -- stable code, e.g. digest_mismatch, unknown_merchant
    detail             text        NOT NULL,  -- human-readable, never contains a key
    received_at        timestamptz NOT NULL,  -- first delivery
    last_received_at   timestamptz NOT NULL,
    times_received     integer     NOT NULL DEFAULT 1,
    rejected_at        timestamptz NOT NULL DEFAULT now(),
    last_replayed_at   timestamptz,
    resolved_at        timestamptz,           -- set when a replay verified and recorded it
    resolution         text,                  -- 'recorded' or 'duplicate'
    callback_id        bigint      REFERENCES callbacks (id),
    CONSTRAINT rejected_callbacks_envelope_key UNIQUE (envelope_sha256),
    CONSTRAINT rejected_callbacks_resolution_check CHECK (
        (resolved_at IS NULL AND resolution IS NULL)
        OR (resolved_at IS NOT NULL AND resolution IN ('recorded', 'duplicate'))
    )
);
CREATE INDEX rejected_callbacks_open_idx ON rejected_callbacks (id) WHERE resolved_at IS NULL;
