//! The IMAP source against a real, private Dovecot (see `tests/support`):
//! backlog, IDLE, `\Seen`, a connection cut mid-FETCH, a silent
//! connection, a UIDVALIDITY change, TLS and refused logins, after-actions.
//! Each test has its own Dovecot and its own database.

mod support;

use std::time::Duration;

use support::{Dovecot, FaultProxy, Mode, TestApp, eventually, imap_source, message};
use xxdc_intake::service::sources::{self, SourceError};

/// A generous bound for things that normally take well under a second.
const BOUND: Duration = Duration::from_secs(20);

async fn seed(dovecot: &Dovecot, user: &str, tag: &str, n: usize, flags: Option<&str>) {
    let mut client = dovecot.client(user, "secret").await;
    for i in 0..n {
        client
            .append("INBOX", &message(tag, i, 2_000 + i * 300, true), flags)
            .await;
    }
    client.logout().await;
}

#[tokio::test]
async fn backlog_is_recorded_once() {
    support::init_logs();
    let dovecot = Dovecot::start();
    seed(&dovecot, "alice", "backlog", 12, None).await;
    let t = TestApp::open(&imap_source("mail", dovecot.imap_port, "alice", "")).await;
    let source = t.source("mail");

    assert_eq!(
        sources::poll_once(&source, &t.ctx)
            .await
            .expect("first pass"),
        12
    );
    assert_eq!((t.entries().await, t.messages().await), (12, 12));
    assert_eq!(
        sources::poll_once(&source, &t.ctx)
            .await
            .expect("second pass"),
        0
    );
    assert_eq!((t.entries().await, t.messages().await), (12, 12));
    // The source's health is recorded; nothing was touched on the server.
    assert_eq!(t.last_error("mail").await, None);
    let mut client = dovecot.client("alice", "secret").await;
    let flags = client.flags("INBOX").await;
    assert_eq!(flags.len(), 12);
    assert!(
        flags.iter().all(|(_, f)| !f
            .iter()
            .any(|x| x.contains("Seen") || x.contains("Deleted"))),
        "{flags:?}"
    );
}

/// A backlog larger than one FETCH and one recording transaction, with a
/// few scans of several MB (a batch handed over in the middle of a FETCH)
/// and the same bytes twice: every message is archived byte for byte and
/// recorded once; the twin is one message with two ledger entries.
#[tokio::test]
async fn a_large_backlog_is_archived_whole_and_recorded_once() {
    support::init_logs();
    let dovecot = Dovecot::start();
    let mut sent: Vec<Vec<u8>> = (0..1_205)
        .map(|i| message("bulk", i, 1_500, true))
        .collect();
    sent.extend((0..3).map(|i| message("scan", i, 3_500_000, true)));
    let mut client = dovecot.client("alice", "secret").await;
    for raw in sent.iter().chain(std::iter::once(&sent[0])) {
        client.append("INBOX", raw, None).await;
    }
    client.logout().await;
    let t = TestApp::open(&imap_source("mail", dovecot.imap_port, "alice", "")).await;
    let source = t.source("mail");

    let taken = sources::poll_once(&source, &t.ctx).await.expect("backlog");
    assert_eq!(taken, sent.len() + 1);
    assert_eq!(
        (t.entries().await, t.messages().await),
        (sent.len() as i64 + 1, sent.len() as i64)
    );
    for raw in &sent {
        let id = xxdc_intake::service::archive::Archive::id_of(raw);
        let kept = std::fs::read(t.dir.path().join(format!("messages/{}/{id}.eml", &id[..2])))
            .expect("archived");
        assert!(kept == *raw, "archive of {id} differs from what was sent");
    }
    assert_eq!(sources::poll_once(&source, &t.ctx).await.expect("again"), 0);
}

