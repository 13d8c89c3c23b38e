-- Portable schema for SQLite and PostgreSQL through sqlx's Any driver:
-- TEXT and BIGINT/INTEGER only; booleans are 0/1, times are unix seconds.

-- Every raw message, once per distinct content (hex SHA-256 of its bytes).
CREATE TABLE message (
    id TEXT PRIMARY KEY,
    message_id TEXT,
    original_name TEXT,
    size BIGINT NOT NULL,
    archive_path TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    claimed_by TEXT,
    claimed_until BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    retry_at BIGINT,
    from_addr TEXT,
    from_name TEXT,
    subject TEXT,
    date_header TEXT,
    kind TEXT,
    sender_unit TEXT,
    needs_review INTEGER,
    processed_at BIGINT,
    report TEXT
);
CREATE INDEX message_state ON message (state);
CREATE INDEX message_message_id ON message (message_id);

-- The ledger: where each message was seen. The key never relies on \Seen.
CREATE TABLE mailbox_entry (
    source TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    uidvalidity BIGINT NOT NULL,
    uid BIGINT NOT NULL,
    message TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    after_action_at BIGINT,
    PRIMARY KEY (source, mailbox, uidvalidity, uid)
);
CREATE INDEX mailbox_entry_message ON mailbox_entry (message);

-- What processing found; replaced as a whole when a message is reprocessed.
CREATE TABLE registration (
    message TEXT NOT NULL,
    idx INTEGER NOT NULL,
    unit_id TEXT,
    matched_by TEXT,
    source_name TEXT NOT NULL,
    fields TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    complete INTEGER NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (message, idx)
);
CREATE INDEX registration_unit ON registration (unit_id);

CREATE TABLE problem (
    message TEXT NOT NULL,
    idx INTEGER NOT NULL,
    field TEXT,
    code TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (message, idx)
);

CREATE TABLE attachment (
    message TEXT NOT NULL,
    idx INTEGER NOT NULL,
    filename TEXT,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (message, idx)
);

-- Each configured source's health, for `status`.
CREATE TABLE source_state (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    last_poll_ok BIGINT,
    last_error TEXT,
    last_error_at BIGINT,
    stalled_reported INTEGER NOT NULL DEFAULT 0,
    uidvalidity BIGINT
);
