-- Every mail we send goes through the outbox: written first, then sent,
-- then marked sent. (campaign, unit_key, slot) is unique, so a reminder
-- slot, an acknowledgement or a report is one mail at most, whatever
-- crashes happen between writing and sending; a resend after a crash
-- reuses the row's Message-ID.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    campaign TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    slot TEXT NOT NULL,
    kind TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    message_id TEXT NOT NULL,
    in_reply_to TEXT,
    attachment_name TEXT,
    attachment_b64 TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    UNIQUE (campaign, unit_key, slot)
);
CREATE INDEX outbox_state ON outbox (state);

-- Addresses that bounced: no more reminders to them; listed for the office.
CREATE TABLE undeliverable (
    address TEXT PRIMARY KEY,
    unit_id TEXT,
    outbox TEXT,
    reason TEXT,
    at BIGINT NOT NULL
);