#[tokio::test]
async fn new_mail_arrives_through_idle_and_after_a_lost_connection() {
    support::init_logs();
    let dovecot = Dovecot::start();
    let mut t = TestApp::open(&imap_source(
        "mail",
        dovecot.imap_port,
        "alice",
        "poll_interval = \"1h\"",
    ))
    .await;
    let task = tokio::spawn(sources::run(t.source("mail"), t.ctx.clone()));
    let ready = tokio::time::timeout(BOUND, t.ready.recv()).await;
    assert_eq!(ready.ok().flatten().as_deref(), Some("mail"));

    // With a poll interval of an hour, only IDLE can bring it in this soon.
    seed(&dovecot, "alice", "idle", 1, None).await;
    assert!(eventually(BOUND, || async { t.entries().await == 1 }).await);

    // The server ends the session (BYE): the source reconnects and takes
    // what came meanwhile.
    dovecot.kick("alice");
    let mut client = dovecot.client("alice", "secret").await;
    client
        .append("INBOX", &message("idle", 1, 3_000, true), None)
        .await;
    client.logout().await;
    assert!(eventually(BOUND, || async { t.entries().await == 2 }).await);

    // A session process that dies without BYE (EOF during IDLE).
    dovecot.kill_sessions("alice");
    seed_one(&dovecot, "idle", 2).await;
    assert!(eventually(BOUND, || async { t.entries().await == 3 }).await);

    t.stop.send_replace(true);
    tokio::time::timeout(BOUND, task)
        .await
        .expect("the source stops on shutdown")
        .expect("the source task ends cleanly");
    assert_eq!(t.messages().await, 3);
}

async fn seed_one(dovecot: &Dovecot, tag: &str, i: usize) {
    let mut client = dovecot.client("alice", "secret").await;
    client
        .append("INBOX", &message(tag, i, 3_000, true), None)
        .await;
    client.logout().await;
}

#[tokio::test]
async fn seen_messages_are_still_taken() {
    support::init_logs();
    let dovecot = Dovecot::start();
    seed(&dovecot, "alice", "seen", 3, Some("(\\Seen)")).await;
    let mut client = dovecot.client("alice", "secret").await;
    for i in 3..5 {
        client
            .append("INBOX", &message("seen", i, 2_500, true), None)
            .await;
    }
    let t = TestApp::open(&imap_source("mail", dovecot.imap_port, "alice", "")).await;
    assert_eq!(
        sources::poll_once(&t.source("mail"), &t.ctx)
            .await
            .expect("pass"),
        5
    );
    assert_eq!(t.messages().await, 5);
    // BODY.PEEK[]: the unread ones are still unread.
    let flags = client.flags("INBOX").await;
    let seen = flags
        .iter()
        .filter(|(_, f)| f.iter().any(|x| x.contains("Seen")))
        .count();
    assert_eq!(seen, 3, "{flags:?}");
}

#[tokio::test]
async fn a_connection_cut_mid_fetch_loses_and_doubles_nothing() {
    support::init_logs();
    let dovecot = Dovecot::start();
    // 20 messages of 6–12 KB: the FETCH is far longer than the cut.
    let mut client = dovecot.client("alice", "secret").await;
    for i in 0..20 {
        client
            .append("INBOX", &message("cut", i, 6_000 + i * 300, true), None)
            .await;
    }
    client.logout().await;
    let proxy = FaultProxy::start(dovecot.imap_port).await;
    let t = TestApp::open(&imap_source(
        "mail",
        proxy.port,
        "alice",
        "timeout = \"5s\"",
    ))
    .await;
    let source = t.source("mail");

    proxy.set(Mode::CutAfter(40_000));
    let first = sources::poll_once(&source, &t.ctx).await;
    assert!(matches!(first, Err(SourceError::Io(_))), "{first:?}");
    let partial = t.entries().await;
    assert!(
        partial < 20,
        "the cut came too late to test anything ({partial})"
    );

    proxy.set(Mode::Pass);
    let second = sources::poll_once(&source, &t.ctx)
        .await
        .expect("second pass");
    assert_eq!(partial + second as i64, 20);
    assert_eq!((t.entries().await, t.messages().await), (20, 20));
    assert_eq!(
        sources::poll_once(&source, &t.ctx)
            .await
            .expect("third pass"),
        0
    );
    assert_eq!(t.last_error("mail").await, None);
}

