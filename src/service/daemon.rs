//! The service: opens the database and the archive, runs every source and
//! the processing loop until asked to stop, and talks to systemd
//! (READY/WATCHDOG/STATUS/STOPPING through `sd_notify`; all no-ops without
//! `NOTIFY_SOCKET`).
//!
//! `run(app, opts, shutdown)` takes its shutdown signal as an argument:
//! `main` passes SIGTERM/SIGINT, tests pass a future they control. On
//! shutdown the message being processed is finished first.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};

use crate::campaign::mailer::Mailer;
use crate::campaign::sending::{Sender, send_step};
use crate::campaign::templates::Templates;
use crate::campaign::{Letters, Mailing};
use crate::clock::Clock;
use crate::config::Config;
use crate::parse::pipeline::Pipeline;
use crate::parse::roster::Roster;
use crate::parse::sandbox::Isolation;
use crate::service::archive::Archive;
use crate::service::intake::{HEARTBEAT_EVERY, Intake, IntakeSettings, Step};
use crate::service::sources::{self, SourceCtx, Standby};
use crate::store::Store;

/// Everything the service runs on.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub roster: Option<Roster>,
    pub intake: Arc<Intake>,
    pub clock: Clock,
    /// What the campaign's mail is written from (templates, roster, us).
    pub letters: Arc<Letters>,
    /// `None` without `[smtp]`: nothing is sent, receipts are not queued.
    pub mailer: Option<Mailer>,
    /// When this instance started (unix seconds): what the sources fetched
    /// before is not a current picture for reminders.
    pub started_at: i64,
    /// Keeps this instance's row in `instance` fresh; stopped on drop.
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Roster(#[from] crate::parse::roster::RosterError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Intake(#[from] crate::service::intake::IntakeError),
    #[error(transparent)]
    Source(#[from] crate::service::sources::SourceError),
    #[error(transparent)]
    Templates(#[from] crate::campaign::templates::TemplateError),
    #[error(transparent)]
    Mailer(#[from] crate::campaign::mailer::MailerError),
    /// `run --once` could not poll every source: what it recorded is
    /// processed, but the pass is incomplete.
    #[error("本次收取未完成：{0}")]
    PassIncomplete(String),
}

/// Messages claimed, read and recorded together (one transaction for
/// their results): large enough that a backlog costs few transactions,
/// small enough that a slow scan holds back few results.
const GROUP: usize = 16;

/// How `run` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// One full pass over every source, then process everything and exit.
    pub once: bool,
}

impl App {
    /// Opens the database (applying migrations), the archive and the roster.
    pub async fn open(
        config: Config,
        isolation: Isolation,
        clock: Clock,
    ) -> Result<Self, DaemonError> {
        let roster = config.roster.as_deref().map(Roster::load).transpose()?;
        let store = Store::open(&config.database_url).await?;
        let pipeline = Pipeline::new(
            roster.clone(),
            config.required.clone(),
            isolation,
            config.limits,
        )
        .with_trusted_authserv(config.trusted_authserv.clone())
        .with_office_contacts(crate::parse::office::OfficeContacts::new(
            &config.office_contacts,
        ))
        .with_ocr(config.ocr_models.clone());
        let templates = Templates::load(&config.mailing.templates_dir)?;
        let mailer = config.smtp.as_ref().map(Mailer::new).transpose()?;
        // Without `[smtp]` mail can still be planned and queued (our
        // address is then unknown and Message-IDs use `localhost`), but
        // nothing is sent and no receipt is written.
        let letters = Arc::new(Letters {
            config: config.clone(),
            roster: roster.clone(),
            templates,
            our_address: mailer
                .as_ref()
                .map(Mailer::from_address)
                .unwrap_or_default(),
            domain: mailer
                .as_ref()
                .map_or_else(|| "localhost".into(), |m| m.domain.clone()),
        });
        let mut intake = Intake::new(
            store,
            Archive::new(&config.archive_dir),
            Arc::new(pipeline),
            IntakeSettings {
                lease_seconds: i64::try_from(config.claim_lease.as_secs()).unwrap_or(300),
                ..IntakeSettings::default()
            },
        );
        if mailer.is_some() {
            intake = intake.with_follow_up(Arc::clone(&letters));
        }
        let intake = Arc::new(intake);
        let started_at = clock.now();
        intake.register(started_at).await?;
        let heartbeat = tokio::spawn(beat(Arc::clone(&intake), clock.clone()));
        Ok(Self {
            config,
            roster,
            intake,
            clock,
            letters,
            mailer,
            started_at,
            heartbeat,
        })
    }

    /// This instance stops: its heartbeat ends and its row goes.
    pub async fn close(&self) {
        self.heartbeat.abort();
        if let Err(e) = self.intake.retire().await {
            tracing::warn!(error = %e, "cannot remove this instance's row");
        }
    }

    /// What the campaign's mailing steps need.
    pub fn mailing(&self) -> Mailing<'_> {
        Mailing {
            store: self.intake.store(),
            letters: &self.letters,
        }
    }

    /// Processes every pending message; returns the ids processed.
    async fn process_pending(
        &self,
        stop: Option<&mut (dyn Future<Output = ()> + Unpin)>,
    ) -> Vec<String> {
        self.process_pending_with(stop, &|_| {}).await.0
    }

    /// Processes every pending message in groups of [`GROUP`] (read in
    /// parallel, results recorded in one transaction), with as many groups
    /// under way as there are reader workers, so that one group's slowest
    /// message does not leave the workers idle; `each` is told of every
    /// step that did something. Returns the ids processed and the first error that
    /// stopped processing (the store failing). A stop request lets each lane finish its current message
    /// and take no other. Claims keep two lanes (or two instances) off the
    /// same message; which registration counts for a unit depends on the
    /// messages' received times, not on the order processing finishes.
    pub async fn process_pending_with(
        &self,
        stop: Option<&mut (dyn Future<Output = ()> + Unpin)>,
        each: &(dyn Fn(&Step) + Sync),
    ) -> (Vec<String>, Option<String>) {
        let stopping = std::sync::atomic::AtomicBool::new(false);
        let error = std::sync::Mutex::new(None);
        let lanes = self.config.workers.workers().max(1);
        let lane = || async {
            let mut done = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match self.intake.step_group(self.clock.now(), GROUP).await {
                    Ok(steps) if steps.is_empty() => break,
                    Ok(steps) => {
                        for step in steps {
                            each(&step);
                            if let Step::Processed { id } = step {
                                done.push(id);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "processing failed");
                        stopping.store(true, std::sync::atomic::Ordering::Relaxed);
                        error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e.to_string());
                    }
                }
            }
            done
        };
        let all = futures::future::join_all((0..lanes).map(|_| lane()));
        let done = match stop {
            None => all.await,
            Some(stop) => {
                let mut all = std::pin::pin!(all);
                tokio::select! {
                    done = &mut all => done,
                    () = stop => {
                        stopping.store(true, std::sync::atomic::Ordering::Relaxed);
                        all.await
                    }
                }
            }
        };
        let error = error.into_inner().unwrap_or_else(|p| p.into_inner());
        (done.into_iter().flatten().collect(), error)
    }

    /// The reminders and the overdue list that are due, then paced
    /// sending of whatever is queued (receipts were queued with each
    /// message's results). Mail problems are logged, never fatal.
    pub async fn mail_tick(&self) {
        // Without a way to send, no reminder is queued either.
        if self.mailer.is_none() {
            return;
        }
        let now = self.clock.now();
        if let Err(e) = self.plan_mail(now).await {
            tracing::warn!(error = %e, "cannot plan reminders or the overdue list");
        }
        if let Err(e) = self.send_queued(SendUntil::Paced).await {
            tracing::warn!(error = %e, "sending failed");
        }
    }

    /// Queues the reminders and the overdue list that are due — only once
    /// the picture is current: every source has caught up since this
    /// instance started and nothing recorded waits for processing.
    /// Otherwise they wait (noted for `status`); after `hold_limit` the
    /// office is told instead of units being reminded on stale data.
    async fn plan_mail(&self, now: i64) -> Result<(), crate::campaign::CampaignError> {
        let Some(c) = &self.config.campaign else {
            return Ok(());
        };
        let report_due = now > c.deadline.timestamp() && !self.config.mailing.office.is_empty();
        if !self.config.mailing.reminders_enabled && !report_due {
            return Ok(());
        }
        let m = self.mailing();
        let store = self.intake.store();
        if let Some(reason) = self.why_wait().await? {
            let earlier = store.read_note(HELD_NOTE).await?;
            let note = store.note(HELD_NOTE, &reason, now).await?;
            if earlier.is_none() {
                tracing::info!(reason = %reason, "reminders wait until every source has caught up");
            }
            let limit = i64::try_from(self.config.mailing.hold_limit.as_secs()).unwrap_or(i64::MAX);
            if now - note.since > limit
                && crate::campaign::queue_held_notice(&m, &note, now).await? > 0
            {
                tracing::warn!(reason = %reason, "reminders held too long; the office is told");
            }
            return Ok(());
        }
        if store.clear_note(HELD_NOTE).await? {
            tracing::info!("every source has caught up; reminders resume");
        }
        if self.config.mailing.reminders_enabled {
            crate::campaign::queue_reminders(&m, now, None).await?;
        }
        if report_due {
            crate::campaign::queue_overdue_report(&m, now, "report:deadline").await?;
        }
        Ok(())
    }

    /// Why reminders must wait now, or `None`.
    async fn why_wait(&self) -> Result<Option<String>, crate::store::StoreError> {
        let store = self.intake.store();
        let states = store.source_states().await?;
        let sources: Vec<(String, Option<i64>)> = self
            .config
            .sources
            .iter()
            .map(|s| {
                let ok = states
                    .iter()
                    .find(|st| st.name == s.name)
                    .and_then(|st| st.last_poll_ok);
                (s.name.clone(), ok)
            })
            .collect();
        let unprocessed = store.unprocessed().await?;
        Ok(crate::campaign::why_wait(
            &sources,
            self.started_at,
            unprocessed,
        ))
    }

    /// Sends what is queued, paced (`[smtp] rate_per_minute`, `daily_cap`);
    /// returns how many mails were handled (sent, retried later or
    /// failed). The service's tick and the manual commands (`remind
    /// send-now`, `report overdue`) both send through here.
    pub async fn send_queued(
        &self,
        until: SendUntil,
    ) -> Result<usize, crate::campaign::CampaignError> {
        let (Some(mailer), Some(smtp)) = (&self.mailer, &self.config.smtp) else {
            return Ok(0);
        };
        let store = self.intake.store();
        let sender = Sender {
            store,
            mailer,
            pacing: smtp.pacing,
            owner: self.intake.worker(),
            lease: i64::try_from(self.config.claim_lease.as_secs()).unwrap_or(300),
        };
        let mut handled = 0;
        loop {
            let now = self.clock.now();
            let day = crate::campaign::day_start(&self.config, now);
            if send_step(sender, now, day).await? {
                handled += 1;
                continue;
            }
            // Nothing due now: a mail waiting for its retry is left to the
            // service, rather than holding a command for hours.
            if until == SendUntil::Paced || !crate::store::outbox::any_due(store, now).await? {
                return Ok(handled);
            }
            // Due but paced: wait a little.
            tokio::time::sleep(PACING_WAIT).await;
        }
    }
}

