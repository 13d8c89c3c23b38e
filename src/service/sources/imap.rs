//! An IMAP mailbox (163.com, or any server), read with async-imap over
//! rustls.
//!
//! One persistent session per source: connect (implicit TLS, STARTTLS, or
//! plain on loopback), LOGIN, `ID` (163.com refuses SELECT without it),
//! SELECT, then sync: every message not yet in the ledger is fetched with
//! `BODY.PEEK[]` (which never sets `\Seen`; `\Seen` is never looked at
//! either, staff read the inbox in webmail) and handed to
//! [`Intake::accept`](crate::service::intake::Intake::accept), which archives and
//! records it. The mailbox is touched only after that returned.
//!
//! Which messages are new:
//! - no entry yet under the current UIDVALIDITY and `since` set: the
//!   messages `SINCE` that date (the first-start window);
//! - no entry and no `since`: every message;
//! - otherwise: every UID at or above the lowest recorded one that is not
//!   recorded. That is "everything above the highest recorded UID" plus the
//!   holes a cut connection can leave, and never the history below the
//!   first-start window.
//!
//! A changed UIDVALIDITY (the server renumbered the mailbox) is reconciled
//! by Message-ID: messages already stored get a ledger entry under the new
//! UIDVALIDITY without their body being fetched again; the others are
//! fetched (within the `since` window, if set) and de-duplicated by content
//! hash in `accept`.
//!
//! After-actions (`flag`, `move`; default none, nothing is ever deleted)
//! are done for ledger entries whose message has been *processed* (done or
//! failed): a message is flagged or moved away only once its result is in
//! the database. They are done at every sync, so an action lost to a crash
//! between recording and acting is done on the next one.
//!
//! Between syncs the session IDLEs when the server offers IDLE (and
//! `idle = true`), else sleeps `poll_interval` and sends NOOP. An IDLE lasts
//! at most `poll_interval` (and never more than 25 minutes): then DONE,
//! sync, IDLE again. That bounds how long a silently dead connection goes
//! unnoticed and how long an after-action waits, and keeps the source's
//! health fresh.
//!
//! async-imap has no timeouts: every network call here runs under
//! `tokio::time::timeout(settings.timeout)`. TCP keepalive is switched on
//! (tokio offers only on/off, so the kernel's default idle time of two
//! hours applies); the per-call timeouts and the bounded IDLE do the real
//! work of detecting a dead connection. A connection that fails is dropped
//! and opened again after a capped exponential backoff (1 s doubling to
//! 5 min, with jitter; a refused login waits the full 5 min, so a revoked
//! 授权码 does not hammer the server).
//!
//! Only the holder of the source's lease polls (PostgreSQL advisory lock;
//! SQLite always grants it): `run` waits for it, and stops polling when it
//! is lost; `poll_once` skips the pass when another instance holds it.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_imap::error::Error as ImapError;
use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{Response, Status};
use futures::TryStreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use super::{SourceCtx, SourceError};
use crate::config::{AfterAction, ImapSettings, Secret, Tls};
use crate::service::intake::{Archived, Intake, IntakeError};
use crate::store::{Lease, MailboxKey, StoreError};

const KIND: &str = "imap";
/// UIDs per `UID FETCH … BODY.PEEK[]`.
const FETCH_BATCH: usize = 200;
/// Fetched batches being archived while the next one is fetched.
const ARCHIVE_IN_FLIGHT: usize = 2;
/// The most archived messages recorded per transaction (a quarter of it
/// once the previous transaction is over): every commit rewrites each index
/// page it touched, so a few large commits cost far less than many small
/// ones.
const RECORD_GROUP: usize = 1000;
/// A fetched batch is handed over early once it holds this much: with
/// big messages (scans), memory stays near (ARCHIVE_IN_FLIGHT + 1) times
/// this plus one message.
const BATCH_BYTES: usize = 8 << 20;
/// UIDs per header fetch when reconciling a UIDVALIDITY change.
const HEADER_BATCH: usize = 500;
/// UIDs per after-action command.
const ACTION_BATCH: usize = 200;
/// The longest IDLE (servers may drop an IDLE after 30 minutes).
const IDLE_MAX: Duration = Duration::from_secs(25 * 60);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The wait before reconnecting after a broken sync that made progress.
const AFTER_PROGRESS: Duration = Duration::from_millis(200);
/// How often a source without the lease asks for it again.
const LEASE_RETRY: Duration = Duration::from_secs(5);
/// The bound on DONE and LOGOUT when shutting down.
const GOODBYE: Duration = Duration::from_secs(5);

/// A plain or TLS stream behind one type.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

