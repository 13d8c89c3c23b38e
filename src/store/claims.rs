//! Processing a recorded message exactly once: claim it (a conditional
//! UPDATE with a lease, atomic across workers and instances), keep the
//! claim alive, then store what processing found in one transaction — or
//! record the failure. Claims of workers that died are given back.

use super::outbox::{self, NewMail, Sent};
use super::text::{MessageState, StoredText};
use super::{Result, Store};
use crate::parse::message::{Automation, MessageKind, Returned};

/// A message claimed for processing.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    pub id: String,
    pub archive_path: String,
    pub original_name: Option<String>,
    pub attempts: i64,
    /// The Message-ID read when the message was recorded.
    pub message_id: Option<String>,
    pub received_at: i64,
}

/// What a processed message leaves for the campaign: written in the same
/// transaction as its results, so that whatever stops the process, every
/// processed message has its receipt and every bounce its mark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowUp {
    pub receipt: Option<Receipt>,
    /// A bounce's references to our mail, in order: the first that names
    /// an outbox row marks that row's address undeliverable.
    pub bounced: Vec<Returned>,
}

/// A receipt (回执) to queue with a message's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub mail: NewMail,
    /// The domain of its Message-ID.
    pub domain: String,
    /// Not queued when the message replies to one of these Message-IDs
    /// and it is one of ours: an auto-responder that does not say so
    /// (answering it could go on forever).
    pub unless_replying_to: Vec<String>,
}

/// What `finish` wrote besides the results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finished {
    /// The receipt was queued now.
    pub receipt_queued: bool,
    /// The outbox row a bounce named; its address is now undeliverable.
    pub bounced: Option<Sent>,
}

/// What processing found, ready to store.
#[derive(Debug, Clone, Default)]
pub struct Processed {
    pub from_addr: Option<String>,
    pub from_name: Option<String>,
    pub subject: Option<String>,
    pub date_header: Option<String>,
    pub kind: MessageKind,
    /// What makes the message automatic, read once when it was parsed.
    pub automation: Automation,
    pub sender_unit: Option<String>,
    pub needs_review: bool,
    pub report: String,
    pub attachments: Vec<AttachmentRow>,
    pub registrations: Vec<RegistrationRow>,
    pub problems: Vec<ProblemRow>,
}

#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub format: String,
    pub outcome: String,
    pub detail: Option<String>,
    /// `meta.red_seal` of a colour scan.
    pub red_seal: Option<bool>,
    /// The sending number of a fax header read by OCR (`meta.fax_header.from`).
    pub fax_from: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RegistrationRow {
    pub unit_id: Option<String>,
    /// Held back for a person: the unit it would be credited to.
    pub held_unit: Option<String>,
    pub matched_by: Option<String>,
    pub source_name: String,
    pub fields: String,
    pub fingerprint: String,
    pub complete: bool,
}

#[derive(Debug, Clone)]
pub struct ProblemRow {
    pub field: Option<String>,
    pub code: String,
    pub text: String,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: String,
    claimed_by: String,
}

impl Store {
    /// Claims one message for processing: a pending one, one whose claim
    /// expired (its worker died), or a transient failure due for retry. The
    /// conditional UPDATE makes the claim atomic across workers and
    /// instances.
    pub async fn claim_next(
        &self,
        worker: &str,
        now: i64,
        lease_seconds: i64,
        max_attempts: i64,
    ) -> Result<Option<Claimed>> {
        Ok(self
            .claim_group(worker, now, lease_seconds, max_attempts, 1)
            .await?
            .pop())
    }

