//! The mail that goes out, under faults, on SQLite and on PostgreSQL, with
//! the real binary and a real SMTP sink:
//!
//! - two `run` processes on one database send each outbox row once (a row
//!   is claimed before it is sent);
//! - SIGTERM and kill -9 at random points during a backlog: every processed
//!   submission has exactly one receipt row (written with its results,
//!   never from memory), every row is delivered, and a mail delivered twice
//!   (same Message-ID: killed between the server's answer and the mark) is
//!   counted as a resend — at most one per kill;
//! - a start with a reminder slot due and a backlog waiting in the spool
//!   reminds no unit whose submission was in the backlog;
//! - the claims of an instance that stopped beating are given back at once
//!   by the next one, not after the whole lease.

mod db;
mod mailsink;
#[expect(
    clippy::duplicate_mod,
    reason = "the IMAP support and the SMTP sink each bring the shared test TLS helper"
)]
mod support;

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
    a_row_being_sent_is_never_cancelled,
    a_start_with_a_backlog_reminds_no_unit_that_submitted,
    a_start_with_a_slow_mailbox_reminds_no_unit_that_submitted,
    claims_of_a_stopped_instance_are_released,
);

/// One reminder slot at midnight today, due now and within its grace.
const DUE_SLOT: &str = "[reminders]\nslots = [\"-1d 00:00\"]\ngrace = \"48h\"\n";

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
    std::fs::create_dir_all(db.path("spool")).expect("spool");
    for i in 1..=n {
        db::drop_file(&db.path("spool"), &format!("s{i:03}.eml"), &submission(i));
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
    // The service may not have made the schema (or the file) yet.
    async fn count(url: &str, sql: &'static str) -> Option<i64> {
        let pool = sqlx::pool::PoolOptions::<sqlx::Any>::new()
            .max_connections(1)
            .connect(url)
            .await
            .ok()?;
        let n = sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&pool)
            .await
            .ok();
        pool.close().await;
        n
    }
    let started = Instant::now();
    while started.elapsed() < bound {
        let done = count(&db.url, "SELECT COUNT(*) FROM message WHERE state = 'done'").await;
        let waiting = count(
            &db.url,
            "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'sending')",
        )
        .await;
        if done == Some(messages) && waiting == Some(0) {
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
    // XXDC_KILLS=30 for a longer campaign; XXDC_STOP_WITHIN_MS=6000 to
    // stop later in each run (during sending rather than processing).
    let stop_within: u64 = std::env::var("XXDC_STOP_WITHIN_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500);
    let kills: usize = std::env::var("XXDC_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let db = TestDb::new(backend).await;
    let sink = Sink::start();
    // XXDC_SINK_FAULT="slow 300" makes a stop in the middle of a send
    // likelier (a possible resend).
    sink.set_fault(&std::env::var("XXDC_SINK_FAULT").unwrap_or_else(|_| "slow 20".into()));
    let config = write_config(&db, &sink, SUBMISSIONS, "[reminders]\nenabled = false\n");
    drop_submissions(&db, SUBMISSIONS);
    let seed: u64 = std::env::var("XXDC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_070_520);
    eprintln!("stop moments from seed {seed} (XXDC_CRASH_SEED)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let log = db.path("run.log");
    for k in 0..kills {
        let mut child = start(&config, &log, false);
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..stop_within))).await;
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
        "{kills} stops: {} deliveries, {} distinct, {resends} counted resends",
        got.values().sum::<usize>(),
        got.len()
    );
    assert!(
        extra as i64 <= resends,
        "{extra} second deliveries, {resends} counted"
    );
    assert!(
        resends as usize <= kills,
        "{resends} resends for {kills} stops"
    );
}

/// A body registration of unit `i` from its own address.
fn submission(i: usize) -> Vec<u8> {
    db::body_registration(
        &format!("s{i:03}@yj.gov.cn"),
        &format!("u{i:03}@yj.gov.cn"),
        &format!("测试单位{i:03}"),
        "张三",
        &format!("1380577{i:04}"),
    )
}

async fn a_start_with_a_backlog_reminds_no_unit_that_submitted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = Sink::start();
    // Mail that arrived while the service was down.
    drop_submissions(&db, 20);
    only_units_without_a_submission_reminded(&db, &sink, DUE_SLOT, 30, 20).await;
}

/// The same through a mailbox on a slow link: the service's first ticks
/// come long before the backlog is fetched.
async fn a_start_with_a_slow_mailbox_reminds_no_unit_that_submitted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = Sink::start();
    let dovecot = support::Dovecot::start();
    let mut client = dovecot.client("alice", "secret").await;
    for i in 1..=20 {
        client.append("INBOX", &submission(i), None).await;
    }
    client.logout().await;
    let proxy = support::FaultProxy::start(dovecot.imap_port).await;
    proxy.set(support::Mode::Throttle(8_000));
    std::fs::write(db.path("imap-password"), "secret\n").expect("password");
    let source = format!(
        "[[source]]\nname = \"mail\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\n\
         tls = \"none\"\nusername = \"alice\"\npassword_file = \"{}\"\n",
        proxy.port,
        db.path("imap-password").display()
    );
    only_units_without_a_submission_reminded(&db, &sink, &format!("{DUE_SLOT}{source}"), 30, 20)
        .await;
}

