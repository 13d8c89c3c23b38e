//! The store's guarantees, each checked on SQLite and on PostgreSQL (every
//! test below runs as `NAME::sqlite` and `NAME::postgres`, each on a fresh
//! database of its own, see `tests/db/mod.rs`):
//!
//! - recording a message or a ledger entry twice records it once;
//! - many claimers on separate pools never get the same message;
//! - an expired claim passes to another worker, and the first worker's late
//!   `finish` is refused;
//! - a transient failure is retried later with a doubling backoff until
//!   `max_attempts`, a permanent one fails at once;
//! - `finish` replaces a message's results when it is processed again;
//! - the polling lease is exclusive on PostgreSQL and passes on when its
//!   holder lets go or its connection dies;
//! - migrations applied again change nothing (library and `db migrate`);
//! - a directory source through `App` + the daemon's pass: files recorded
//!   once and moved aside, results stored, a resend recognised, a
//!   correction becomes the receipt, and `status --json` has the
//!   contract's shape.

mod db;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use xxdc_intake::clock::Clock;
use xxdc_intake::parse::message::MessageKind;
use xxdc_intake::parse::pipeline::{DEFAULT_REQUIRED, Limits, Pipeline};
use xxdc_intake::parse::sandbox::{ChildLimits, Isolation};
use xxdc_intake::service::archive::Archive;
use xxdc_intake::service::daemon::{self, App, RunOptions};
use xxdc_intake::service::intake::{Intake, IntakeSettings, Step};
use xxdc_intake::store::{
    AttachmentRow, MailboxKey, NewMessage, ProblemRow, Processed, Recorded, RegistrationRow, Store,
};

use db::{Backend, TestDb, golden, scalar};

const BIN: &str = env!("CARGO_BIN_EXE_xxdc-intake");
const T0: i64 = 1_179_280_000; // 2007-05-16, during the campaign

db::both!(
    4;
    recording_is_idempotent,
    a_batch_is_recorded_once_per_message_and_entry,
    concurrent_claims_never_share_a_message,
    expired_claim_passes_on_and_late_finish_is_refused,
    transient_failures_back_off_permanent_ones_fail,
    finish_replaces_results_on_reprocess,
    polling_lease_is_exclusive,
    migrations_are_idempotent,
    directory_source_end_to_end,
    leftover_in_taking_is_not_replaced,
    a_corrupt_stored_row_is_an_error_naming_it,
    two_first_starts_at_once_both_succeed,
    forged_senders_and_strangers_wait_for_review,
);

/// A real unit's address with the receiving server's SPF, DKIM and DMARC
/// failing (a forged From) is credited to nobody and waits for a person
/// (`sender_unverified`); a form from an address outside the roster that
/// names a unit which already registered from its own address does not
/// replace that registration (`unverified_replacement`). Both units show
/// as waiting for review, with the reason.
async fn forged_senders_and_strangers_wait_for_review(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config_path = db::write_config(&db, "");
    let spool = db.path("spool");
    let app = db::open_app(&config_path, Clock::fixed(T0)).await;
    let own = db::body_registration(
        "own@yj.gov.cn",
        "obj@yj.gov.cn",
        "瓯北街道办事处",
        "李航",
        "13805777521",
    );
    db::drop_file(&spool, "own.eml", &own);
    pass(&app).await;
    let mut forged = b"Authentication-Results: mx.163.com; spf=fail smtp.mailfrom=yj.gov.cn; \
dkim=fail header.d=yj.gov.cn; dmarc=fail (p=none) header.from=yj.gov.cn\r\n"
        .to_vec();
    forged.extend(db::body_registration(
        "forged@yj.gov.cn",
        "ytz@yj.gov.cn",
        "岩头镇人民政府",
        "冒名",
        "13900000001",
    ));
    db::drop_file(&spool, "forged.eml", &forged);
    let stranger = db::body_registration(
        "stranger@example.com",
        "attacker@example.com",
        "瓯北街道办事处",
        "冒名",
        "13900000002",
    );
    db::drop_file(&spool, "stranger.eml", &stranger);
    pass(&app).await;

    let status = status_json(&config_path);
    let unit = |id: &str| {
        status["units"]
            .as_array()
            .expect("units")
            .iter()
            .find(|u| u["unit_id"] == id)
            .cloned()
            .expect(id)
    };
    let oubei = unit("oubei");
    assert_eq!(oubei["state"], "needs_review", "{oubei}");
    assert_eq!(
        oubei["officer_name"], "李航",
        "the registration stays the unit's own"
    );
    let yantou = unit("yantou");
    assert_eq!(yantou["state"], "needs_review", "{yantou}");
    assert!(yantou["officer_name"].is_null(), "{yantou}");
    let reasons: Vec<&str> = status["review"]
        .as_array()
        .expect("review")
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"sender_unverified"), "{reasons:?}");
    assert!(reasons.contains(&"unverified_replacement"), "{reasons:?}");
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM registration WHERE unit_id IS NOT NULL"
        )
        .await,
        1,
        "only the unit's own registration is credited"
    );
}

