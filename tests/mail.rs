//! Mail the service sends (回执, 催报提醒, 逾期提醒, 通报), sent for real to
//! the project's SMTP sink on loopback (`tests/mailsink`: aiosmtpd with
//! STARTTLS, implicit TLS, AUTH and faults on demand) and read back with
//! mail-parser. Time is a `Clock::fixed` moved by the test, except in the
//! kill -9 test, which runs the real binary.
//!
//! - `campaign_plays_through_its_days`: receipts, the four reminder slots,
//!   the overdue list and the overdue reminder arrive at their hours, to
//!   the right units only, with Chinese subject, From name and attachment
//!   name decoded as a client shows them;
//! - `implicit_tls_and_starttls_with_auth_deliver`: both ways in, AUTH
//!   used; a wrong password is a permanent error;
//! - `transient_failures_then_recovery_deliver_once` (SQLite, PostgreSQL):
//!   450 at RCPT, 451 at DATA and a dropped connection are retried with
//!   backoff, and the mail arrives once;
//! - `permanent_refusal_marks_failed` (both): 550 marks the row failed,
//!   never retried, shown in `status`; 163's `554 DT:SPM` is a throttle,
//!   retried later;
//! - `crash_between_send_and_mark_resends_the_same_message` (both): the
//!   ambiguous cases resend the same Message-ID, never a second mail;
//! - `pacing_holds_rate_and_daily_cap`: counts per injected minute/day, and
//!   a reminder held back by the cap is not sent once the unit registered;
//! - `bounce_stops_reminders`: a DSN for our reminder marks the address,
//!   no more reminders go there, the bounce gets no receipt;
//! - `receipts_never_loop_and_resubmissions_get_fresh_ones`: no receipt to
//!   auto-replies (marked or not), lists, bulk mail, noreply senders or
//!   bounces; a corrected form gets a receipt of its own;
//! - `header_injection_through_a_unit_name_fails`;
//! - `cli_plan_send_now_dry_run_and_overdue_report`: the binary's
//!   `remind plan --at`, `remind send-now --dry-run`, `report overdue`;
//! - `kill_9_mid_batch_sends_no_second_mail`: `run` killed with SIGKILL
//!   while a paced batch is half sent, restarted: one reminder Message-ID
//!   per unit and slot.

mod db;
mod mailsink;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::TimeZone;
use mail_parser::MimeHeaders;
use sqlx::Row;
use xxdc_intake::campaign::templates::MailKind;
use xxdc_intake::clock::Clock;
use xxdc_intake::config::{Config, RawConfig};
use xxdc_intake::parse::sandbox::Isolation;
use xxdc_intake::service::daemon::App;
use xxdc_intake::service::intake::Step;
use xxdc_intake::store::MailboxKey;
use xxdc_intake::store::outbox;

use db::{Backend, TestDb};
use mailsink::{Received, Sink};

const BIN: &str = env!("CARGO_BIN_EXE_xxdc-intake");
const OFFICE: &str = "office@yj.gov.cn";
const CAMPAIGN: &str = "2007年政务信息员登记";

const ROSTER: &str = "id,name,category,aliases,emails
qiaotou,桥头镇人民政府,乡镇,桥头镇|桥头镇政府,qtz@yj.gov.cn
yantou,岩头镇人民政府,乡镇,岩头镇|岩头镇政府,ytz@yj.gov.cn
jyj,永嘉县教育局,县直单位,县教育局|教育局,jyj@yj.gov.cn
mzj,永嘉县民政局,县直单位,县民政局|民政局,
";

const ONE_UNIT: &str = "id,name,category,aliases,emails
qiaotou,桥头镇人民政府,乡镇,桥头镇|桥头镇政府,qtz@yj.gov.cn
";

db::both!(
    2;
    transient_failures_then_recovery_deliver_once,
    permanent_refusal_marks_failed,
    crash_between_send_and_mark_resends_the_same_message,
);

/// Unix seconds of a local (Asia/Shanghai) time in May 2007.
fn may(d: u32, h: u32, m: u32) -> i64 {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2007, 5, d, h, m, 0)
        .single()
        .expect("a valid local time")
        .timestamp()
}

