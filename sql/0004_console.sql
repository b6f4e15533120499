-- The finance console: login sessions, which merchants the workers hold keys for (so the
-- console, which holds none, knows which rejected callbacks a replay can now verify), and
-- the audit trail of replays.

CREATE TABLE console_sessions (
    token_sha256  text        PRIMARY KEY,  -- the cookie holds the token; only its hash is stored
    username      text        NOT NULL,
    role          text        NOT NULL,
    csrf_token    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    CONSTRAINT console_sessions_role_check CHECK (role IN ('finance', 'viewer'))
);
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at);

-- Reported by every worker at start and every few seconds: merchant ids only, never keys.
CREATE TABLE configured_merchants (
    merchant_id text        PRIMARY KEY,
    key_count   integer     NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rejected_callback_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rejected_id bigint      NOT NULL REFERENCES rejected_callbacks (id),
    action      text        NOT NULL,
    actor       text        NOT NULL,
    note        text        NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rejected_callback_events_action_check CHECK (action IN ('replay_requested', 'recorded', 'duplicate',
                                                                       'still_rejected'))
);
CREATE INDEX rejected_callback_events_rejected_idx ON rejected_callback_events (rejected_id, id);