/// `run --once` whose source cannot be read: what could be done is done,
/// and the exit code (75, try again later) and the message say the pass is
/// incomplete. The error, which holds a path with a line break, stays on
/// one log line.
#[test]
fn a_failed_source_exits_75_and_its_error_stays_on_one_line() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(TestDb::new(Backend::Sqlite));
    std::fs::write(db.path("a-file"), b"not a folder").expect("file");
    let bad = db.path("a-file").join("sub\nINFO forged entry");
    let config = db.path("broken.toml");
    let text = std::fs::read_to_string(db::write_config(&db, "")).expect("config")
        + &format!(
            "\n[[source]]\nname = \"scanner\"\nkind = \"directory\"\npath = {:?}\n",
            bad.display().to_string()
        );
    std::fs::write(&config, text).expect("config");
    let out = Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .expect("run --once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("本次收取未完成：邮件来源 scanner 收取失败"),
        "{stderr}"
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("INFO forged")),
        "a value split the log:\n{stderr}"
    );
    assert!(stderr.contains("sub\\nINFO forged entry"), "{stderr}");
}

/// Run by hand or from cron with the common umask 022, the service still
/// writes its database, raw archive and mail files for its own user only.
#[test]
fn files_are_private_whatever_the_umask() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(TestDb::new(Backend::Sqlite));
    let outbox = db.path("outbox");
    let config = db::write_config(
        &db,
        &format!(
            "[smtp]\ntransport = \"file\"\ndir = \"{}\"\nfrom = \"信息督查科 <xxdc2004@163.com>\"\n",
            outbox.display()
        ),
    );
    db::drop_file(
        &db.path("spool"),
        "岩头镇.eml",
        &golden("f13_body_plain.eml"),
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022; exec {BIN} run --once --config \"$0\" 2>/dev/null"
        ))
        .arg(&config)
        .status()
        .expect("run --once");
    assert!(status.success(), "{status}");
    use std::os::unix::fs::PermissionsExt;
    let mut checked = 0;
    // The spool's folders are ours; the files moved into them are the
    // fax server's and keep its modes.
    for folder in ["spool/.done", "spool/.taking"] {
        let mode = std::fs::metadata(db.path(folder))
            .expect(folder)
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{folder} is {mode:o}");
    }
    let mut stack = vec![db.path("messages"), outbox.clone(), db.path("state")];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        checked += 1;
        if meta.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .expect("dir")
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    assert!(checked >= 5, "only {checked} files looked at");
    assert!(
        std::fs::read_dir(&outbox).expect("outbox").count() >= 1,
        "the receipt was written"
    );
}

