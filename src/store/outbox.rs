//! The outbox: every mail we send (回执, 催报提醒, 通报) is written here first,
//! then sent, then marked sent. The key (campaign, unit, slot) is unique, so
//! one reminder slot is one mail at most; a crash between sending and
//! marking leaves the row queued, and it is sent again with the same
//! Message-ID (the recipient's client shows one mail). Transient SMTP
//! errors retry with backoff, permanent ones mark the row failed.
//!
//! Deciding what to send is the campaign's reminder planner (pure);
//! talking SMTP is its mailer.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::text::StoredText;
use super::{Result, Store, StoreError};
use crate::parse::message::Returned;

/// The kinds of mail we send; the name is also the stem of the mail's
/// template files (`config/templates/ack.subject`, `ack.txt` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MailKind {
    /// 回执: the form was recorded.
    Ack,
    /// 回执: received, but the unit could not be decided; the office looks.
    AckUnmatched,
    /// 催报提醒 before the deadline.
    Reminder,
    /// 逾期提醒 after the deadline.
    OverdueReminder,
    /// 通报: the list of units still missing, to the office.
    OverdueReport,
    /// To the office: reminders are held back because a source has not
    /// caught up (units are not reminded on stale data).
    RemindersHeld,
    /// To a unit, sent by a person from the workspace: what to correct in
    /// its registration.
    CorrectionRequest,
}

impl MailKind {
    pub const ALL: [MailKind; 7] = [
        MailKind::Ack,
        MailKind::AckUnmatched,
        MailKind::Reminder,
        MailKind::OverdueReminder,
        MailKind::OverdueReport,
        MailKind::RemindersHeld,
        MailKind::CorrectionRequest,
    ];

    pub fn stem(self) -> &'static str {
        match self {
            MailKind::Ack => "ack",
            MailKind::AckUnmatched => "ack_unmatched",
            MailKind::Reminder => "reminder",
            MailKind::OverdueReminder => "overdue_reminder",
            MailKind::OverdueReport => "overdue_report",
            MailKind::RemindersHeld => "reminders_held",
            MailKind::CorrectionRequest => "correction_request",
        }
    }
}

/// Where an outbox row is. Declared in alphabetical order of the names,
/// which is the order `status` lists them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// A reminder no longer wanted before it was sent.
    Cancelled,
    /// Refused for good, or given up after repeated transient failures.
    Failed,
    /// A reminder slot that passed while the service was down.
    Missed,
    /// Written, not sent yet (or waiting for a retry).
    Queued,
    /// Taken by a sender (`claimed_by`) until `claimed_until`.
    Sending,
    Sent,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        self.as_text()
    }
}

impl StoredText for OutboxState {
    const ALL: &'static [Self] = &[
        Self::Queued,
        Self::Sending,
        Self::Sent,
        Self::Failed,
        Self::Cancelled,
        Self::Missed,
    ];

    fn as_text(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Missed => "missed",
        }
    }
}

/// What an outbox row is: a mail of some kind, or a reminder slot recorded
/// as missed (never sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxKind {
    Mail(MailKind),
    Missed,
}

impl StoredText for OutboxKind {
    const ALL: &'static [Self] = &[
        Self::Mail(MailKind::Ack),
        Self::Mail(MailKind::AckUnmatched),
        Self::Mail(MailKind::Reminder),
        Self::Mail(MailKind::OverdueReminder),
        Self::Mail(MailKind::OverdueReport),
        Self::Mail(MailKind::RemindersHeld),
        Self::Mail(MailKind::CorrectionRequest),
        Self::Missed,
    ];

    fn as_text(self) -> &'static str {
        match self {
            Self::Mail(kind) => kind.as_text(),
            Self::Missed => "missed",
        }
    }
}

/// A mail to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub campaign: String,
    /// The roster unit, or `""` for mail to the office.
    pub unit_key: String,
    /// The reminder slot key, `ack:<message hash>`, `report:<date>` …
    pub slot: String,
    pub kind: MailKind,
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
    pub kind: MailKind,
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

#[derive(sqlx::FromRow)]
struct MailRow {
    id: String,
    campaign: String,
    unit_key: String,
    slot: String,
    kind: String,
    to_addr: String,
    subject: String,
    body: String,
    message_id: String,
    in_reply_to: Option<String>,
    attachment_name: Option<String>,
    attachment_b64: Option<String>,
    attempts: i64,
    created_at: i64,
}

impl TryFrom<MailRow> for Mail {
    type Error = StoreError;

