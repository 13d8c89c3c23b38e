//! The mail that goes out, under faults, on SQLite and on PostgreSQL, with
//! the real binary and a real SMTP sink:
//!
//! - two `run` processes on one database send each outbox row once (a row
//!   is claimed before it is sent);
//! - SIGTERM and kill -9 at random points during a backlog: every processed
//!   submission has exactly one receipt row (written with its results,
//!   never from memory), every row is delivered, and a mail delivered twice
//!   (same Message-ID: killed between the server's answer and the mark) is
//!   counted as a resend — at most one per kill.

mod db;
mod mailsink;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use db::{Backend, TestDb, scalar, start};
use mailsink::Sink;

db::both!(
    2;
    two_instances_send_each_mail_once,
    kills_during_a_backlog_lose_no_receipt,
);

/// A roster of `units` units `u001`…, each with its own address.
fn write_roster(db: &TestDb, units: usize) -> PathBuf {
    let mut roster = String::from("id,name,category,aliases,emails\n");
    for i in 1..=units {
        roster.push_str(&format!("u{i:03},测试单位{i:03},乡镇,,u{i:03}@yj.gov.cn\n"));
    }
    let path = db.path("roster.csv");
    std::fs::write(&path, roster).expect("roster");
    path
}

/// A config: this database, a directory source `spool`, the sink (no
/// pacing to speak of), the deadline tomorrow by the real clock with one
/// reminder slot at midnight today (due now, well within its grace), a
/// short claim lease so that a killed process's claims pass on quickly,
/// and `extra`.
fn write_config(db: &TestDb, sink: &Sink, units: usize, extra: &str) -> PathBuf {
    let tomorrow = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
        .succ_opt()
        .expect("tomorrow");
    let text = format!(
        r#"[database]
url = "{url}"

[archive]
dir = "{archive}"

[roster]
path = "{roster}"

[campaign]
name = "测试"
deadline = "{tomorrow} 23:59"

[[source]]
name = "fax-spool"
kind = "directory"
path = "{spool}"
poll_interval = "1s"

[service]
claim_lease = "2s"

{smtp}
{extra}
"#,
        url = db.url,
        archive = db.path("messages").display(),
        roster = write_roster(db, units).display(),
        spool = db.path("spool").display(),
        smtp = sink.smtp_toml("implicit", "rate_per_minute = 100000\ndaily_cap = 100000\n"),
    );
    std::fs::create_dir_all(db.path("spool")).expect("spool");
    let path = db.path("config.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Drops `n` body registrations, each from its unit's own address.
fn drop_submissions(db: &TestDb, n: usize) {
    for i in 1..=n {
        let raw = db::body_registration(
            &format!("s{i:03}@yj.gov.cn"),
            &format!("u{i:03}@yj.gov.cn"),
            &format!("测试单位{i:03}"),
            "张三",
            &format!("1380577{i:04}"),
        );
        db::drop_file(&db.path("spool"), &format!("s{i:03}.eml"), &raw);
    }
}

/// Outbox rows by state.
async fn outbox_states(db: &TestDb) -> BTreeMap<String, i64> {
    use sqlx::Row;
    sqlx::query("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        .fetch_all(&db::inspect(&db.url).await)
        .await
        .expect("states")
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect()
}

/// Waits until `messages` messages are done and nothing is left to send.
async fn settled(db: &TestDb, messages: i64, bound: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < bound {
        let done = scalar(&db.url, "SELECT COUNT(*) FROM message WHERE state = 'done'").await;
        let waiting = scalar(
            &db.url,
            "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'sending')",
        )
        .await;
        if done == messages && waiting == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn logs(paths: &[&Path]) -> String {
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Message-ID → how many times it arrived.
fn deliveries(sink: &Sink) -> BTreeMap<String, usize> {
    let mut by_id = BTreeMap::new();
    for m in sink.received() {
        *by_id.entry(m.message_id()).or_default() += 1;
    }
    by_id
}

async fn two_instances_send_each_mail_once(backend: Backend) {
    const UNITS: usize = 40;
    const SUBMISSIONS: usize = 20;
    let db = TestDb::new(backend).await;
    let sink = Sink::start();
    // Slow answers keep both senders busy at once.
    sink.set_fault("slow 200");
    let config = write_config(&db, &sink, UNITS, "");
    drop_submissions(&db, SUBMISSIONS);
    // The schema first: two first starts at once are another test's.
    xxdc_intake::store::Store::open(&db.url)
        .await
        .expect("schema")
        .close()
        .await;
    let (log_a, log_b) = (db.path("a.log"), db.path("b.log"));
    let mut a = start(&config, &log_a, false);
    let mut b = start(&config, &log_b, false);
    let finished = settled(&db, SUBMISSIONS as i64, Duration::from_secs(120)).await;
    // One more round of both service loops must add nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop(&mut a);
    stop(&mut b);
    assert!(finished, "not settled\n{}", logs(&[&log_a, &log_b]));

    let states = outbox_states(&db).await;
    let sent = states.get("sent").copied().unwrap_or(0);
    assert!(
        sent >= SUBMISSIONS as i64,
        "every submission's receipt was sent: {states:?}"
    );
    let got = deliveries(&sink);
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(got.len() as i64, sent, "one delivery per sent row");
    assert_eq!(
        scalar(&db.url, "SELECT COALESCE(SUM(resends), 0) FROM outbox").await,
        0
    );
}

async fn kills_during_a_backlog_lose_no_receipt(backend: Backend) {
    const SUBMISSIONS: usize = 120;
    const KILLS: usize = 8;
    let db = TestDb::new(backend).await;
    let sink = Sink::start();
    sink.set_fault("slow 20");
    let config = write_config(&db, &sink, SUBMISSIONS, "[reminders]\nenabled = false\n");
    drop_submissions(&db, SUBMISSIONS);
    let seed: u64 = std::env::var("XXDC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_070_520);
    eprintln!("stop moments from seed {seed} (XXDC_CRASH_SEED)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let log = db.path("run.log");
    for k in 0..KILLS {
        let mut child = start(&config, &log, false);
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
        if k % 2 == 0 {
            child.kill().expect("SIGKILL");
        } else {
            let pid = child.id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
        }
        child.wait().expect("reaped");
    }
    // The last killed process's claims run out (2 s lease).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let status = start(&config, &log, true).wait().expect("run --once");
    assert!(status.success(), "run --once: {status}\n{}", logs(&[&log]));
    assert!(
        settled(&db, SUBMISSIONS as i64, Duration::from_secs(30)).await,
        "not settled\n{}",
        logs(&[&log])
    );

    // Every processed submission has exactly one receipt row.
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM message m
             WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.slot = 'ack:' || m.id)"
        )
        .await,
        0,
        "a processed submission without its receipt"
    );
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM outbox").await,
        SUBMISSIONS as i64
    );
    let states = outbox_states(&db).await;
    assert_eq!(
        states,
        BTreeMap::from([("sent".to_string(), SUBMISSIONS as i64)])
    );
    // Every row delivered; a second delivery only for a counted resend.
    let got = deliveries(&sink);
    assert_eq!(got.len(), SUBMISSIONS, "each receipt arrived");
    let extra: usize = got.values().map(|n| n - 1).sum();
    let resends = scalar(&db.url, "SELECT COALESCE(SUM(resends), 0) FROM outbox").await;
    eprintln!(
        "{KILLS} stops: {} deliveries, {} distinct, {resends} counted resends",
        got.values().sum::<usize>(),
        got.len()
    );
    assert!(
        extra as i64 <= resends,
        "{extra} second deliveries, {resends} counted"
    );
    assert!(
        resends as usize <= KILLS,
        "{resends} resends for {KILLS} stops"
    );
}
