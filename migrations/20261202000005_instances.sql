-- Every running service registers itself and beats every few seconds, so
-- that another one can give back a dead instance's claims (messages and
-- outbox rows) promptly instead of after the whole lease, on PostgreSQL
-- as on SQLite.
CREATE TABLE instance (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- What the service wants the office to know and `status` shows, such as
-- reminders held back because a source has not caught up (key, text, since).
CREATE TABLE service_note (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    since BIGINT NOT NULL
);