/// Runs until `ctx.shutdown` flips: one persistent session, reconnecting
/// with backoff, while holding the source's lease.
pub async fn run(name: &str, settings: &ImapSettings, ctx: SourceCtx) {
    let link = Link::default();
    let src = Src {
        name,
        s: settings,
        ctx: &ctx,
        link: &link,
    };
    let mut shutdown = ctx.shutdown.clone();
    let mut announced = false;
    let mut backoff = Backoff::default();
    loop {
        let Some(mut lease) = acquire_lease(&src, &mut shutdown).await else {
            return;
        };
        loop {
            match session_loop(
                &src,
                &mut lease,
                &mut shutdown,
                &mut announced,
                &mut backoff,
            )
            .await
            {
                Ok(End::Shutdown) => return,
                Ok(End::LeaseLost) => {
                    tracing::warn!(
                        source = name,
                        "polling lease lost; waiting to take it again"
                    );
                    break;
                }
                Err(e) => {
                    ctx.failed(name, KIND, &e).await;
                    let delay = match e {
                        SourceError::Login(_) => backoff.longest(),
                        _ => backoff.next_delay(),
                    };
                    tracing::info!(
                        source = name,
                        delay_ms = delay.as_millis() as u64,
                        "reconnecting after a delay"
                    );
                    if or_shutdown(tokio::time::sleep(delay), &mut shutdown)
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// One full pass: connect, login, ID, select, take everything new, do the
/// pending after-actions, logout. Returns how many messages were newly
/// recorded. Skips the pass (0) when another instance holds the lease.
pub async fn poll_once(
    name: &str,
    settings: &ImapSettings,
    ctx: &SourceCtx,
) -> Result<usize, SourceError> {
    let link = Link::default();
    let src = Src {
        name,
        s: settings,
        ctx,
        link: &link,
    };
    let Some(_lease) = ctx.intake.store().try_lease(name).await.map_err(db)? else {
        tracing::warn!(
            source = name,
            "another instance holds the polling lease; pass skipped"
        );
        return Ok(0);
    };
    let mut conn = Conn::open(src).await?;
    let taken = conn.sync().await?;
    conn.logout().await;
    Ok(taken)
}

/// What a source works with.
#[derive(Clone, Copy)]
struct Src<'a> {
    name: &'a str,
    s: &'a ImapSettings,
    ctx: &'a SourceCtx,
    /// Kept across reconnects: how the link has behaved.
    link: &'a Link,
}

/// What the source learned about its link, across reconnects: after a
/// FETCH broke, smaller batches recorded one by one, so that a link that
/// keeps dropping still makes progress; back to full size once a sync
/// goes through.
#[derive(Debug)]
struct Link {
    fetch_batch: std::sync::atomic::AtomicUsize,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            fetch_batch: std::sync::atomic::AtomicUsize::new(FETCH_BATCH),
        }
    }
}

impl Link {
    fn batch(&self) -> usize {
        self.fetch_batch.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The link is bad: a quarter of the batch (at least one message).
    fn broke(&self) {
        let smaller = (self.batch() / 4).max(1);
        self.fetch_batch
            .store(smaller, std::sync::atomic::Ordering::Relaxed);
    }

    /// A sync went through: twice the batch, up to the full size.
    fn held(&self) {
        let larger = (self.batch() * 2).min(FETCH_BATCH);
        self.fetch_batch
            .store(larger, std::sync::atomic::Ordering::Relaxed);
    }

    fn degraded(&self) -> bool {
        self.batch() < FETCH_BATCH
    }
}

enum End {
    Shutdown,
    LeaseLost,
}

enum Woke {
    Sync,
    Shutdown,
}

/// Waits for the lease; `None` on shutdown.
async fn acquire_lease(src: &Src<'_>, shutdown: &mut watch::Receiver<bool>) -> Option<Lease> {
    let mut told = false;
    loop {
        match src.ctx.intake.store().try_lease(src.name).await {
            Ok(Some(lease)) => {
                if told {
                    tracing::info!(source = src.name, "polling lease taken");
                    src.ctx.standby.set(src.name, false);
                }
                return Some(lease);
            }
            Ok(None) => {
                if !told {
                    tracing::info!(
                        source = src.name,
                        "another instance holds the polling lease; standing by"
                    );
                    told = true;
                    // A standby serves the rest (processing, mail): it is
                    // ready, and says why it does not poll.
                    src.ctx.standby.set(src.name, true);
                    let _ = src.ctx.ready.send(src.name.to_string());
                }
            }
            Err(e) => {
                tracing::warn!(source = src.name, error = %e, "cannot take the polling lease")
            }
        }
        or_shutdown(tokio::time::sleep(LEASE_RETRY), shutdown).await?;
    }
}

/// One session: open, sync, wait (IDLE or sleep), sync … until an error,
/// shutdown or the loss of the lease.
async fn session_loop(
    src: &Src<'_>,
    lease: &mut Lease,
    shutdown: &mut watch::Receiver<bool>,
    announced: &mut bool,
    backoff: &mut Backoff,
) -> Result<End, SourceError> {
    let Some(conn) = or_shutdown(Conn::open(*src), shutdown).await else {
        return Ok(End::Shutdown);
    };
    let mut conn = conn?;
    loop {
        let Some(taken) = or_shutdown(conn.sync(), shutdown).await else {
            return Ok(End::Shutdown);
        };
        if taken.is_err() && conn.progress > 0 {
            // The link broke, but messages came through: try again soon.
            backoff.after_progress();
        }
        let taken = taken?;
        if taken > 0 {
            tracing::info!(source = src.name, messages = taken, "new messages recorded");
        }
        src.ctx.ok(src.name, KIND).await;
        backoff.reset();
        if !*announced {
            let _ = src.ctx.ready.send(src.name.to_string());
            *announced = true;
        }
        let alive = tokio::time::timeout(src.s.timeout, lease.alive())
            .await
            .unwrap_or(false);
        if !alive {
            conn.logout().await;
            return Ok(End::LeaseLost);
        }
        let (next, woke) = conn.wait(shutdown).await?;
        conn = next;
        if let Woke::Shutdown = woke {
            conn.logout().await;
            return Ok(End::Shutdown);
        }
    }
}

/// What the server can do, as far as we care.
#[derive(Debug, Clone, Copy, Default)]
struct Caps {
    idle: bool,
    mv: bool,
    uidplus: bool,
}

/// A logged-in session with its mailbox selected.
struct Conn<'a> {
    src: Src<'a>,
    session: Session,
    caps: Caps,
    uidvalidity: u32,
    /// UIDs recorded under `uidvalidity`.
    known: BTreeSet<u32>,
    /// The UIDVALIDITY changed and the ledger is not reconciled yet.
    reconcile_from: Option<i64>,
    /// When bytes last came from the server.
    activity: Activity,
    /// Messages recorded during this session.
    progress: usize,
}

impl<'a> Conn<'a> {
    /// Connects, logs in, identifies, selects the mailbox and loads what
    /// the ledger knows about it.
    async fn open(src: Src<'a>) -> Result<Self, SourceError> {
        let s = src.s;
        let t = s.timeout;
        let activity = Activity::default();
        let mut session = connect(&src, &activity).await?;
        let caps = net(t, "CAPABILITY", session.capabilities()).await?;
        let caps = Caps {
            idle: caps.has_str("IDLE"),
            mv: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        };
        let wire = mailbox_name(&s.mailbox);
        let mailbox = match timed(t, "SELECT", session.select(&wire)).await? {
            Ok(m) => m,
            Err(e) => return Err(select_error(e, s)),
        };
        drain(src.name, &mut session);
        let uidvalidity = mailbox.uid_validity.ok_or_else(|| {
            SourceError::Io(format!(
                "IMAP 服务器没有为邮箱文件夹“{}”提供 UIDVALIDITY，无法可靠地记录哪些邮件已收取",
                s.mailbox
            ))
        })?;
        let store = src.ctx.intake.store();
        let stored = match store.source_uidvalidity(src.name).await.map_err(db)? {
            Some(v) => Some(v),
            None => store
                .latest_uidvalidity(src.name, &s.mailbox)
                .await
                .map_err(db)?,
        };
        let known = store
            .known_uids(src.name, &s.mailbox, i64::from(uidvalidity))
            .await
            .map_err(db)?
            .into_iter()
            .filter_map(|u| u32::try_from(u).ok())
            .collect();
        let reconcile_from = stored.filter(|old| *old != i64::from(uidvalidity));
        if let Some(old) = reconcile_from {
            tracing::warn!(
                source = src.name,
                uidvalidity,
                old_uidvalidity = old,
                "UIDVALIDITY changed: the server renumbered the mailbox; reconciling by Message-ID"
            );
        } else if stored.is_none() {
            store
                .set_uidvalidity(src.name, i64::from(uidvalidity))
                .await
                .map_err(db)?;
        }
        tracing::debug!(
            source = src.name,
            uidvalidity,
            exists = mailbox.exists,
            idle = caps.idle,
            "mailbox selected"
        );
        Ok(Self {
            src,
            session,
            caps,
            uidvalidity,
            known,
            reconcile_from,
            activity,
            progress: 0,
        })
    }

    fn key(&self, uid: u32) -> MailboxKey<'a> {
        MailboxKey {
            source: self.src.name,
            mailbox: &self.src.s.mailbox,
            uidvalidity: i64::from(self.uidvalidity),
            uid: i64::from(uid),
        }
    }

    /// Takes every new message, then does the pending after-actions.
    /// Returns how many messages were newly recorded.
    async fn sync(&mut self) -> Result<usize, SourceError> {
        let new = match self.reconcile_from {
            Some(_) => self.reconcile().await?,
            None => self.new_uids().await?,
        };
        let taken = self.fetch_and_accept(&new).await?;
        self.src.link.held();
        if taken > 0 {
            // One flush for the whole round, not two per message.
            self.src.ctx.intake.make_durable().await?;
        }
        if self.reconcile_from.take().is_some() {
            self.src
                .ctx
                .intake
                .store()
                .set_uidvalidity(self.src.name, i64::from(self.uidvalidity))
                .await
                .map_err(db)?;
        }
        self.after_actions().await?;
        drain(self.src.name, &mut self.session);
        Ok(taken)
    }

    /// The UIDs to take, ascending.
    async fn new_uids(&mut self) -> Result<Vec<u32>, SourceError> {
        let query = match (self.known.first(), self.src.s.since) {
            (Some(lowest), _) => format!("UID {lowest}:*"),
            (None, Some(since)) => since_query(since),
            (None, None) => "ALL".to_string(),
        };
        let mut uids = self.search(&query).await?;
        let lowest = self.known.first().copied().unwrap_or(0);
        uids.retain(|u| *u >= lowest && !self.known.contains(u));
        Ok(uids)
    }

    async fn search(&mut self, query: &str) -> Result<Vec<u32>, SourceError> {
        let found = net(self.src.s.timeout, "SEARCH", self.session.uid_search(query)).await?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// After a UIDVALIDITY change: records the messages already stored
    /// (found by Message-ID) under the new UIDVALIDITY without fetching
    /// them; returns the others (within the `since` window) to fetch.
    async fn reconcile(&mut self) -> Result<Vec<u32>, SourceError> {
        let t = self.src.s.timeout;
        let all = self.search("ALL").await?;
        let mut headers: Vec<(u32, Option<String>)> = Vec::with_capacity(all.len());
        for chunk in all.chunks(HEADER_BATCH) {
            let set = uid_set(chunk);
            self.activity.touch();
            let mut stream = quiet_net(
                &self.activity,
                t,
                "FETCH",
                self.session
                    .uid_fetch(&set, "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"),
            )
            .await?;
            while let Some(fetch) = quiet_net(&self.activity, t, "FETCH", stream.try_next()).await?
            {
                if let Some(uid) = fetch.uid {
                    let id = fetch
                        .header()
                        .and_then(crate::service::intake::header_message_id);
                    headers.push((uid, id));
                }
            }
        }
        let store = self.src.ctx.intake.store();
        let now = self.src.ctx.clock.now();
        let mut unknown = Vec::new();
        let mut matched = 0usize;
        for (uid, message_id) in headers {
            if self.known.contains(&uid) {
                continue;
            }
            let stored = match &message_id {
                Some(id) => store.message_by_message_id(id).await.map_err(db)?,
                None => None,
            };
            match stored {
                Some(message) => {
                    store
                        .record_entry(&self.key(uid), &message, now)
                        .await
                        .map_err(db)?;
                    self.known.insert(uid);
                    matched += 1;
                }
                None => unknown.push(uid),
            }
        }
        if let Some(since) = self.src.s.since {
            let window: BTreeSet<u32> = self
                .search(&since_query(since))
                .await?
                .into_iter()
                .collect();
            unknown.retain(|u| window.contains(u));
        }
        unknown.sort_unstable();
        unknown.dedup();
        tracing::info!(
            source = self.src.name,
            uidvalidity = self.uidvalidity,
            matched,
            to_fetch = unknown.len(),
            "UIDVALIDITY change reconciled"
        );
        Ok(unknown)
    }

    /// Fetches `uids` (ascending) in batches and hands each batch to an
    /// [`Accepting`], which archives and records it while the next batch is
    /// fetched, so the network and the disk work at the same time. Returns
    /// how many ledger entries were new.
    ///
    /// When the link breaks, every message fetched whole so far is still
    /// archived and recorded before the error is returned, so the next
    /// sync goes on from there; the batches shrink until syncs go through
    /// again.
    async fn fetch_and_accept(&mut self, uids: &[u32]) -> Result<usize, SourceError> {
        let mut accepting = Accepting::new(self.src, self.uidvalidity, self.src.link.degraded());
        let fetched = self.fetch_into(&mut accepting, uids).await;
        if fetched.is_err() {
            self.src.link.broke();
        }
        let (recorded, taken) = accepting.finish().await?;
        for (uid, id) in recorded {
            let Ok(uid) = u32::try_from(uid) else {
                continue;
            };
            self.known.insert(uid);
            tracing::debug!(
                source = self.src.name,
                uid,
                uidvalidity = self.uidvalidity,
                message = %id,
                "message recorded"
            );
        }
        let taken = usize::try_from(taken).unwrap_or(usize::MAX);
        self.progress += taken;
        if let Err(e) = fetched {
            if taken > 0 {
                tracing::info!(
                    source = self.src.name,
                    messages = taken,
                    "recorded before the link broke"
                );
                self.src.ctx.intake.make_durable().await?;
            }
            return Err(e);
        }
        Ok(taken)
    }

    /// The FETCH half of [`Conn::fetch_and_accept`]: each message fetched
    /// whole goes to `accepting`, also when the link breaks after it. The
    /// timeout is one of silence (no byte for `timeout`), not a bound on a
    /// whole transfer: a big scan on a slow link still arrives.
    async fn fetch_into(
        &mut self,
        accepting: &mut Accepting,
        uids: &[u32],
    ) -> Result<(), SourceError> {
        let t = self.src.s.timeout;
        let activity = self.activity.clone();
        for chunk in uids.chunks(self.src.link.batch()) {
            let set = uid_set(chunk);
            let mut batch = Batch::default();
            activity.touch();
            let mut stream = quiet_net(
                &activity,
                t,
                "FETCH",
                self.session.uid_fetch(&set, "(UID BODY.PEEK[])"),
            )
            .await?;
            loop {
                let next = match quiet_net(&activity, t, "FETCH", stream.try_next()).await {
                    Ok(next) => next,
                    Err(e) => {
                        drop(stream);
                        accepting.push(batch).await?;
                        return Err(e);
                    }
                };
                let Some(fetch) = next else { break };
                let Some(uid) = fetch.uid else {
                    continue;
                };
                if self.known.contains(&uid) {
                    continue;
                }
                if fetch.body().is_none() {
                    tracing::warn!(
                        source = self.src.name,
                        uid,
                        "FETCH answer without the message; it is tried again at the next sync"
                    );
                    continue;
                }
                batch.push(uid, fetch);
                if batch.bytes >= BATCH_BYTES {
                    accepting.push(std::mem::take(&mut batch)).await?;
                }
            }
            drop(stream);
            drain(self.src.name, &mut self.session);
            accepting.push(batch).await?;
        }
        Ok(())
    }

    /// Flags or moves the messages recorded (and made durable) so far, in
    /// the same pass that recorded them.
    async fn after_actions(&mut self) -> Result<(), SourceError> {
        let action = &self.src.s.after_action;
        if *action == AfterAction::None {
            return Ok(());
        }
        let t = self.src.s.timeout;
        let store = self.src.ctx.intake.store();
        let pending: Vec<u32> = store
            .entries_awaiting_action(
                self.src.name,
                &self.src.s.mailbox,
                i64::from(self.uidvalidity),
            )
            .await
            .map_err(db)?
            .into_iter()
            .filter_map(|u| u32::try_from(u).ok())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        // The raw messages and their ledger rows reach the disk before the
        // server is touched.
        self.src.ctx.intake.make_durable().await?;
        for chunk in pending.chunks(ACTION_BATCH) {
            let set = uid_set(chunk);
            match action {
                AfterAction::None => {}
                AfterAction::Flag(keyword) => {
                    if !valid_keyword(keyword) {
                        return Err(SourceError::Io(format!(
                            "flag 关键字“{keyword}”不合法：只能使用字母、数字和 $ 等字符，不能有空格或括号"
                        )));
                    }
                    self.store_flags(&set, &format!("+FLAGS.SILENT ({keyword})"))
                        .await?;
                }
                AfterAction::Move(folder) => {
                    let wire = mailbox_name(folder);
                    if self.caps.mv {
                        self.with_folder(&wire, |s, set, to| Box::pin(s.uid_mv(set, to)), &set)
                            .await?;
                    } else {
                        self.with_folder(&wire, |s, set, to| Box::pin(s.uid_copy(set, to)), &set)
                            .await?;
                        self.store_flags(&set, "+FLAGS.SILENT (\\Deleted)").await?;
                        if self.caps.uidplus {
                            net(t, "EXPUNGE", async {
                                self.session
                                    .uid_expunge(&set)
                                    .await?
                                    .try_collect::<Vec<_>>()
                                    .await
                            })
                            .await?;
                        } else {
                            // A plain EXPUNGE would also remove what staff
                            // marked deleted themselves: leave the copies
                            // flagged, never expunge others' messages.
                            tracing::warn!(
                                source = self.src.name,
                                "server has neither MOVE nor UIDPLUS; moved messages stay in the mailbox flagged \\Deleted"
                            );
                        }
                    }
                }
            }
            let now = self.src.ctx.clock.now();
            for uid in chunk {
                store
                    .mark_action_done(
                        self.src.name,
                        &self.src.s.mailbox,
                        i64::from(self.uidvalidity),
                        i64::from(*uid),
                        now,
                    )
                    .await
                    .map_err(db)?;
            }
            tracing::debug!(
                source = self.src.name,
                uids = %set,
                "after-action done"
            );
        }
        Ok(())
    }

    async fn store_flags(&mut self, set: &str, query: &str) -> Result<(), SourceError> {
        net(self.src.s.timeout, "STORE", async {
            self.session
                .uid_store(set, query)
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        Ok(())
    }

    /// Runs a MOVE or COPY into `folder`, creating the folder once when the
    /// server says it does not exist (`[TRYCREATE]`).
    async fn with_folder<F>(&mut self, folder: &str, op: F, set: &str) -> Result<(), SourceError>
    where
        F: for<'s> Fn(
            &'s mut Session,
            &'s str,
            &'s str,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<(), ImapError>> + Send + 's>>,
    {
        let t = self.src.s.timeout;
        match timed(t, "MOVE", op(&mut self.session, set, folder)).await? {
            Ok(()) => Ok(()),
            Err(ImapError::No(text)) if text.to_ascii_uppercase().contains("TRYCREATE") => {
                tracing::info!(source = self.src.name, folder, "creating the target folder");
                net(t, "CREATE", self.session.create(folder)).await?;
                net(t, "MOVE", op(&mut self.session, set, folder)).await
            }
            Err(e) => Err(SourceError::Io(format!(
                "无法把邮件移到文件夹“{folder}”：{}",
                server_text(&e.to_string())
            ))),
        }
    }

    /// Waits for something to do: IDLE when the server offers it, else
    /// sleep and NOOP.
    async fn wait(
        mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(Self, Woke), SourceError> {
        let s = self.src.s;
        let t = s.timeout;
        if !(s.idle && self.caps.idle) {
            if or_shutdown(tokio::time::sleep(s.poll_interval), shutdown)
                .await
                .is_none()
            {
                return Ok((self, Woke::Shutdown));
            }
            net(t, "NOOP", self.session.noop()).await?;
            return Ok((self, Woke::Sync));
        }
        let limit = s.poll_interval.min(IDLE_MAX);
        let mut idle = self.session.idle();
        net(t, "IDLE", idle.init()).await?;
        let woke = {
            // `_stop` lives until the wait is over: a ManualInterrupt is then
            // never ours, it means the server closed the connection.
            let (wait, _stop) = idle.wait_with_timeout(limit);
            tokio::select! {
                r = wait => match r {
                    Ok(IdleResponse::NewData(data)) => {
                        tracing::debug!(source = self.src.name, response = ?data.parsed(), "IDLE woke up");
                        Woke::Sync
                    }
                    Ok(IdleResponse::Timeout) => Woke::Sync,
                    Ok(IdleResponse::ManualInterrupt) => {
                        return Err(SourceError::Io("IMAP 服务器关闭了连接（IDLE 期间）".into()));
                    }
                    Err(e) => return Err(SourceError::Io(format!("IMAP IDLE 失败：{e}"))),
                },
                // Servers keep an IDLE alive with "* OK Still here", which
                // resets async-imap's timer: bound the whole IDLE here.
                () = tokio::time::sleep(limit) => Woke::Sync,
                () = until_shutdown(shutdown) => Woke::Shutdown,
            }
        };
        let bound = match woke {
            Woke::Shutdown => t.min(GOODBYE),
            Woke::Sync => t,
        };
        self.session = net(bound, "DONE", idle.done()).await?;
        Ok((self, woke))
    }

    /// Says goodbye, best-effort.
    async fn logout(&mut self) {
        let bound = self.src.s.timeout.min(GOODBYE);
        let _ = tokio::time::timeout(bound, self.session.logout()).await;
    }
}

/// Connects, reads the greeting, upgrades to TLS as configured, logs in
/// and sends ID.
/// Messages fetched for one archiving task, and their size.
#[derive(Default)]
struct Batch {
    items: Vec<(i64, Body)>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, uid: u32, fetch: async_imap::types::Fetch) {
        let body = Body(fetch);
        self.bytes += body.as_ref().len();
        self.items.push((i64::from(uid), body));
    }
}

/// A fetched message's raw bytes, kept in the FETCH answer they arrived in
/// (no copy).
struct Body(async_imap::types::Fetch);

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self.0.body().unwrap_or_default()
    }
}

type Archiving = JoinHandle<Result<Vec<Archived>, IntakeError>>;
type Recording = JoinHandle<Result<(Vec<Archived>, u64), IntakeError>>;

/// Fetched batches on their way into the ledger. Each batch is archived by
/// a task of its own while the next one is fetched (at most
/// `ARCHIVE_IN_FLIGHT` wait); archived messages are recorded in groups of
/// `RECORD_GROUP`, one transaction at a time, also in the background.
struct Accepting {
    intake: Arc<Intake>,
    clock: crate::clock::Clock,
    source: Arc<str>,
    mailbox: Arc<str>,
    uidvalidity: i64,
    archiving: VecDeque<Archiving>,
    unrecorded: Vec<Archived>,
    recording: Option<Recording>,
    /// (UID, content id) of every message recorded so far.
    recorded: Vec<(i64, String)>,
    new_entries: u64,
    /// The link is bad: every archived batch is recorded at once, in a
    /// small transaction, instead of waiting for a group.
    eager: bool,
}

impl Accepting {
    fn new(src: Src<'_>, uidvalidity: u32, eager: bool) -> Self {
        Self {
            intake: src.ctx.intake.clone(),
            clock: src.ctx.clock.clone(),
            source: src.name.into(),
            mailbox: src.s.mailbox.as_str().into(),
            uidvalidity: i64::from(uidvalidity),
            archiving: VecDeque::new(),
            unrecorded: Vec::new(),
            recording: None,
            recorded: Vec::new(),
            new_entries: 0,
            eager,
        }
    }

    /// Starts archiving `batch`; waits only when too many batches are
    /// being archived already.
    async fn push(&mut self, batch: Batch) -> Result<(), SourceError> {
        if batch.items.is_empty() {
            return Ok(());
        }
        let intake = self.intake.clone();
        self.archiving.push_back(tokio::spawn(async move {
            intake.archive_batch(batch.items).await
        }));
        while self.archiving.len() > ARCHIVE_IN_FLIGHT
            || self.archiving.front().is_some_and(JoinHandle::is_finished)
        {
            self.next_archived().await?;
        }
        Ok(())
    }

    /// Waits for the oldest archiving batch; records once a group is full.
    async fn next_archived(&mut self) -> Result<(), SourceError> {
        let Some(task) = self.archiving.pop_front() else {
            return Ok(());
        };
        self.unrecorded.extend(joined(task.await)?);
        // Record whenever the last transaction is over and enough waits, so
        // little is left to record once the last batch is fetched; wait for
        // it only when a whole group has piled up.
        let idle = self.recording.as_ref().is_none_or(JoinHandle::is_finished);
        if self.unrecorded.len() >= RECORD_GROUP
            || (idle && self.unrecorded.len() >= RECORD_GROUP / 4)
            || (self.eager && !self.unrecorded.is_empty())
        {
            self.record().await?;
        }
        Ok(())
    }

    /// Records what is archived, after the transaction still running.
    async fn record(&mut self) -> Result<(), SourceError> {
        self.wait_recording().await?;
        if self.unrecorded.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(&mut self.unrecorded);
        let (intake, source, mailbox) = (
            self.intake.clone(),
            self.source.clone(),
            self.mailbox.clone(),
        );
        let (uidvalidity, now) = (self.uidvalidity, self.clock.now());
        self.recording = Some(tokio::spawn(async move {
            let recorded = intake
                .record(&source, &mailbox, uidvalidity, &group, now)
                .await?;
            Ok((group, recorded.new_entries))
        }));
        Ok(())
    }

    async fn wait_recording(&mut self) -> Result<(), SourceError> {
        if let Some(task) = self.recording.take() {
            let (group, new_entries) = joined(task.await)?;
            self.recorded
                .extend(group.into_iter().map(|a| (a.uid, a.stored.id)));
            self.new_entries += new_entries;
        }
        Ok(())
    }

    /// Waits for everything: (UID, content id) of every recorded message and
    /// how many ledger entries were new.
    async fn finish(mut self) -> Result<(Vec<(i64, String)>, u64), SourceError> {
        while !self.archiving.is_empty() {
            self.next_archived().await?;
        }
        self.record().await?;
        self.wait_recording().await?;
        Ok((std::mem::take(&mut self.recorded), self.new_entries))
    }
}

/// The outcome of a background step of [`Accepting`].
fn joined<T>(
    outcome: Result<Result<T, IntakeError>, tokio::task::JoinError>,
) -> Result<T, SourceError> {
    match outcome {
        Ok(done) => Ok(done?),
        Err(e) => Err(SourceError::Io(format!(
            "收取的邮件在存档或记录时出错：{e}"
        ))),
    }
}

async fn connect(src: &Src<'_>, activity: &Activity) -> Result<Session, SourceError> {
    let s = src.s;
    let t = s.timeout;
    let password = s
        .password
        .read()
        .map_err(|e| SourceError::Io(e.to_string()))?;
    let address = format!("{}:{}", s.host, s.port);
    let tcp = timed(t, "连接", tcp_connect(&s.host, s.port))
        .await?
        .map_err(|e| SourceError::Io(format!("无法连接 IMAP 服务器 {address}：{e}")))?;
    let tcp = Watched {
        inner: tcp,
        activity: activity.clone(),
    };
    let stream: Box<dyn Io> = match s.tls {
        Tls::None => Box::new(tcp),
        Tls::Implicit => Box::new(tls_handshake(s, tcp).await?),
        Tls::StartTls => {
            let mut plain = async_imap::Client::new(tcp);
            greeting(&mut plain, t).await?;
            net(
                t,
                "STARTTLS",
                plain.run_command_and_check_ok("STARTTLS", None),
            )
            .await?;
            // No second greeting after STARTTLS.
            Box::new(tls_handshake(s, plain.into_inner()).await?)
        }
    };
    let mut client = async_imap::Client::new(stream);
    if s.tls != Tls::StartTls {
        greeting(&mut client, t).await?;
    }
    let mut session = match timed(t, "登录", client.login(&s.username, &password)).await? {
        Ok(session) => session,
        Err((e, _)) => return Err(login_error(e, s)),
    };
    if s.send_id {
        let id = [
            ("name", Some("xxdc-intake")),
            ("version", Some(env!("CARGO_PKG_VERSION"))),
            ("vendor", Some("xxdc-intake")),
        ];
        match timed(t, "ID", session.id(id)).await? {
            Ok(_) => {}
            Err(ImapError::No(e) | ImapError::Bad(e)) => {
                tracing::warn!(source = src.name, error = %e, "server rejected the ID command; continuing");
            }
            Err(e) => return Err(SourceError::Io(format!("IMAP ID 失败：{e}"))),
        }
    }
    drain(src.name, &mut session);
    Ok(session)
}

/// Opens the TCP connection with keepalive on (first address that answers).
async fn tcp_connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_keepalive(true)?;
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "没有可用的地址")))
}

