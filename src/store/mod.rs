//! The database, and every SQL statement of the program: the ledger of every
//! message seen, what processing found, each source's health, the outbox of
//! the mail we send, and the reads that status and the campaign need.
//! SQLite by default (a file, WAL, created on first start), PostgreSQL by
//! URL; one portable schema under `migrations/` through sqlx's `Any` driver
//! (TEXT and BIGINT only; times are unix seconds, flags 0/1).
//!
//! The store decides nothing about mail; it offers the atomic steps the
//! intake needs (record a message once, claim it for processing so two
//! workers never both take it, replace its results in one transaction) and
//! typed reads. Rows are read by column name into typed structs; closed sets
//! of values (message state and kind, outbox state and kind) are enums that
//! become text only here, and a stored value that does not decode is an
//! error naming its row ([`StoreError::Corrupt`]), never a default.
//!
//! The connection pool never leaves this module: nothing else in the crate
//! writes SQL.

mod claims;
mod decisions;
mod instances;
mod ledger;
mod messages;
pub mod outbox;
pub mod progress;
mod sources;
mod text;
mod users;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use claims::{
    AttachmentRow, Claimed, Finished, FollowUp, ProblemRow, Processed, Receipt, RegistrationRow,
};
pub use decisions::{Decision, DecisionKind, MessageRef, NewDecision};
pub use instances::{ClaimCounts, Note};
pub use ledger::{MailboxKey, NewMessage, Recorded};
pub use messages::{
    AttachmentBrief, MessageCounts, ProcessedMessage, ReviewRow, StoredRegistration,
};
pub use sources::{Lease, SourceState};
pub use text::MessageState;
pub use users::{Role, Session, User};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("数据库错误：{0}")]
    Db(#[from] sqlx::Error),
    #[error("数据库迁移失败：{0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("无法创建数据库文件夹 {0}：{1}")]
    Folder(String, std::io::Error),
    #[error("无法锁定数据库的迁移锁文件 {0}：{1}")]
    Lock(String, std::io::Error),
    /// A stored value that does not decode: the row is named so that a
    /// person can look at it; nothing is guessed in its place.
    #[error("数据库记录无法读取：表 {table} 中 {key} 的 {column}：{reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        column: &'static str,
        reason: String,
    },
}

impl StoreError {
    fn corrupt(
        table: &'static str,
        key: impl Into<String>,
        column: &'static str,
        reason: impl std::fmt::Display,
    ) -> Self {
        Self::Corrupt {
            table,
            key: key.into(),
            column,
            reason: reason.to_string(),
        }
    }
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
    /// Serialises this process's writes on SQLite (batch recordings,
    /// claims, results): two write transactions racing for the file lock
    /// would otherwise meet SQLite's busy handler, which sleeps for
    /// milliseconds at a time.
    batch_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
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
        let (url, lock_path) = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => (url.to_string(), None),
        };
        // Two processes starting at once on a fresh file would both create
        // the tables (sqlx takes an advisory lock for this on PostgreSQL,
        // not on SQLite), and one switching the file to WAL while the other
        // migrates finds it locked: a lock file beside the database
        // serialises the whole opening.
        let _serial = match lock_path {
            Some(path) => Some(lock_file(path).await?),
            None => None,
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

    /// On SQLite, the turn of this process's writer (see `batch_lock`);
    /// PostgreSQL locks rows, not the file: no turn is needed.
    pub(crate) async fn serial_writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.batch_lock.lock().await),
            Backend::Postgres => None,
        }
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

    /// Closes every connection (waiting for those in use): another process
    /// may then have the database to itself.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

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

/// A stored JSON text, decoded; an error names the row.
fn json<T: serde::de::DeserializeOwned>(
    text: &str,
    table: &'static str,
    key: impl Into<String>,
    column: &'static str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt(table, key, column, e))
}

/// A stored 0/1 flag; anything else is an error naming the row.
fn flag(
    value: i64,
    table: &'static str,
    key: impl Into<String>,
    column: &'static str,
) -> Result<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(StoreError::corrupt(
            table,
            key,
            column,
            format!("应为 0 或 1，而不是 {other}"),
        )),
    }
}

/// An exclusive lock on `path` (created when missing), held until the
/// file is dropped.
async fn lock_file(path: std::path::PathBuf) -> Result<std::fs::File> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| StoreError::Lock(shown.clone(), std::io::Error::other(e.to_string())))?
    .map_err(|e| StoreError::Lock(shown, e))
}

/// `sqlite:///abs/x.db` or `sqlite://rel.db` → a URL that creates the file
/// (`mode=rwc`), after creating its folder; and the path of the lock file
/// that serialises migrations (none in memory).
fn sqlite_url(url: &str) -> Result<(String, Option<std::path::PathBuf>)> {
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
    let lock = (path != ":memory:").then(|| std::path::PathBuf::from(format!("{path}.lock")));
    Ok((format!("sqlite://{path}?{}", params.join("&")), lock))
}

/// A random id for a row (128 bits, hex).
fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