fn local(t: i64) -> String {
    chrono_tz::Asia::Shanghai
        .timestamp_opt(t, 0)
        .single()
        .map(|d| d.format("%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// The config text: this database, archive and roster, the campaign, the
/// sink as `[smtp]`, the office, and `extra` (e.g. `[reminders]`).
fn config_text(db: &TestDb, sink: &Sink, tls: &str, smtp_extra: &str, extra: &str) -> String {
    format!(
        r#"[database]
url = "{url}"

[archive]
dir = "{archive}"

[roster]
path = "{roster}"

[campaign]
name = "{CAMPAIGN}"
deadline = "2007-05-20 23:59"

[report]
office = ["{OFFICE}"]

{smtp}
{extra}
"#,
        url = db.url,
        archive = db.path("messages").display(),
        roster = db.path("roster.csv").display(),
        smtp = sink.smtp_toml(tls, smtp_extra),
    )
}

/// Everything one test needs: a database, the sink and the service's `App`
/// on a fixed clock.
struct World {
    app: App,
    sink: Sink,
    db: TestDb,
}

impl World {
    async fn new(backend: Backend, roster: &str, extra: &str, t: i64) -> Self {
        Self::with(backend, roster, "implicit", "", extra, t).await
    }

    async fn with(
        backend: Backend,
        roster: &str,
        tls: &str,
        smtp_extra: &str,
        extra: &str,
        t: i64,
    ) -> Self {
        let db = TestDb::new(backend).await;
        let sink = Sink::start();
        std::fs::write(db.path("roster.csv"), roster).expect("write roster");
        let text = config_text(&db, &sink, tls, smtp_extra, extra);
        let app = open_app(&db, &text, t).await;
        Self { app, sink, db }
    }

    fn clock(&self) -> &Clock {
        &self.app.clock
    }

    /// What `status` shows now.
    async fn status(&self) -> xxdc_intake::workspace::status::Status {
        xxdc_intake::workspace::status::build(
            self.app.intake.store(),
            &self.app.config,
            self.app.roster.as_ref(),
            self.now(),
        )
        .await
        .expect("status")
    }

    fn now(&self) -> i64 {
        self.app.clock.now()
    }

    /// Moves the clock to `t` (forward only).
    fn at(&self, t: i64) {
        let now = self.now();
        assert!(t >= now, "the clock only moves forward");
        self.clock().advance(t - now);
    }

    /// One tick of the service's mail work.
    async fn tick(&self) {
        self.app.mail_tick().await;
    }

    /// A message arrives, is processed, and the tick after it runs.
    async fn arrive(&self, raw: &[u8]) {
        submit(&self.app, raw).await;
        self.app.mail_tick().await;
    }

    async fn outbox_rows(&self) -> Vec<(String, String, String, i64, String)> {
        sqlx::query(
            "SELECT unit_key, slot, state, attempts, message_id FROM outbox
             WHERE state <> 'missed' ORDER BY created_at, id",
        )
        .fetch_all(&db::inspect(&self.db.url).await)
        .await
        .expect("outbox rows")
        .iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<String, _>(2),
                r.get::<i64, _>(3),
                r.get::<String, _>(4),
            )
        })
        .collect()
    }
}

async fn open_app(db: &TestDb, text: &str, t: i64) -> App {
    let raw: RawConfig = toml::from_str(text).expect("config toml");
    let config = Config::check(raw, db.dir()).expect("config");
    App::open(
        config,
        Isolation::workers(BIN.into(), Default::default(), Default::default()),
        Clock::fixed(t),
    )
    .await
    .expect("open app")
}

/// Records and processes one message like a source would; returns the ids
/// processed.
async fn submit(app: &App, raw: &[u8]) -> Vec<String> {
    static UID: AtomicI64 = AtomicI64::new(1);
    let key = MailboxKey {
        source: "inbox",
        mailbox: "INBOX",
        uidvalidity: 1,
        uid: UID.fetch_add(1, Ordering::SeqCst),
    };
    app.intake
        .accept(&key, raw, None, app.clock.now())
        .await
        .expect("accept");
    let mut ids = Vec::new();
    loop {
        match app.intake.step(app.clock.now()).await.expect("step") {
            Step::Idle => break,
            Step::Processed { id } => ids.push(id),
            Step::Failed { reason, .. } => panic!("processing failed: {reason}"),
        }
    }
    ids
}

/// A body-text registration of `unit` (a roster name) from `from`.
fn registration(message_id: &str, from: &str, unit: &str, mobile: &str) -> Vec<u8> {
    db::body_registration(message_id, from, unit, "黄蕾", mobile)
}

/// A plain message without a form.
fn plain(from: &str, headers: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: xxdc2004@163.com\r\nSubject: =?utf-8?B?{}?=\r\n\
         Message-ID: <{}@yj.gov.cn>\r\nDate: Thu, 17 May 2007 10:00:00 +0800\r\n{headers}\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n",
        base64_encode(subject.as_bytes()),
        rand::random::<u64>(),
    )
    .into_bytes()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What kind of our mail this is, from its decoded subject.
fn kind_of(m: &Received) -> &'static str {
    let s = m.subject();
    if s.starts_with("回执") {
        "回执"
    } else if s.starts_with("提醒") {
        "提醒"
    } else if s.starts_with("催报") {
        "催报"
    } else if s.starts_with("通报") {
        "通报"
    } else {
        panic!("unexpected subject {s}")
    }
}