/// How long [`App::send_queued`] goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendUntil {
    /// Until pacing stops it or nothing is due (the service's tick: the
    /// next tick goes on).
    Paced,
    /// Until nothing is due now, waiting out the pacing (a command run by
    /// a person, who waits for the mail to leave).
    NothingDue,
}

/// The note `status` shows while reminders wait for the sources.
pub const HELD_NOTE: &str = "reminders_held";

/// Keeps this instance's heartbeat fresh.
async fn beat(intake: Arc<Intake>, clock: Clock) {
    let mut tick = tokio::time::interval(Duration::from_secs(HEARTBEAT_EVERY));
    loop {
        tick.tick().await;
        if let Err(e) = intake.beat(clock.now()).await {
            tracing::warn!(error = %e, "cannot record this instance's heartbeat");
        }
    }
}

/// Gives back the claims of processes and instances that stopped.
async fn release_stopped(app: &App) {
    let now = app.clock.now();
    // On SQLite a killed predecessor on this host is known at once.
    match app.intake.release_dead_claims(now).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(messages = n, "took back messages of a stopped process"),
        Err(e) => tracing::warn!(error = %e, "cannot check for claims of stopped processes"),
    }
    if let Err(e) = app.intake.release_silent(now).await {
        tracing::warn!(error = %e, "cannot check for stopped instances");
    }
}

