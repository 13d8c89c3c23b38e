//! Taking a message in and processing it, exactly once.
//!
//! [`Intake::accept`] is what a source calls with raw bytes: the message is
//! archived (fsynced) and recorded in the ledger before the source may touch
//! the mailbox. [`Intake::step`] claims one recorded message, runs the
//! pipeline on it and stores the result in one transaction; a worker that
//! dies mid-way loses its claim when the lease runs out and the message is
//! taken again, so every message is recorded exactly once. Sources and the
//! daemon loop live elsewhere (`crate::service::sources`, `crate::service::daemon`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::campaign::Letters;
use crate::parse::pipeline::Pipeline;
use crate::parse::problems::Code;
use crate::parse::report::ParseReport;
use crate::service::archive::Archive;
use crate::store::{
    self, AttachmentRow, MailboxKey, NewMessage, ProblemRow, Processed, RegistrationRow, Store,
};

/// Settings of processing.
#[derive(Debug, Clone, Copy)]
pub struct IntakeSettings {
    /// Seconds a claim holds before another worker may take the message.
    pub lease_seconds: i64,
    /// Tries for a message whose failure was transient.
    pub max_attempts: i64,
    /// Seconds before a transient failure is retried (doubled per try).
    pub retry_seconds: i64,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        Self {
            lease_seconds: 300,
            max_attempts: 5,
            retry_seconds: 60,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("无法保存原始邮件：{0}")]
    Archive(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// What `accept` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    /// The content was not stored before (a resend with identical bytes,
    /// or the same message seen in another folder, is not new).
    pub new_message: bool,
    pub new_entry: bool,
}

/// A fetched message kept in the archive, to be recorded.
#[derive(Debug, Clone)]
pub struct Archived {
    pub uid: i64,
    pub stored: crate::service::archive::Stored,
    pub message_id: Option<String>,
    pub size: i64,
}

/// Seconds between two heartbeats of a running instance.
pub const HEARTBEAT_EVERY: u64 = 5;

/// Seconds without a heartbeat after which an instance counts as stopped
/// and its claims are given back.
pub const SILENT_AFTER: i64 = 20;

/// Written to the archive between two background flushes (see
/// `Intake::archive_batch`).
const EARLY_FLUSH_BYTES: u64 = 8 << 20;

/// What one `step` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Idle,
    Processed {
        id: String,
    },
    Failed {
        id: String,
        reason: String,
        will_retry: bool,
    },
}

#[derive(Debug)]
pub struct Intake {
    store: Store,
    archive: Archive,
    pipeline: Arc<Pipeline>,
    worker: String,
    settings: IntakeSettings,
    /// Woken when a message is accepted, so processing starts at once.
    pub arrived: Notify,
    /// Bytes archived since the last background flush started.
    unflushed: AtomicU64,
    /// A background flush is running.
    flushing: Arc<AtomicBool>,
    /// Writes a processed message's receipt or bounce mark with its
    /// results; `None` when no mail is sent (no `[smtp]`).
    letters: Option<Arc<Letters>>,
}