#[tokio::test]
async fn a_silent_connection_is_given_up_and_reopened() {
    support::init_logs();
    let dovecot = Dovecot::start();
    let proxy = FaultProxy::start(dovecot.imap_port).await;
    let mut t = TestApp::open(&imap_source(
        "mail",
        proxy.port,
        "alice",
        "timeout = \"2s\"\npoll_interval = \"5s\"",
    ))
    .await;
    let task = tokio::spawn(sources::run(t.source("mail"), t.ctx.clone()));
    let ready = tokio::time::timeout(BOUND, t.ready.recv()).await;
    assert_eq!(ready.ok().flatten().as_deref(), Some("mail"));

    // The network goes silent right after the first sync; mail arrives.
    proxy.set(Mode::Blackhole);
    seed(&dovecot, "alice", "silent", 2, None).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.last_error("mail").await.is_some()
        })
        .await,
        "the silent connection was never given up"
    );
    assert_eq!(t.entries().await, 0);

    proxy.set(Mode::Pass);
    assert!(eventually(Duration::from_secs(30), || async { t.entries().await == 2 }).await);
    assert!(eventually(BOUND, || async { t.last_error("mail").await.is_none() }).await);

    // Again, once the new session is surely IDLE (its IDLE starts a few
    // milliseconds after the sync): the bounded IDLE ends, DONE gets no
    // answer, its timeout fires.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set(Mode::Blackhole);
    seed_one(&dovecot, "silent", 2).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.last_error("mail").await.is_some()
        })
        .await
    );
    let error = t.last_error("mail").await.unwrap_or_default();
    assert!(error.contains("DONE"), "{error}");
    proxy.set(Mode::Pass);
    assert!(eventually(Duration::from_secs(30), || async { t.entries().await == 3 }).await);

    t.stop.send_replace(true);
    tokio::time::timeout(BOUND, task)
        .await
        .expect("the source stops on shutdown")
        .expect("the source task ends cleanly");
}

#[tokio::test]
async fn a_uidvalidity_change_is_reconciled_by_message_id() {
    support::init_logs();
    let dovecot = Dovecot::start();
    let mut client = dovecot.client("alice", "secret").await;
    for i in 0..4 {
        client
            .append("INBOX", &message("uv", i, 2_000, true), None)
            .await;
    }
    // One without a Message-ID: found again by its content hash.
    client
        .append("INBOX", &message("uv", 4, 2_000, false), None)
        .await;
    let t = TestApp::open(&imap_source("mail", dovecot.imap_port, "alice", "")).await;
    let source = t.source("mail");
    assert_eq!(sources::poll_once(&source, &t.ctx).await.expect("first"), 5);
    let old = dovecot.uidvalidity("alice", "INBOX");
    let store = t.app.intake.store();
    assert_eq!(
        store.source_uidvalidity("mail").await.expect("uv"),
        Some(i64::from(old))
    );

    dovecot.change_uidvalidity("alice", "INBOX", old + 1000);
    for i in 5..7 {
        client
            .append("INBOX", &message("uv", i, 2_000, true), None)
            .await;
    }
    client.logout().await;

    // The one without a Message-ID is fetched again (a new entry, not a
    // new message) and the two new ones are fetched; the four known ones
    // only get their new ledger entries.
    assert_eq!(
        sources::poll_once(&source, &t.ctx).await.expect("second"),
        3
    );
    assert_eq!(t.messages().await, 7);
    let new = i64::from(old + 1000);
    let known = store.known_uids("mail", "INBOX", new).await.expect("uids");
    assert_eq!(known.len(), 7);
    assert_eq!(
        store
            .known_uids("mail", "INBOX", i64::from(old))
            .await
            .expect("uids")
            .len(),
        5
    );
    assert_eq!(
        store.source_uidvalidity("mail").await.expect("uv"),
        Some(new)
    );
    assert_eq!(sources::poll_once(&source, &t.ctx).await.expect("third"), 0);
    assert_eq!(t.entries().await, 12);
    // status counts messages, not ledger generations.
    let status =
        xxdc_intake::workspace::status::build(store, &t.app.config, None, t.app.clock.now())
            .await
            .expect("status");
    assert_eq!(status.sources[0].messages_seen, 7);
    assert!(!status.sources[0].stalled);
}

