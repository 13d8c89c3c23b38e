//! The service talks to systemd (`Type=notify`) without systemd: a unix
//! datagram socket stands in for `NOTIFY_SOCKET`, and the real binary runs
//! `run --config C` as systemd would start it.
//!
//! - `READY=1` comes only once the config is read, the database migrated
//!   and every source has polled successfully (the file dropped before the
//!   start is already in the ledger when READY arrives);
//! - `WATCHDOG=1` pings come at half `WATCHDOG_USEC`;
//! - `STATUS=` lines say what the service does;
//! - SIGTERM → `STOPPING=1` and exit code 0;
//! - SIGTERM in the middle of a backlog: the current message is finished,
//!   `STOPPING=1`, exit code 0, and no message is left half-claimed;
//! - a broken config exits 78 without READY.

mod db;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use db::{Backend, TestDb, scalar};

const BIN: &str = env!("CARGO_BIN_EXE_xxdc-intake");

/// The next datagram, as text (fails after 20 s of silence).
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_status_and_stopping() {
    let db = TestDb::new(Backend::Sqlite).await;
    let config = db::write_config(&db, "");
    let raw = db::body_registration(
        "notify@yj.gov.cn",
        "ytz@yj.gov.cn",
        "岩头镇人民政府",
        "黄蕾",
        "13505777932",
    );
    db::drop_file(&db.path("spool"), "岩头镇.eml", &raw);
    let path = db.path("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");

    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xxdc-intake run");

    // Everything up to and including READY=1.
    let mut before_ready = Vec::new();
    loop {
        let msg = next(&sock);
        let ready = msg.lines().any(|l| l == "READY=1");
        before_ready.push(msg);
        if ready {
            break;
        }
        assert!(before_ready.len() < 1000, "no READY=1: {before_ready:?}");
    }
    // By READY the database is migrated and the first poll has recorded the
    // file that was waiting.
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM mailbox_entry").await,
        1
    );
    assert_eq!(
        scalar(&db.url,
            "SELECT COUNT(*) FROM source_state WHERE name = 'fax-spool' AND last_poll_ok IS NOT NULL"
        )
        .await,
        1
    );

    // Then watchdog pings and a status line.
    let mut all = before_ready.clone();
    let mut pings = all.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let mut statuses = all.iter().filter(|m| m.contains("STATUS=")).count();
    while pings < 3 || statuses < 1 {
        let msg = next(&sock);
        pings += usize::from(msg.lines().any(|l| l == "WATCHDOG=1"));
        statuses += usize::from(msg.lines().any(|l| l.starts_with("STATUS=")));
        all.push(msg);
        assert!(
            all.len() < 1000,
            "pings {pings}, statuses {statuses}: {all:?}"
        );
    }
    assert!(!all.iter().any(|m| m.contains("STOPPING=1")));

    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    loop {
        let msg = next(&sock);
        if msg.lines().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    let out = child.wait_with_output().expect("exit");
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit after SIGTERM; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The message that was waiting was processed before the stop.
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM message WHERE state = 'done'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_exits_78_without_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[database]\nurl = \"mysql://x\"\n").expect("config");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_nonblocking(true).expect("nonblocking");
    let status = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &path)
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert_eq!(status.code(), Some(78));
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert!(
            !msg.contains("READY=1"),
            "READY after a config error: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_backlog_finishes_the_current_message() {
    const MESSAGES: usize = 300;
    let db = TestDb::new(Backend::Sqlite).await;
    let config = db::write_config(&db, "");
    // A backlog already recorded (as after a stop), waiting to be processed.
    {
        let config = xxdc_intake::config::Config::load(&config).expect("config");
        let app = xxdc_intake::service::daemon::App::open(
            config,
            xxdc_intake::parse::sandbox::Isolation::InProcess,
            xxdc_intake::clock::Clock::System,
        )
        .await
        .expect("app");
        for i in 0..MESSAGES {
            let raw = db::body_registration(
                &format!("backlog-{i}@yj.gov.cn"),
                "ytz@yj.gov.cn",
                "岩头镇人民政府",
                "黄蕾",
                &format!("139{i:08}"),
            );
            let key = xxdc_intake::store::MailboxKey {
                source: "fax-spool",
                mailbox: "backlog",
                uidvalidity: 0,
                uid: i as i64,
            };
            app.intake
                .accept(&key, &raw, None, 1_179_280_000)
                .await
                .expect("accept");
        }
        app.intake.store().close().await;
    }
    let path = db.path("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xxdc-intake run");
    // READY comes once the backlog is recorded; processing starts at once.
    while !next(&sock).lines().any(|l| l == "READY=1") {}
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    while !next(&sock).lines().any(|l| l == "STOPPING=1") {}
    let out = child.wait_with_output().expect("exit");
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit after SIGTERM; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM message").await,
        MESSAGES as i64
    );
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM message WHERE state = 'processing'"
        )
        .await,
        0,
        "the message being processed was finished"
    );
    let done = scalar(&db.url, "SELECT COUNT(*) FROM message WHERE state = 'done'").await;
    eprintln!("{done} of {MESSAGES} processed before the stop");
}

/// A second instance on PostgreSQL waits for the polling lease another
/// instance holds: it is still READY (systemd would otherwise kill and
/// restart it for ever) and says in STATUS that it stands by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_instance_is_ready_and_says_so() {
    let db = TestDb::new(Backend::Postgres).await;
    std::fs::write(db.path("imap-password"), "secret\n").expect("password");
    // The IMAP server is never reached: the lease is held by the test.
    let source = format!(
        "[[source]]\nname = \"mail\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = 9\n\
         tls = \"none\"\nusername = \"alice\"\npassword_file = \"{}\"\n",
        db.path("imap-password").display()
    );
    let config = db::write_config(&db, &source);
    let store = xxdc_intake::store::Store::open(&db.url)
        .await
        .expect("open");
    let _held = store
        .try_lease("mail")
        .await
        .expect("lease")
        .expect("free at first");
    let path = db.path("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start xxdc-intake run");
    let mut seen = Vec::new();
    let ready = loop {
        let msg = next(&sock);
        seen.push(msg.clone());
        if msg.lines().any(|l| l == "READY=1") {
            break msg;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ready.contains("STATUS=备用：另一实例正在收取邮箱"),
        "{seen:?}"
    );
}