/// Two instances started at the same moment on a database nobody created
/// yet: both migrate it (one waits for the other), neither fails.
async fn two_first_starts_at_once_both_succeed(backend: Backend) {
    for round in 0..5 {
        let db = TestDb::new(backend).await;
        let config = db::write_config(&db, "");
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(BIN)
                    .args(["db", "migrate", "--config"])
                    .arg(&config)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("db migrate")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A registration whose stored JSON no longer decodes (a hand edit, a bad
/// restore) must not read as an empty registration: the read fails and
/// names the row.
async fn a_corrupt_stored_row_is_an_error_naming_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    store.record_message(&new_message("m1", T0)).await.unwrap();
    store
        .claim_next("w", T0, 60, 5)
        .await
        .unwrap()
        .expect("claim");
    let mut broken = processed(1, 0, 0);
    broken.registrations[0].fields = "{\"leader\": ".into();
    assert!(store.finish("m1", "w", T0, &broken).await.unwrap());
    let error = store
        .unit_progress(
            &["unit0"],
            "c",
            &xxdc_intake::parse::pipeline::DEFAULT_REQUIRED,
        )
        .await
        .expect_err("a corrupt row is an error");
    let text = error.to_string();
    assert!(
        matches!(
            &error,
            xxdc_intake::store::StoreError::Corrupt { table: "registration", column: "fields", key, .. }
                if key == "m1#0"
        ),
        "{text}"
    );
    assert!(text.contains("m1#0"), "{text}");
    let error = store.registrations_of("m1").await.expect_err("and here");
    assert!(error.to_string().contains("m1#0"), "{error}");
}

fn new_message(id: &str, received_at: i64) -> NewMessage<'_> {
    NewMessage {
        id,
        message_id: Some("<m@example.cn>"),
        original_name: None,
        size: 10,
        archive_path: "aa/bb/x.eml",
        received_at,
    }
}

fn processed(registrations: usize, problems: usize, attachments: usize) -> Processed {
    Processed {
        kind: MessageKind::Submission,
        report: "{}".into(),
        registrations: (0..registrations)
            .map(|i| RegistrationRow {
                unit_id: Some(format!("unit{i}")),
                held_unit: None,
                matched_by: Some("form".into()),
                source_name: "body".into(),
                fields: "{}".into(),
                fingerprint: format!("f{i}"),
                complete: true,
            })
            .collect(),
        problems: (0..problems)
            .map(|i| ProblemRow {
                field: None,
                code: format!("code{i}"),
                text: "问题".into(),
            })
            .collect(),
        attachments: (0..attachments)
            .map(|i| AttachmentRow {
                filename: Some(format!("附件{i}.xls")),
                content_type: "application/vnd.ms-excel".into(),
                size: 1,
                sha256: "00".into(),
                format: "xls".into(),
                outcome: "parsed".into(),
                detail: None,
                // The first a fax with a seal, the second a colour scan without.
                red_seal: Some(i == 0),
                fax_from: (i == 0).then(|| "0577-67019561".to_string()),
            })
            .collect(),
        ..Processed::default()
    }
}

async fn state_of(db: &TestDb, id: &str) -> (String, i64) {
    use sqlx::Row;
    let row = sqlx::query("SELECT state, attempts FROM message WHERE id = $1")
        .bind(id)
        .fetch_one(&db::inspect(&db.url).await)
        .await
        .expect("message row");
    (row.get(0), i64::from(row.get::<i32, _>(1)))
}

async fn recording_is_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    assert!(store.record_message(&new_message("m1", T0)).await.unwrap());
    assert!(
        !store
            .record_message(&new_message("m1", T0 + 5))
            .await
            .unwrap()
    );
    let key = |uid| MailboxKey {
        source: "xxdc-163",
        mailbox: "INBOX",
        uidvalidity: 7,
        uid,
    };
    assert!(!store.has_entry(&key(1)).await.unwrap());
    assert!(store.record_entry(&key(1), "m1", T0).await.unwrap());
    assert!(!store.record_entry(&key(1), "m1", T0 + 5).await.unwrap());
    // The same message seen again under another UID is a second entry of
    // the same message.
    assert!(store.record_entry(&key(2), "m1", T0 + 5).await.unwrap());
    assert!(store.has_entry(&key(1)).await.unwrap());
    assert_eq!(
        store.known_uids("xxdc-163", "INBOX", 7).await.unwrap(),
        vec![1, 2]
    );
    assert_eq!(scalar(&db.url, "SELECT COUNT(*) FROM message").await, 1);
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM mailbox_entry").await,
        2
    );
    assert_eq!(
        store
            .message_by_message_id("<m@example.cn>")
            .await
            .unwrap()
            .as_deref(),
        Some("m1")
    );
}

/// A fetched batch larger than one INSERT statement, holding the same
/// message twice and a message and an entry recorded before: each new row
/// is counted once, whichever statement inserted it.
async fn a_batch_is_recorded_once_per_message_and_entry(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    let key = |uid| MailboxKey {
        source: "xxdc-163",
        mailbox: "INBOX",
        uidvalidity: 9,
        uid,
    };
    assert!(store.record_message(&new_message("m7", T0)).await.unwrap());
    assert!(store.record_entry(&key(207), "m7", T0).await.unwrap());
    let ids: Vec<String> = (0..250).map(|i| format!("m{}", i % 240)).collect();
    let items: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (new_message(id, T0 + 1), key(200 + i as i64)))
        .collect();
    let recorded = store.record_batch(&items, T0 + 1).await.expect("batch");
    // m7 existed and m0..m9 come twice: 240 distinct, 239 new; uid 207 was
    // recorded before.
    assert_eq!(recorded.new_messages, 239);
    assert_eq!(recorded.new_entries, 249);
    assert_eq!(scalar(&db.url, "SELECT COUNT(*) FROM message").await, 240);
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM mailbox_entry").await,
        250
    );
    let again = store.record_batch(&items, T0 + 2).await.expect("again");
    assert_eq!(again, Recorded::default(), "nothing new twice");
}

