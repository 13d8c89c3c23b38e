//! Crash safety of the IMAP source against a real, private Dovecot (see
//! `tests/support`), on SQLite:
//!
//! - `kill_9_at_random_points_loses_and_doubles_nothing`: 500 distinct
//!   messages APPENDed to INBOX (body-text registrations, ten with office
//!   attachments read by sandboxed children, some already `\Seen`); the real
//!   binary (`run`, continuous) is killed with SIGKILL at seeded random
//!   moments and started again, at least five times and more while the
//!   ingest is unfinished (at most twelve), then `run --once` finishes
//!   (a second `--once` must change nothing). Exactly 500 messages, all
//!   done, one ledger entry per UID pointing at that UID's bytes, per
//!   message exactly the registrations `parse` finds in it, and the
//!   mailbox untouched: 500 messages, the same `\Seen` ones, nothing
//!   deleted or moved. Set `XXDC_CRASH_SEED` to repeat it with other
//!   moments.

mod db;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use sqlx::Row;
use xxdc_intake::store::{MessageState, Store};

use db::{ROSTER, content_id, scalar as count, start, units};
use support::Dovecot;

const SOURCE: &str = "mail";
const MESSAGES: usize = 500;
/// Rounds of start and SIGKILL: at least `KILLS`, at most `MAX_ROUNDS`.
const KILLS: usize = 5;
const MAX_ROUNDS: usize = 12;

/// One message to APPEND: a file name for `parse`, its bytes, and whether
/// it goes in already `\Seen`.
struct Mail {
    name: String,
    raw: Vec<u8>,
    seen: bool,
}

/// `n` distinct messages, each with a Message-ID of its own: most are
/// body-text registrations with a subject of their own (no child process
/// to read them); every 50th is
/// a golden message with attachments (each attachment read by a sandboxed
/// child), its Message-ID replaced. Every 7th is `\Seen`. All CRLF, so
/// that the server gives back the very bytes appended.
fn messages(n: usize) -> Vec<Mail> {
    let units = units();
    let attached = db::ATTACHED_CASES;
    (0..n)
        .map(|i| {
            let (name, raw) = if i % 50 == 25 {
                let case = attached[(i / 50) % attached.len()];
                let golden = db::golden(case);
                (
                    format!("m{i:03}-{case}"),
                    with_message_id(&golden, &format!("<crash-imap-{i}@yj.gov.cn>")),
                )
            } else {
                let (unit, email) = &units[i % units.len()];
                let raw = db::body_registration(
                    &format!("crash-imap-{i}@yj.gov.cn"),
                    email,
                    unit,
                    "黄蕾",
                    &format!("139{i:08}"),
                );
                // A subject of its own: 登记表 0042.
                let subject = "Subject: =?utf-8?B?55m76K6w6KGo?=\r\n";
                let text = String::from_utf8(raw).expect("UTF-8");
                assert!(text.contains(subject));
                let raw = text
                    .replacen(
                        subject,
                        &format!("Subject: =?utf-8?B?55m76K6w6KGo?= {i:04}\r\n"),
                        1,
                    )
                    .into_bytes();
                (format!("m{i:03}.eml"), raw)
            };
            assert!(
                !raw.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
                "{name}: CRLF only"
            );
            Mail {
                name,
                raw,
                seen: i % 7 == 3,
            }
        })
        .collect()
}

