-- The outbox is a queue with claims, like the messages: a sender takes a
-- row (state 'sending', claimed_by, claimed_until) in one conditional
-- UPDATE before it sends it, so two processes never send the same row. A
-- row whose sender died is taken again after its lease (same Message-ID)
-- and counted in `resends`: its recipient may have it twice.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT;
ALTER TABLE outbox ADD COLUMN resends INTEGER NOT NULL DEFAULT 0;