async fn concurrent_claims_never_share_a_message(backend: Backend) {
    const MESSAGES: usize = 60;
    const CLAIMERS: usize = 6;
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    for i in 0..MESSAGES {
        let id = format!("m{i:03}");
        assert!(store.record_message(&new_message(&id, T0)).await.unwrap());
    }
    let mut tasks = Vec::new();
    for c in 0..CLAIMERS {
        // A pool of its own per claimer, as separate instances would have.
        let mine = Store::open(&db.url).await.expect("open");
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{c}");
            let mut got = Vec::new();
            while let Some(claimed) = mine.claim_next(&worker, T0, 300, 5).await.expect("claim") {
                got.push(claimed.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for task in tasks {
        let got = task.await.expect("claimer");
        busy += usize::from(!got.is_empty());
        all.extend(got);
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), MESSAGES, "every message claimed exactly once");
    assert_eq!(distinct.len(), MESSAGES, "no message claimed twice");
    assert!(busy >= 1);
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM message WHERE state = 'processing' AND attempts = 1"
        )
        .await,
        MESSAGES as i64
    );
}

async fn expired_claim_passes_on_and_late_finish_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = Store::open(&db.url).await.expect("open");
    let b = Store::open(&db.url).await.expect("open");
    a.record_message(&new_message("m1", T0)).await.unwrap();
    let first = a.claim_next("a", T0, 60, 5).await.unwrap().expect("claim");
    assert_eq!(first.attempts, 1);
    // Held: nobody else takes it while the lease runs, however often asked.
    assert!(b.claim_next("b", T0 + 30, 60, 5).await.unwrap().is_none());
    assert!(b.claim_next("b", T0 + 60, 60, 5).await.unwrap().is_none());
    // A heartbeat keeps it.
    assert!(a.renew_claim("m1", "a", T0 + 120).await.unwrap());
    assert!(b.claim_next("b", T0 + 100, 60, 5).await.unwrap().is_none());
    // Expired: the next worker takes it.
    let second = b
        .claim_next("b", T0 + 121, 60, 5)
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!(second.id, "m1");
    assert_eq!(second.attempts, 2);
    // The first worker, late, can neither renew, finish nor fail it.
    assert!(!a.renew_claim("m1", "a", T0 + 300).await.unwrap());
    assert!(
        !a.finish("m1", "a", T0 + 122, &processed(3, 0, 0))
            .await
            .unwrap()
    );
    a.fail("m1", "a", "late", None).await.unwrap();
    assert_eq!(state_of(&db, "m1").await, ("processing".into(), 2));
    assert!(
        b.finish("m1", "b", T0 + 123, &processed(1, 0, 0))
            .await
            .unwrap()
    );
    assert_eq!(state_of(&db, "m1").await, ("done".into(), 2));
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM registration").await,
        1
    );
    // Done is done: nobody claims it again.
    assert!(
        a.claim_next("a", T0 + 10_000, 60, 5)
            .await
            .unwrap()
            .is_none()
    );
}

/// An `Intake` on `db` reading attachments through the built binary.
async fn intake(db: &TestDb, settings: IntakeSettings) -> Intake {
    let store = Store::open(&db.url).await.expect("open");
    let pipeline = Pipeline::new(
        None,
        DEFAULT_REQUIRED.to_vec(),
        Isolation::workers(BIN.into(), ChildLimits::default(), Default::default()),
        Limits::default(),
    );
    Intake::new(
        store,
        Archive::new(db.path("messages")),
        Arc::new(pipeline),
        settings,
    )
}