/// The xlsx attachment's cells, as text.
fn xlsx_cells(bytes: &[u8]) -> Vec<String> {
    use calamine::Reader;
    let mut wb: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(Cursor::new(bytes.to_vec())).expect("an xlsx workbook");
    let range = wb.worksheet_range("未报送单位").expect("sheet 未报送单位");
    range.cells().map(|(_, _, v)| v.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_plays_through_its_days() {
    let w = World::new(Backend::Sqlite, ROSTER, "", may(16, 9, 0)).await;
    // 岩头镇 registers before any reminder; 教育局 after two.
    w.arrive(&registration(
        "yt-1@yj.gov.cn",
        "ytz@yj.gov.cn",
        "岩头镇人民政府",
        "13505777932",
    ))
    .await;
    let mut log: Vec<(String, String, &str)> = Vec::new();
    let mut seen = 0;
    let mut record = |w: &World, log: &mut Vec<(String, String, &'static str)>| {
        let all = w.sink.received();
        for m in &all[seen..] {
            log.push((local(w.now()), m.to().to_string(), kind_of(m)));
        }
        seen = all.len();
    };
    record(&w, &mut log);
    let mut t = may(16, 10, 0);
    while t <= may(22, 12, 0) {
        w.at(t);
        if t == may(19, 15, 0) {
            w.arrive(&registration(
                "jy-1@yj.gov.cn",
                "jyj@yj.gov.cn",
                "永嘉县教育局",
                "13736358822",
            ))
            .await;
        } else {
            w.tick().await;
        }
        record(&w, &mut log);
        t += 3600;
    }
    log.sort();
    let expected: Vec<(String, String, &str)> = [
        ("05-16 09:00", "ytz@yj.gov.cn", "回执"),
        ("05-18 10:00", "jyj@yj.gov.cn", "提醒"),
        ("05-18 10:00", "qtz@yj.gov.cn", "提醒"),
        ("05-19 10:00", "jyj@yj.gov.cn", "提醒"),
        ("05-19 10:00", "qtz@yj.gov.cn", "提醒"),
        ("05-19 15:00", "jyj@yj.gov.cn", "回执"),
        ("05-20 10:00", "qtz@yj.gov.cn", "提醒"),
        ("05-21 00:00", OFFICE, "通报"),
        ("05-21 09:00", "qtz@yj.gov.cn", "催报"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
    .collect();
    assert_eq!(log, expected);

    let all = w.sink.received();
    for m in &all {
        let parsed = m.parsed();
        let from = parsed.from().and_then(|f| f.first()).expect("From");
        assert_eq!(from.name(), Some("信息督查科"), "From display name");
        assert_eq!(from.address(), Some(mailsink::USER));
        assert_eq!(m.envelope.auth_user.as_deref(), Some(mailsink::USER));
        assert!(m.envelope.tls);
        assert!(m.message_id().ends_with("@163.com>"), "{}", m.message_id());
        let auto = m.header("Auto-Submitted").expect("Auto-Submitted");
        match kind_of(m) {
            "回执" => {
                assert_eq!(auto, "auto-replied");
                let parent = if m.to() == "ytz@yj.gov.cn" {
                    "yt-1@yj.gov.cn"
                } else {
                    "jy-1@yj.gov.cn"
                };
                assert_eq!(parsed.in_reply_to().as_text(), Some(parent));
                assert_eq!(parsed.references().as_text(), Some(parent));
                assert!(m.body().contains("信息员：黄蕾"), "{}", m.body());
            }
            _ => {
                assert_eq!(auto, "auto-generated");
                assert!(parsed.in_reply_to().is_empty());
            }
        }
    }
    let first = all
        .iter()
        .find(|m| m.to() == "qtz@yj.gov.cn")
        .expect("a reminder");
    assert_eq!(
        first.subject(),
        "提醒：请桥头镇人民政府于2007年5月20日 23:59前报送分管政务信息领导及信息员登记表"
    );
    assert!(
        first.body().contains("距截止还剩2天13小时"),
        "{}",
        first.body()
    );
    let overdue = all.iter().find(|m| kind_of(m) == "催报").expect("催报");
    assert_eq!(
        overdue.subject(),
        "催报：桥头镇人民政府的分管政务信息领导及信息员登记表尚未收到"
    );

    // The overdue list: 桥头镇 (reminded three times) and 民政局 (no
    // address) are missing; its xlsx attachment has a Chinese name.
    let report = all.iter().find(|m| kind_of(m) == "通报").expect("通报");
    assert_eq!(
        report.subject(),
        "通报：截至2007年5月21日 00:00尚未报送登记表的单位（2个）"
    );
    let body = report.body();
    assert!(body.contains("桥头镇人民政府（已提醒 3 次"), "{body}");
    assert!(body.contains("永嘉县民政局（未发送提醒）"), "{body}");
    let parsed = report.parsed();
    let attachments: Vec<_> = parsed.attachments().collect();
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0].attachment_name(),
        Some("未报送单位名单.xlsx")
    );
    // Also as RFC 2047 `name=` in Content-Type, for clients (QQ mail) that
    // do not read RFC 2231 `filename*=`.
    assert_eq!(
        attachments[0]
            .content_type()
            .and_then(|c| c.attribute("name")),
        Some("未报送单位名单.xlsx")
    );
    assert!(
        String::from_utf8_lossy(&report.raw).contains("name=\"=?utf-8?b?"),
        "no RFC 2047 name parameter"
    );
    let cells = xlsx_cells(attachments[0].contents());
    assert!(cells.contains(&"桥头镇人民政府".to_string()), "{cells:?}");
    assert!(cells.contains(&"永嘉县民政局".to_string()), "{cells:?}");
    assert!(!cells.contains(&"岩头镇人民政府".to_string()), "{cells:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_and_starttls_with_auth_deliver() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sink = Sink::start();
    let mail = |id: &str| outbox::Mail {
        id: id.into(),
        campaign: CAMPAIGN.into(),
        unit_key: "qiaotou".into(),
        slot: id.into(),
        kind: MailKind::Reminder,
        to: "qtz@yj.gov.cn".into(),
        subject: "提醒：请桥头镇人民政府报送登记表".into(),
        body: "桥头镇人民政府：\n请报送。\n".into(),
        message_id: format!("<xxdc-{id}@163.com>"),
        in_reply_to: None,
        attachment: None,
        attempts: 0,
        created_at: 1_179_280_800,
    };
    for (tls, port) in [("implicit", sink.smtps_port), ("starttls", sink.port)] {
        let raw: RawConfig = toml::from_str(&sink.smtp_toml(tls, "")).expect("smtp toml");
        let config = Config::check(raw, db.dir()).expect("config");
        let mailer =
            xxdc_intake::campaign::mailer::Mailer::new(config.smtp.as_ref().expect("smtp"))
                .expect("mailer");
        mailer.send(&mail(tls)).await.expect("sent");
        let last = sink.received().pop().expect("arrived");
        assert_eq!(last.envelope.port, port, "{tls}");
        assert!(last.envelope.tls, "{tls}");
        assert_eq!(last.envelope.auth_user.as_deref(), Some(mailsink::USER));
        assert_eq!(last.message_id(), format!("<xxdc-{tls}@163.com>"));
        assert_eq!(last.subject(), "提醒：请桥头镇人民政府报送登记表");
    }
    assert_eq!(sink.count(), 2);

    // A wrong password (an expired 授权码) is refused for good.
    let wrong = db.path("wrong-password");
    std::fs::write(&wrong, "expired").expect("write");
    let text = sink.smtp_toml("implicit", "").replace(
        &sink.password_file().display().to_string(),
        &wrong.display().to_string(),
    );
    let config = Config::check(toml::from_str(&text).expect("toml"), db.dir()).expect("config");
    let mailer = xxdc_intake::campaign::mailer::Mailer::new(config.smtp.as_ref().expect("smtp"))
        .expect("mailer");
    let err = mailer.send(&mail("wrong")).await.unwrap_err();
    assert!(
        matches!(err, xxdc_intake::campaign::mailer::SendError::Permanent(_)),
        "{err:?}"
    );
    assert_eq!(sink.count(), 2);
}

const FIRST_SLOT: &str = "[reminders]\nslots = [\"-2d 10:00\", \"-1d 10:00\"]\n";

async fn transient_failures_then_recovery_deliver_once(backend: Backend) {
    let w = World::new(backend, ONE_UNIT, FIRST_SLOT, may(18, 10, 0)).await;
    w.sink
        .set_fault("rcpt 450 4.2.0 Mailbox busy x1\ndata 451 4.3.0 Try again later x1\ndrop x1");
    w.tick().await;
    assert_eq!(w.sink.count(), 0);
    let rows = w.outbox_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].2.as_str(), rows[0].3), ("queued", 1));
    // Backing off: nothing is tried again at once …
    w.tick().await;
    assert_eq!(w.outbox_rows().await[0].3, 1);
    // … then after 60 s, 120 s, 240 s.
    for wait in [60, 120] {
        w.clock().advance(wait);
        w.tick().await;
        assert_eq!(w.sink.count(), 0);
    }
    assert_eq!(w.outbox_rows().await[0].3, 3);
    w.clock().advance(240);
    w.tick().await;
    assert_eq!(w.sink.count(), 1);
    assert_eq!(w.sink.fault().trim(), "", "every fault was used");
    for _ in 0..5 {
        w.clock().advance(600);
        w.tick().await;
    }
    let received = w.sink.received();
    assert_eq!(received.len(), 1, "delivered once");
    let rows = w.outbox_rows().await;
    assert_eq!((rows[0].2.as_str(), rows[0].3), ("sent", 4));
    assert_eq!(received[0].message_id(), rows[0].4);
}