async fn tls_handshake(
    s: &ImapSettings,
    tcp: Watched<TcpStream>,
) -> Result<tokio_rustls::client::TlsStream<Watched<TcpStream>>, SourceError> {
    let name = ServerName::try_from(s.host.clone())
        .map_err(|e| SourceError::Io(format!("服务器地址“{}”不能用于 TLS：{e}", s.host)))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(s)?);
    timed(s.timeout, "TLS 握手", connector.connect(name, tcp))
        .await?
        .map_err(|e| SourceError::Io(tls_failure(s, &e.to_string())))
}

/// A failed TLS handshake: the stage, the port, and what to try instead —
/// the usual cause is the mode not matching the port.
fn tls_failure(s: &ImapSettings, error: &str) -> String {
    let (stage, hint) = match s.tls {
        Tls::Implicit => (
            "直接加密连接（tls = \"implicit\"）",
            "implicit 用于 993 端口；若服务器在 143 端口要求先明文再升级，请改用 tls = \"starttls\"",
        ),
        Tls::StartTls => (
            "STARTTLS 升级（tls = \"starttls\"）",
            "starttls 用于 143 端口；若是 993 端口，请改用 tls = \"implicit\"",
        ),
        Tls::None => ("TLS", "请检查 tls 设置"),
    };
    format!(
        "与 {}:{} 的 TLS 握手失败，阶段：{stage}：{error}。{hint}。",
        s.host, s.port
    )
}