async fn transient_failures_back_off_permanent_ones_fail(backend: Backend) {
    let db = TestDb::new(backend).await;
    let settings = IntakeSettings {
        lease_seconds: 300,
        max_attempts: 3,
        retry_seconds: 10,
    };
    let intake = intake(&db, settings).await;
    let key = MailboxKey {
        source: "s",
        mailbox: "INBOX",
        uidvalidity: 1,
        uid: 1,
    };
    let raw = db::body_registration(
        "r1@yj.gov.cn",
        "ytz@yj.gov.cn",
        "岩头镇人民政府",
        "黄蕾",
        "13505777932",
    );
    let accepted = intake.accept(&key, &raw, None, T0).await.unwrap();
    assert!(accepted.new_message && accepted.new_entry);
    // The archived copy vanishes: reading it fails, a transient failure.
    let archived = db
        .path("messages")
        .join(format!("{}/{}.eml", &accepted.id[..2], accepted.id));
    let hidden = db.path("hidden.eml");
    std::fs::rename(&archived, &hidden).unwrap();

    let step = intake.step(T0).await.unwrap();
    assert!(
        matches!(
            step,
            Step::Failed {
                will_retry: true,
                ..
            }
        ),
        "{step:?}"
    );
    // Attempt 1 failed: retried after 10 s × 2¹.
    assert_eq!(intake.step(T0 + 19).await.unwrap(), Step::Idle);
    let step = intake.step(T0 + 20).await.unwrap();
    assert!(
        matches!(
            step,
            Step::Failed {
                will_retry: true,
                ..
            }
        ),
        "{step:?}"
    );
    // Attempt 2 failed: after 10 s × 2².
    assert_eq!(intake.step(T0 + 20 + 39).await.unwrap(), Step::Idle);
    let store = intake.store();
    assert_eq!(state_of(&db, &accepted.id).await, ("retry".into(), 2));
    // Attempt 3 is the last: failed for good, with its reason.
    let step = intake.step(T0 + 60).await.unwrap();
    assert!(
        matches!(
            step,
            Step::Failed {
                will_retry: false,
                ..
            }
        ),
        "{step:?}"
    );
    assert_eq!(state_of(&db, &accepted.id).await, ("failed".into(), 3));
    assert_eq!(intake.step(T0 + 100_000).await.unwrap(), Step::Idle);

    // `reprocess` takes it again; with its archive back, it is processed.
    std::fs::rename(&hidden, &archived).unwrap();
    assert_eq!(store.requeue_all().await.unwrap(), 1);
    assert_eq!(
        intake.step(T0 + 100_001).await.unwrap(),
        Step::Processed {
            id: accepted.id.clone()
        }
    );
    assert_eq!(state_of(&db, &accepted.id).await, ("done".into(), 1));
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM registration").await,
        1
    );

    // A permanent failure recorded by a worker is failed at once.
    store.record_message(&new_message("m2", T0)).await.unwrap();
    let claimed = store
        .claim_next("w", T0, 300, 3)
        .await
        .unwrap()
        .expect("claim");
    assert_eq!(claimed.id, "m2");
    store.fail("m2", "w", "程序出错", None).await.unwrap();
    assert_eq!(state_of(&db, "m2").await, ("failed".into(), 1));
    assert!(
        store
            .claim_next("w", T0 + 100_000, 300, 3)
            .await
            .unwrap()
            .is_none()
    );
}

async fn finish_replaces_results_on_reprocess(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    store.record_message(&new_message("m1", T0)).await.unwrap();
    store
        .claim_next("w", T0, 60, 5)
        .await
        .unwrap()
        .expect("claim");
    assert!(
        store
            .finish("m1", "w", T0, &processed(2, 3, 2))
            .await
            .unwrap()
    );
    let counts = || async {
        [
            scalar(
                &db.url,
                "SELECT COUNT(*) FROM registration WHERE message = 'm1'",
            )
            .await,
            scalar(&db.url, "SELECT COUNT(*) FROM problem WHERE message = 'm1'").await,
            scalar(
                &db.url,
                "SELECT COUNT(*) FROM attachment WHERE message = 'm1'",
            )
            .await,
        ]
    };
    assert_eq!(counts().await, [2, 3, 2]);
    // What a scan says about its origin is kept beside the file.
    let evidence: Vec<String> = store
        .attachments_of("m1")
        .await
        .unwrap()
        .iter()
        .map(|a| a.evidence())
        .collect();
    assert_eq!(
        evidence,
        ["盖有红色公章，传真来自 0577-67019561", "未见红色公章"]
    );
    assert_eq!(store.requeue_all().await.unwrap(), 1);
    let again = store
        .claim_next("w2", T0 + 1, 60, 5)
        .await
        .unwrap()
        .expect("claim");
    assert_eq!(again.attempts, 1, "reprocess starts counting again");
    assert!(
        store
            .finish("m1", "w2", T0 + 1, &processed(1, 0, 1))
            .await
            .unwrap()
    );
    assert_eq!(counts().await, [1, 0, 1]);
    assert_eq!(state_of(&db, "m1").await, ("done".into(), 1));
}