async fn permanent_refusal_marks_failed(backend: Backend) {
    let w = World::new(backend, ONE_UNIT, FIRST_SLOT, may(18, 10, 0)).await;
    w.sink.set_fault("data 550 5.1.1 User unknown");
    w.tick().await;
    let rows = w.outbox_rows().await;
    assert_eq!((rows[0].2.as_str(), rows[0].3), ("failed", 1));
    w.sink.set_fault("");
    w.clock().advance(3600);
    w.tick().await;
    assert_eq!(w.sink.count(), 0, "a refused mail is never retried");
    let st = w.status().await;
    assert_eq!(st.failed_mail.len(), 1);
    assert_eq!(st.failed_mail[0].to, "qtz@yj.gov.cn");
    assert!(
        st.failed_mail[0].error.contains("550"),
        "{:?}",
        st.failed_mail
    );

    // 163's spam verdict on a burst is a throttle, not a refusal: the next
    // slot's reminder is held back and sent once 163 calms down.
    w.sink
        .set_fault("data 554 DT:SPM 163 smtp3,GdxpCgD3_0 please see http://mail.163.com/help/help_spam_16.htm x1");
    w.at(may(19, 10, 0));
    w.tick().await;
    let rows = w.outbox_rows().await;
    assert_eq!((rows[1].2.as_str(), rows[1].3), ("queued", 1), "{rows:?}");
    w.clock().advance(600);
    w.tick().await;
    assert_eq!(
        w.sink.count(),
        0,
        "not retried quickly: that is what 163 punishes"
    );
    w.clock().advance(3600);
    w.tick().await;
    assert_eq!(w.sink.count(), 1);
    assert_eq!(w.outbox_rows().await[1].2, "sent");
}

