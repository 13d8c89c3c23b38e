//! Sending what the outbox holds, one mail at a time: paced (163 refuses
//! bursts), each row taken with a claim first so that two processes never
//! send the same mail, and marked after the server answered — only if the
//! claim is still ours. A transient failure is retried with backoff, a
//! permanent one fails the row, a "slow down" pauses all sending.

use super::CampaignError;
use super::mailer::{Mailer, Pacing, SendError};
use crate::store::Store;
use crate::store::outbox::{self, Mail};

/// Seconds all sending pauses after the server judged us a spammer
/// (doubled for each time the same mail met it, up to 8×).
pub const THROTTLE_PAUSE: i64 = 30 * 60;

/// Sends tried for a mail whose failures are all transient, before it is
/// marked failed.
const MAX_TRANSIENT_ATTEMPTS: i64 = 30;

/// Who sends, and for how long a taken row stays ours.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub store: &'a Store,
    pub mailer: &'a Mailer,
    pub pacing: Pacing,
    /// This process's claim owner (as for messages).
    pub owner: &'a str,
    /// Seconds a taken row stays ours; after it, another sender takes it
    /// again (a possible resend).
    pub lease: i64,
}

/// Sends one due outbox mail if pacing allows; returns whether one was
/// handled (sent, retried later or failed).
pub async fn send_step(s: Sender<'_>, now: i64, day_start: i64) -> Result<bool, CampaignError> {
    let store = s.store;
    if outbox::sent_since(store, now - 60).await? >= i64::from(s.pacing.per_minute)
        || outbox::sent_since(store, day_start).await? >= i64::from(s.pacing.daily_cap)
    {
        return Ok(false);
    }
    let Some(mail) = outbox::claim_next(store, s.owner, now, s.lease).await? else {
        return Ok(false);
    };
    // The row (and its Message-ID) is on disk before the mail leaves.
    store.sync().await?;
    let result = s.mailer.send(&mail).await;
    let kept = settle(s, &mail, result, now).await?;
    if !kept {
        // Our lease ran out while the server was answering and another
        // sender took the row: it decides what becomes of it.
        tracing::warn!(mail = %mail.id, unit = %mail.unit_key, "mail's claim lost while sending");
    }
    Ok(true)
}

/// Records how a send went; false when the row was no longer ours.
async fn settle(
    s: Sender<'_>,
    mail: &Mail,
    result: Result<(), SendError>,
    now: i64,
) -> Result<bool, CampaignError> {
    let (store, owner) = (s.store, s.owner);
    let unit = &mail.unit_key;
    Ok(match result {
        Ok(()) => {
            tracing::info!(mail = %mail.id, unit = %unit, kind = mail.kind.stem(), slot = %mail.slot, "mail sent");
            outbox::mark_sent(store, &mail.id, owner, now).await?
        }
        // A day of retries (backoff doubling to an hour) is enough: the
        // mail is then failed and shown in `status` for a person to act.
        Err(SendError::Transient(e)) if mail.attempts + 1 >= MAX_TRANSIENT_ATTEMPTS => {
            let reason = format!("{e}（已重试 {} 次，放弃发送）", mail.attempts + 1);
            tracing::error!(mail = %mail.id, unit = %unit, error = %e, "mail given up after repeated transient failures");
            outbox::mark_failed(store, &mail.id, owner, &reason).await?
        }
        Err(SendError::Transient(e)) => {
            let backoff = 60 * (1_i64 << mail.attempts.clamp(0, 6));
            tracing::warn!(mail = %mail.id, unit = %unit, error = %e, retry_in = backoff, "mail not sent, will retry");
            outbox::mark_retry(store, &mail.id, owner, &e, now + backoff).await?
        }
        Err(SendError::Permanent(e)) => {
            tracing::error!(mail = %mail.id, unit = %unit, error = %e, "mail refused permanently");
            outbox::mark_failed(store, &mail.id, owner, &e).await?
        }
        Err(SendError::Throttled(e)) => {
            // Everything waits, not only this mail: the next one would be
            // refused the same way, and each refusal prolongs the block.
            let pause = THROTTLE_PAUSE * (1_i64 << mail.attempts.clamp(0, 3));
            tracing::warn!(mail = %mail.id, unit = %unit, error = %e, pause, "server asks us to slow down; sending paused");
            let kept = outbox::mark_retry(store, &mail.id, owner, &e, now + pause).await?;
            outbox::pause_all(store, now + pause).await?;
            kept
        }
    })
}