impl Intake {
    pub fn new(
        store: Store,
        archive: Archive,
        pipeline: Arc<Pipeline>,
        settings: IntakeSettings,
    ) -> Self {
        let worker = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            store,
            archive,
            pipeline,
            worker,
            settings,
            arrived: Notify::new(),
            unflushed: AtomicU64::new(0),
            flushing: Arc::new(AtomicBool::new(false)),
            letters: None,
        }
    }

    /// Processed messages leave their receipt (or a bounce its mark) in
    /// the same transaction as their results, written from `letters`.
    pub fn with_follow_up(mut self, letters: Arc<Letters>) -> Self {
        self.letters = Some(letters);
        self
    }

    /// This process's claim owner (`host-pid-random`), for messages and
    /// outbox rows.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Keeps a message in the archive and records it and where it was seen,
    /// in one transaction. Durable on disk after the next
    /// [`Intake::make_durable`], which sources call before they change
    /// anything on the server.
    pub async fn accept(
        &self,
        key: &MailboxKey<'_>,
        raw: &[u8],
        original_name: Option<&str>,
        now: i64,
    ) -> Result<Accepted, IntakeError> {
        let archive = self.archive.clone();
        let bytes = raw.to_vec();
        let stored = tokio::task::spawn_blocking(move || archive.store(&bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        let message_id = header_message_id(raw);
        let message = NewMessage {
            id: &stored.id,
            message_id: message_id.as_deref(),
            original_name,
            size: i64::try_from(raw.len()).unwrap_or(i64::MAX),
            archive_path: &stored.rel_path,
            received_at: now,
        };
        let recorded = self
            .store
            .record_batch(&[(message, key.clone())], now)
            .await?;
        let (new_message, new_entry) = (recorded.new_messages > 0, recorded.new_entries > 0);
        if new_message {
            self.arrived.notify_one();
        }
        Ok(Accepted {
            id: stored.id,
            new_message,
            new_entry,
        })
    }

    /// Keeps a fetched batch in the archive (the first half of
    /// [`Intake::accept`] for a mailbox source; [`Intake::record`] is the
    /// second). Once enough has been written since the last flush, a flush
    /// starts in the background, so that the one [`Intake::make_durable`]
    /// waits for little.
    pub async fn archive_batch<B>(&self, items: Vec<(i64, B)>) -> Result<Vec<Archived>, IntakeError>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let archive = self.archive.clone();
        let archived = tokio::task::spawn_blocking(move || {
            items
                .into_iter()
                .map(|(uid, raw)| {
                    let raw = raw.as_ref();
                    Ok(Archived {
                        uid,
                        stored: archive.store(raw)?,
                        message_id: header_message_id(raw),
                        size: i64::try_from(raw.len()).unwrap_or(i64::MAX),
                    })
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let bytes: u64 = archived.iter().map(|a| a.size.unsigned_abs()).sum();
        self.flush_early(bytes);
        Ok(archived)
    }

    /// Records archived messages of one mailbox and where they were seen,
    /// in one transaction.
    pub async fn record(
        &self,
        source: &str,
        mailbox: &str,
        uidvalidity: i64,
        archived: &[Archived],
        now: i64,
    ) -> Result<store::Recorded, IntakeError> {
        let rows: Vec<(NewMessage<'_>, MailboxKey<'_>)> = archived
            .iter()
            .map(|a| {
                (
                    NewMessage {
                        id: &a.stored.id,
                        message_id: a.message_id.as_deref(),
                        original_name: None,
                        size: a.size,
                        archive_path: &a.stored.rel_path,
                        received_at: now,
                    },
                    MailboxKey {
                        source,
                        mailbox,
                        uidvalidity,
                        uid: a.uid,
                    },
                )
            })
            .collect();
        let recorded = self.store.record_batch(&rows, now).await?;
        if recorded.new_messages > 0 {
            self.arrived.notify_one();
        }
        Ok(recorded)
    }

    /// Starts a background flush of the archive once `EARLY_FLUSH_BYTES`
    /// were written since the last one (never two at a time). Its outcome
    /// does not matter: [`Intake::make_durable`] flushes again and reports.
    fn flush_early(&self, bytes: u64) {
        let unflushed = self.unflushed.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if unflushed < EARLY_FLUSH_BYTES || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.unflushed.store(0, Ordering::Relaxed);
        let archive = self.archive.clone();
        let flushing = self.flushing.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = archive.sync() {
                tracing::debug!(error = %e, "early archive flush failed");
            }
            flushing.store(false, Ordering::Release);
        });
    }

    /// Makes everything accepted so far durable (archive files and ledger
    /// rows). Sources call it before they change anything on the server or
    /// move a file aside: one flush per batch, not per message.
    pub async fn make_durable(&self) -> Result<(), IntakeError> {
        let archive = self.archive.clone();
        tokio::task::spawn_blocking(move || archive.sync())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.store.sync().await?;
        Ok(())
    }

    /// Claims and processes one message.
    pub async fn step(&self, now: i64) -> Result<Step, IntakeError> {
        Ok(self
            .step_group(now, 1)
            .await?
            .into_iter()
            .next()
            .unwrap_or(Step::Idle))
    }

    /// Claims up to `n` messages and processes them as a group: read all at
    /// once (the reader workers bound how many run in parallel), their
    /// results, receipts and bounce marks recorded in one transaction.
    /// Returns what happened to each (empty: nothing to do). A message
    /// whose claim was lost meanwhile (another worker took it after the
    /// lease) is left out: the other worker's result counts.
    pub async fn step_group(&self, now: i64, n: usize) -> Result<Vec<Step>, IntakeError> {
        let s = self.settings;
        let claimed = self
            .store
            .claim_group(&self.worker, now, s.lease_seconds, s.max_attempts, n)
            .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let work = futures::future::join_all(claimed.iter().map(|c| self.process(c, now)));
        let outcomes = self.renewing(&claimed, now, work).await;

        let mut steps = Vec::new();
        let mut done = Vec::new();
        for (claimed, outcome) in claimed.iter().zip(outcomes) {
            match outcome? {
                Ok((processed, follow_up)) => done.push((claimed, processed, follow_up)),
                Err((reason, transient)) => {
                    steps.push(self.failed(claimed, reason, transient, now).await?)
                }
            }
        }
        let group: Vec<(&str, &store::Processed, &store::FollowUp)> =
            done.iter().map(|(c, p, f)| (c.id.as_str(), p, f)).collect();
        let finished = self.store.finish_group(&self.worker, now, &group).await?;
        for ((claimed, _, _), finished) in done.iter().zip(finished) {
            let Some(finished) = finished else { continue };
            if let Some(sent) = &finished.bounced {
                tracing::warn!(message = %claimed.id, mail = %sent.id, unit = %sent.unit_key,
                    "our mail bounced; no further reminders to that address");
            }
            steps.push(Step::Processed {
                id: claimed.id.clone(),
            });
        }
        Ok(steps)
    }

    /// Runs `work` while renewing the claims of `claimed` every third of
    /// the lease: a group with many attachments can take longer than the
    /// lease (each attachment may use its whole timeout), and no other
    /// worker may take a message that is still being processed.
    async fn renewing<T>(
        &self,
        claimed: &[store::Claimed],
        now: i64,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let s = self.settings;
        let started = std::time::Instant::now();
        let every = Duration::from_secs(u64::try_from(s.lease_seconds / 3).unwrap_or(1).max(1));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = heartbeat.tick() => {
                    let at = now + i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX / 2);
                    for c in claimed {
                        match self.store.renew_claim(&c.id, &self.worker, at + s.lease_seconds).await {
                            Ok(true) => {}
                            Ok(false) => tracing::warn!(message = %c.id, "claim lost while processing"),
                            Err(e) => tracing::warn!(message = %c.id, error = %e, "cannot renew claim"),
                        }
                    }
                }
            }
        }
    }

    /// Reads one claimed message: its rows and follow-up, or why it failed
    /// (and whether that is transient).
    async fn process(
        &self,
        claimed: &store::Claimed,
        now: i64,
    ) -> Result<Result<(store::Processed, store::FollowUp), (String, bool)>, IntakeError> {
        let raw = match self.archive.read(&claimed.archive_path) {
            Ok(raw) => raw,
            Err(e) => return Ok(Err((format!("无法读取存档中的原始邮件：{e}"), true))),
        };
        let pipeline = Arc::clone(&self.pipeline);
        let name = claimed
            .original_name
            .clone()
            .unwrap_or_else(|| format!("{}.eml", claimed.id));
        let mut report =
            match tokio::task::spawn_blocking(move || pipeline.parse(&name, &raw)).await {
                Ok(report) => report,
                // A bug in our own code on this input: permanent for this
                // version; `reprocess` after an upgrade takes it again.
                Err(e) => return Ok(Err((format!("处理该邮件时程序出错：{e}"), false))),
            };
        let elsewhere = crate::parse::trust::credited_from_elsewhere(&report);
        let mut held = Vec::new();
        if !elsewhere.is_empty() {
            let own = self
                .store
                .registered_from_own_address(&elsewhere, &claimed.id, claimed.received_at)
                .await?;
            held = crate::parse::trust::hold_replacements(&mut report, &own);
        }
        let mut processed = to_rows(&report, self.pipeline.required());
        for (i, unit) in held {
            if let Some(row) = processed.registrations.get_mut(i) {
                row.held_unit = Some(unit);
            }
        }
        let follow_up = self
            .letters
            .as_ref()
            .map(|l| l.follow_up(&report, claimed, now))
            .unwrap_or_default();
        Ok(Ok((processed, follow_up)))
    }

    async fn failed(
        &self,
        claimed: &store::Claimed,
        reason: String,
        transient: bool,
        now: i64,
    ) -> Result<Step, IntakeError> {
        let will_retry = transient && claimed.attempts < self.settings.max_attempts;
        let retry_at = will_retry
            .then(|| now + self.settings.retry_seconds * (1 << claimed.attempts.clamp(0, 10)));
        self.store
            .fail(&claimed.id, &self.worker, &reason, retry_at)
            .await?;
        tracing::warn!(message = %claimed.id, reason = %reason, will_retry, "message failed");
        Ok(Step::Failed {
            id: claimed.id.clone(),
            reason,
            will_retry,
        })
    }

    /// Gives back, at start, the claims of workers of this host that no
    /// longer run (a `kill -9`, a crash, a power cut), so their messages
    /// are taken again at once instead of after the lease. Only on SQLite,
    /// which one instance serves: on PostgreSQL another instance's process
    /// may be invisible here (systemd's `ProtectProc=invisible`), and the
    /// lease alone decides. Returns how many claims were given back.
    pub async fn release_dead_claims(&self, now: i64) -> Result<usize, IntakeError> {
        if self.store.backend() != store::Backend::Sqlite {
            return Ok(0);
        }
        let host = hostname();
        let mut released = 0;
        for owner in crate::store::outbox::owners(&self.store).await? {
            if worker_is_dead(&owner, &host) {
                let n = crate::store::outbox::release_claims_of(&self.store, &owner).await?;
                tracing::warn!(owner = %owner, mails = n, "mail claims of a stopped process given back; each may be sent twice");
            }
        }
        for (id, worker) in self.store.claims().await? {
            if !worker_is_dead(&worker, &host) {
                continue;
            }
            let reason = "上次处理该邮件时服务意外退出";
            if self
                .store
                .release_claim(&id, &worker, now, self.settings.max_attempts, reason)
                .await?
            {
                tracing::warn!(message = %id, worker = %worker, "claim of a stopped worker given back");
                released += 1;
            }
        }
        Ok(released)
    }

    /// Registers this process as a live instance (see
    /// [`Intake::release_silent`]).
    pub async fn register(&self, now: i64) -> Result<(), IntakeError> {
        self.store
            .register_instance(&self.worker, &hostname(), std::process::id(), now)
            .await?;
        Ok(())
    }

    /// This instance is alive at `now` (registered again if it had been
    /// taken for dead).
    pub async fn beat(&self, now: i64) -> Result<(), IntakeError> {
        if !self.store.heartbeat(&self.worker, now).await? {
            tracing::warn!("this instance was taken for stopped; registering again");
            self.register(now).await?;
        }
        Ok(())
    }

    /// This instance stops: its row goes (its claims are all settled).
    pub async fn retire(&self) -> Result<(), IntakeError> {
        self.store.forget_instance(&self.worker).await?;
        Ok(())
    }

    /// Gives back the claims of instances that stopped beating
    /// [`SILENT_AFTER`] seconds ago — on any back-end and any host: their
    /// messages are taken again at once (or failed after `max_attempts`),
    /// their mail is sent again (a counted possible resend). Returns how
    /// many messages were given back.
    pub async fn release_silent(&self, now: i64) -> Result<usize, IntakeError> {
        let silent = self
            .store
            .silent_instances(&self.worker, now - SILENT_AFTER)
            .await?;
        if silent.is_empty() {
            return Ok(0);
        }
        let claims = self.store.claims().await?;
        let mut released = 0;
        for instance in &silent {
            for (id, _) in claims.iter().filter(|(_, w)| w == instance) {
                let reason = "处理该邮件的服务实例已停止";
                if self
                    .store
                    .release_claim(id, instance, now, self.settings.max_attempts, reason)
                    .await?
                {
                    released += 1;
                }
            }
            let mails = crate::store::outbox::release_claims_of(&self.store, instance).await?;
            self.store.forget_instance(instance).await?;
            tracing::warn!(instance = %instance, messages = released, mails,
                "claims of a stopped instance given back");
        }
        Ok(released)
    }

    /// Steps until idle; returns how many messages were processed.
    pub async fn drain(&self, now: impl Fn() -> i64) -> Result<usize, IntakeError> {
        let mut n = 0;
        loop {
            match self.step(now()).await? {
                Step::Idle => return Ok(n),
                Step::Processed { .. } | Step::Failed { .. } => n += 1,
            }
        }
    }
}