/// The webpki roots, plus the configured `ca_file`.
fn tls_config(s: &ImapSettings) -> Result<Arc<rustls::ClientConfig>, SourceError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &s.ca_file {
        let bad = |e: &dyn std::fmt::Display| {
            SourceError::Io(format!("无法读取 CA 证书文件 {}：{e}", ca.display()))
        };
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    // An explicit provider: never depends on which rustls crypto features
    // other crates enabled.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SourceError::Io(format!("TLS 设置错误：{e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads the server greeting; a `BYE` greeting is a refusal.
async fn greeting<T>(client: &mut async_imap::Client<T>, t: Duration) -> Result<(), SourceError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    let Some(greeting) = net(t, "问候", client.read_response()).await? else {
        return Err(SourceError::Io("IMAP 服务器在问候前关闭了连接".into()));
    };
    if let Response::Data {
        status: Status::Bye,
        outcome,
    } = greeting.parsed()
    {
        return Err(SourceError::Io(format!(
            "IMAP 服务器拒绝了连接：{}",
            outcome.information.as_deref().unwrap_or("")
        )));
    }
    Ok(())
}

/// A refused LOGIN, in words that say what to do.
fn login_error(e: ImapError, s: &ImapSettings) -> SourceError {
    let text = match e {
        ImapError::No(t) | ImapError::Bad(t) => server_text(&t),
        other => return SourceError::Io(format!("IMAP 登录失败：{other}")),
    };
    let lower = text.to_lowercase();
    let disabled = ["not open", "not enabled", "disabled", "未开启", "未开通"]
        .iter()
        .any(|k| lower.contains(k));
    if disabled {
        SourceError::Login(format!(
            "IMAP 登录被拒绝（服务器答复：{text}）：该邮箱可能没有开启 IMAP 服务，请在 163 邮箱设置中开启 IMAP/SMTP 服务"
        ))
    } else {
        let place = match &s.password {
            Secret::File(p) => p.display().to_string(),
            Secret::Env(v) => format!("环境变量 {v}"),
        };
        SourceError::Login(format!(
            "IMAP 登录被拒绝（服务器答复：{text}）：授权码可能已失效或填写有误，请在 163 邮箱设置中重新生成授权码并更新密码文件（{place}）"
        ))
    }
}