async fn polling_lease_is_exclusive(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = Store::open(&db.url).await.expect("open");
    let b = Store::open(&db.url).await.expect("open");
    let mut held = a.try_lease("xxdc-163").await.unwrap().expect("first lease");
    assert!(held.alive().await);
    if backend == Backend::Sqlite {
        // One instance serves a SQLite file: the lease always succeeds.
        assert!(b.try_lease("xxdc-163").await.unwrap().is_some());
        return;
    }
    assert!(b.try_lease("xxdc-163").await.unwrap().is_none());
    assert!(b.try_lease("xxdc-163").await.unwrap().is_none());
    // Another source's lease is independent.
    let other = b
        .try_lease("fax-spool")
        .await
        .unwrap()
        .expect("other source");
    drop(other);

    // The holder lets go: the other instance takes it (the server notices
    // the closed session a moment later).
    drop(held);
    let mut taken = wait_for_lease(&b, "xxdc-163").await;
    assert!(taken.alive().await);
    assert!(a.try_lease("xxdc-163").await.unwrap().is_none());

    // The holder's connection dies (a killed process, a network cut): its
    // lease is no longer alive and the other instance takes over.
    let killed = scalar(
        &db.url,
        "SELECT CAST(COUNT(pg_terminate_backend(pid)) AS BIGINT) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await;
    assert_eq!(killed, 1);
    assert!(!taken.alive().await);
    let _again = wait_for_lease(&a, "xxdc-163").await;

    // A whole pool closed (an instance shut down): the lease passes on.
    let c = Store::open(&db.url).await.expect("open");
    drop(_again);
    let lease_c = wait_for_lease(&c, "xxdc-163").await;
    assert!(a.try_lease("xxdc-163").await.unwrap().is_none());
    drop(lease_c);
    c.close().await;
    let _ = wait_for_lease(&a, "xxdc-163").await;
}

/// Tries a lease until it is free (at most ~10 s).
async fn wait_for_lease(store: &Store, source: &str) -> xxdc_intake::store::Lease {
    for _ in 0..100 {
        if let Some(lease) = store.try_lease(source).await.unwrap() {
            return lease;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("lease {source} never became free");
}

async fn migrations_are_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count() as i64;
    let store = Store::open(&db.url).await.expect("open");
    store.record_message(&new_message("m1", T0)).await.unwrap();
    store.migrate().await.expect("migrate again");
    let again = Store::open(&db.url).await.expect("open again");
    again.migrate().await.expect("and again");
    let config = db::write_config(&db, "");
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args(["db", "migrate", "--config"])
            .arg(&config)
            .output()
            .expect("run db migrate");
        assert!(
            out.status.success(),
            "db migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM _sqlx_migrations").await,
        migrations
    );
    assert_eq!(scalar(&db.url, "SELECT COUNT(*) FROM message").await, 1);
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap())
                .filter(|e| e.file_type().unwrap().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// One pass of the daemon (`run --once`) at the clock's time.
async fn pass(app: &Arc<App>) {
    daemon::run(
        Arc::clone(app),
        RunOptions { once: true },
        std::future::pending(),
    )
    .await
    .expect("pass");
}

fn status_json(config: &Path) -> Value {
    let out = Command::new(BIN)
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run status");
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

fn keys(v: &Value) -> HashSet<&str> {
    v.as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn assert_has(v: &Value, wanted: &[&str]) {
    let have = keys(v);
    for k in wanted {
        assert!(have.contains(k), "key {k} missing in {v}");
    }
}

async fn directory_source_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config_path = db::write_config(&db, "");
    let spool = db.path("spool");
    let clock = Clock::fixed(T0);
    let app = db::open_app(&config_path, clock.clone()).await;

    db::drop_file(&spool, "岩头镇.eml", &golden("f13_body_plain.eml"));
    db::drop_file(&spool, "qiaotou.eml", &golden("f01_xlsx_template.eml"));
    db::drop_file(&spool, "鹤盛镇.eml", &golden("p09_truncated_xls.eml"));
    db::drop_file(&spool, "unknown.eml", &golden("p04_unknown_unit.eml"));
    pass(&app).await;

    assert!(files_in(&spool).is_empty(), "spool emptied");
    assert!(files_in(&spool.join(".taking")).is_empty());
    let done = files_in(&spool.join(".done"));
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(
        done.iter()
            .all(|n| n.ends_with(".eml") && n.len() == 64 + 4)
    );
    assert_eq!(scalar(&db.url, "SELECT COUNT(*) FROM message").await, 4);
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM message WHERE state = 'done' AND attempts = 1"
        )
        .await,
        4
    );
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM mailbox_entry").await,
        4
    );
    // f13 (body) + f01 (xlsx) + p04 (unknown unit, stored uncredited).
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM registration").await,
        3
    );
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM registration WHERE unit_id IS NOT NULL"
        )
        .await,
        2
    );
    // The truncated xls: its attachment's outcome is `error`.
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM attachment WHERE outcome = 'error'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM message WHERE original_name = '岩头镇.eml'"
        )
        .await,
        1,
        "the name in the folder is kept, without the .taking prefix"
    );

    // An identical resend under another name: the same message.
    clock.advance(600);
    db::drop_file(&spool, "岩头镇-again.eml", &golden("f13_body_plain.eml"));
    pass(&app).await;
    assert_eq!(scalar(&db.url, "SELECT COUNT(*) FROM message").await, 4);
    assert!(scalar(&db.url, "SELECT COUNT(*) FROM mailbox_entry").await <= 5);
    assert!(files_in(&spool).is_empty());

    // A correction from 岩头镇 an hour later becomes the receipt.
    clock.advance(3600);
    let corrected = db::body_registration(
        "correction@yj.gov.cn",
        "yantouzf@163.com",
        "岩头镇人民政府",
        "黄蕾",
        "13905771111",
    );
    db::drop_file(&spool, "更正.eml", &corrected);
    pass(&app).await;
    assert_eq!(scalar(&db.url, "SELECT COUNT(*) FROM message").await, 5);
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM registration WHERE unit_id = 'yantou'"
        )
        .await,
        2,
        "the earlier registration stays as history"
    );

    // Two forms of 桥下镇 taken in the same second (a backlog fetched in one
    // poll): the one sent later is the receipt, whatever the content ids'
    // order. The earlier one gets the larger id, so an order by id alone
    // would pick it.
    clock.advance(60);
    let (earlier, later) = same_second_pair();
    assert!(
        xxdc_intake::service::archive::Archive::id_of(&earlier)
            > xxdc_intake::service::archive::Archive::id_of(&later)
    );
    db::drop_file(&spool, "桥下镇-1.eml", &earlier);
    db::drop_file(&spool, "桥下镇-2.eml", &later);
    pass(&app).await;

    let status = status_json(&config_path);
    assert_has(
        &status,
        &["campaign", "sources", "counts", "units", "review"],
    );
    assert_has(&status["campaign"], &["name", "deadline", "now"]);
    assert_eq!(status["campaign"]["name"], "2007年政务信息员登记");
    assert_eq!(status["campaign"]["deadline"], "2007-05-20T23:59:00+08:00");
    let sources = status["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 1);
    assert_has(
        &sources[0],
        &[
            "name",
            "kind",
            "last_poll_ok",
            "last_error",
            "messages_seen",
        ],
    );
    assert_eq!(sources[0]["name"], "fax-spool");
    assert_eq!(sources[0]["kind"], "directory");
    assert!(sources[0]["last_poll_ok"].is_string());
    assert!(sources[0]["last_error"].is_null());
    assert_eq!(sources[0]["messages_seen"], 7);
    let counts = &status["counts"];
    assert_has(
        counts,
        &[
            "units",
            "registered",
            "needs_review",
            "missing",
            "messages",
            "unmatched_messages",
        ],
    );
    assert_eq!(counts["units"], 17);
    assert_eq!(counts["messages"], 7);
    assert_eq!(counts["registered"], 3, "{counts}");
    assert_eq!(
        counts["needs_review"], 1,
        "鹤盛镇's unreadable form: {counts}"
    );
    assert_eq!(counts["missing"], 13);
    assert_eq!(counts["unmatched_messages"], 2, "p09 and p04: {counts}");
    let units = status["units"].as_array().expect("units");
    assert_eq!(units.len(), 17);
    for u in units {
        assert_has(
            u,
            &[
                "unit_id",
                "unit_name",
                "category",
                "state",
                "received_at",
                "leader_name",
                "officer_name",
                "officer_mobile",
                "officer_email",
                "submissions",
                "problems",
                "reminders_sent",
                "last_reminder_at",
            ],
        );
    }
    let unit = |id: &str| {
        units
            .iter()
            .find(|u| u["unit_id"] == id)
            .unwrap_or_else(|| panic!("unit {id}"))
    };
    let yantou = unit("yantou");
    assert_eq!(yantou["state"], "registered");
    assert_eq!(yantou["submissions"], 2);
    assert_eq!(
        yantou["officer_mobile"], "13905771111",
        "the correction counts"
    );
    assert_eq!(yantou["officer_name"], "黄蕾");
    assert_eq!(yantou["unit_name"], "岩头镇人民政府");
    assert_eq!(yantou["category"], "乡镇");
    assert!(
        yantou["received_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2007-05-16T") && t.ends_with("+08:00")),
        "{yantou}"
    );
    let qiaotou = unit("qiaotou");
    assert_eq!(qiaotou["state"], "registered");
    assert_eq!(qiaotou["submissions"], 1);
    let qiaoxia = unit("qiaoxia");
    assert_eq!(qiaoxia["submissions"], 2);
    assert_eq!(
        qiaoxia["officer_mobile"], "13905772222",
        "the later form counts"
    );
    assert_eq!(unit("hesheng")["state"], "needs_review");
    assert_eq!(unit("shatou")["state"], "missing");
    assert_eq!(unit("shatou")["submissions"], 0);
    assert!(unit("shatou")["officer_name"].is_null());
    // Missing units first.
    assert_eq!(units[0]["state"], "missing");
    let review = status["review"].as_array().expect("review");
    assert_eq!(review.len(), 2, "{review:?}");
    for r in review {
        assert_has(
            r,
            &["message_id", "from", "subject", "received_at", "reason"],
        );
    }
    let reasons: HashSet<&str> = review.iter().filter_map(|r| r["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        HashSet::from(["unreadable_attachment", "unknown_unit"])
    );
}