/// The Message-ID header, read from the headers only.
pub fn header_message_id(raw: &[u8]) -> Option<String> {
    // Only Message-ID is parsed (the other headers are skipped): this runs
    // for every message taken from a mailbox.
    static PARSER: std::sync::LazyLock<mail_parser::MessageParser> =
        std::sync::LazyLock::new(|| {
            mail_parser::MessageParser::new()
                .header_id(mail_parser::HeaderName::MessageId)
                .default_header_ignore()
        });
    let parsed = PARSER.parse_headers(raw)?;
    parsed.message_id().map(|id| format!("<{id}>"))
}

/// Turns a parse report into rows to store.
pub fn to_rows(report: &ParseReport, required: &[crate::parse::registration::Field]) -> Processed {
    let envelope = report.message.as_ref();
    let json = report.to_json();
    Processed {
        from_addr: envelope.and_then(|e| e.from.clone()),
        from_name: envelope.and_then(|e| e.from_name.clone()),
        subject: envelope.and_then(|e| e.subject.clone()),
        date_header: envelope.and_then(|e| e.date.clone()),
        kind: report.kind,
        automation: report.automation.clone(),
        sender_unit: report.sender_unit.as_ref().map(|u| u.unit_id.clone()),
        needs_review: report.needs_review,
        report: json.to_string(),
        attachments: report
            .attachments
            .iter()
            .map(|a| AttachmentRow {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                size: i64::try_from(a.size).unwrap_or(i64::MAX),
                sha256: a.sha256.clone(),
                format: a.format.to_string(),
                outcome: serde_json::to_value(a.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                detail: a.detail.clone(),
                red_seal: a.meta.get("red_seal").and_then(|v| v.as_bool()),
                fax_from: a
                    .meta
                    .get("fax_header")
                    .and_then(|h| h.get("from"))
                    .and_then(|v| v.as_str())
                    .map(String::from),
            })
            .collect(),
        registrations: report
            .registrations
            .iter()
            .map(|r| {
                let mut fields = r.to_json();
                let unit_match = fields["unit_match"].take();
                if let Some(obj) = fields.as_object_mut() {
                    obj.remove("source");
                }
                let fingerprint = hex::encode(Sha256::digest(fields.to_string().as_bytes()));
                RegistrationRow {
                    unit_id: unit_match["unit_id"].as_str().map(String::from),
                    held_unit: None,
                    matched_by: unit_match["by"].as_str().map(String::from),
                    source_name: r.source.clone(),
                    fields: r.to_json().to_string(),
                    fingerprint,
                    // An OCR reading waits for a person whatever it holds.
                    complete: !r.ocr && required.iter().all(|f| r.values.contains_key(f)),
                }
            })
            .collect(),
        problems: report
            .problems
            .iter()
            .map(|p| ProblemRow {
                field: p.field.map(|f| f.path().to_string()),
                code: p.code.as_str().to_string(),
                text: p.message.clone(),
            })
            .collect(),
    }
}

/// Whether a problem code keeps a unit from counting as registered.
pub fn blocks_registration(code: Code) -> bool {
    matches!(
        code,
        Code::MissingField
            | Code::UnitConflict
            | Code::UnknownUnit
            | Code::SenderUnverified
            | Code::UnverifiedReplacement
    )
}

/// Whether `worker` (`host-pid-random`, see [`Intake::new`]) was a process
/// of this host that is gone: no such process, or another program now has
/// its number. Anything unclear counts as alive (the lease decides then).
fn worker_is_dead(worker: &str, host: &str) -> bool {
    let mut parts = worker.rsplitn(3, '-');
    let (Some(_), Some(pid), Some(worker_host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if worker_host != host || pid == std::process::id() {
        return false;
    }
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm"));
    match (comm(&pid.to_string()), comm("self")) {
        (Err(e), Ok(_)) => e.kind() == std::io::ErrorKind::NotFound,
        (Ok(theirs), Ok(ours)) => theirs != ours,
        (_, Err(_)) => false,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}
