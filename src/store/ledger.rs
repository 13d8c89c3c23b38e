//! The ledger: every message recorded once (by content), and every place a
//! message was seen — (source, mailbox, UIDVALIDITY, UID) — with whether the
//! source's after-action (flag, move) was done there.

use super::text::{MessageState, StoredText};
use super::{Backend, ROWS_PER_INSERT, Result, Store, values};

/// What recording a batch added: how many messages were new to the
/// archive and how many mailbox entries were new.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub new_messages: u64,
    pub new_entries: u64,
}

/// A message to record.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub message_id: Option<&'a str>,
    pub original_name: Option<&'a str>,
    pub size: i64,
    pub archive_path: &'a str,
    pub received_at: i64,
}

/// Where a message was seen: (source, mailbox, UIDVALIDITY, UID). A
/// directory source uses its own name, an empty mailbox and 0/0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxKey<'a> {
    pub source: &'a str,
    pub mailbox: &'a str,
    pub uidvalidity: i64,
    pub uid: i64,
}

#[derive(sqlx::FromRow)]
struct StateCount {
    state: String,
    n: i64,
}

impl Store {
    /// Records a message once; true when it was new.
    pub async fn record_message(&self, m: &NewMessage<'_>) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let new = insert_messages(&mut conn, self.backend, std::slice::from_ref(m)).await?;
        Ok(new == 1)
    }

    /// Records where a message was seen; true when the entry was new.
    pub async fn record_entry(
        &self,
        key: &MailboxKey<'_>,
        message: &str,
        now: i64,
    ) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let new = insert_entries(&mut conn, self.backend, &[(key, message)], now).await?;
        Ok(new == 1)
    }

    /// Records several messages and where they were seen in one
    /// transaction (a fetched batch), a few statements for the whole batch
    /// rather than two per message; returns how many messages and how many
    /// entries were new.
    pub async fn record_batch(
        &self,
        items: &[(NewMessage<'_>, MailboxKey<'_>)],
        now: i64,
    ) -> Result<Recorded> {
        let messages: Vec<NewMessage<'_>> = items.iter().map(|(m, _)| m.clone()).collect();
        let entries: Vec<(&MailboxKey<'_>, &str)> = items.iter().map(|(m, k)| (k, m.id)).collect();
        let _serial = self.serial_writer().await;
        let mut tx = self.pool.begin().await?;
        let new_messages = insert_messages(&mut tx, self.backend, &messages).await?;
        let new_entries = insert_entries(&mut tx, self.backend, &entries, now).await?;
        tx.commit().await?;
        Ok(Recorded {
            new_messages,
            new_entries,
        })
    }

    /// Whether a (source, mailbox, UIDVALIDITY, UID) is already recorded.
    pub async fn has_entry(&self, key: &MailboxKey<'_>) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mailbox_entry WHERE source = $1 AND mailbox = $2 AND uidvalidity = $3 AND uid = $4",
        )
        .bind(key.source)
        .bind(key.mailbox)
        .bind(key.uidvalidity)
        .bind(key.uid)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The UIDs already recorded for a mailbox under one UIDVALIDITY.
    pub async fn known_uids(
        &self,
        source: &str,
        mailbox: &str,
        uidvalidity: i64,
    ) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT uid FROM mailbox_entry WHERE source = $1 AND mailbox = $2 AND uidvalidity = $3 ORDER BY uid",
        )
        .bind(source)
        .bind(mailbox)
        .bind(uidvalidity)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Entries whose after-action (flag, move) has not been done yet: every
    /// recorded one (the raw message is kept; processing need not wait).
    pub async fn entries_awaiting_action(
        &self,
        source: &str,
        mailbox: &str,
        uidvalidity: i64,
    ) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT uid FROM mailbox_entry
             WHERE source = $1 AND mailbox = $2 AND uidvalidity = $3 AND after_action_at IS NULL
             ORDER BY uid",
        )
        .bind(source)
        .bind(mailbox)
        .bind(uidvalidity)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn mark_action_done(
        &self,
        source: &str,
        mailbox: &str,
        uidvalidity: i64,
        uid: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE mailbox_entry SET after_action_at = $5 WHERE source = $1 AND mailbox = $2 AND uidvalidity = $3 AND uid = $4",
        )
        .bind(source)
        .bind(mailbox)
        .bind(uidvalidity)
        .bind(uid)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored message with this Message-ID, if any (to reconcile a
    /// UIDVALIDITY change without fetching everything again).
    pub async fn message_by_message_id(&self, message_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM message WHERE message_id = $1 ORDER BY received_at LIMIT 1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The UIDVALIDITY of the latest ledger entry of a mailbox under any
    /// UIDVALIDITY; `None` when nothing was ever recorded from it.
    pub async fn latest_uidvalidity(&self, source: &str, mailbox: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT uidvalidity FROM mailbox_entry WHERE source = $1 AND mailbox = $2
             ORDER BY seen_at DESC, uid DESC LIMIT 1",
        )
        .bind(source)
        .bind(mailbox)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Counts of messages by state, ordered by the state's name.
    pub async fn count_by_state(&self) -> Result<Vec<(MessageState, i64)>> {
        let rows: Vec<StateCount> =
            sqlx::query_as("SELECT state, COUNT(*) AS n FROM message GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let mut counts = rows
            .into_iter()
            .map(|r| {
                Ok((
                    MessageState::decode(&r.state, "message", "GROUP BY state", "state")?,
                    r.n,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        counts.sort_by_key(|(state, _)| state.as_str());
        Ok(counts)
    }
}

/// Inserts the messages not recorded yet; returns how many it inserted.
/// (Counts, not a RETURNING list: rows returned one by one through sqlx's
/// SQLite worker would double the cost of recording a batch.)
async fn insert_messages(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    messages: &[NewMessage<'_>],
) -> Result<u64> {
    let mut new = 0;
    for chunk in messages.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO message (id, message_id, original_name, size, archive_path, received_at, state, attempts)
             VALUES {} ON CONFLICT (id) DO NOTHING",
            values(backend, chunk.len(), 6, ", 'pending', 0")
        );
        // Built from placeholders only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in chunk {
            query = query
                .bind(m.id)
                .bind(m.message_id)
                .bind(m.original_name)
                .bind(m.size)
                .bind(m.archive_path)
                .bind(m.received_at);
        }
        new += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(new)
}

/// Inserts the mailbox entries not recorded yet; returns how many it
/// inserted.
async fn insert_entries(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    entries: &[(&MailboxKey<'_>, &str)],
    now: i64,
) -> Result<u64> {
    let mut new = 0;
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO mailbox_entry (source, mailbox, uidvalidity, uid, message, seen_at)
             VALUES {} ON CONFLICT (source, mailbox, uidvalidity, uid) DO NOTHING",
            values(backend, chunk.len(), 6, "")
        );
        // Built from placeholders only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (key, message) in chunk {
            query = query
                .bind(key.source)
                .bind(key.mailbox)
                .bind(key.uidvalidity)
                .bind(key.uid)
                .bind(*message)
                .bind(now);
        }
        new += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(new)
}