/// A refused SELECT; 163.com's "Unsafe Login" means it wants ID first.
fn select_error(e: ImapError, s: &ImapSettings) -> SourceError {
    let text = match &e {
        ImapError::No(t) | ImapError::Bad(t) => server_text(t),
        other => return SourceError::Io(format!("IMAP SELECT 失败：{other}")),
    };
    if text.to_lowercase().contains("unsafe login") {
        let what = if s.send_id {
            "已发送 ID 命令仍被拒绝，请登录 163 邮箱网页版检查账号的安全设置"
        } else {
            "请删除配置中的 send_id = false（默认会发送 ID 命令）"
        };
        return SourceError::Login(format!(
            "IMAP 服务器拒绝打开邮箱（服务器答复：{text}）：该服务器要求客户端登录后先发送 IMAP ID 命令表明身份；{what}"
        ));
    }
    SourceError::Io(format!(
        "无法打开邮箱文件夹“{}”（服务器答复：{text}）",
        s.mailbox
    ))
}

/// The server's own words from async-imap's `code: …, info: Some("…")`.
fn server_text(error: &str) -> String {
    let info = error
        .split_once("info: Some(\"")
        .and_then(|(_, rest)| rest.rsplit_once("\")"))
        .map(|(info, _)| info.replace("\\\"", "\""));
    info.unwrap_or_else(|| error.to_string())
}

