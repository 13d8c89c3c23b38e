//! Reads of processed messages: the counts and the review list of
//! `status`, and what a receipt needs to know about one message.

use super::text::{MessageState, StoredText};
use super::{Result, Store, json};
use crate::parse::message::{Automation, MessageKind};

/// Messages in all, those credited to no unit, and those that failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageCounts {
    pub messages: i64,
    pub unmatched: i64,
    pub failed: i64,
}

/// A message waiting for a person: processed and marked for review, or
/// failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRow {
    /// The program's id of the message.
    pub id: String,
    pub message_id: Option<String>,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub received_at: i64,
    pub state: MessageState,
    pub last_error: Option<String>,
    /// The code of the message's first problem.
    pub first_problem: Option<String>,
    /// The unit it concerns: the one a registration of it was credited
    /// to, else the one a held-back registration names, else the unit of
    /// its sender's address.
    pub unit_id: Option<String>,
    pub attachments: Vec<AttachmentBrief>,
}

/// An attachment of a message, as the review list shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct AttachmentBrief {
    #[serde(skip)]
    pub message: String,
    pub idx: i64,
    pub filename: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub format: String,
    pub outcome: String,
    pub detail: Option<String>,
    /// 1 when a red seal was found on a colour scan, 0 when none was, NULL
    /// when the file is not a colour scan.
    #[serde(skip)]
    pub red_seal: Option<i64>,
    /// The sending number of a fax header read by OCR.
    #[serde(skip)]
    pub fax_from: Option<String>,
}

impl AttachmentBrief {
    /// What the file says about its origin, in words for the office
    /// (`盖有红色公章`, `传真来自 0577-…`); empty when it says nothing.
    pub fn evidence(&self) -> String {
        let mut parts = Vec::new();
        match self.red_seal {
            Some(0) => parts.push("未见红色公章".to_string()),
            Some(_) => parts.push("盖有红色公章".to_string()),
            None => {}
        }
        if let Some(from) = &self.fax_from {
            parts.push(format!("传真来自 {from}"));
        }
        parts.join("，")
    }
}

#[derive(sqlx::FromRow)]
struct ReviewDbRow {
    id: String,
    message_id: Option<String>,
    from_addr: Option<String>,
    subject: Option<String>,
    received_at: i64,
    state: String,
    last_error: Option<String>,
    first_problem: Option<String>,
    unit_id: Option<String>,
}

/// What a receipt or a bounce needs to know about a processed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedMessage {
    pub id: String,
    pub kind: MessageKind,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub received_at: i64,
    /// `None` for a message processed before this was recorded.
    pub automation: Option<Automation>,
}

#[derive(sqlx::FromRow)]
struct ProcessedDbRow {
    id: String,
    kind: Option<String>,
    from_addr: Option<String>,
    subject: Option<String>,
    message_id: Option<String>,
    received_at: i64,
    automation: Option<String>,
}

/// One stored registration of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRegistration {
    pub unit_id: Option<String>,
    /// The registration in the parse contract's JSON shape.
    pub fields: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct RegistrationDbRow {
    idx: i64,
    unit_id: Option<String>,
    fields: String,
}

