//! The unit-progress read (`Store::unit_progress`, which status, the
//! campaign and the workspace read) issues a fixed number of statements,
//! whatever the number of units: counted from sqlx's own statement log
//! (every statement a driver runs is an event with the target
//! `sqlx::query`), on SQLite and on PostgreSQL, for 10 and for 500 units.
//! The same read must also say the right thing about each unit.
//!
//! One test function for both back-ends: the counter is process-wide, and
//! two tests running at once would count each other's statements.

mod db;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_subscriber::layer::{Context, SubscriberExt};
use xxdc_intake::campaign::templates::MailKind;
use xxdc_intake::parse::message::MessageKind;
use xxdc_intake::parse::pipeline::DEFAULT_REQUIRED;
use xxdc_intake::store::outbox::{self, NewMail};
use xxdc_intake::store::progress::UnitState;
use xxdc_intake::store::{NewMessage, ProblemRow, Processed, RegistrationRow, Store};

use db::{Backend, TestDb};

/// Counts the statements sqlx runs.
struct StatementCounter(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

const CAMPAIGN: &str = "2007年政务信息员登记";
const T0: i64 = 1_179_280_800;

/// Unit `i`: every third unit is missing, every third sent an incomplete
/// form (needs review), the rest registered; every unit but the missing
/// ones was reminded once.
fn unit_id(i: usize) -> String {
    format!("u{i:03}")
}

/// Writes `units` units' submissions and reminders.
async fn seed(store: &Store, units: usize) {
    for i in (0..units).filter(|i| i % 3 != 0) {
        let id = format!("m{i:03}");
        let message = NewMessage {
            id: &id,
            message_id: None,
            original_name: None,
            size: 1,
            archive_path: "x/x.eml",
            received_at: T0 + i as i64,
        };
        assert!(store.record_message(&message).await.expect("record"));
        let claimed = store
            .claim_next("w", T0 + i as i64, 60, 5)
            .await
            .expect("claim")
            .expect("a message to claim");
        let complete = i % 3 == 2;
        let fields = format!(
            r#"{{"leader":{{"name":"领导{i}"}},"officer":{{"name":"信息员{i}","mobile":"1380577{i:04}","email":null}}}}"#
        );
        let processed = Processed {
            kind: MessageKind::Submission,
            report: "{}".into(),
            registrations: vec![RegistrationRow {
                unit_id: Some(unit_id(i)),
                held_unit: None,
                matched_by: Some("form".into()),
                source_name: "body".into(),
                fields,
                fingerprint: format!("f{i}"),
                complete,
            }],
            problems: if complete {
                Vec::new()
            } else {
                vec![ProblemRow {
                    field: Some("officer.email".into()),
                    code: "missing_field".into(),
                    text: "信息员E-mail未填写".into(),
                }]
            },
            ..Processed::default()
        };
        assert!(
            store
                .finish(&claimed.id, "w", T0 + i as i64, &processed)
                .await
                .expect("finish")
        );
        let mail = NewMail {
            campaign: CAMPAIGN.into(),
            unit_key: unit_id(i),
            slot: "-1d 10:00".into(),
            kind: MailKind::Reminder,
            to: format!("{}@yj.gov.cn", unit_id(i)),
            subject: "提醒".into(),
            body: "请报送".into(),
            in_reply_to: None,
            attachment: None,
        };
        outbox::queue(store, &mail, "163.com", T0)
            .await
            .expect("queue")
            .expect("queued");
        let taken = outbox::claim_next(store, "w", T0 + 60, 300)
            .await
            .expect("claim")
            .expect("due");
        assert!(
            outbox::mark_sent(store, &taken.id, "w", T0 + 60)
                .await
                .expect("sent")
        );
    }
}

/// Reads the progress of `units` units; returns how many statements the
/// read took.
async fn counted_read(store: &Store, counter: &AtomicUsize, units: usize) -> usize {
    let ids: Vec<String> = (0..units).map(unit_id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let before = counter.load(Ordering::SeqCst);
    let progress = store
        .unit_progress(&refs, CAMPAIGN, &DEFAULT_REQUIRED)
        .await
        .expect("progress");
    let statements = counter.load(Ordering::SeqCst) - before;

    assert_eq!(progress.len(), units);
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p.unit_id, unit_id(i), "in the order asked");
        let (state, submissions, reminders) = match i % 3 {
            0 => (UnitState::Missing, 0, 0),
            1 => (UnitState::NeedsReview, 1, 1),
            _ => (UnitState::Registered, 1, 1),
        };
        assert_eq!(p.state, state, "unit {i}");
        assert_eq!(p.submissions, submissions, "unit {i}");
        assert_eq!(p.reminders_sent, reminders, "unit {i}");
        assert_eq!(
            p.last_reminder_at,
            (reminders > 0).then_some(T0 + 60),
            "unit {i}"
        );
        let latest = p.latest.as_ref();
        assert_eq!(latest.is_some(), i % 3 != 0, "unit {i}");
        if let Some(l) = latest {
            assert_eq!(
                l.field("officer", "name"),
                Some(format!("信息员{i}").as_str())
            );
            let problems: &[&str] = if i % 3 == 1 { &["missing_field"] } else { &[] };
            assert_eq!(l.problems, problems, "unit {i}");
        }
    }
    statements
}

async fn statements_for(backend: Backend, counter: &AtomicUsize) -> (usize, usize) {
    let small_db = TestDb::new(backend).await;
    let small = Store::open(&small_db.url).await.expect("open");
    seed(&small, 10).await;
    let big_db = TestDb::new(backend).await;
    let big = Store::open(&big_db.url).await.expect("open");
    seed(&big, 500).await;
    // The fewest of a few reads: a pooled connection is given back in the
    // background, and a read that finds none free opens a new one, whose
    // set-up statements would count too.
    let mut fewest = (usize::MAX, usize::MAX);
    for _ in 0..4 {
        fewest.0 = fewest.0.min(counted_read(&small, counter, 10).await);
        fewest.1 = fewest.1.min(counted_read(&big, counter, 500).await);
    }
    fewest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_progress_takes_the_same_few_statements_for_10_and_500_units() {
    let counter = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(StatementCounter(Arc::clone(&counter)));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (small, big) = statements_for(backend, &counter).await;
        assert_eq!(
            small, big,
            "{backend:?}: 10 units took {small} statements, 500 took {big}"
        );
        assert_eq!(small, 5, "{backend:?}: statements of one progress read");
    }
}
