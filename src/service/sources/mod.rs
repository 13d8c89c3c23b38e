//! Where messages come from: an IMAP mailbox (`imap`) or a folder a fax
//! server or scanner drops files into (`directory`). A source hands raw
//! bytes to [`Intake::accept`] and touches its mailbox only after that
//! returned; it reports its health to the store. Processing is not its job.

pub mod directory;
pub mod imap;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::{Source, SourceKind};
use crate::service::intake::{Intake, IntakeError};

/// What a source needs to run.
#[derive(Debug, Clone)]
pub struct SourceCtx {
    pub intake: Arc<Intake>,
    pub clock: Clock,
    /// A source sends its name here after its first successful poll, or
    /// once it knows another instance holds its polling lease (the daemon
    /// reports READY to systemd once every source did).
    pub ready: mpsc::UnboundedSender<String>,
    /// The sources waiting for another instance's polling lease: this
    /// instance is a standby for them.
    pub standby: Standby,
    /// Flips to true when the service is asked to stop.
    pub shutdown: watch::Receiver<bool>,
    /// A source without a successful poll for this long is stalled.
    pub stall_after: std::time::Duration,
    /// When this instance started: a source that never polled successfully
    /// is stalled `stall_after` from then, not at its first failure.
    pub started_at: i64,
}

/// The names of the sources this instance stands by for (another
/// instance polls them).
#[derive(Debug, Clone, Default)]
pub struct Standby(Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl Standby {
    pub fn set(&self, source: &str, standby: bool) {
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if standby {
            names.insert(source.to_string());
        } else {
            names.remove(source);
        }
    }

    pub fn names(&self) -> Vec<String> {
        let names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        names.iter().cloned().collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error("{0}")]
    Io(String),
    /// The server refused our login: retrying will not help until someone
    /// acts (a revoked 授权码, IMAP switched off).
    #[error("{0}")]
    Login(String),
}

impl SourceCtx {
    /// Records a successful poll.
    pub async fn ok(&self, name: &str, kind: &str) {
        if let Err(e) = self
            .intake
            .store()
            .source_ok(name, kind, self.clock.now())
            .await
        {
            tracing::warn!(source = name, error = %e, "cannot record source state");
        }
    }

    /// Records a failed poll; a source that has not polled successfully for
    /// `stall_after` is logged as an error once, not on every retry.
    pub async fn failed(&self, name: &str, kind: &str, error: &SourceError) {
        let now = self.clock.now();
        let store = self.intake.store();
        if let Err(e) = store
            .source_error(name, kind, &error.to_string(), now)
            .await
        {
            tracing::warn!(source = name, error = %e, "cannot record source state");
        }
        let last_ok = store
            .source_state(name)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.last_poll_ok)
            .or(Some(self.started_at));
        if stalled(last_ok, now, self.stall_after)
            && store.report_stall_once(name).await.unwrap_or(false)
        {
            tracing::error!(source = name, error = %error, "source stalled: no successful poll");
        } else {
            tracing::warn!(source = name, error = %error, "poll failed");
        }
    }
}

/// Runs a source until shutdown.
pub async fn run(source: Source, ctx: SourceCtx) {
    match source.kind {
        SourceKind::Imap(settings) => imap::run(&source.name, &settings, ctx).await,
        SourceKind::Directory {
            path,
            poll_interval,
        } => directory::run(&source.name, &path, poll_interval, ctx).await,
    }
}

/// Polls a source once (`run --once`); returns how many messages it took.
pub async fn poll_once(source: &Source, ctx: &SourceCtx) -> Result<usize, SourceError> {
    let result = match &source.kind {
        SourceKind::Imap(settings) => imap::poll_once(&source.name, settings, ctx).await,
        SourceKind::Directory { path, .. } => directory::poll(&source.name, path, ctx).await,
    };
    let kind = kind_name(&source.kind);
    match &result {
        Ok(_) => ctx.ok(&source.name, kind).await,
        Err(e) => ctx.failed(&source.name, kind, e).await,
    }
    result
}

/// Whether a source whose last successful poll was at `last_ok` (never:
/// `None`) counts as stalled at `now`.
pub fn stalled(last_ok: Option<i64>, now: i64, stall_after: std::time::Duration) -> bool {
    let limit = i64::try_from(stall_after.as_secs()).unwrap_or(i64::MAX);
    last_ok.is_none_or(|t| now - t > limit)
}

pub fn kind_name(kind: &SourceKind) -> &'static str {
    match kind {
        SourceKind::Imap(_) => "imap",
        SourceKind::Directory { .. } => "directory",
    }
}
