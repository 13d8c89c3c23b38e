//! The outbox: every mail we send (回执, 催报提醒, 通报) is written here first,
//! then sent, then marked sent. The key (campaign, unit, slot) is unique, so
//! one reminder slot is one mail at most; a crash between sending and
//! marking leaves the row queued, and it is sent again with the same
//! Message-ID (the recipient's client shows one mail). Transient SMTP
//! errors retry with backoff, permanent ones mark the row failed.
//!
//! Deciding what to send is `crate::campaign::reminders` (pure); talking SMTP is
//! `crate::campaign::mailer`.

use sqlx::Row;

use crate::store::{Store, StoreError};

/// A mail to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub campaign: String,
    /// The roster unit, or `""` for mail to the office.
    pub unit_key: String,
    /// The reminder slot key, `ack:<message hash>`, `report:<date>` …
    pub slot: String,
    /// `ack`, `ack_unmatched`, `reminder`, `overdue_reminder`, `overdue_report`.
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub in_reply_to: Option<String>,
    pub attachment: Option<(String, Vec<u8>)>,
}

/// A queued mail as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub id: String,
    pub campaign: String,
    pub unit_key: String,
    pub slot: String,
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub attachment: Option<(String, Vec<u8>)>,
    pub attempts: i64,
    /// When the row was written (unix seconds): also the mail's `Date:`, so
    /// a resend after a crash is byte for byte the same mail.
    pub created_at: i64,
}

/// A row of the outbox for planning and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub unit_key: String,
    pub slot: String,
    pub kind: String,
    pub state: String,
    pub at: i64,
}

/// Queues a mail unless its (campaign, unit, slot) is already there; returns
/// the row id when it was queued now.
pub async fn queue(
    store: &Store,
    mail: &NewMail,
    domain: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let id = format!("{:016x}{:08x}", now, rand::random::<u32>());
    let message_id = format!("<xxdc-{id}@{domain}>");
    let (att_name, att_b64) = match &mail.attachment {
        Some((name, bytes)) => {
            use base64::Engine;
            (
                Some(name.as_str()),
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            )
        }
        None => (None, None),
    };
    let done = sqlx::query(
        "INSERT INTO outbox (id, campaign, unit_key, slot, kind, to_addr, subject, body, message_id, in_reply_to,
            attachment_name, attachment_b64, state, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'queued', 0, $13, $13)
         ON CONFLICT (campaign, unit_key, slot) DO NOTHING",
    )
    .bind(&id)
    .bind(&mail.campaign)
    .bind(&mail.unit_key)
    .bind(&mail.slot)
    .bind(&mail.kind)
    .bind(&mail.to)
    .bind(&mail.subject)
    .bind(&mail.body)
    .bind(&message_id)
    .bind(mail.in_reply_to.as_deref())
    .bind(att_name)
    .bind(att_b64.as_deref())
    .bind(now)
    .execute(store.pool())
    .await?;
    Ok((done.rows_affected() == 1).then_some(id))
}

/// Records a reminder slot that passed while nothing was sent, so it is
/// reported and never sent late.
pub async fn record_missed(
    store: &Store,
    campaign: &str,
    unit: &str,
    slot: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (id, campaign, unit_key, slot, kind, to_addr, subject, body, message_id, state, attempts, created_at)
         VALUES ($1, $2, $3, $4, 'missed', '', '', '', '', 'missed', 0, $5)
         ON CONFLICT (campaign, unit_key, slot) DO NOTHING",
    )
    .bind(format!("{:016x}{:08x}", now, rand::random::<u32>()))
    .bind(campaign)
    .bind(unit)
    .bind(slot)
    .bind(now)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// The next mail due for sending, oldest first.
pub async fn next_due(store: &Store, now: i64) -> Result<Option<Mail>, StoreError> {
    let row = sqlx::query(
        "SELECT id, campaign, unit_key, slot, kind, to_addr, subject, body, message_id, in_reply_to,
                attachment_name, attachment_b64, attempts, created_at
         FROM outbox WHERE state = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(now)
    .fetch_optional(store.pool())
    .await?;
    row.map(|r| mail_of(&r)).transpose()
}

fn mail_of(r: &sqlx::any::AnyRow) -> Result<Mail, StoreError> {
    let att_name: Option<String> = r.try_get(10)?;
    let att_b64: Option<String> = r.try_get(11)?;
    let attachment = match (att_name, att_b64) {
        (Some(name), Some(b64)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .map(|bytes| (name, bytes))
        }
        _ => None,
    };
    Ok(Mail {
        id: r.try_get(0)?,
        campaign: r.try_get(1)?,
        unit_key: r.try_get(2)?,
        slot: r.try_get(3)?,
        kind: r.try_get(4)?,
        to: r.try_get(5)?,
        subject: r.try_get(6)?,
        body: r.try_get(7)?,
        message_id: r.try_get(8)?,
        in_reply_to: r.try_get(9)?,
        attachment,
        attempts: r.try_get(12)?,
        created_at: r.try_get(13)?,
    })
}

pub async fn mark_sent(store: &Store, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET state = 'sent', sent_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// A transient failure: try again at `retry_at`.
pub async fn mark_retry(
    store: &Store,
    id: &str,
    error: &str,
    retry_at: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1")
        .bind(id)
        .bind(error)
        .bind(retry_at)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The server asked us to slow down: nothing queued is tried before
/// `until` (rows already waiting longer keep their time).
pub async fn pause_all(store: &Store, until: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $1
         WHERE state = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at < $1)",
    )
    .bind(until)
    .execute(store.pool())
    .await?;
    Ok(done.rows_affected())
}

/// Reminders still queued for `unit` that are no longer wanted (it
/// registered meanwhile, or its address bounced): never sent, kept as
/// `cancelled` so the slot still counts as handled.
pub async fn cancel_reminders(
    store: &Store,
    campaign: &str,
    unit: &str,
    reason: &str,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'cancelled', last_error = $3
         WHERE campaign = $1 AND unit_key = $2 AND state = 'queued'
           AND kind IN ('reminder', 'overdue_reminder')",
    )
    .bind(campaign)
    .bind(unit)
    .bind(reason)
    .execute(store.pool())
    .await?;
    Ok(done.rows_affected())
}