/// Logs and empties the unsolicited responses async-imap queued (the
/// queue is bounded and silently drops when full).
fn drain(name: &str, session: &mut Session) {
    while let Ok(r) = session.unsolicited_responses.try_recv() {
        tracing::trace!(source = name, response = ?r, "unsolicited response");
    }
}

/// Runs a network call under the timeout; the call's own result is kept.
async fn timed<F: Future>(t: Duration, what: &str, fut: F) -> Result<F::Output, SourceError> {
    tokio::time::timeout(t, fut).await.map_err(|_| {
        SourceError::Io(format!(
            "IMAP 服务器 {} 秒内没有响应（{what}）",
            t.as_secs()
        ))
    })
}

/// When bytes last came from the server, for a timeout of silence.
#[derive(Debug, Clone, Default)]
struct Activity(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl Activity {
    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
    }

    /// How long the server has been silent.
    fn silence(&self) -> Duration {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::ZERO, |at| at.elapsed())
    }
}

/// A stream that notes every byte read in its [`Activity`].
#[derive(Debug)]
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs a network call until the server has been silent for `t` (a
/// transfer that keeps moving may take as long as it needs).
async fn quiet_timed<F: Future>(
    activity: &Activity,
    t: Duration,
    what: &str,
    fut: F,
) -> Result<F::Output, SourceError> {
    tokio::pin!(fut);
    loop {
        let silent = activity.silence();
        if silent >= t {
            return Err(SourceError::Io(format!(
                "IMAP 服务器 {} 秒内没有发来任何数据（{what}）",
                t.as_secs()
            )));
        }
        if let Ok(output) = tokio::time::timeout(t - silent, &mut fut).await {
            return Ok(output);
        }
    }
}

/// [`quiet_timed`] where any failure is a network error.
async fn quiet_net<T, E, F>(
    activity: &Activity,
    t: Duration,
    what: &str,
    fut: F,
) -> Result<T, SourceError>
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    quiet_timed(activity, t, what, fut)
        .await?
        .map_err(|e| SourceError::Io(format!("IMAP {what} 失败：{e}")))
}

