-- What makes a message automatic (auto-reply, list or bulk mail, a robot
-- sender, our own mail, what it replies to, which of our mails a bounce
-- returns), read once when the message is parsed; JSON. NULL for messages
-- processed before this column existed.
ALTER TABLE message ADD COLUMN automation TEXT;