/// Reminders still queued to an address that bounced meanwhile.
pub async fn cancel_reminders_to_undeliverable(store: &Store) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'cancelled', last_error = '退信地址'
         WHERE state = 'queued' AND kind IN ('reminder', 'overdue_reminder')
           AND LOWER(to_addr) IN (SELECT address FROM undeliverable)",
    )
    .execute(store.pool())
    .await?;
    Ok(done.rows_affected())
}

/// Whether `message_id` (`<…>`) is one of the mails we sent.
pub async fn is_ours(store: &Store, message_id: &str) -> Result<bool, StoreError> {
    Ok(by_message_id(store, message_id).await?.is_some())
}

/// A permanent failure (5xx): never retried, shown in `status`.
pub async fn mark_failed(store: &Store, id: &str, error: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $2 WHERE id = $1")
        .bind(id)
        .bind(error)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Mails sent since `since` (pacing: per-minute rate, daily cap).
pub async fn sent_since(store: &Store, since: i64) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND sent_at >= $1")
        .bind(since)
        .fetch_one(store.pool())
        .await?;
    Ok(row.try_get(0)?)
}

/// Every reminder row of a campaign (for planning and status).
pub async fn reminders(store: &Store, campaign: &str) -> Result<Vec<Record>, StoreError> {
    let rows = sqlx::query(
        "SELECT unit_key, slot, kind, state, COALESCE(sent_at, created_at) FROM outbox
         WHERE campaign = $1 AND kind IN ('reminder', 'overdue_reminder', 'missed') ORDER BY created_at",
    )
    .bind(campaign)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Record {
                unit_key: r.try_get(0)?,
                slot: r.try_get(1)?,
                kind: r.try_get(2)?,
                state: r.try_get(3)?,
                at: r.try_get(4)?,
            })
        })
        .collect()
}

/// Failed mails, for `status`.
pub async fn failed(store: &Store) -> Result<Vec<(String, String, String)>, StoreError> {
    let rows = sqlx::query("SELECT to_addr, subject, COALESCE(last_error, '') FROM outbox WHERE state = 'failed' ORDER BY created_at")
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// The outbox row a bounce reports on, by the Message-ID of our mail:
/// (id, unit key, address).
pub async fn by_message_id(
    store: &Store,
    message_id: &str,
) -> Result<Option<(String, String, String)>, StoreError> {
    bounced_row(
        store,
        "SELECT id, unit_key, to_addr FROM outbox WHERE message_id = $1",
        message_id,
    )
    .await
}

/// The outbox row with this id (our `X-Xxdc-Outbox` header).
pub async fn by_id(
    store: &Store,
    id: &str,
) -> Result<Option<(String, String, String)>, StoreError> {
    bounced_row(
        store,
        "SELECT id, unit_key, to_addr FROM outbox WHERE id = $1",
        id,
    )
    .await
}

async fn bounced_row(
    store: &Store,
    sql: &'static str,
    key: &str,
) -> Result<Option<(String, String, String)>, StoreError> {
    let row = sqlx::query(sql)
        .bind(key)
        .fetch_optional(store.pool())
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .transpose()
}

pub async fn mark_undeliverable(
    store: &Store,
    address: &str,
    unit_id: Option<&str>,
    outbox_id: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO undeliverable (address, unit_id, outbox, reason, at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (address) DO NOTHING",
    )
    .bind(address.to_lowercase())
    .bind(unit_id)
    .bind(outbox_id)
    .bind(reason)
    .bind(now)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Addresses that bounced, lower case.
pub async fn undeliverable(
    store: &Store,
) -> Result<Vec<(String, Option<String>, String)>, StoreError> {
    let rows =
        sqlx::query("SELECT address, unit_id, COALESCE(reason, '') FROM undeliverable ORDER BY at")
            .fetch_all(store.pool())
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// Outbox rows by state (missed slots left out), for `status`.
pub async fn count_by_state(
    store: &Store,
) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
    let rows =
        sqlx::query("SELECT state, COUNT(*) FROM outbox WHERE state <> 'missed' GROUP BY state")
            .fetch_all(store.pool())
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect()
}