/// Runs a network call under the timeout; any failure is a network error.
async fn net<T, E, F>(t: Duration, what: &str, fut: F) -> Result<T, SourceError>
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    timed(t, what, fut)
        .await?
        .map_err(|e| SourceError::Io(format!("IMAP {what} 失败：{e}")))
}

fn db(e: StoreError) -> SourceError {
    SourceError::Intake(e.into())
}

/// Resolves when shutdown is asked for (or nobody can ask any more).
async fn until_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `fut`'s output, or `None` when shutdown came first.
async fn or_shutdown<T>(
    fut: impl Future<Output = T>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<T> {
    tokio::select! {
        v = fut => Some(v),
        () = until_shutdown(shutdown) => None,
    }
}

/// Capped exponential backoff with jitter.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(BACKOFF_MAX);
        jitter(base)
    }

    fn longest(&mut self) -> Duration {
        self.next = BACKOFF_MAX;
        jitter(BACKOFF_MAX)
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// The link broke but messages came through: the server is there, so
    /// the next try comes at once, and the backoff starts over after it.
    fn after_progress(&mut self) {
        self.next = AFTER_PROGRESS;
    }
}

/// Between half and all of `d`.
fn jitter(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2))
}

/// `SINCE 10-May-2007`.
fn since_query(date: chrono::NaiveDate) -> String {
    format!("SINCE {}", date.format("%d-%b-%Y"))
}