/// A source that has never polled successfully is stalled only
/// `stall_after` after the service started, not at its first failure.
#[tokio::test]
async fn a_source_is_stalled_only_after_stall_after() {
    support::init_logs();
    let t = TestApp::open(&imap_source(
        "mail",
        support::free_port(),
        "alice",
        "timeout = \"1s\"",
    ))
    .await;
    let first = sources::poll_once(&t.source("mail"), &t.ctx).await;
    assert!(first.is_err(), "nobody listens there");
    let now = t.app.clock.now();
    let status =
        |at| xxdc_intake::workspace::status::build(t.app.intake.store(), &t.app.config, None, at);
    assert!(!status(now).await.expect("status").sources[0].stalled);
    let later = now + i64::try_from(t.app.config.stall_after.as_secs()).expect("secs") + 1;
    assert!(status(later).await.expect("status").sources[0].stalled);
}

#[tokio::test]
async fn tls_logins_work_and_a_wrong_password_says_what_to_do() {
    support::init_logs();
    let dovecot = Dovecot::start();
    seed(&dovecot, "alice", "tls", 2, None).await;
    let ca = dovecot.ca().display().to_string();
    let sources_toml = format!(
        "[[source]]\nname = \"imaps\"\nkind = \"imap\"\nhost = \"localhost\"\nport = {imaps}\n\
         tls = \"implicit\"\nca_file = \"{ca}\"\nusername = \"alice\"\npassword_file = \"{{dir}}/imap-password\"\n\
         [[source]]\nname = \"starttls\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imap}\n\
         tls = \"starttls\"\nca_file = \"{ca}\"\nusername = \"alice\"\npassword_file = \"{{dir}}/imap-password\"\n\
         [[source]]\nname = \"untrusted\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imaps}\n\
         tls = \"implicit\"\nusername = \"alice\"\npassword_file = \"{{dir}}/imap-password\"\n\
         [[source]]\nname = \"wrong\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imaps}\n\
         tls = \"implicit\"\nca_file = \"{ca}\"\nusername = \"alice\"\npassword_file = \"{{dir}}/wrong-password\"\n\
         [[source]]\nname = \"mismatch\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imap}\n\
         tls = \"implicit\"\nca_file = \"{ca}\"\nusername = \"alice\"\npassword_file = \"{{dir}}/imap-password\"\n",
        imaps = dovecot.imaps_port,
        imap = dovecot.imap_port,
    );
    let t = TestApp::open(&sources_toml).await;
    std::fs::write(t.dir.path().join("wrong-password"), "revoked\n").expect("write");

    assert_eq!(
        sources::poll_once(&t.source("imaps"), &t.ctx)
            .await
            .expect("imaps"),
        2
    );
    // Same mailbox seen by another source: new entries, no new messages.
    assert_eq!(
        sources::poll_once(&t.source("starttls"), &t.ctx)
            .await
            .expect("starttls"),
        2
    );
    assert_eq!((t.entries().await, t.messages().await), (4, 2));

    let untrusted = sources::poll_once(&t.source("untrusted"), &t.ctx).await;
    let Err(SourceError::Io(text)) = untrusted else {
        panic!("a certificate from an unknown CA was accepted: {untrusted:?}");
    };
    assert!(text.contains("TLS"), "{text}");

    // Implicit TLS against the plain port: the stage, and what to try.
    let mismatch = sources::poll_once(&t.source("mismatch"), &t.ctx).await;
    let Err(SourceError::Io(text)) = mismatch else {
        panic!("a plain port took implicit TLS: {mismatch:?}");
    };
    assert!(text.contains("阶段：直接加密连接"), "{text}");
    assert!(text.contains("tls = \"starttls\""), "{text}");

    let wrong = sources::poll_once(&t.source("wrong"), &t.ctx).await;
    let Err(SourceError::Login(text)) = wrong else {
        panic!("not a login error: {wrong:?}");
    };
    assert!(
        text.contains("请在 163 邮箱设置中重新生成授权码并更新密码文件"),
        "{text}"
    );
    assert!(text.contains("wrong-password"), "{text}");
    assert_eq!(t.last_error("wrong").await.as_deref(), Some(text.as_str()));
}