async fn crash_between_send_and_mark_resends_the_same_message(backend: Backend) {
    let w = World::new(backend, ONE_UNIT, FIRST_SLOT, may(18, 10, 0)).await;
    // The server takes the message, then the connection dies before its
    // answer: we cannot know, so it is sent again, as the same message.
    w.sink.set_fault("accept-drop x1");
    w.tick().await;
    assert_eq!(w.sink.count(), 1);
    assert_eq!(w.outbox_rows().await[0].2, "queued");
    w.clock().advance(60);
    w.tick().await;
    let got = w.sink.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].message_id(), got[1].message_id());
    assert_eq!(got[0].raw, got[1].raw, "byte for byte the same mail");
    assert_eq!(w.outbox_rows().await[0].2, "sent");

    // The process dies after the server said 250 but before the row was
    // marked: the next tick sends the row again, same Message-ID.
    w.at(may(19, 10, 0));
    let app = &w.app;
    assert_eq!(
        xxdc_intake::campaign::queue_reminders(&app.mailing(), w.now(), None)
            .await
            .expect("queue"),
        1
    );
    // Another process takes the row and sends it …
    let mail = outbox::claim_next(app.intake.store(), "elsewhere-1-0", w.now(), 300)
        .await
        .expect("claim")
        .expect("queued");
    app.mailer
        .as_ref()
        .expect("mailer")
        .send(&mail)
        .await
        .expect("sent");
    // … and is killed before `mark_sent`. While its claim holds, nobody
    // else sends the row; once it ran out, the service sends it again,
    // same Message-ID, and counts the resend.
    w.tick().await;
    assert_eq!(w.sink.count(), 3, "the claim holds");
    assert_eq!(w.outbox_rows().await[1].2, "sending");
    w.clock().advance(3600);
    w.tick().await;
    let got = w.sink.received();
    assert_eq!(got.len(), 4);
    assert_eq!(got[2].message_id(), mail.message_id);
    assert_eq!(got[3].message_id(), mail.message_id);
    let rows = w.outbox_rows().await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.2 == "sent"), "{rows:?}");
    assert_eq!(w.status().await.outbox_resends, 1);

    // The outbox key (campaign, unit, slot) takes one mail only.
    let again = outbox::NewMail {
        campaign: mail.campaign.clone(),
        unit_key: mail.unit_key.clone(),
        slot: mail.slot.clone(),
        kind: mail.kind,
        to: mail.to.clone(),
        subject: "另一封".into(),
        body: String::new(),
        in_reply_to: None,
        attachment: None,
    };
    let queued = outbox::queue(app.intake.store(), &again, "163.com", w.now())
        .await
        .expect("queue");
    assert_eq!(queued, None);
    assert_eq!(w.outbox_rows().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_holds_rate_and_daily_cap() {
    let mut roster = String::from("id,name,category,aliases,emails\n");
    for i in 1..=8 {
        roster.push_str(&format!("u{i},测试单位{i},乡镇,,u{i}@yj.gov.cn\n"));
    }
    let w = World::with(
        Backend::Sqlite,
        &roster,
        "implicit",
        "rate_per_minute = 3\ndaily_cap = 7",
        "[reminders]\nslots = [\"-2d 10:00\"]\n",
        may(18, 10, 0),
    )
    .await;

    let mut counts = Vec::new();
    for wait in [0, 30, 31, 30, 31, 61, 61, 3600] {
        w.clock().advance(wait);
        w.tick().await;
        counts.push(w.sink.count());
    }
    // 3 in the first minute, none more within it, 3 in the next, then the
    // daily cap of 7 holds for the rest of the day.
    assert_eq!(counts, vec![3, 3, 6, 6, 7, 7, 7, 7]);

    // One unit still waiting registers in the evening; the next morning
    // only the other one is reminded (the queued reminder to the
    // registered unit is dropped, not sent late).
    let waiting: Vec<String> = w
        .outbox_rows()
        .await
        .into_iter()
        .filter(|r| r.2 == "queued")
        .map(|r| r.0)
        .collect();
    assert_eq!(waiting.len(), 1);
    let unit = &waiting[0];
    let n: u32 = unit[1..].parse().expect("unit number");
    w.at(may(18, 20, 0));
    submit(
        &w.app,
        &registration(
            "late@yj.gov.cn",
            &format!("{unit}@yj.gov.cn"),
            &format!("测试单位{n}"),
            "13800000000",
        ),
    )
    .await;
    w.at(may(19, 8, 0));
    w.app.mail_tick().await;
    let tos: Vec<String> = w.sink.received()[7..]
        .iter()
        .map(|m| m.to().to_string())
        .collect();
    assert_eq!(
        tos,
        vec![format!("{unit}@yj.gov.cn")],
        "only the receipt of the registered unit, no stale reminder"
    );
    assert!(kind_of(&w.sink.received()[7]) == "回执");
    let states: Vec<String> = w
        .outbox_rows()
        .await
        .into_iter()
        .filter(|r| r.0 == *unit && r.1 == "-2d 10:00")
        .map(|r| r.2)
        .collect();
    assert_eq!(states, vec!["cancelled".to_string()]);
}

/// A delivery status notification for `original` (our mail as it arrived).
fn dsn(original: &Received) -> Vec<u8> {
    let headers_end = original
        .raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let headers = String::from_utf8_lossy(&original.raw[..headers_end]);
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.yj.gov.cn>\r\n\
To: xxdc2004@163.com\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <dsn-{r}@mx.yj.gov.cn>\r\n\
Date: Fri, 18 May 2007 10:05:00 +0800\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"dsn-b\"\r\n\
\r\n\
--dsn-b\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
<{to}>: host mx.yj.gov.cn said: 550 5.1.1 User unknown\r\n\
--dsn-b\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.yj.gov.cn\r\n\
\r\n\
Final-Recipient: rfc822; {to}\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
--dsn-b\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
{headers}\r\n\
--dsn-b--\r\n",
        r = rand::random::<u32>(),
        to = original.to(),
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounce_stops_reminders() {
    let w = World::new(Backend::Sqlite, ROSTER, FIRST_SLOT, may(18, 10, 0)).await;
    w.tick().await;
    let first = w.sink.received();
    assert_eq!(first.len(), 3);
    let to_qtz = first
        .iter()
        .find(|m| m.to() == "qtz@yj.gov.cn")
        .expect("reminder to 桥头镇");
    w.at(may(18, 10, 5));
    w.arrive(&dsn(to_qtz)).await;
    assert_eq!(w.sink.count(), 3, "no receipt for a bounce");

    w.at(may(19, 10, 0));
    w.tick().await;
    let second: BTreeSet<String> = w.sink.received()[3..]
        .iter()
        .map(|m| m.to().to_string())
        .collect();
    assert_eq!(
        second,
        BTreeSet::from(["jyj@yj.gov.cn".to_string(), "ytz@yj.gov.cn".to_string()])
    );
    let st = w.status().await;
    assert_eq!(st.undeliverable.len(), 1);
    assert_eq!(st.undeliverable[0].address, "qtz@yj.gov.cn");
    assert_eq!(st.undeliverable[0].unit_id.as_deref(), Some("qiaotou"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_never_loop_and_resubmissions_get_fresh_ones() {
    let w = World::new(
        Backend::Sqlite,
        ROSTER,
        "[reminders]\nenabled = false\n",
        may(16, 9, 0),
    )
    .await;
    w.arrive(&registration(
        "yt-1@yj.gov.cn",
        "ytz@yj.gov.cn",
        "岩头镇人民政府",
        "13505777932",
    ))
    .await;
    let ack = w.sink.received().pop().expect("receipt");
    assert_eq!(ack.to(), "ytz@yj.gov.cn");
    assert_eq!(
        ack.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    let ack_id = ack.message_id();
    let reply_headers = format!("In-Reply-To: {ack_id}\r\nReferences: {ack_id}\r\n");

    // An auto-responder that says what it is.
    w.arrive(&plain(
        "ytz@yj.gov.cn",
        &format!("Auto-Submitted: auto-replied\r\n{reply_headers}"),
        &format!("自动回复：{}", ack.subject()),
        "您好，我近期外出，邮件已收到。",
    ))
    .await;
    // One that does not: a plain "Re:" to our receipt, without a form.
    w.arrive(&plain(
        "ytz@yj.gov.cn",
        &reply_headers,
        &format!("Re: {}", ack.subject()),
        "您好，我近期外出，邮件已收到。",
    ))
    .await;
    // A mailing list, bulk mail, a noreply robot, a bounce.
    w.arrive(&plain(
        "notices@yj.gov.cn",
        "List-Id: <notices.yj.gov.cn>\r\n",
        "关于报送登记表的通知",
        "各单位：请报送。",
    ))
    .await;
    w.arrive(&plain(
        "news@yj.gov.cn",
        "Precedence: bulk\r\n",
        "政务信息简报",
        "简报第12期",
    ))
    .await;
    w.arrive(&registration(
        "robot-1@yj.gov.cn",
        "noreply@yj.gov.cn",
        "桥头镇人民政府",
        "13600000000",
    ))
    .await;
    w.arrive(include_bytes!("fixtures/mail/bounce_report.eml"))
        .await;
    assert_eq!(w.sink.count(), 1, "only the first receipt: {:?}", {
        w.sink
            .received()
            .iter()
            .map(|m| (m.to().to_string(), m.subject()))
            .collect::<Vec<_>>()
    });

    // A corrected form is a new submission: a receipt of its own, replying
    // to it. The very same bytes again are not a new message.
    let corrected = registration(
        "yt-2@yj.gov.cn",
        "ytz@yj.gov.cn",
        "岩头镇人民政府",
        "13505777999",
    );
    w.arrive(&corrected).await;
    w.arrive(&corrected).await;
    let got = w.sink.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].to(), "ytz@yj.gov.cn");
    assert_eq!(
        got[1].parsed().in_reply_to().as_text(),
        Some("yt-2@yj.gov.cn")
    );
    assert!(got[1].body().contains("13505777999"), "{}", got[1].body());
    assert_ne!(got[1].message_id(), ack_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_through_a_unit_name_fails() {
    let roster = "id,name,category,aliases,emails
qiaotou,\"桥头镇人民政府\r\nBcc: victim@evil.example\r\nX-Injected: 1\",乡镇,桥头镇,qtz@yj.gov.cn
";
    // Through STARTTLS + AUTH this time.
    let w = World::with(
        Backend::Sqlite,
        roster,
        "starttls",
        "",
        FIRST_SLOT,
        may(18, 10, 0),
    )
    .await;
    w.tick().await;
    let got = w.sink.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.envelope.port, w.sink.port);
    assert!(m.envelope.tls);
    assert_eq!(m.envelope.rcpt_tos, vec!["qtz@yj.gov.cn".to_string()]);
    let parsed = m.parsed();
    for name in ["Bcc", "X-Injected"] {
        assert!(parsed.header_raw(name).is_none(), "{name} was injected");
    }
    let head_end = m
        .raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&m.raw[..head_end]).to_lowercase();
    assert!(
        !head.contains("\nbcc:") && !head.contains("\nx-injected:"),
        "{head}"
    );
    assert_eq!(
        m.subject(),
        "提醒：请桥头镇人民政府 Bcc: victim@evil.example X-Injected: 1于2007年5月20日 23:59前报送分管政务信息领导及信息员登记表"
    );
}

fn run_bin(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run xxdc-intake");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_plan_send_now_dry_run_and_overdue_report() {
    let w = World::new(Backend::Sqlite, ROSTER, "", may(16, 9, 0)).await;
    // 岩头镇 registered (its receipt queued with it; no tick: nothing sent).
    submit(
        &w.app,
        &registration(
            "yt-1@yj.gov.cn",
            "ytz@yj.gov.cn",
            "岩头镇人民政府",
            "13505777932",
        ),
    )
    .await;
    let config = w.db.path("config.toml");
    std::fs::write(&config, config_text(&w.db, &w.sink, "implicit", "", "")).expect("config");

    let (code, out, err) = run_bin(&["remind", "plan", "--at", "2007-05-19 10:30"], &config);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "{CAMPAIGN}：截止 2007-05-20 23:59，查看时间 05-19 10:30（距截止还剩1天13小时）"
        )),
        "{out}"
    );
    let line = |unit: &str, slot: &str| -> String {
        out.lines()
            .find(|l| l.contains(unit) && l.contains(slot))
            .unwrap_or_else(|| panic!("no line for {unit} {slot}:\n{out}"))
            .to_string()
    };
    assert!(line("桥头镇人民政府", "-2d 10:00").contains("已错过（服务停止期间），不再补发"));
    assert!(line("桥头镇人民政府", "-1d 10:00").contains("现在发送提醒"));
    assert!(line("桥头镇人民政府", "0d 10:00").contains("届时仍未报送则提醒"));
    assert!(line("桥头镇人民政府", "+1d 09:00").contains("届时仍未报送则发逾期提醒"));
    assert!(line("岩头镇人民政府", "-1d 10:00").contains("不发送：已登记"));
    assert!(line("永嘉县民政局", "-1d 10:00").contains("不发送：名单中没有邮箱地址"));

    // The real clock is long past the 2007 deadline: overdue reminders.
    let (code, out, err) = run_bin(&["remind", "send-now", "--dry-run"], &config);
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "试运行：共 2 封，未发送。",
            "（试运行）桥头镇人民政府 <qtz@yj.gov.cn>：催报：桥头镇人民政府的分管政务信息领导及信息员登记表尚未收到",
            "（试运行）永嘉县教育局 <jyj@yj.gov.cn>：催报：永嘉县教育局的分管政务信息领导及信息员登记表尚未收到",
        ]
    );
    assert_eq!(w.sink.count(), 0);
    let rows = w.outbox_rows().await;
    assert!(
        rows.iter().all(|r| r.1.starts_with("ack:")),
        "a dry run queues nothing: {rows:?}"
    );

    // The report goes out with whatever else was due (岩头镇's receipt).
    let (code, out, err) = run_bin(&["report", "overdue"], &config);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("通报已排队：未报送单位 3 个。"), "{out}");
    let got: Vec<_> = w
        .sink
        .received()
        .into_iter()
        .filter(|m| m.to() == OFFICE)
        .collect();
    assert_eq!(got.len(), 1);
    let parsed = got[0].parsed();
    let att: Vec<_> = parsed.attachments().collect();
    assert_eq!(att.len(), 1);
    assert_eq!(att[0].attachment_name(), Some("未报送单位名单.xlsx"));
    let cells = xlsx_cells(att[0].contents());
    for unit in ["桥头镇人民政府", "永嘉县教育局", "永嘉县民政局"] {
        assert!(cells.contains(&unit.to_string()), "{unit}: {cells:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_sends_no_second_mail() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sink = Sink::start();
    const UNITS: usize = 20;
    let mut roster = String::from("id,name,category,aliases,emails\n");
    for i in 1..=UNITS {
        roster.push_str(&format!("u{i:02},测试单位{i:02},乡镇,,u{i:02}@yj.gov.cn\n"));
    }
    std::fs::write(db.path("roster.csv"), roster).expect("roster");
    // The deadline is tomorrow by the real clock; the one slot fell at
    // midnight today, well within its grace.
    let tomorrow = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
        .succ_opt()
        .expect("tomorrow");
    let text = config_text(
        &db,
        &sink,
        "implicit",
        "",
        "[reminders]\nslots = [\"-1d 00:00\"]\ngrace = \"48h\"\n[acknowledgements]\nenabled = false\n",
    )
    .replace(
        "deadline = \"2007-05-20 23:59\"",
        &format!("deadline = \"{tomorrow} 23:59\""),
    );
    let config = db.path("config.toml");
    std::fs::write(&config, text).expect("config");
    sink.set_fault("slow 300");

    let start = || {
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(db.path("run.log")).expect("log"))
            .spawn()
            .expect("start xxdc-intake run")
    };
    let mut child = start();
    sink.wait_for(5, Duration::from_secs(60));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let at_kill = sink.count();
    assert!(at_kill < UNITS, "killed mid-batch ({at_kill} arrived)");

    let mut child = start();
    let units = |got: &[Received]| -> HashMap<String, BTreeSet<String>> {
        let mut by_unit: HashMap<String, BTreeSet<String>> = HashMap::new();
        for m in got {
            by_unit
                .entry(m.to().to_string())
                .or_default()
                .insert(m.message_id());
        }
        by_unit
    };
    let started = std::time::Instant::now();
    while units(&sink.received()).len() < UNITS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} units reached after the restart",
            units(&sink.received()).len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // One more round of the service loop (every 5 s) must add nothing new.
    std::thread::sleep(Duration::from_secs(6));
    child.kill().expect("stop");
    child.wait().expect("reap");

    let got = sink.received();
    let by_unit = units(&got);
    assert_eq!(by_unit.len(), UNITS);
    for (unit, ids) in &by_unit {
        assert_eq!(ids.len(), 1, "{unit} got {} different reminders", ids.len());
    }
    // At most the one mail in flight at the kill came twice (same id).
    assert!(got.len() <= UNITS + 1, "{} arrivals", got.len());
    let states: BTreeMap<String, i64> =
        sqlx::query("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&db::inspect(&db.url).await)
            .await
            .expect("states")
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect();
    assert_eq!(states, BTreeMap::from([("sent".to_string(), UNITS as i64)]));
}
