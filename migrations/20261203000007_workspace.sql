-- The office's decisions and corrections: a layer on top of what was read.
-- Processing never writes here, so `reprocess` (which replaces the
-- registration and problem rows) leaves the layer whole; the progress read
-- applies it again. Each row is also the audit trail: who, when, what
-- before, what after and the note.
--   kind assign:  message credited to unit_id by a person
--   kind dismiss: message is not a submission (unit_id null)
--   kind accept:  unit_id's registration from message accepted as it is
--   kind set:     field of unit_id's registration from message corrected
--                 (before/after are JSON values)
--   kind ask:     the unit was asked to correct (outbox row in note)
CREATE TABLE decision (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT,
    unit_id TEXT,
    field TEXT,
    before_value TEXT,
    after_value TEXT,
    note TEXT,
    by_user TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX decision_unit ON decision (unit_id);
CREATE INDEX decision_message ON decision (message);

-- The workspace's users: passwords as argon2 PHC strings.
CREATE TABLE app_user (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- Logged-in sessions: the cookie carries a random token, the table its
-- SHA-256 (a copy of the table lets nobody in).
CREATE TABLE web_session (
    token_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_session_user ON web_session (user_name);
