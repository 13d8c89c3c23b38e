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

use crate::archive::Archive;
use crate::clock::Clock;
use crate::config::Config;
use crate::intake::{Intake, IntakeSettings};
use crate::pipeline::Pipeline;
use crate::roster::Roster;
use crate::sandbox::Isolation;
use crate::sources::{self, SourceCtx};
use crate::store::Store;

/// Everything the service runs on.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub roster: Option<Roster>,
    pub intake: Arc<Intake>,
    pub clock: Clock,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Roster(#[from] crate::roster::RosterError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Intake(#[from] crate::intake::IntakeError),
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
}

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
        );
        let intake = Intake::new(
            store,
            Archive::new(&config.archive_dir),
            Arc::new(pipeline),
            IntakeSettings {
                lease_seconds: i64::try_from(config.claim_lease.as_secs()).unwrap_or(300),
                ..IntakeSettings::default()
            },
        );
        Ok(Self {
            config,
            roster,
            intake: Arc::new(intake),
            clock,
        })
    }
}

/// Runs the service until `shutdown` completes (or one pass with `once`).
pub async fn run(
    app: Arc<App>,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let ctx = SourceCtx {
        intake: Arc::clone(&app.intake),
        clock: app.clock.clone(),
        ready: ready_tx,
        shutdown: stop_rx.clone(),
        stall_after: app.config.stall_after,
    };
    // Messages a killed predecessor was processing are taken again now.
    match app.intake.release_dead_claims(app.clock.now()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(messages = n, "took back messages of a stopped process"),
        Err(e) => tracing::warn!(error = %e, "cannot check for claims of stopped processes"),
    }
    if opts.once {
        for source in &app.config.sources {
            match sources::poll_once(source, &ctx).await {
                Ok(n) => tracing::info!(source = %source.name, messages = n, "source polled"),
                Err(e) => tracing::error!(source = %source.name, error = %e, "source poll failed"),
            }
        }
        let clock = app.clock.clone();
        let n = app.intake.drain(|| clock.now()).await?;
        tracing::info!(processed = n, "pass finished");
        return Ok(());
    }

    let mut tasks = Vec::new();
    for source in app.config.sources.clone() {
        tasks.push(tokio::spawn(sources::run(source, ctx.clone())));
    }
    let expected = app.config.sources.len();
    let mut ready_sources = std::collections::HashSet::new();
    let mut ready_sent = false;
    if expected == 0 {
        notify(&[NotifyState::Ready]);
        ready_sent = true;
    }
    // The watchdog is fed from a task of its own: processing one message
    // may take minutes (a child timeout per attachment) and must not look
    // like a hang. A wedged runtime still stops the pings.
    let watchdog = sd_notify::watchdog_enabled().map(|period| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        })
    });
    let mut poll_tick = tokio::time::interval(Duration::from_secs(5));
    tokio::pin!(shutdown);
    'service: loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(name) = ready_rx.recv() => {
                ready_sources.insert(name);
                if !ready_sent && ready_sources.len() >= expected {
                    notify(&[NotifyState::Ready, NotifyState::Status("已连接所有邮件来源，正在收取")]);
                    ready_sent = true;
                    tracing::info!("ready");
                }
                continue;
            }
            () = app.intake.arrived.notified() => {}
            _ = poll_tick.tick() => {}
        }
        // Process one message at a time; a stop request is looked at
        // between messages, so it waits for at most the current one.
        loop {
            match app.intake.step(app.clock.now()).await {
                Ok(crate::intake::Step::Idle) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "processing failed");
                    break;
                }
            }
            if (&mut shutdown).now_or_never().is_some() {
                break 'service;
            }
        }
        if let Ok(counts) = app.intake.store().count_by_state().await {
            let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
            notify(&[NotifyState::Status(&format!(
                "邮件：{}",
                summary.join("，")
            ))]);
        }
    }
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

fn notify(states: &[NotifyState<'_>]) {
    // No-op without NOTIFY_SOCKET; a failure to notify must not stop us.
    let _ = sd_notify::notify(states);
}