#[tokio::test]
async fn after_actions_flag_and_move_and_never_delete() {
    support::init_logs();
    let dovecot = Dovecot::start();
    dovecot.add_user("bob", "secret");
    dovecot.add_user("carol", "secret");
    for user in ["alice", "bob", "carol"] {
        seed(&dovecot, user, user, 3, None).await;
    }
    let sources_toml = [
        imap_source("none", dovecot.imap_port, "alice", ""),
        imap_source("flag", dovecot.imap_port, "bob", "after_action = \"flag\""),
        imap_source(
            "move",
            dovecot.imap_port,
            "carol",
            "after_action = \"move\"\nmove_to = \"已处理\"",
        ),
    ]
    .concat();
    let t = TestApp::open(&sources_toml).await;
    let names = ["none", "flag", "move"];
    for name in names {
        assert_eq!(
            sources::poll_once(&t.source(name), &t.ctx)
                .await
                .expect(name),
            3
        );
    }
    // Recorded and flushed: the after-action follows in the same pass,
    // before anything is processed.
    let mut bob = dovecot.client("bob", "secret").await;
    let mut carol = dovecot.client("carol", "secret").await;
    let processed = t
        .app
        .intake
        .drain(|| t.app.clock.now())
        .await
        .expect("process");
    assert_eq!(processed, 9);
    for name in names {
        assert_eq!(
            sources::poll_once(&t.source(name), &t.ctx)
                .await
                .expect(name),
            0
        );
    }

    let mut alice = dovecot.client("alice", "secret").await;
    let flags = alice.flags("INBOX").await;
    assert_eq!(flags.len(), 3);
    assert!(flags.iter().all(|(_, f)| f.is_empty()), "{flags:?}");

    let flags = bob.flags("INBOX").await;
    assert_eq!(flags.len(), 3);
    for (_, f) in &flags {
        assert!(f.iter().any(|x| x.contains("$XxdcRecorded")), "{flags:?}");
        assert!(!f.iter().any(|x| x.contains("Deleted")), "{flags:?}");
    }

    assert!(carol.uids("INBOX").await.is_empty());
    // "已处理" in modified UTF-7, created on first use.
    let moved = carol.flags("&XfJZBHQG-").await;
    assert_eq!(moved.len(), 3);
    assert!(
        moved
            .iter()
            .all(|(_, f)| !f.iter().any(|x| x.contains("Deleted"))),
        "{moved:?}"
    );

    let store = t.app.intake.store();
    for name in ["flag", "move"] {
        let uv = store
            .source_uidvalidity(name)
            .await
            .expect("uv")
            .expect("set");
        assert!(
            store
                .entries_awaiting_action(name, "INBOX", uv)
                .await
                .expect("pending")
                .is_empty()
        );
    }
    // A further pass changes nothing.
    for name in names {
        assert_eq!(
            sources::poll_once(&t.source(name), &t.ctx)
                .await
                .expect(name),
            0
        );
    }
    assert_eq!(bob.flags("INBOX").await.len(), 3);
    assert_eq!(carol.flags("&XfJZBHQG-").await.len(), 3);
}

