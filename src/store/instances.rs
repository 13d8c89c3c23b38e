//! The running service instances (each beats every few seconds) and what
//! the service notes for the office. A dead instance's claims — messages
//! being processed, mail being sent — are given back by any live instance
//! once its heartbeat is old enough, on PostgreSQL as on SQLite.

use super::{Result, Store};

/// A note the service keeps for `status` (`service_note`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Note {
    pub value: String,
    /// When it was first noted (unix seconds).
    pub since: i64,
}

/// Messages being processed, and those among them whose claim is stale
/// (its lease ran out, or its instance stopped beating).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimCounts {
    pub processing: i64,
    pub stale: i64,
}

impl Store {
    /// Registers (or re-registers) instance `id` as alive at `now`.
    pub async fn register_instance(&self, id: &str, host: &str, pid: u32, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO instance (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(id)
        .bind(host)
        .bind(i64::from(pid))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Instance `id` is alive at `now`; false when its row was gone (it
    /// was taken for dead meanwhile).
    pub async fn heartbeat(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE instance SET heartbeat_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Instances other than `except` that have not beaten since `before`.
    pub async fn silent_instances(&self, except: &str, before: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM instance WHERE id <> $1 AND heartbeat_at < $2 ORDER BY id",
        )
        .bind(except)
        .bind(before)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes an instance's row (it stopped, or was found dead and its
    /// claims were given back).
    pub async fn forget_instance(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM instance WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When the earliest registered instance started; `None` when none runs.
    pub async fn first_start(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(started_at) FROM instance")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Messages in processing and stale claims at `now`; an instance is
    /// live when it beat since `live_since`.
    pub async fn claim_counts(&self, now: i64, live_since: i64) -> Result<ClaimCounts> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM message WHERE state = 'processing') AS processing,
                    (SELECT COUNT(*) FROM message WHERE state = 'processing'
                       AND (claimed_until < $1 OR claimed_by NOT IN
                            (SELECT id FROM instance WHERE heartbeat_at >= $2))) AS stale",
        )
        .bind(now)
        .bind(live_since)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Messages recorded but not processed yet, or being processed.
    pub async fn unprocessed(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM message WHERE state IN ('pending', 'processing')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Sets note `key` to `value`, keeping its first time when it was
    /// already there; returns the note as it stands.
    pub async fn note(&self, key: &str, value: &str, now: i64) -> Result<Note> {
        sqlx::query(
            "INSERT INTO service_note (key, value, since) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_as("SELECT value, since FROM service_note WHERE key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Note `key`, if set.
    pub async fn read_note(&self, key: &str) -> Result<Option<Note>> {
        Ok(
            sqlx::query_as("SELECT value, since FROM service_note WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Clears note `key`; true when it was set.
    pub async fn clear_note(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM service_note WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
