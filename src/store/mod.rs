//! The database: the ledger of every message seen, what processing found,
//! and each source's health. SQLite by default (a file, WAL, created on
//! first start), PostgreSQL by URL; one portable schema under `migrations/`
//! through sqlx's `Any` driver (TEXT and BIGINT only; times are unix
//! seconds, flags 0/1).
//!
//! The store decides nothing about mail; it offers the atomic steps the
//! intake needs: record a message once, claim it for processing so two
//! workers never both take it, and replace its results in one transaction.

pub mod outbox;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Rows per INSERT statement: well under SQLite's and PostgreSQL's limits
/// on bound parameters (32,766 and 65,535).
const ROWS_PER_INSERT: usize = 100;

/// `($1, …, $k, <tail>), ($k+1, …)`: the VALUES of a multi-row insert of
/// `rows` rows of `params` bound columns each, followed by constant columns.
/// SQLite gets anonymous `?` placeholders, in the same order: sqlx looks up
/// the name of every numbered one, which costs SQLite a scan of all the
/// statement's parameters each time.
fn values(backend: Backend, rows: usize, params: usize, tail: &str) -> String {
    let mut out = String::with_capacity(rows * params * 5);
    for row in 0..rows {
        out.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..params {
            if col > 0 {
                out.push_str(", ");
            }
            match backend {
                Backend::Sqlite => out.push('?'),
                Backend::Postgres => out.push_str(&format!("${}", row * params + col + 1)),
            }
        }
        out.push_str(tail);
        out.push(')');
    }
    out
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors of the store. `Busy` is transient (a locked SQLite file, a lost
/// PostgreSQL connection); callers retry it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("数据库错误：{0}")]
    Db(#[from] sqlx::Error),
    #[error("数据库迁移失败：{0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("无法创建数据库文件夹 {0}：{1}")]
    Folder(String, std::io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serialises this process's batch recordings on SQLite: two write
    /// transactions racing for the file lock would otherwise meet SQLite's
    /// busy handler, which sleeps for milliseconds at a time.
    batch_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

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

/// A message claimed for processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub archive_path: String,
    pub original_name: Option<String>,
    pub attempts: i64,
}

/// What processing found, ready to store.
#[derive(Debug, Clone, Default)]
pub struct Processed {
    pub from_addr: Option<String>,
    pub from_name: Option<String>,
    pub subject: Option<String>,
    pub date_header: Option<String>,
    pub kind: String,
    pub sender_unit: Option<String>,
    pub needs_review: bool,
    pub report: String,
    pub attachments: Vec<AttachmentRow>,
    pub registrations: Vec<RegistrationRow>,
    pub problems: Vec<ProblemRow>,
}

#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub format: String,
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RegistrationRow {
    pub unit_id: Option<String>,
    pub matched_by: Option<String>,
    pub source_name: String,
    pub fields: String,
    pub fingerprint: String,
    pub complete: bool,
}

#[derive(Debug, Clone)]
pub struct ProblemRow {
    pub field: Option<String>,
    pub code: String,
    pub text: String,
}

impl Store {
    /// Connects and applies the migrations. A SQLite file and its folder
    /// are created when missing.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let max = if backend == Backend::Sqlite { 4 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // With WAL, NORMAL survives a killed process; power
                        // loss is covered by `sync`, which sources call
                        // before they change anything on the server.
                        sqlx::Executor::execute(&mut *conn, "PRAGMA synchronous=NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets `status` read while the daemon writes; the setting
            // is kept in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        let store = Self {
            pool,
            backend,
            batch_lock: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Makes every committed transaction durable (SQLite: a WAL
    /// checkpoint; PostgreSQL commits durably already).
    pub async fn sync(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(FULL)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

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
        let _serial = match self.backend {
            Backend::Sqlite => Some(self.batch_lock.lock().await),
            Backend::Postgres => None,
        };
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
        let row = sqlx::query(
            "SELECT COUNT(*) FROM mailbox_entry WHERE source = $1 AND mailbox = $2 AND uidvalidity = $3 AND uid = $4",
        )
        .bind(key.source)
        .bind(key.mailbox)
        .bind(key.uidvalidity)
        .bind(key.uid)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// The UIDs already recorded for a mailbox under one UIDVALIDITY.
    pub async fn known_uids(
        &self,
        source: &str,
        mailbox: &str,
        uidvalidity: i64,
    ) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT uid FROM mailbox_entry WHERE source = $1 AND mailbox = $2 AND uidvalidity = $3 ORDER BY uid",
        )
        .bind(source)
        .bind(mailbox)
        .bind(uidvalidity)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Entries whose after-action (flag, move) has not been done yet.
    pub async fn entries_awaiting_action(
        &self,
        source: &str,
        mailbox: &str,
        uidvalidity: i64,
    ) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT e.uid FROM mailbox_entry e JOIN message m ON m.id = e.message
             WHERE e.source = $1 AND e.mailbox = $2 AND e.uidvalidity = $3 AND e.after_action_at IS NULL
               AND m.state IN ('done', 'failed') ORDER BY e.uid",
        )
        .bind(source)
        .bind(mailbox)
        .bind(uidvalidity)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>(0).map_err(StoreError::from))
            .collect()
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
        let row = sqlx::query(
            "SELECT id FROM message WHERE message_id = $1 ORDER BY received_at LIMIT 1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Claims one message for processing: a pending one, one whose claim
    /// expired (its worker died), or a transient failure due for retry. The
    /// conditional UPDATE makes the claim atomic across workers and
    /// instances.
    pub async fn claim_next(
        &self,
        worker: &str,
        now: i64,
        lease_seconds: i64,
        max_attempts: i64,
    ) -> Result<Option<Claimed>> {
        let candidates = sqlx::query(
            "SELECT id FROM message
             WHERE state = 'pending'
                OR (state = 'processing' AND claimed_until < $1)
                OR (state = 'retry' AND retry_at <= $1 AND attempts < $2)
             ORDER BY received_at, id LIMIT 8",
        )
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&self.pool)
        .await?;
        for row in candidates {
            let id: String = row.try_get(0)?;
            let taken = sqlx::query(
                "UPDATE message SET state = 'processing', claimed_by = $2, claimed_until = $3, attempts = attempts + 1
                 WHERE id = $1 AND (state = 'pending'
                    OR (state = 'processing' AND claimed_until < $4)
                    OR (state = 'retry' AND retry_at <= $4 AND attempts < $5))",
            )
            .bind(&id)
            .bind(worker)
            .bind(now + lease_seconds)
            .bind(now)
            .bind(max_attempts)
            .execute(&self.pool)
            .await?;
            if taken.rows_affected() == 1 {
                let row = sqlx::query(
                    "SELECT id, archive_path, original_name, attempts FROM message WHERE id = $1",
                )
                .bind(&id)
                .fetch_one(&self.pool)
                .await?;
                return Ok(Some(Claimed {
                    id: row.try_get(0)?,
                    archive_path: row.try_get(1)?,
                    original_name: row.try_get(2)?,
                    attempts: row.try_get(3)?,
                }));
            }
        }
        Ok(None)
    }

    /// Stores what processing found and marks the message done, in one
    /// transaction, if `worker` still holds the claim. Earlier results of
    /// the message (a reprocess) are replaced. Returns false when the claim
    /// was lost (another worker took over after the lease ran out).
    pub async fn finish(&self, id: &str, worker: &str, now: i64, p: &Processed) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let held = sqlx::query(
            "UPDATE message SET state = 'done', claimed_by = NULL, claimed_until = NULL, last_error = NULL, retry_at = NULL,
                from_addr = $3, from_name = $4, subject = $5, date_header = $6, kind = $7, sender_unit = $8,
                needs_review = $9, processed_at = $10, report = $11
             WHERE id = $1 AND state = 'processing' AND claimed_by = $2",
        )
        .bind(id)
        .bind(worker)
        .bind(p.from_addr.as_deref())
        .bind(p.from_name.as_deref())
        .bind(p.subject.as_deref())
        .bind(p.date_header.as_deref())
        .bind(p.kind.as_str())
        .bind(p.sender_unit.as_deref())
        .bind(i32::from(p.needs_review))
        .bind(now)
        .bind(p.report.as_str())
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for sql in [
            "DELETE FROM attachment WHERE message = $1",
            "DELETE FROM registration WHERE message = $1",
            "DELETE FROM problem WHERE message = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        let received_at: i64 = sqlx::query("SELECT received_at FROM message WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        for (i, a) in p.attachments.iter().enumerate() {
            sqlx::query(
                "INSERT INTO attachment (message, idx, filename, content_type, size, sha256, format, outcome, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(i as i64)
            .bind(a.filename.as_deref())
            .bind(a.content_type.as_str())
            .bind(a.size)
            .bind(a.sha256.as_str())
            .bind(a.format.as_str())
            .bind(a.outcome.as_str())
            .bind(a.detail.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        for (i, r) in p.registrations.iter().enumerate() {
            sqlx::query(
                "INSERT INTO registration (message, idx, unit_id, matched_by, source_name, fields, fingerprint, complete, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(i as i64)
            .bind(r.unit_id.as_deref())
            .bind(r.matched_by.as_deref())
            .bind(r.source_name.as_str())
            .bind(r.fields.as_str())
            .bind(r.fingerprint.as_str())
            .bind(i32::from(r.complete))
            .bind(received_at)
            .execute(&mut *tx)
            .await?;
        }
        for (i, pr) in p.problems.iter().enumerate() {
            sqlx::query(
                "INSERT INTO problem (message, idx, field, code, text) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(i as i64)
            .bind(pr.field.as_deref())
            .bind(pr.code.as_str())
            .bind(pr.text.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records a failure. A transient one is retried from `retry_at`; a
    /// permanent one stays failed with its reason.
    pub async fn fail(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let state = if retry_at.is_some() {
            "retry"
        } else {
            "failed"
        };
        sqlx::query(
            "UPDATE message SET state = $3, last_error = $4, retry_at = $5, claimed_by = NULL, claimed_until = NULL
             WHERE id = $1 AND claimed_by = $2",
        )
        .bind(id)
        .bind(worker)
        .bind(state)
        .bind(error)
        .bind(retry_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks every processed message pending again (`reprocess`); returns
    /// how many.
    pub async fn requeue_all(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE message SET state = 'pending', attempts = 0, retry_at = NULL, claimed_by = NULL, claimed_until = NULL
             WHERE state IN ('done', 'failed', 'retry')",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn source_ok(&self, name: &str, kind: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO source_state (name, kind, last_poll_ok, stalled_reported) VALUES ($1, $2, $3, 0)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, last_poll_ok = excluded.last_poll_ok,
                last_error = NULL, stalled_reported = 0",
        )
        .bind(name)
        .bind(kind)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn source_error(&self, name: &str, kind: &str, error: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO source_state (name, kind, last_error, last_error_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
        )
        .bind(name)
        .bind(kind)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a source's stall as reported; true the first time, so it is
    /// logged once, not on every retry.
    pub async fn report_stall_once(&self, name: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE source_state SET stalled_reported = 1 WHERE name = $1 AND stalled_reported = 0",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn source_states(&self) -> Result<Vec<SourceState>> {
        let rows = sqlx::query("SELECT name, kind, last_poll_ok, last_error, last_error_at FROM source_state ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(SourceState::from_row).collect()
    }

    /// Counts of messages by state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM message GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }
}

/// Keeping claims alive, and giving back those of workers that died.
impl Store {
    /// Extends `worker`'s claim on `id` to `until` (a heartbeat while a
    /// long message is processed); false when the claim was lost.
    pub async fn renew_claim(&self, id: &str, worker: &str, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE message SET claimed_until = $3 WHERE id = $1 AND state = 'processing' AND claimed_by = $2",
        )
        .bind(id)
        .bind(worker)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every message being processed: (id, worker).
    pub async fn claims(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT id, claimed_by FROM message WHERE state = 'processing' AND claimed_by IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect()
    }

    /// Gives back the claim of a worker known to be dead, without waiting
    /// for its lease to run out: the message is retried at once, or is
    /// failed when it already had `max_attempts` tries (a message that
    /// kills the service must not keep it in a restart loop). True when the
    /// claim was still held by `worker`.
    pub async fn release_claim(
        &self,
        id: &str,
        worker: &str,
        now: i64,
        max_attempts: i64,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE message SET state = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'retry' END,
                retry_at = $3, last_error = $5, claimed_by = NULL, claimed_until = NULL
             WHERE id = $1 AND state = 'processing' AND claimed_by = $2",
        )
        .bind(id)
        .bind(worker)
        .bind(now)
        .bind(max_attempts)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// What the IMAP source remembers about its mailbox between runs.
impl Store {
    /// The UIDVALIDITY of the source's mailbox when it was last synced
    /// (`None` before the first sync).
    pub async fn source_uidvalidity(&self, name: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT uidvalidity FROM source_state WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<i64>, _>(0))
            .transpose()?
            .flatten())
    }

    /// Remembers the UIDVALIDITY the source's mailbox was synced under.
    pub async fn set_uidvalidity(&self, name: &str, uidvalidity: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO source_state (name, kind, uidvalidity, stalled_reported) VALUES ($1, 'imap', $2, 0)
             ON CONFLICT (name) DO UPDATE SET uidvalidity = excluded.uidvalidity",
        )
        .bind(name)
        .bind(uidvalidity)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The UIDVALIDITY of the latest ledger entry of a mailbox under any
    /// UIDVALIDITY; `None` when nothing was ever recorded from it.
    pub async fn latest_uidvalidity(&self, source: &str, mailbox: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT uidvalidity FROM mailbox_entry WHERE source = $1 AND mailbox = $2
             ORDER BY seen_at DESC, uid DESC LIMIT 1",
        )
        .bind(source)
        .bind(mailbox)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }
}

/// The right to poll one source, held while polling. On PostgreSQL it is a
/// session advisory lock on a connection of its own: when the holder dies,
/// the connection closes, the lock is released and another instance takes
/// over. SQLite serves one instance, so its lease always succeeds.
#[derive(Debug)]
pub struct Lease {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

impl Lease {
    /// Whether the lease is still held (the lock's connection is alive).
    pub async fn alive(&mut self) -> bool {
        match self.conn.as_mut() {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok(),
        }
    }
}

impl Store {
    /// Tries to take the polling lease of `source`; `None` when another
    /// instance holds it.
    pub async fn try_lease(&self, source: &str) -> Result<Option<Lease>> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(Lease { conn: None }));
        }
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query("SELECT CAST(pg_try_advisory_lock(hashtext($1)) AS INTEGER)")
            .bind(format!("xxdc-intake source {source}"))
            .fetch_one(&mut *conn)
            .await?;
        if row.try_get::<i32, _>(0)? == 1 {
            // Keep the lock's connection out of the pool for as long as the
            // lease lives; closing it releases the lock.
            Ok(Some(Lease { conn: Some(conn) }))
        } else {
            Ok(None)
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing the session releases its advisory locks; a returned
            // pooled connection would keep holding them.
            drop(conn.detach());
        }
    }
}

/// A source's health as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    pub name: String,
    pub kind: String,
    pub last_poll_ok: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

impl SourceState {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            name: r.try_get(0)?,
            kind: r.try_get(1)?,
            last_poll_ok: r.try_get(2)?,
            last_error: r.try_get(3)?,
            last_error_at: r.try_get(4)?,
        })
    }
}

/// `sqlite:///abs/x.db` or `sqlite://rel.db` → a URL that creates the file
/// (`mode=rwc`), after creating its folder.
fn sqlite_url(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:"
        && let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Folder(parent.display().to_string(), e))?;
    }
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    Ok(format!("sqlite://{path}?{}", params.join("&")))
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