    fn try_from(r: MailRow) -> Result<Self> {
        let attachment = match (r.attachment_name, r.attachment_b64) {
            (Some(name), Some(b64)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| StoreError::corrupt("outbox", &r.id, "attachment_b64", e))?;
                Some((name, bytes))
            }
            _ => None,
        };
        Ok(Mail {
            kind: MailKind::decode(&r.kind, "outbox", &r.id, "kind")?,
            id: r.id,
            campaign: r.campaign,
            unit_key: r.unit_key,
            slot: r.slot,
            to: r.to_addr,
            subject: r.subject,
            body: r.body,
            message_id: r.message_id,
            in_reply_to: r.in_reply_to,
            attachment,
            attempts: r.attempts,
            created_at: r.created_at,
        })
    }
}

/// A reminder row of the outbox, for planning and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub unit_key: String,
    pub slot: String,
    pub kind: OutboxKind,
    pub state: OutboxState,
    /// When it was sent, or else when it was written.
    pub at: i64,
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    id: String,
    unit_key: String,
    slot: String,
    kind: String,
    state: String,
    at: i64,
}

/// The outbox row a bounce reports on.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Sent {
    pub id: String,
    /// The roster unit, or `""` for mail to the office.
    pub unit_key: String,
    pub to_addr: String,
}

/// A mail refused for good, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Failed {
    pub to_addr: String,
    pub subject: String,
    pub error: String,
}

/// An address that bounced, lower case.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Undeliverable {
    pub address: String,
    pub unit_id: Option<String>,
    pub reason: String,
}

#[derive(sqlx::FromRow)]
struct StateCount {
    state: String,
    n: i64,
}

/// A fresh row id: the time, then randomness.
fn row_id(now: i64) -> String {
    format!("{:016x}{:08x}", now, rand::random::<u32>())
}

/// Queues a mail unless its (campaign, unit, slot) is already there; returns
/// the row id when it was queued now.
pub async fn queue(
    store: &Store,
    mail: &NewMail,
    domain: &str,
    now: i64,
) -> Result<Option<String>> {
    let mut conn = store.pool.acquire().await?;
    insert(&mut conn, mail, domain, now).await
}

/// [`queue`] on a connection or in a transaction.
pub(super) async fn insert(
    conn: &mut sqlx::AnyConnection,
    mail: &NewMail,
    domain: &str,
    now: i64,
) -> Result<Option<String>> {
    let id = row_id(now);
    let message_id = format!("<xxdc-{id}@{domain}>");
    let (att_name, att_b64) = match &mail.attachment {
        Some((name, bytes)) => (
            Some(name.as_str()),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
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
    .bind(mail.kind.as_text())
    .bind(&mail.to)
    .bind(&mail.subject)
    .bind(&mail.body)
    .bind(&message_id)
    .bind(mail.in_reply_to.as_deref())
    .bind(att_name)
    .bind(att_b64.as_deref())
    .bind(now)
    .execute(&mut *conn)
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
) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (id, campaign, unit_key, slot, kind, to_addr, subject, body, message_id, state, attempts, created_at)
         VALUES ($1, $2, $3, $4, 'missed', '', '', '', '', 'missed', 0, $5)
         ON CONFLICT (campaign, unit_key, slot) DO NOTHING",
    )
    .bind(row_id(now))
    .bind(campaign)
    .bind(unit)
    .bind(slot)
    .bind(now)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Rows a sender may take now: queued and due, or taken by a sender whose
/// lease ran out (it died, maybe after the server took the mail).
const TAKEABLE: &str = "(state = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $1))
     OR (state = 'sending' AND claimed_until < $1)";

/// Takes the next mail due for sending, oldest first, for `owner` until
/// `now + lease`: one conditional UPDATE, so two senders never take the
/// same row. A row taken again after its sender's lease ran out is
/// counted as a possible resend (same Message-ID).
pub async fn claim_next(store: &Store, owner: &str, now: i64, lease: i64) -> Result<Option<Mail>> {
    let candidates: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM outbox WHERE {TAKEABLE} ORDER BY created_at, id LIMIT 8"
    )))
    .bind(now)
    .fetch_all(&store.pool)
    .await?;
    for id in candidates {
        let taken = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET resends = resends + CASE WHEN state = 'sending' THEN 1 ELSE 0 END,
                state = 'sending', claimed_by = $2, claimed_until = $3
             WHERE id = $4 AND ({TAKEABLE})"
        )))
        .bind(now)
        .bind(owner)
        .bind(now + lease)
        .bind(&id)
        .execute(&store.pool)
        .await?;
        if taken.rows_affected() == 1 {
            let row: MailRow = sqlx::query_as(
                "SELECT id, campaign, unit_key, slot, kind, to_addr, subject, body, message_id, in_reply_to,
                        attachment_name, attachment_b64, attempts, created_at
                 FROM outbox WHERE id = $1",
            )
            .bind(&id)
            .fetch_one(&store.pool)
            .await?;
            return Mail::try_from(row).map(Some);
        }
    }
    Ok(None)
}