#[tokio::test]
async fn the_first_start_takes_only_the_since_window() {
    support::init_logs();
    let dovecot = Dovecot::start();
    let mut client = dovecot.client("alice", "secret").await;
    for i in 0..2 {
        client
            .append_dated(
                "INBOX",
                &message("old", i, 2_000, true),
                "01-Jan-2020 08:00:00 +0800",
            )
            .await;
    }
    for i in 0..2 {
        client
            .append("INBOX", &message("new", i, 2_000, true), None)
            .await;
    }
    let t = TestApp::open(&imap_source(
        "mail",
        dovecot.imap_port,
        "alice",
        "since = \"2021-01-01\"",
    ))
    .await;
    let source = t.source("mail");
    assert_eq!(sources::poll_once(&source, &t.ctx).await.expect("first"), 2);
    assert_eq!(
        sources::poll_once(&source, &t.ctx).await.expect("second"),
        0
    );
    // After the first start, whatever arrives is new, whatever its date.
    client
        .append_dated(
            "INBOX",
            &message("late", 0, 2_000, true),
            "02-Jan-2020 08:00:00 +0800",
        )
        .await;
    assert_eq!(sources::poll_once(&source, &t.ctx).await.expect("third"), 1);
    assert_eq!(t.messages().await, 3);
}

/// A link that drops every 120 KB, a FETCH batch being 600 KB (a bad
/// mobile or office line): each
/// connection brings what it fetched whole before the drop, the batches
/// shrink, the source tries again soon after progress — the whole backlog
/// arrives, each message once.
#[tokio::test]
async fn a_link_that_keeps_dropping_still_brings_everything() {
    support::init_logs();
    let dovecot = Dovecot::start();
    let mut client = dovecot.client("alice", "secret").await;
    for i in 0..300 {
        client
            .append("INBOX", &message("drops", i, 3_000, true), None)
            .await;
    }
    client.logout().await;
    let proxy = FaultProxy::start(dovecot.imap_port).await;
    proxy.set(Mode::ResetEvery(120_000));
    let t = TestApp::open(&imap_source(
        "mail",
        proxy.port,
        "alice",
        "timeout = \"5s\"\npoll_interval = \"5s\"",
    ))
    .await;
    let task = tokio::spawn(sources::run(t.source("mail"), t.ctx.clone()));
    let all = eventually(Duration::from_secs(30), || async {
        t.entries().await == 300
    })
    .await;
    let got = t.entries().await;
    t.stop.send_replace(true);
    let _ = tokio::time::timeout(BOUND, task).await;
    assert!(all, "only {got} of 300 arrived");
    assert_eq!(t.messages().await, 300);
}

/// A 300 KB scan between two small messages on a 50 KB/s link takes six
/// seconds, three times the timeout: the timeout is one of silence, so it
/// arrives, and so do the others.
#[tokio::test]
async fn a_big_message_on_a_slow_link_arrives() {
    support::init_logs();
    let dovecot = Dovecot::start();
    let mut client = dovecot.client("alice", "secret").await;
    client
        .append("INBOX", &message("slow", 0, 2_000, true), None)
        .await;
    client
        .append("INBOX", &message("slow", 1, 300_000, true), None)
        .await;
    client
        .append("INBOX", &message("slow", 2, 2_000, true), None)
        .await;
    client.logout().await;
    let proxy = FaultProxy::start(dovecot.imap_port).await;
    proxy.set(Mode::Throttle(50_000));
    let t = TestApp::open(&imap_source(
        "mail",
        proxy.port,
        "alice",
        "timeout = \"2s\"",
    ))
    .await;
    let taken = sources::poll_once(&t.source("mail"), &t.ctx)
        .await
        .expect("a slow link is not a dead one");
    assert_eq!(taken, 3);
    assert_eq!(t.messages().await, 3);
}
