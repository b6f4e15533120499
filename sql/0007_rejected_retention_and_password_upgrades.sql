-- Issue #9 (hostile input). Two small concerns of the same issue; see docs/SECURITY.md.

-- Rejected-callback retention (worker/retention.py) deletes rows whose last delivery is older
-- than OTTRECON_REJECTED_RETENTION_DAYS, oldest first, and the rejected-rate gauge counts the
-- last hour's: both walk this index instead of the whole table (a flood makes it large).
CREATE INDEX rejected_callbacks_last_received_idx ON rejected_callbacks (last_received_at);

-- A console user's password hash re-made at sign-in with today's scrypt parameters, when the
-- configured one (OTTRECON_CONSOLE_USERS) is weaker. It is used only while the configured hash
-- is still the one it replaced (configured_sha256): an operator who sets a new hash in the
-- configuration resets the password at once, whatever is stored here.
CREATE TABLE console_password_upgrades (
    username          text        PRIMARY KEY,
    configured_sha256 text        NOT NULL,
    password_hash     text        NOT NULL,
    upgraded_at       timestamptz NOT NULL DEFAULT now()
);