/// Ascending UIDs as an IMAP set: `1:3,7,9:10`.
fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.saturating_add(1) {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// A keyword usable in `STORE +FLAGS (…)`: an IMAP atom.
fn valid_keyword(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with('\\')
        && k.bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
}

/// A folder name on the wire: modified UTF-7 (RFC 3501 §5.1.3) when it has
/// non-ASCII characters (163.com folders are often Chinese); an ASCII name
/// is sent as written, so an already encoded name stays as it is.
fn mailbox_name(name: &str) -> String {
    if name.is_ascii() {
        return name.to_string();
    }
    let mut out = String::new();
    let mut wide: Vec<u16> = Vec::new();
    let flush = |wide: &mut Vec<u16>, out: &mut String| {
        if wide.is_empty() {
            return;
        }
        let bytes: Vec<u8> = wide.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&base64_imap(&bytes));
        out.push('-');
        wide.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut wide, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            wide.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut wide, &mut out);
    out
}

/// Base64 with `,` for `/` and no padding (modified UTF-7).
fn base64_imap(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compressed() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[]), "");
        assert_eq!(
            uid_set(&[u32::MAX - 1, u32::MAX]),
            format!("{}:{}", u32::MAX - 1, u32::MAX)
        );
    }

    #[test]
    fn folder_names_use_modified_utf7() {
        assert_eq!(mailbox_name("INBOX"), "INBOX");
        assert_eq!(
            mailbox_name("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(mailbox_name("已处理&x"), "&XfJZBHQG-&-x");
        assert_eq!(mailbox_name("&U,BTFw-"), "&U,BTFw-");
    }

    #[test]
    fn since_uses_imap_dates() {
        let d = chrono::NaiveDate::from_ymd_opt(2007, 5, 1).expect("date");
        assert_eq!(since_query(d), "SINCE 01-May-2007");
    }

    #[test]
    fn keywords_are_atoms() {
        assert!(valid_keyword("$XxdcRecorded"));
        assert!(!valid_keyword("has space"));
        assert!(!valid_keyword("\\Deleted"));
        assert!(!valid_keyword("(x)"));
    }

    fn settings() -> ImapSettings {
        ImapSettings {
            host: "imap.163.com".into(),
            port: 993,
            tls: Tls::Implicit,
            ca_file: None,
            username: "xxdc2004@163.com".into(),
            password: Secret::File("/run/credentials/imap".into()),
            mailbox: "INBOX".into(),
            poll_interval: Duration::from_secs(60),
            since: None,
            after_action: AfterAction::None,
            send_id: true,
            idle: true,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        let e = login_error(
            ImapError::No("code: None, info: Some(\"LOGIN Login error or password error\")".into()),
            &settings(),
        );
        let SourceError::Login(text) = e else {
            panic!("not a login error: {e:?}")
        };
        assert!(
            text.contains("LOGIN Login error or password error"),
            "{text}"
        );
        assert!(
            text.contains("请在 163 邮箱设置中重新生成授权码并更新密码文件"),
            "{text}"
        );
        assert!(text.contains("/run/credentials/imap"), "{text}");

        let e = login_error(
            ImapError::No("code: None, info: Some(\"IMAP service is not open\")".into()),
            &settings(),
        );
        assert!(
            e.to_string()
                .contains("请在 163 邮箱设置中开启 IMAP/SMTP 服务"),
            "{e}"
        );

        let e = select_error(
            ImapError::No(
                "code: None, info: Some(\"SELECT Unsafe Login. Please contact kefu@188.com for help\")"
                    .into(),
            ),
            &settings(),
        );
        assert!(matches!(e, SourceError::Login(_)));
        assert!(e.to_string().contains("ID 命令"), "{e}");

        let e = login_error(ImapError::ConnectionLost, &settings());
        assert!(matches!(e, SourceError::Io(_)));
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first <= BACKOFF_START && first >= BACKOFF_START / 2);
        for _ in 0..20 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
        assert_eq!(b.next, BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next, BACKOFF_START);
    }
}