/// Two registrations of 桥下镇, sent at 09:00 and at 10:00; the earlier has
/// the larger content id.
fn same_second_pair() -> (Vec<u8>, Vec<u8>) {
    let form = |nonce: u32, hour: &str, mobile: &str| {
        let raw = db::body_registration(
            &format!("qiaoxia-{hour}-{nonce}@yj.gov.cn"),
            "qxz@yj.gov.cn",
            "桥下镇人民政府",
            "王五",
            mobile,
        );
        String::from_utf8(raw)
            .unwrap()
            .replace(
                "Date: Wed, 16 May 2007 09:23:00 +0800",
                &format!("Date: Thu, 17 May 2007 {hour}:00:00 +0800"),
            )
            .into_bytes()
    };
    let later = form(0, "10", "13905772222");
    let later_id = Archive::id_of(&later);
    (0..)
        .map(|nonce| form(nonce, "09", "13905771111"))
        .find(|earlier| Archive::id_of(earlier) > later_id)
        .map(|earlier| (earlier, later))
        .expect("some nonce")
}

/// A file left half-taken by a crash and a new file of the same name: both
/// are recorded (the new one must not replace the leftover in `.taking/`).
async fn leftover_in_taking_is_not_replaced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config_path = db::write_config(&db, "");
    let spool = db.path("spool");
    let app = db::open_app(&config_path, Clock::fixed(T0)).await;
    let first = db::body_registration(
        "scan-1@yj.gov.cn",
        "ytz@yj.gov.cn",
        "岩头镇人民政府",
        "黄蕾",
        "13505777931",
    );
    let second = db::body_registration(
        "scan-2@yj.gov.cn",
        "shtz@yj.gov.cn",
        "沙头镇人民政府",
        "赵六",
        "13505777932",
    );
    std::fs::create_dir_all(spool.join(".taking")).unwrap();
    db::drop_file(&spool.join(".taking"), "scan.eml", &first);
    db::drop_file(&spool, "scan.eml", &second);
    pass(&app).await;
    assert_eq!(
        scalar(&db.url, "SELECT COUNT(*) FROM message WHERE state = 'done'").await,
        2
    );
    assert_eq!(
        scalar(
            &db.url,
            "SELECT COUNT(*) FROM registration WHERE unit_id IS NOT NULL"
        )
        .await,
        2
    );
    assert!(files_in(&spool).is_empty());
    assert!(files_in(&spool.join(".taking")).is_empty());
    assert_eq!(files_in(&spool.join(".done")).len(), 2);
}