    /// Claims up to `n` messages, oldest first, in one transaction (see
    /// [`Store::claim_next`]); a candidate another worker took meanwhile is
    /// skipped.
    pub async fn claim_group(
        &self,
        worker: &str,
        now: i64,
        lease_seconds: i64,
        max_attempts: i64,
        n: usize,
    ) -> Result<Vec<Claimed>> {
        // Two reads, each along the `message_queue` index (state,
        // received_at, id): the pending backlog, and the few messages whose
        // claim ran out or whose retry is due. One read with `OR` sorted the
        // whole table for every claim. Twice `n` candidates: another worker
        // may take some first.
        let limit = i64::try_from(n.max(1) * 2).unwrap_or(i64::MAX);
        let mut candidates: Vec<(i64, String)> = sqlx::query_as(
            "SELECT received_at, id FROM message WHERE state = 'pending'
             ORDER BY received_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let again: Vec<(i64, String)> = sqlx::query_as(
            "SELECT received_at, id FROM message
             WHERE (state = 'processing' AND claimed_until < $1)
                OR (state = 'retry' AND retry_at <= $1 AND attempts < $2)
             ORDER BY received_at, id LIMIT $3",
        )
        .bind(now)
        .bind(max_attempts)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        candidates.extend(again);
        candidates.sort();
        let mut claimed = Vec::new();
        if candidates.is_empty() {
            return Ok(claimed);
        }
        let _serial = self.serial_writer().await;
        let mut tx = self.pool.begin().await?;
        for (_, id) in candidates {
            if claimed.len() >= n.max(1) {
                break;
            }
            let taken = sqlx::query(
                "UPDATE message SET state = 'processing', claimed_by = $2, claimed_until = $3, attempts = attempts + 1
                 WHERE id = $1 AND (state = 'pending'
                    OR (state = 'processing' AND claimed_until < $4)
                    OR (state = 'retry' AND retry_at <= $4 AND attempts < $5))",
            )
            .bind(&id)
            .bind(worker)
            .bind(now + lease_seconds)
            .bind(now)
            .bind(max_attempts)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 1 {
                let row: Claimed = sqlx::query_as(
                    "SELECT id, archive_path, original_name, attempts, message_id, received_at
                     FROM message WHERE id = $1",
                )
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
                claimed.push(row);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Stores what processing found and marks the message done, in one
    /// transaction, if `worker` still holds the claim. Earlier results of
    /// the message (a reprocess) are replaced. Returns false when the claim
    /// was lost (another worker took over after the lease ran out).
    pub async fn finish(&self, id: &str, worker: &str, now: i64, p: &Processed) -> Result<bool> {
        Ok(self
            .finish_with(id, worker, now, p, &FollowUp::default())
            .await?
            .is_some())
    }

    /// [`Store::finish`], writing the message's follow-up (its receipt, a
    /// bounce's mark) in the same transaction; `None` when the claim was
    /// lost.
    pub async fn finish_with(
        &self,
        id: &str,
        worker: &str,
        now: i64,
        p: &Processed,
        follow_up: &FollowUp,
    ) -> Result<Option<Finished>> {
        Ok(self
            .finish_group(worker, now, &[(id, p, follow_up)])
            .await?
            .pop()
            .flatten())
    }

    /// [`Store::finish_with`] for a group of messages in one transaction:
    /// each message's results are written only if `worker` still holds its
    /// claim (`None` in its place otherwise).
    pub async fn finish_group(
        &self,
        worker: &str,
        now: i64,
        group: &[(&str, &Processed, &FollowUp)],
    ) -> Result<Vec<Option<Finished>>> {
        let _serial = self.serial_writer().await;
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(group.len());
        for (id, p, follow_up) in group {
            out.push(finish_in(&mut tx, id, worker, now, p, follow_up).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records a failure. A transient one is retried from `retry_at`; a
    /// permanent one stays failed with its reason.
    pub async fn fail(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let state = if retry_at.is_some() {
            MessageState::Retry
        } else {
            MessageState::Failed
        };
        sqlx::query(
            "UPDATE message SET state = $3, last_error = $4, retry_at = $5, claimed_by = NULL, claimed_until = NULL
             WHERE id = $1 AND claimed_by = $2",
        )
        .bind(id)
        .bind(worker)
        .bind(state.as_text())
        .bind(error)
        .bind(retry_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks every processed message pending again (`reprocess`); returns
    /// how many.
    pub async fn requeue_all(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE message SET state = 'pending', attempts = 0, retry_at = NULL, claimed_by = NULL, claimed_until = NULL
             WHERE state IN ('done', 'failed', 'retry')",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Extends `worker`'s claim on `id` to `until` (a heartbeat while a
    /// long message is processed); false when the claim was lost.
    pub async fn renew_claim(&self, id: &str, worker: &str, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE message SET claimed_until = $3 WHERE id = $1 AND state = 'processing' AND claimed_by = $2",
        )
        .bind(id)
        .bind(worker)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every message being processed: (id, worker).
    pub async fn claims(&self) -> Result<Vec<(String, String)>> {
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "SELECT id, claimed_by FROM message WHERE state = 'processing' AND claimed_by IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, r.claimed_by)).collect())
    }

    /// Gives back the claim of a worker known to be dead, without waiting
    /// for its lease to run out: the message is retried at once, or is
    /// failed when it already had `max_attempts` tries (a message that
    /// kills the service must not keep it in a restart loop). True when the
    /// claim was still held by `worker`.
    pub async fn release_claim(
        &self,
        id: &str,
        worker: &str,
        now: i64,
        max_attempts: i64,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE message SET state = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'retry' END,
                retry_at = $3, last_error = $5, claimed_by = NULL, claimed_until = NULL
             WHERE id = $1 AND state = 'processing' AND claimed_by = $2",
        )
        .bind(id)
        .bind(worker)
        .bind(now)
        .bind(max_attempts)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A message's results: its attachments, registrations and problems.
async fn insert_results(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    p: &Processed,
    received_at: i64,
) -> Result<()> {
    for (i, a) in p.attachments.iter().enumerate() {
        sqlx::query(
                "INSERT INTO attachment (message, idx, filename, content_type, size, sha256, format, outcome, detail, red_seal, fax_from)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(id)
            .bind(i as i64)
            .bind(a.filename.as_deref())
            .bind(a.content_type.as_str())
            .bind(a.size)
            .bind(a.sha256.as_str())
            .bind(a.format.as_str())
            .bind(a.outcome.as_str())
            .bind(a.detail.as_deref())
            .bind(a.red_seal.map(i64::from))
            .bind(a.fax_from.as_deref())
            .execute(&mut *conn)
            .await?;
    }
    for (i, r) in p.registrations.iter().enumerate() {
        sqlx::query(
                "INSERT INTO registration (message, idx, unit_id, matched_by, source_name, fields, fingerprint, complete, received_at, held_unit)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id)
            .bind(i as i64)
            .bind(r.unit_id.as_deref())
            .bind(r.matched_by.as_deref())
            .bind(r.source_name.as_str())
            .bind(r.fields.as_str())
            .bind(r.fingerprint.as_str())
            .bind(i32::from(r.complete))
            .bind(received_at)
            .bind(r.held_unit.as_deref())
            .execute(&mut *conn)
            .await?;
    }
    for (i, pr) in p.problems.iter().enumerate() {
        sqlx::query(
            "INSERT INTO problem (message, idx, field, code, text) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(i as i64)
        .bind(pr.field.as_deref())
        .bind(pr.code.as_str())
        .bind(pr.text.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A processed message's follow-up: its receipt (unless it replies to one
/// of our mails while bringing no form), or a bounce's mark.
async fn write_follow_up(
    conn: &mut sqlx::AnyConnection,
    follow_up: &FollowUp,
    now: i64,
) -> Result<Finished> {
    let mut finished = Finished::default();
    if let Some(r) = &follow_up.receipt
        && !outbox::any_ours(&mut *conn, &r.unless_replying_to).await?
    {
        finished.receipt_queued = outbox::insert(&mut *conn, &r.mail, &r.domain, now)
            .await?
            .is_some();
    }
    for reference in &follow_up.bounced {
        if let Some(sent) = outbox::returned(&mut *conn, reference).await? {
            let unit = (!sent.unit_key.is_empty()).then_some(sent.unit_key.as_str());
            outbox::insert_undeliverable(
                &mut *conn,
                &sent.to_addr,
                unit,
                Some(&sent.id),
                "退信",
                now,
            )
            .await?;
            finished.bounced = Some(sent);
            break;
        }
    }
    Ok(finished)
}

/// One message's results in `tx`, if `worker` still holds its claim.
async fn finish_in(
    tx: &mut sqlx::AnyConnection,
    id: &str,
    worker: &str,
    now: i64,
    p: &Processed,
    follow_up: &FollowUp,
) -> Result<Option<Finished>> {
    let automation = serde_json::to_string(&p.automation).unwrap_or_else(|_| "{}".into());
    let held = sqlx::query(
        "UPDATE message SET state = 'done', claimed_by = NULL, claimed_until = NULL, last_error = NULL, retry_at = NULL,
            from_addr = $3, from_name = $4, subject = $5, date_header = $6, kind = $7, sender_unit = $8,
            needs_review = $9, processed_at = $10, report = $11, automation = $12
         WHERE id = $1 AND state = 'processing' AND claimed_by = $2",
    )
    .bind(id)
    .bind(worker)
    .bind(p.from_addr.as_deref())
    .bind(p.from_name.as_deref())
    .bind(p.subject.as_deref())
    .bind(p.date_header.as_deref())
    .bind(p.kind.as_text())
    .bind(p.sender_unit.as_deref())
    .bind(i32::from(p.needs_review))
    .bind(now)
    .bind(p.report.as_str())
    .bind(automation)
    .execute(&mut *tx)
    .await?;
    if held.rows_affected() != 1 {
        return Ok(None);
    }
    for sql in [
        "DELETE FROM attachment WHERE message = $1",
        "DELETE FROM registration WHERE message = $1",
        "DELETE FROM problem WHERE message = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    let received_at: i64 = sqlx::query_scalar("SELECT received_at FROM message WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    insert_results(tx, id, p, received_at).await?;
    let finished = write_follow_up(tx, follow_up, now).await?;
    Ok(Some(finished))
}
