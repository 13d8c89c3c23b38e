//! A fresh database per test, on SQLite or PostgreSQL, and helpers the
//! integration tests share (`tests/store.rs`, `tests/crash.rs`,
//! `tests/crash_imap.rs`, `tests/mail.rs`, `tests/notify.rs`, `tests/progress.rs`).
//!
//! - SQLite: a file in the test's own temporary folder.
//! - PostgreSQL: `xxdc_t_<random>` on 127.0.0.1:5432 (trust auth, user
//!   postgres; `scripts/check` starts the server), created through the
//!   `postgres` database and dropped (`WITH (FORCE)`) when the handle is
//!   dropped, also when the test panicked.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sqlx::Connection;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_xxdc-intake");
/// The golden roster.
pub const ROSTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/golden/roster.csv"
);

/// The golden cases (`tests/fixtures/golden/cases`).
pub const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/cases");
/// Golden cases with attachments (read by sandboxed children), to mix into
/// a stream of body-text registrations.
pub const ATTACHED_CASES: [&str; 5] = [
    "f01_xlsx_template.eml",
    "f02_xls_biff8.eml",
    "f05_docx_table.eml",
    "c04_two_units.eml",
    "p09_truncated_xls.eml",
];

/// The PostgreSQL server the tests use.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database and its temporary folder.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pg_name: Option<String>,
    dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("temporary folder");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("state/xxdc.db").display());
                Self {
                    backend,
                    url,
                    pg_name: None,
                    dir,
                }
            }
            Backend::Postgres => {
                let name = format!("xxdc_t_{:016x}", rand::random::<u64>());
                let mut admin = sqlx::AnyConnection::connect(PG_ADMIN_URL)
                    .await
                    .expect("PostgreSQL on 127.0.0.1:5432 (scripts/check starts it)");
                // The name is ours: `xxdc_t_` and 16 hex digits.
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                let _ = admin.close().await;
                Self {
                    backend,
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    pg_name: Some(name),
                    dir,
                }
            }
        }
    }

    /// The test's temporary folder (archive, spool folders, config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop may run inside a runtime (or while unwinding): a thread of
        // its own with a small runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut admin = sqlx::AnyConnection::connect(PG_ADMIN_URL).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database: {e}");
        }
    }
}

/// A config file for the binary: this database, an archive and one
/// directory source `spool` (polled every second) in the test folder, the
/// golden roster.
pub fn write_config(db: &TestDb, extra: &str) -> PathBuf {
    let roster = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/roster.csv");
    let text = format!(
        r#"[database]
url = "{url}"

[archive]
dir = "{archive}"

[roster]
path = "{roster}"

[campaign]
name = "2007年政务信息员登记"
deadline = "2007-05-20 23:59"

[[source]]
name = "fax-spool"
kind = "directory"
path = "{spool}"
poll_interval = "1s"
{extra}
"#,
        url = db.url,
        archive = db.path("messages").display(),
        roster = roster.display(),
        spool = db.path("spool").display(),
    );
    let path = db.path("config.toml");
    std::fs::write(&path, text).expect("write config");
    std::fs::create_dir_all(db.path("spool")).expect("spool folder");
    path
}

/// Opens the service on a config file written by [`write_config`], reading
/// attachments through the built binary with the config's child limits.
pub async fn open_app(
    config_path: &Path,
    clock: xxdc_intake::clock::Clock,
) -> std::sync::Arc<xxdc_intake::service::daemon::App> {
    let config = xxdc_intake::config::Config::load(config_path).expect("config");
    let isolation = xxdc_intake::parse::sandbox::Isolation::workers(
        BIN.into(),
        config.limits.child,
        Default::default(),
    );
    std::sync::Arc::new(
        xxdc_intake::service::daemon::App::open(config, isolation, clock)
            .await
            .expect("open app"),
    )
}

/// Writes a file into a spool folder, dated an hour back so that the
/// directory source takes it at once (it leaves files younger than 2 s).
pub fn drop_file(folder: &Path, name: &str, bytes: &[u8]) {
    let path = folder.join(name);
    std::fs::write(&path, bytes).expect("write spool file");
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(past))
        .expect("date spool file");
}

/// A body-text registration of roster unit `unit` (a roster name), sent
/// from `from`, with an officer mobile that makes each message distinct.
pub fn body_registration(
    message_id: &str,
    from: &str,
    unit: &str,
    officer: &str,
    mobile: &str,
) -> Vec<u8> {
    format!(
        "Message-ID: <{message_id}>\r\n\
Date: Wed, 16 May 2007 09:23:00 +0800\r\n\
From: <{from}>\r\n\
To: xxdc2004@163.com\r\n\
Subject: =?utf-8?B?55m76K6w6KGo?=\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
县府办信息督查科：\r\n\
    现将我单位分管政务信息领导及信息员登记表报送如下。\r\n\
\r\n\
单位：{unit}\r\n\
分管领导姓名：黄卫东\r\n\
职务：副镇长\r\n\
手机：13957772644\r\n\
信息员姓名：{officer}\r\n\
性别：女\r\n\
手机：{mobile}\r\n\
E-mail：officer@163.com\r\n\
\r\n\
办公室\r\n"
    )
    .into_bytes()
}

/// A connection of the test's own to the database at `url`, to look at it
/// with SQL: the store keeps its pool to itself.
pub async fn inspect(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::pool::PoolOptions::<sqlx::Any>::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("inspection connection")
}

/// Runs a statement on the test database and returns one i64.
pub async fn scalar(url: &str, sql: &'static str) -> i64 {
    let pool = inspect(url).await;
    let n = sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&pool)
        .await
        .expect(sql);
    pool.close().await;
    n
}

/// One test function per back-end: `both!(workers; test_fn, ...)` makes
/// `mod test_fn { sqlite, postgres }`, each a multi-thread `tokio::test`
/// with `workers` worker threads calling `test_fn(Backend)`.
#[allow(unused_macros)]
macro_rules! both {
    ($workers:tt; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
            async fn sqlite() {
                super::$name($crate::db::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
            async fn postgres() {
                super::$name($crate::db::Backend::Postgres).await;
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use both;

/// The bytes of golden case `name`.
pub fn golden(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(CASES).join(name)).expect("golden case")
}

/// Roster units as (name, first e-mail address).
pub fn units() -> Vec<(String, String)> {
    std::fs::read_to_string(ROSTER)
        .expect("roster")
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            let email = cols[4].split(['|', ';']).next().unwrap_or_default();
            (cols[1].to_string(), email.to_string())
        })
        .collect()
}

/// The archive's content id of a raw message.
pub fn content_id(raw: &[u8]) -> String {
    xxdc_intake::service::archive::Archive::id_of(raw)
}

/// `parse --json` with the golden roster over `files` (name, bytes), written
/// to `dir/inputs`: one report per file, in order.
pub fn parse_reports<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<serde_json::Value> {
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let paths: Vec<PathBuf> = files
        .into_iter()
        .map(|(name, raw)| {
            let p = inputs.join(name);
            std::fs::write(&p, raw).unwrap();
            p
        })
        .collect();
    let out = Command::new(BIN)
        .args(["parse", "--json", "--roster", ROSTER])
        .args(&paths)
        .output()
        .expect("run parse");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), paths.len());
    lines
        .into_iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Starts `xxdc-intake run` (with `--once` if `once`) on `config`, its
/// stderr appended to `log`.
pub fn start(config: &Path, log: &Path, once: bool) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"]).arg(config);
    if once {
        cmd.arg("--once");
    }
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start xxdc-intake run")
}