impl Store {
    /// Messages in all, credited to no unit, failed: one statement.
    pub async fn message_counts(&self) -> Result<MessageCounts> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM message) AS messages,
                    (SELECT COUNT(*) FROM message m WHERE m.state = 'done'
                       AND NOT EXISTS (SELECT 1 FROM registration r WHERE r.message = m.id AND r.unit_id IS NOT NULL)) AS unmatched,
                    (SELECT COUNT(*) FROM message WHERE state = 'failed') AS failed",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Messages waiting for a person, oldest first: processed and marked
    /// for review, or failed, and not yet decided by a person (credited to
    /// a unit or dismissed). Two statements.
    pub async fn review_rows(&self) -> Result<Vec<ReviewRow>> {
        const WAITING: &str = "((m.state = 'done' AND m.needs_review = 1) OR m.state = 'failed')
             AND m.id NOT IN (SELECT d.message FROM decision d
                              WHERE d.kind IN ('assign', 'dismiss') AND d.message IS NOT NULL)";
        let rows: Vec<ReviewDbRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT m.id, m.message_id, m.from_addr, m.subject, m.received_at, m.state, m.last_error,
                    (SELECT p.code FROM problem p WHERE p.message = m.id ORDER BY p.idx LIMIT 1) AS first_problem,
                    COALESCE((SELECT r.unit_id FROM registration r WHERE r.message = m.id AND r.unit_id IS NOT NULL ORDER BY r.idx LIMIT 1),
                             (SELECT r.held_unit FROM registration r WHERE r.message = m.id AND r.held_unit IS NOT NULL ORDER BY r.idx LIMIT 1),
                             m.sender_unit) AS unit_id
             FROM message m WHERE {WAITING}
             ORDER BY m.received_at, m.id"
        )))
        .fetch_all(&self.pool)
        .await?;
        let attachments: Vec<AttachmentBrief> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT a.message, a.idx, a.filename, a.content_type, a.size, a.format, a.outcome, a.detail,
                    a.red_seal, a.fax_from
             FROM attachment a JOIN message m ON m.id = a.message WHERE {WAITING}
             ORDER BY a.message, a.idx"
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut of: std::collections::HashMap<String, Vec<AttachmentBrief>> = Default::default();
        for a in attachments {
            of.entry(a.message.clone()).or_default().push(a);
        }
        rows.into_iter()
            .map(|r| {
                Ok(ReviewRow {
                    state: MessageState::decode(&r.state, "message", &r.id, "state")?,
                    attachments: of.remove(&r.id).unwrap_or_default(),
                    id: r.id,
                    message_id: r.message_id,
                    from_addr: r.from_addr,
                    subject: r.subject,
                    received_at: r.received_at,
                    last_error: r.last_error,
                    first_problem: r.first_problem,
                    unit_id: r.unit_id,
                })
            })
            .collect()
    }

    /// A message's attachments, in order.
    pub async fn attachments_of(&self, id: &str) -> Result<Vec<AttachmentBrief>> {
        Ok(sqlx::query_as(
            "SELECT message, idx, filename, content_type, size, format, outcome, detail, red_seal, fax_from
             FROM attachment WHERE message = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A processed message, as a receipt or a bounce needs it.
    pub async fn processed_message(&self, id: &str) -> Result<Option<ProcessedMessage>> {
        let row: Option<ProcessedDbRow> = sqlx::query_as(
            "SELECT id, kind, from_addr, subject, message_id, received_at, automation
             FROM message WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        // A message recorded but not processed yet has no kind: it reads
        // as a submission, as it would once processed.
        let kind = match r.kind.as_deref() {
            None => MessageKind::Submission,
            Some(text) => MessageKind::decode(text, "message", &r.id, "kind")?,
        };
        let automation = r
            .automation
            .as_deref()
            .map(|text| json(text, "message", r.id.as_str(), "automation"))
            .transpose()?;
        Ok(Some(ProcessedMessage {
            id: r.id,
            kind,
            from_addr: r.from_addr,
            subject: r.subject,
            message_id: r.message_id,
            received_at: r.received_at,
            automation,
        }))
    }

    /// A message's registrations, in order.
    pub async fn registrations_of(&self, id: &str) -> Result<Vec<StoredRegistration>> {
        let rows: Vec<RegistrationDbRow> = sqlx::query_as(
            "SELECT idx, unit_id, fields FROM registration WHERE message = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredRegistration {
                    fields: json(
                        &r.fields,
                        "registration",
                        format!("{id}#{}", r.idx),
                        "fields",
                    )?,
                    unit_id: r.unit_id,
                })
            })
            .collect()
    }

    /// Of `units`, those with a registration other than message `except`'s,
    /// received by `until`, that came from the unit's own address (the
    /// message's sender is one of the unit's roster addresses).
    pub async fn registered_from_own_address(
        &self,
        units: &[String],
        except: &str,
        until: i64,
    ) -> Result<std::collections::HashSet<String>> {
        // One indexed look per unit (a message names one or two), not a
        // scan of every registration.
        let mut own = std::collections::HashSet::new();
        for unit in units {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM registration r JOIN message m ON m.id = r.message
                 WHERE r.unit_id = $1 AND m.sender_unit = $1 AND m.state = 'done'
                   AND r.message <> $2 AND r.received_at <= $3
                 LIMIT 1",
            )
            .bind(unit)
            .bind(except)
            .bind(until)
            .fetch_optional(&self.pool)
            .await?;
            if found.is_some() {
                own.insert(unit.clone());
            }
        }
        Ok(own)
    }

    /// The texts of a message's problems, in order.
    pub async fn problem_texts_of(&self, id: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT text FROM problem WHERE message = $1 ORDER BY idx")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
