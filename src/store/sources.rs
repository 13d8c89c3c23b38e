//! Each source's health (last good poll, last error, stall reported once),
//! what the IMAP source remembers between runs (UIDVALIDITY), and the
//! polling lease that lets one instance poll a mailbox at a time.

use std::collections::HashMap;

use super::{Backend, Result, Store};

/// A source's health as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SourceState {
    pub name: String,
    pub kind: String,
    pub last_poll_ok: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct SourceCount {
    source: String,
    n: i64,
}

impl Store {
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

    /// Every source's health, by name.
    pub async fn source_states(&self) -> Result<Vec<SourceState>> {
        Ok(sqlx::query_as(
            "SELECT name, kind, last_poll_ok, last_error, last_error_at FROM source_state ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// One source's health; `None` before its first poll.
    pub async fn source_state(&self, name: &str) -> Result<Option<SourceState>> {
        Ok(sqlx::query_as(
            "SELECT name, kind, last_poll_ok, last_error, last_error_at FROM source_state WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Messages seen per source (distinct messages: a UIDVALIDITY change
    /// adds ledger entries, not messages).
    pub async fn entries_by_source(&self) -> Result<HashMap<String, i64>> {
        let rows: Vec<SourceCount> = sqlx::query_as(
            "SELECT source, COUNT(DISTINCT message) AS n FROM mailbox_entry GROUP BY source",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.source, r.n)).collect())
    }

    /// The UIDVALIDITY of the source's mailbox when it was last synced
    /// (`None` before the first sync).
    pub async fn source_uidvalidity(&self, name: &str) -> Result<Option<i64>> {
        let value: Option<Option<i64>> =
            sqlx::query_scalar("SELECT uidvalidity FROM source_state WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(value.flatten())
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
        let taken: i32 =
            sqlx::query_scalar("SELECT CAST(pg_try_advisory_lock(hashtext($1)) AS INTEGER)")
                .bind(format!("xxdc-intake source {source}"))
                .fetch_one(&mut *conn)
                .await?;
        if taken == 1 {
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
