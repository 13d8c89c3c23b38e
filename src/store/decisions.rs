//! The office's decisions and corrections (`decision` table): a layer on
//! top of what processing read, never touched by processing, so that
//! `reprocess` leaves it whole and the progress read applies it again.
//! Each row is also one line of the unit's audit trail.

use super::text::{MessageState, StoredText};
use super::{Result, Store};
use crate::parse::message::MessageKind;

/// What a person decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A message is credited to a unit.
    Assign,
    /// A message is not a submission.
    Dismiss,
    /// A unit's registration is accepted as it is.
    Accept,
    /// One field of a unit's registration is corrected.
    Set,
    /// The unit was asked by mail to correct its registration.
    Ask,
}

impl DecisionKind {
    /// In Chinese, for the audit trail.
    pub fn zh(self) -> &'static str {
        match self {
            DecisionKind::Assign => "归属到单位",
            DecisionKind::Dismiss => "不是报送",
            DecisionKind::Accept => "确认登记",
            DecisionKind::Set => "更正字段",
            DecisionKind::Ask => "请单位更正",
        }
    }
}

impl StoredText for DecisionKind {
    const ALL: &'static [Self] = &[
        Self::Assign,
        Self::Dismiss,
        Self::Accept,
        Self::Set,
        Self::Ask,
    ];

    fn as_text(self) -> &'static str {
        match self {
            Self::Assign => "assign",
            Self::Dismiss => "dismiss",
            Self::Accept => "accept",
            Self::Set => "set",
            Self::Ask => "ask",
        }
    }
}

/// A decision to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    pub kind: DecisionKind,
    /// The message it concerns (for `accept` and `set`: the message whose
    /// registration is the unit's current one).
    pub message: Option<String>,
    pub unit_id: Option<String>,
    /// `group.field` for `set`.
    pub field: Option<String>,
    /// JSON values for `set` (`null` for an empty field).
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub note: Option<String>,
    pub by: String,
    pub at: i64,
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub id: String,
    /// Order of recording.
    pub seq: i64,
    pub kind: DecisionKind,
    pub message: Option<String>,
    pub unit_id: Option<String>,
    pub field: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub note: Option<String>,
    pub by: String,
    pub at: i64,
    /// When the message it concerns was received, and its Date header
    /// (for a message credited by a person without any registration).
    pub message_received_at: Option<i64>,
    pub message_date: Option<String>,
    pub message_state: Option<MessageState>,
}

#[derive(sqlx::FromRow)]
struct DecisionRow {
    id: String,
    seq: i64,
    kind: String,
    message: Option<String>,
    unit_id: Option<String>,
    field: Option<String>,
    before_value: Option<String>,
    after_value: Option<String>,
    note: Option<String>,
    by_user: String,
    at: i64,
    message_received_at: Option<i64>,
    message_date: Option<String>,
    message_state: Option<String>,
}

impl DecisionRow {
    fn decode(self) -> Result<Decision> {
        let value = |text: Option<String>, column| {
            text.map(|t| super::json(&t, "decision", self.id.as_str(), column))
                .transpose()
        };
        Ok(Decision {
            kind: DecisionKind::decode(&self.kind, "decision", &self.id, "kind")?,
            before: value(self.before_value.clone(), "before_value")?,
            after: value(self.after_value.clone(), "after_value")?,
            message_state: self
                .message_state
                .as_deref()
                .map(|s| {
                    MessageState::decode(
                        s,
                        "message",
                        self.message.as_deref().unwrap_or(""),
                        "state",
                    )
                })
                .transpose()?,
            seq: self.seq,
            message: self.message,
            unit_id: self.unit_id,
            field: self.field,
            note: self.note,
            by: self.by_user,
            at: self.at,
            message_received_at: self.message_received_at,
            message_date: self.message_date,
            id: self.id,
        })
    }
}

const DECISION_COLUMNS: &str = "d.id, d.seq, d.kind, d.message, d.unit_id, d.field, d.before_value,
     d.after_value, d.note, d.by_user, d.at,
     m.received_at AS message_received_at, m.date_header AS message_date, m.state AS message_state";

/// A message as a person names it: by Message-ID or by the program's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub id: String,
    pub message_id: Option<String>,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub received_at: i64,
    pub state: MessageState,
    /// `None` until processed.
    pub kind: Option<MessageKind>,
    pub needs_review: bool,
    pub sender_unit: Option<String>,
    pub archive_path: String,
}

