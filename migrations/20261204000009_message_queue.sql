-- The claim reads the pending backlog in received order along this index
-- (before: a scan and a sort of every message for every claim).
DROP INDEX message_state;
CREATE INDEX message_queue ON message (state, received_at, id);