/// `raw` with its Message-ID header (one line) replaced by `id`.
fn with_message_id(raw: &[u8], id: &str) -> Vec<u8> {
    let text = std::str::from_utf8(raw).expect("golden mail is ASCII");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header");
    let mut out = String::new();
    let mut replaced = false;
    for line in head.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("message-id:") {
            out.push_str(&format!("Message-ID: {id}\r\n"));
            replaced = true;
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    assert!(replaced, "the golden case has a Message-ID");
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// What `parse` finds: the registrations per message content id.
fn expected_registrations(dir: &Path, mails: &[Mail]) -> HashMap<String, Vec<serde_json::Value>> {
    let reports = db::parse_reports(
        dir,
        mails.iter().map(|m| (m.name.as_str(), m.raw.as_slice())),
    );
    mails
        .iter()
        .zip(reports)
        .map(|(m, report)| {
            let regs = report["registrations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (content_id(&m.raw), regs)
        })
        .collect()
}

/// The config: SQLite and the archive in `dir`, the golden roster, one
/// IMAP source on the private Dovecot (the shortest poll interval allowed;
/// IDLE is on), a short claim lease.
fn write_config(dir: &Path, port: u16) -> PathBuf {
    std::fs::write(dir.join("imap-password"), "secret\n").expect("password file");
    let text = format!(
        r#"[database]
url = "sqlite://{d}/state/xxdc.db"

[archive]
dir = "{d}/messages"

[roster]
path = "{ROSTER}"

[campaign]
name = "2007年政务信息员登记"
deadline = "2007-05-20 23:59"

[service]
claim_lease = "2s"

[[source]]
name = "{SOURCE}"
kind = "imap"
host = "127.0.0.1"
port = {port}
tls = "none"
username = "alice"
password_file = "{d}/imap-password"
poll_interval = "5s"
timeout = "5s"
"#,
        d = dir.display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The last lines of a log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Ledger entries and messages by state, read-only; `None` before the
/// killed process made the schema.
async fn progress(db_file: &Path) -> Option<(i64, Vec<(String, i64)>)> {
    if !db_file.exists() {
        return None;
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=ro", db_file.display()))
        .await
        .expect("open read-only");
    let entries = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM mailbox_entry")
        .fetch_one(&pool)
        .await;
    let states = sqlx::query("SELECT state, COUNT(*) FROM message GROUP BY state ORDER BY state")
        .fetch_all(&pool)
        .await;
    pool.close().await;
    let states = states
        .ok()?
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect();
    Some((entries.ok()?, states))
}

/// Per message: (state, attempts).
async fn message_states(sql: &sqlx::AnyPool) -> BTreeMap<String, (String, i64)> {
    sqlx::query("SELECT id, state, CAST(attempts AS BIGINT) FROM message")
        .fetch_all(sql)
        .await
        .expect("messages")
        .iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                (r.get::<String, _>(1), r.get::<i64, _>(2)),
            )
        })
        .collect()
}

/// Per message: its stored registrations (their JSON, in order).
async fn stored_registrations(sql: &sqlx::AnyPool) -> HashMap<String, Vec<serde_json::Value>> {
    let mut out: HashMap<String, Vec<serde_json::Value>> = sqlx::query("SELECT id FROM message")
        .fetch_all(sql)
        .await
        .expect("messages")
        .iter()
        .map(|r| (r.get::<String, _>(0), Vec::new()))
        .collect();
    let rows = sqlx::query(
        "SELECT message, unit_id, fields, held_unit FROM registration ORDER BY message, idx",
    )
    .fetch_all(sql)
    .await
    .expect("registrations");
    for r in rows {
        let mut fields: serde_json::Value =
            serde_json::from_str(&r.get::<String, _>(2)).expect("fields are JSON");
        assert_eq!(
            fields["unit_match"]["unit_id"].as_str(),
            r.get::<Option<String>, _>(1).as_deref(),
            "unit_id column and fields agree"
        );
        // A replacement from outside a unit's own addresses is held for a
        // person: credited to nobody, the unit it names kept aside.
        if let Some(held) = r.get::<Option<String>, _>(3) {
            fields["unit_match"] = serde_json::json!(format!("held:{held}"));
        }
        out.entry(r.get::<String, _>(0)).or_default().push(fields);
    }
    out
}

/// `parse`'s registrations as the store keeps them: those it holds back
/// (see [`stored_registrations`]) marked the same way.
fn as_stored(
    expected: &[serde_json::Value],
    stored: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    expected
        .iter()
        .zip(stored)
        .map(|(e, s)| {
            let mut e = e.clone();
            if let Some(held) = s["unit_match"].as_str()
                && Some(held)
                    == e["unit_match"]["unit_id"]
                        .as_str()
                        .map(|u| format!("held:{u}"))
                        .as_deref()
            {
                e["unit_match"] = s["unit_match"].clone();
            }
            e
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let seed: u64 = std::env::var("XXDC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_070_516);
    eprintln!("kill -9 moments from seed {seed} (XXDC_CRASH_SEED)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let dovecot = Dovecot::start();
    let dir = tempfile::Builder::new()
        .prefix("xxdc-crash-imap-")
        .tempdir()
        .expect("temp dir");
    let mails = messages(MESSAGES);
    let expected = expected_registrations(dir.path(), &mails);
    assert_eq!(expected.len(), MESSAGES, "the messages are distinct");

    let mut client = dovecot.client("alice", "secret").await;
    for m in &mails {
        client
            .append("INBOX", &m.raw, m.seen.then_some("(\\Seen)"))
            .await;
    }
    // A fresh mailbox numbers the messages 1, 2, … in APPEND order.
    let uids = client.uids("INBOX").await;
    assert_eq!(uids.len(), MESSAGES);
    let by_uid: BTreeMap<i64, String> = uids
        .iter()
        .zip(&mails)
        .map(|(uid, m)| (i64::from(*uid), content_id(&m.raw)))
        .collect();
    let seen_uids: Vec<u32> = uids
        .iter()
        .zip(&mails)
        .filter(|(_, m)| m.seen)
        .map(|(uid, _)| *uid)
        .collect();

    let config = write_config(dir.path(), dovecot.imap_port);
    let url = format!("sqlite://{}/state/xxdc.db", dir.path().display());
    let log = dir.path().join("run.log");
    // At least KILLS rounds, and more while the ingest is unfinished, so
    // that the kills fall on fetching, recording and processing alike.
    let db_file = dir.path().join("state/xxdc.db");
    for round in 1..=MAX_ROUNDS {
        let mut child = start(&config, &log, false);
        let after = rng.random_range(100..900);
        tokio::time::sleep(Duration::from_millis(after)).await;
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("`run` stopped by itself: {status}\n{}", tail(&log));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        // Read-only, without migrating: the next start must find the
        // database as the killed process left it.
        let Some((entries, states)) = progress(&db_file).await else {
            eprintln!("round {round}: killed after {after} ms, before the schema was made");
            continue;
        };
        eprintln!(
            "round {round}: killed after {after} ms: {entries} ledger entries, messages {states:?}"
        );
        let finished = states == vec![("done".to_string(), MESSAGES as i64)];
        if round >= KILLS && finished {
            break;
        }
    }

    // Finish, then once more: the second pass must find nothing to do
    // (unless the first left something, which it then finishes).
    let once_log = dir.path().join("once.log");
    let mut before_second = None;
    for pass in 0..2 {
        let status = start(&config, &once_log, true).wait().expect("run --once");
        assert!(
            status.success(),
            "run --once: {status}\n{}",
            tail(&once_log)
        );
        let sql = db::inspect(&url).await;
        let states = message_states(&sql).await;
        sql.close().await;
        if pass == 0 {
            if states.values().all(|(state, _)| state == "done") && states.len() == MESSAGES {
                before_second = Some(states);
            } else {
                eprintln!("a second `run --once` was needed");
            }
        } else if let Some(before) = &before_second {
            assert!(
                &states == before,
                "the second `run --once` changed messages\n{}",
                tail(&once_log)
            );
        }
    }
    let once_text = std::fs::read_to_string(&once_log).unwrap_or_default();
    assert!(
        !once_text.contains("source poll failed"),
        "a `run --once` poll failed:\n{once_text}"
    );

    let store = Store::open(&url).await.expect("open");
    let states = store.count_by_state().await.unwrap();
    assert_eq!(
        states,
        vec![(MessageState::Done, MESSAGES as i64)],
        "every message recorded once and done\n{}\n----\n{}",
        tail(&log),
        tail(&once_log)
    );
    store.close().await;
    let sql = db::inspect(&url).await;
    let attempts: BTreeMap<i64, usize> =
        message_states(&sql)
            .await
            .values()
            .fold(BTreeMap::new(), |mut acc, (_, a)| {
                *acc.entry(*a).or_default() += 1;
                acc
            });
    eprintln!("messages by attempts: {attempts:?}");

    // The ledger: one entry per UID, under one UIDVALIDITY, each pointing
    // at the bytes appended under that UID.
    let uidvalidity = i64::from(dovecot.uidvalidity("alice", "INBOX"));
    let ledger: BTreeMap<i64, String> = sqlx::query(
        "SELECT uid, message FROM mailbox_entry
         WHERE source = $1 AND mailbox = 'INBOX' AND uidvalidity = $2",
    )
    .bind(SOURCE)
    .bind(uidvalidity)
    .fetch_all(&sql)
    .await
    .expect("ledger")
    .iter()
    .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
    .collect();
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM mailbox_entry").await,
        MESSAGES as i64,
        "exactly one ledger entry per message"
    );
    assert_eq!(ledger, by_uid, "each UID recorded with its own bytes");

    // Every archived raw message is whole: its bytes hash to its id.
    let archived = sqlx::query("SELECT id, archive_path FROM message")
        .fetch_all(&sql)
        .await
        .expect("archive paths");
    for r in &archived {
        let (id, path) = (r.get::<String, _>(0), r.get::<String, _>(1));
        let raw = std::fs::read(dir.path().join("messages").join(&path)).expect("archived");
        assert_eq!(content_id(&raw), id, "archive file {path} is whole");
    }

    // Each message's registrations are what `parse` finds in it, once.
    let stored = stored_registrations(&sql).await;
    assert_eq!(stored.len(), MESSAGES);
    for (id, regs) in &expected {
        let got = stored.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            got.len(),
            regs.len(),
            "message {id}: as many registrations as `parse` finds"
        );
        assert_eq!(
            got,
            as_stored(regs, got).as_slice(),
            "message {id}: the registrations `parse` finds, once"
        );
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM registration").await,
        total as i64
    );
    assert!(
        count(&url, "SELECT COUNT(*) FROM attachment").await >= 10,
        "attachments were read"
    );
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(*) FROM message WHERE claimed_by IS NOT NULL"
        )
        .await,
        0,
        "no claim left behind"
    );
    sql.close().await;

    // Nothing was deleted, moved or marked read on the server.
    let flags = client.flags("INBOX").await;
    assert_eq!(
        flags.len(),
        MESSAGES,
        "the mailbox still holds every message"
    );
    assert!(
        flags
            .iter()
            .all(|(_, f)| !f.iter().any(|x| x.contains("Deleted"))),
        "{flags:?}"
    );
    let seen: Vec<u32> = flags
        .iter()
        .filter(|(_, f)| f.iter().any(|x| x.contains("Seen")))
        .map(|(uid, _)| *uid)
        .collect();
    assert_eq!(seen, seen_uids, "BODY.PEEK[]: \\Seen is as it was");
    assert_eq!(
        client.uids("Archive").await.len(),
        0,
        "nothing moved to Archive"
    );
    client.logout().await;
}