/// Starts the service with a reminder slot due and `submissions` of
/// `units` units waiting; only the others are reminded.
async fn only_units_without_a_submission_reminded(
    db: &TestDb,
    sink: &Sink,
    extra: &str,
    units: usize,
    submissions: usize,
) {
    let config = write_config(db, sink, units, extra);
    let log = db.path("run.log");
    let mut child = start(&config, &log, false);
    let finished = settled(db, submissions as i64, Duration::from_secs(60)).await;
    let reminded = || async {
        use sqlx::Row;
        sqlx::query("SELECT unit_key FROM outbox WHERE kind = 'reminder' ORDER BY unit_key")
            .fetch_all(&db::inspect(&db.url).await)
            .await
            .expect("reminders")
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
    };
    // The reminders come once the picture is current.
    let started = Instant::now();
    while reminded().await.len() < units - submissions
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop(&mut child);
    assert!(finished, "not settled\n{}", logs(&[&log]));
    let expected: Vec<String> = (submissions + 1..=units)
        .map(|i| format!("u{i:03}"))
        .collect();
    assert_eq!(
        reminded().await,
        expected,
        "only units whose submission was not in the backlog\n{}",
        logs(&[&log])
    );
}

async fn claims_of_a_stopped_instance_are_released(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = Sink::start();
    // The default five-minute lease: only the instance registry can give
    // the claim back sooner.
    let config = write_config(&db, &sink, 3, "[reminders]\nenabled = false\n");
    let config_text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("claim_lease = \"2s\"", "claim_lease = \"5m\"");
    std::fs::write(&config, config_text).expect("config");
    let now = chrono::Utc::now().timestamp();
    {
        // Another host's instance took a message, and then stopped beating
        // a minute ago (a power cut): its claim would hold five minutes.
        let app = db::open_app(&config, xxdc_intake::clock::Clock::System).await;
        let raw = db::body_registration(
            "dead@yj.gov.cn",
            "u001@yj.gov.cn",
            "测试单位001",
            "张三",
            "13805770001",
        );
        let key = xxdc_intake::store::MailboxKey {
            source: "fax-spool",
            mailbox: "",
            uidvalidity: 0,
            uid: 1,
        };
        app.intake
            .accept(&key, &raw, None, now)
            .await
            .expect("accept");
        let store = app.intake.store();
        let dead = "otherhost-4242-0badc0de";
        store
            .register_instance(dead, "otherhost", 4242, now - 60)
            .await
            .expect("register");
        store
            .claim_next(dead, now - 60, 300, 5)
            .await
            .expect("claim")
            .expect("the message");
        app.close().await;
        store.close().await;
    }
    let log = db.path("run.log");
    let status = start(&config, &log, true).wait().expect("run --once");
    assert!(status.success(), "run --once: {status}\n{}", logs(&[&log]));
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM message WHERE state = 'done'").await,
        1,
        "the stopped instance's message was taken again at once\n{}",
        logs(&[&log])
    );
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM instance WHERE id = 'otherhost-4242-0badc0de'"
        )
        .await,
        0
    );
}

/// A reminder taken by a sender is not cancelled under it (the unit
/// registered meanwhile): the sender's mark wins, and a cancelled row is
/// never taken.
async fn a_row_being_sent_is_never_cancelled(backend: Backend) {
    use xxdc_intake::store::outbox::{self, MailKind, NewMail};
    let db = TestDb::new(backend).await;
    let store = xxdc_intake::store::Store::open(&db.url)
        .await
        .expect("open");
    let mail = |unit: &str| NewMail {
        campaign: "测试".into(),
        unit_key: unit.into(),
        slot: "-1d 10:00".into(),
        kind: MailKind::Reminder,
        to: format!("{unit}@yj.gov.cn"),
        subject: "提醒".into(),
        body: "请报送".into(),
        in_reply_to: None,
        attachment: None,
    };
    let now = 1_179_280_800;
    outbox::queue(&store, &mail("u001"), "163.com", now)
        .await
        .expect("queue");
    outbox::queue(&store, &mail("u002"), "163.com", now + 1)
        .await
        .expect("queue");
    let taken = outbox::claim_next(&store, "w", now + 2, 300)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(taken.unit_key, "u001");
    for unit in ["u001", "u002"] {
        outbox::cancel_reminders(&store, "测试", unit, "已登记")
            .await
            .expect("cancel");
    }
    assert!(
        outbox::mark_sent(&store, &taken.id, "w", now + 3)
            .await
            .expect("sent")
    );
    assert!(
        outbox::claim_next(&store, "w", now + 4, 300)
            .await
            .expect("claim")
            .is_none(),
        "a cancelled row is never taken"
    );
    let states = outbox_states(&db).await;
    assert_eq!(
        states,
        BTreeMap::from([("cancelled".to_string(), 1), ("sent".to_string(), 1)])
    );
}