/// The wait between tries while the pacing holds mail back.
const PACING_WAIT: Duration = Duration::from_secs(5);

/// Runs the service until `shutdown` completes (or one pass with `once`).
pub async fn run(
    app: Arc<App>,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let ctx = SourceCtx {
        intake: Arc::clone(&app.intake),
        clock: app.clock.clone(),
        ready: ready_tx,
        standby: Standby::default(),
        shutdown: stop_rx.clone(),
        stall_after: app.config.stall_after,
        started_at: app.started_at,
    };
    match app.intake.archive().clean_temporaries() {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "temporary files of an interrupted write removed"),
        Err(e) => tracing::warn!(error = %e, "cannot clean the archive's temporary files"),
    }
    // A hold noted by an earlier run is not this run's.
    app.intake.store().clear_note(HELD_NOTE).await?;
    // Messages a killed predecessor was processing are taken again now.
    release_stopped(&app).await;
    if opts.once {
        let mut failed = Vec::new();
        for source in &app.config.sources {
            match sources::poll_once(source, &ctx).await {
                Ok(n) => tracing::info!(source = %source.name, messages = n, "source polled"),
                Err(e) => {
                    tracing::error!(source = %source.name, error = %e, "source poll failed");
                    failed.push(format!("邮件来源 {} 收取失败（{e}）", source.name));
                }
            }
        }
        let processed = app.process_pending(None).await;
        app.mail_tick().await;
        let workers = app.intake.pipeline().isolation().stats();
        tracing::info!(
            processed = processed.len(),
            jobs = workers.jobs,
            workers_started = workers.started,
            workers_died = workers.died,
            workers_killed = workers.killed,
            jobs_retried = workers.retried,
            "pass finished"
        );
        return if failed.is_empty() {
            Ok(())
        } else {
            Err(DaemonError::PassIncomplete(failed.join("；")))
        };
    }

    let mut tasks = Vec::new();
    for source in app.config.sources.clone() {
        tasks.push(tokio::spawn(sources::run(source, ctx.clone())));
    }
    let readiness = tokio::spawn(announce_ready(
        app.config.sources.len(),
        ready_rx,
        ctx.standby.clone(),
    ));
    let watchdog = sd_notify::watchdog_enabled().map(|period| tokio::spawn(feed_watchdog(period)));
    let mut poll_tick = tokio::time::interval(Duration::from_secs(5));
    // Looked at in several places: once complete it stays complete (an
    // `async fn` must not be polled again after it finished).
    let shutdown = futures::future::maybe_done(shutdown);
    tokio::pin!(shutdown);
    'service: loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = app.intake.arrived.notified() => {}
            _ = poll_tick.tick() => {}
        }
        // Process one message at a time; a stop request is looked at
        // between messages, so it waits for at most the current one.
        app.process_pending(Some(&mut shutdown)).await;
        if (&mut shutdown).now_or_never().is_some() {
            break 'service;
        }
        release_stopped(&app).await;
        app.mail_tick().await;
        notify_counts(&app, &ctx.standby).await;
    }
    readiness.abort();
    notify(&[NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// READY=1 once every one of `expected` sources has polled successfully,
/// from a task of its own: a backlog being processed must not hold READY
/// back (systemd would kill a start that takes longer than
/// TimeoutStartSec).
async fn announce_ready(
    expected: usize,
    mut ready_rx: mpsc::UnboundedReceiver<String>,
    standby: Standby,
) {
    let mut ready_sources = std::collections::HashSet::new();
    while ready_sources.len() < expected {
        match ready_rx.recv().await {
            Some(name) => {
                ready_sources.insert(name);
            }
            None => return,
        }
    }
    let waiting = standby.names();
    if waiting.is_empty() {
        notify(&[
            NotifyState::Ready,
            NotifyState::Status("已连接所有邮件来源，正在收取"),
        ]);
        tracing::info!("ready");
    } else {
        let text = standby_text(&waiting);
        notify(&[NotifyState::Ready, NotifyState::Status(&text)]);
        tracing::info!(standby = ?waiting, "ready as a standby");
    }
}

/// Feeds the watchdog from a task of its own: processing one message may
/// take minutes (a child timeout per attachment) and must not look like a
/// hang. A wedged runtime still stops the pings.
async fn feed_watchdog(period: Duration) {
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tick.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

/// The messages by state, as the service's STATUS line.
async fn notify_counts(app: &App, standby: &Standby) {
    if let Ok(counts) = app.intake.store().count_by_state().await {
        let summary: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{} {n}", s.as_str()))
            .collect();
        let waiting = standby.names();
        let prefix = if waiting.is_empty() {
            String::new()
        } else {
            format!("{}；", standby_text(&waiting))
        };
        notify(&[NotifyState::Status(&format!(
            "{prefix}邮件：{}",
            summary.join("，")
        ))]);
    }
}

/// `STATUS=` of an instance standing by for `sources`.
fn standby_text(sources: &[String]) -> String {
    format!("备用：另一实例正在收取邮箱（{}）", sources.join("、"))
}

fn notify(states: &[NotifyState<'_>]) {
    // No-op without NOTIFY_SOCKET; a failure to notify must not stop us.
    let _ = sd_notify::notify(states);
}