/// Whether some mail is due for sending at `now` (queued and due, or
/// taken by a sender whose lease ran out).
pub async fn any_due(store: &Store, now: i64) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM outbox WHERE {TAKEABLE}"
    )))
    .bind(now)
    .fetch_one(&store.pool)
    .await?;
    Ok(n > 0)
}

/// Sent: only if `owner` still holds the row; false when its claim was
/// lost (another sender took it after the lease).
pub async fn mark_sent(store: &Store, id: &str, owner: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'sent', sent_at = $3, attempts = attempts + 1, last_error = NULL,
            claimed_by = NULL, claimed_until = NULL
         WHERE id = $1 AND state = 'sending' AND claimed_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(now)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A transient failure: queued again, tried at `retry_at`.
pub async fn mark_retry(
    store: &Store,
    id: &str,
    owner: &str,
    error: &str,
    retry_at: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'queued', attempts = attempts + 1, last_error = $3, next_attempt_at = $4,
            claimed_by = NULL, claimed_until = NULL
         WHERE id = $1 AND state = 'sending' AND claimed_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(error)
    .bind(retry_at)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A permanent failure (5xx): never retried, shown in `status`.
pub async fn mark_failed(store: &Store, id: &str, owner: &str, error: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $3,
            claimed_by = NULL, claimed_until = NULL
         WHERE id = $1 AND state = 'sending' AND claimed_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(error)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back, without waiting for the lease, the rows taken by a sender
/// known to be dead: they are due again at once (a possible resend,
/// counted when taken). Returns how many.
pub async fn release_claims_of(store: &Store, owner: &str) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET claimed_until = 0 WHERE state = 'sending' AND claimed_by = $1",
    )
    .bind(owner)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Every sender holding a row: for releasing those of dead processes.
pub async fn owners(store: &Store) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT claimed_by FROM outbox WHERE state = 'sending' AND claimed_by IS NOT NULL",
    )
    .fetch_all(&store.pool)
    .await?)
}

/// Mails taken again after their sender stopped mid-send: each may have
/// reached its recipient twice (same Message-ID), for `status`.
pub async fn resends(store: &Store) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(SUM(resends), 0) FROM outbox")
            .fetch_one(&store.pool)
            .await?,
    )
}

/// The server asked us to slow down: nothing queued is tried before
/// `until` (rows already waiting longer keep their time).
pub async fn pause_all(store: &Store, until: i64) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $1
         WHERE state = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at < $1)",
    )
    .bind(until)
    .execute(&store.pool)
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
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'cancelled', last_error = $3
         WHERE campaign = $1 AND unit_key = $2 AND state = 'queued'
           AND kind IN ('reminder', 'overdue_reminder')",
    )
    .bind(campaign)
    .bind(unit)
    .bind(reason)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Reminders still queued to an address that bounced meanwhile.
pub async fn cancel_reminders_to_undeliverable(store: &Store) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'cancelled', last_error = '退信地址'
         WHERE state = 'queued' AND kind IN ('reminder', 'overdue_reminder')
           AND LOWER(to_addr) IN (SELECT address FROM undeliverable)",
    )
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Mails sent since `since` (pacing: per-minute rate, daily cap).
pub async fn sent_since(store: &Store, since: i64) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND sent_at >= $1")
            .bind(since)
            .fetch_one(&store.pool)
            .await?,
    )
}

/// Every reminder row of a campaign (for planning and status), oldest first.
pub async fn reminders(store: &Store, campaign: &str) -> Result<Vec<Record>> {
    let rows: Vec<RecordRow> = sqlx::query_as(
        "SELECT id, unit_key, slot, kind, state, COALESCE(sent_at, created_at) AS at FROM outbox
         WHERE campaign = $1 AND kind IN ('reminder', 'overdue_reminder', 'missed') ORDER BY created_at",
    )
    .bind(campaign)
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Record {
                kind: OutboxKind::decode(&r.kind, "outbox", &r.id, "kind")?,
                state: OutboxState::decode(&r.state, "outbox", &r.id, "state")?,
                unit_key: r.unit_key,
                slot: r.slot,
                at: r.at,
            })
        })
        .collect()
}