#[derive(sqlx::FromRow)]
struct MessageRefRow {
    id: String,
    message_id: Option<String>,
    from_addr: Option<String>,
    subject: Option<String>,
    received_at: i64,
    state: String,
    kind: Option<String>,
    needs_review: Option<i64>,
    sender_unit: Option<String>,
    archive_path: String,
}

impl Store {
    /// Records a decision; the next progress read applies it.
    pub async fn record_decision(&self, d: &NewDecision) -> Result<String> {
        let id = super::random_id();
        let text = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        sqlx::query(
            "INSERT INTO decision (id, seq, kind, message, unit_id, field, before_value, after_value, note, by_user, at)
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM decision), $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&id)
        .bind(d.kind.as_text())
        .bind(&d.message)
        .bind(&d.unit_id)
        .bind(&d.field)
        .bind(text(&d.before))
        .bind(text(&d.after))
        .bind(&d.note)
        .bind(&d.by)
        .bind(d.at)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Every decision, in the order recorded.
    pub async fn decisions(&self) -> Result<Vec<Decision>> {
        let rows: Vec<DecisionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DECISION_COLUMNS} FROM decision d LEFT JOIN message m ON m.id = d.message
             ORDER BY d.seq, d.id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(DecisionRow::decode).collect()
    }

    /// The decisions about one unit, or about a message that concerns it
    /// (its sender or a registration of it is the unit's), in order: the
    /// unit's audit trail.
    pub async fn decisions_about(&self, unit: &str) -> Result<Vec<Decision>> {
        let rows: Vec<DecisionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DECISION_COLUMNS} FROM decision d LEFT JOIN message m ON m.id = d.message
             WHERE d.unit_id = $1 OR m.sender_unit = $1
                OR d.message IN (SELECT r.message FROM registration r WHERE r.unit_id = $1 OR r.held_unit = $1)
             ORDER BY d.seq, d.id"
        )))
        .bind(unit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(DecisionRow::decode).collect()
    }

    /// The messages that concern a unit, oldest first: credited to it (by
    /// processing or a person), held back for it, or sent from its address.
    pub async fn messages_about(&self, unit: &str) -> Result<Vec<MessageRef>> {
        let rows: Vec<MessageRefRow> = sqlx::query_as(
            "SELECT id, message_id, from_addr, subject, received_at, state, kind, needs_review,
                    sender_unit, archive_path
             FROM message
             WHERE sender_unit = $1
                OR id IN (SELECT r.message FROM registration r WHERE r.unit_id = $1 OR r.held_unit = $1)
                OR id IN (SELECT d.message FROM decision d WHERE d.kind = 'assign' AND d.unit_id = $1)
             ORDER BY received_at, id",
        )
        .bind(unit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(MessageRefRow::decode).collect()
    }

    /// One message by the program's id.
    pub async fn message_ref(&self, id: &str) -> Result<Option<MessageRef>> {
        let row: Option<MessageRefRow> = sqlx::query_as(
            "SELECT id, message_id, from_addr, subject, received_at, state, kind, needs_review,
                    sender_unit, archive_path
             FROM message WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(MessageRefRow::decode).transpose()
    }

    /// The messages a person's `key` names: its Message-ID (with or
    /// without the angle brackets) or the program's id of it.
    pub async fn find_messages(&self, key: &str) -> Result<Vec<MessageRef>> {
        let bare = key.trim().trim_start_matches('<').trim_end_matches('>');
        let rows: Vec<MessageRefRow> = sqlx::query_as(
            "SELECT id, message_id, from_addr, subject, received_at, state, kind, needs_review,
                    sender_unit, archive_path
             FROM message WHERE id = $1 OR message_id = $2 OR message_id = $3
             ORDER BY received_at, id",
        )
        .bind(bare)
        .bind(format!("<{bare}>"))
        .bind(bare)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(MessageRefRow::decode).collect()
    }
}

impl MessageRefRow {
    fn decode(self) -> Result<MessageRef> {
        let r = self;
        Ok(MessageRef {
            state: MessageState::decode(&r.state, "message", &r.id, "state")?,
            kind: r
                .kind
                .as_deref()
                .map(|k| MessageKind::decode(k, "message", &r.id, "kind"))
                .transpose()?,
            needs_review: r.needs_review == Some(1),
            message_id: r.message_id,
            from_addr: r.from_addr,
            subject: r.subject,
            received_at: r.received_at,
            sender_unit: r.sender_unit,
            archive_path: r.archive_path,
            id: r.id,
        })
    }
}