/// A mail we wrote to one unit, as its history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitMail {
    pub kind: OutboxKind,
    pub state: OutboxState,
    pub to: String,
    pub subject: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct UnitMailRow {
    id: String,
    kind: String,
    state: String,
    to_addr: String,
    subject: String,
    created_at: i64,
    sent_at: Option<i64>,
    last_error: Option<String>,
}

/// Every mail of a campaign written to one unit (receipts, reminders,
/// correction requests), oldest first.
pub async fn of_unit(store: &Store, campaign: &str, unit: &str) -> Result<Vec<UnitMail>> {
    let rows: Vec<UnitMailRow> = sqlx::query_as(
        "SELECT id, kind, state, to_addr, subject, created_at, sent_at, last_error FROM outbox
         WHERE campaign = $1 AND unit_key = $2 ORDER BY created_at, id",
    )
    .bind(campaign)
    .bind(unit)
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(UnitMail {
                kind: OutboxKind::decode(&r.kind, "outbox", &r.id, "kind")?,
                state: OutboxState::decode(&r.state, "outbox", &r.id, "state")?,
                to: r.to_addr,
                subject: r.subject,
                created_at: r.created_at,
                sent_at: r.sent_at,
                last_error: r.last_error,
            })
        })
        .collect()
}

/// Failed mails, for `status`, oldest first.
pub async fn failed(store: &Store) -> Result<Vec<Failed>> {
    Ok(sqlx::query_as(
        "SELECT to_addr, subject, COALESCE(last_error, '') AS error FROM outbox WHERE state = 'failed' ORDER BY created_at",
    )
    .fetch_all(&store.pool)
    .await?)
}

/// The outbox row a bounce reports on, by the Message-ID of our mail.
pub async fn by_message_id(store: &Store, message_id: &str) -> Result<Option<Sent>> {
    let mut conn = store.pool.acquire().await?;
    returned(&mut conn, &Returned::MessageId(message_id.to_string())).await
}

/// The outbox row with this id (our `X-Xxdc-Outbox` header).
pub async fn by_id(store: &Store, id: &str) -> Result<Option<Sent>> {
    let mut conn = store.pool.acquire().await?;
    returned(&mut conn, &Returned::Outbox(id.to_string())).await
}

/// The outbox row a bounce's reference names, if it is one of ours.
pub(super) async fn returned(
    conn: &mut sqlx::AnyConnection,
    reference: &Returned,
) -> Result<Option<Sent>> {
    let (sql, key) = match reference {
        Returned::Outbox(id) => ("SELECT id, unit_key, to_addr FROM outbox WHERE id = $1", id),
        Returned::MessageId(id) => (
            "SELECT id, unit_key, to_addr FROM outbox WHERE message_id = $1",
            id,
        ),
    };
    Ok(sqlx::query_as(sql)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Whether one of `message_ids` is the Message-ID of a mail we sent.
pub(super) async fn any_ours(
    conn: &mut sqlx::AnyConnection,
    message_ids: &[String],
) -> Result<bool> {
    for id in message_ids {
        if returned(conn, &Returned::MessageId(id.clone()))
            .await?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Marks an address undeliverable (a bounce of the outbox row `outbox_id`):
/// no more reminders go there, and `status` lists it.
pub async fn mark_undeliverable(
    store: &Store,
    address: &str,
    unit_id: Option<&str>,
    outbox_id: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<()> {
    let mut conn = store.pool.acquire().await?;
    insert_undeliverable(&mut conn, address, unit_id, outbox_id, reason, now).await
}

pub(super) async fn insert_undeliverable(
    conn: &mut sqlx::AnyConnection,
    address: &str,
    unit_id: Option<&str>,
    outbox_id: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO undeliverable (address, unit_id, outbox, reason, at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (address) DO NOTHING",
    )
    .bind(address.to_lowercase())
    .bind(unit_id)
    .bind(outbox_id)
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Addresses that bounced, lower case, oldest first.
pub async fn undeliverable(store: &Store) -> Result<Vec<Undeliverable>> {
    Ok(sqlx::query_as(
        "SELECT address, unit_id, COALESCE(reason, '') AS reason FROM undeliverable ORDER BY at",
    )
    .fetch_all(&store.pool)
    .await?)
}

/// Outbox rows by state (missed slots left out), for `status`.
pub async fn count_by_state(store: &Store) -> Result<BTreeMap<OutboxState, i64>> {
    let rows: Vec<StateCount> = sqlx::query_as(
        "SELECT state, COUNT(*) AS n FROM outbox WHERE state <> 'missed' GROUP BY state",
    )
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                OutboxState::decode(&r.state, "outbox", "GROUP BY state", "state")?,
                r.n,
            ))
        })
        .collect()
}
