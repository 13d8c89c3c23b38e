//! Every unit's progress in one read: its state, its latest credited
//! registration, how many messages were credited to it and the reminders it
//! was sent. A fixed number of statements whatever the number of units;
//! status, the campaign and the workspace all read it.
//!
//! The state rule itself, [`unit_state`], is a pure function.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use super::{Result, Store, flag, json};

/// Where a roster unit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Nothing arrived for the unit yet.
    Missing,
    /// Something arrived but a person must decide (missing fields, a
    /// conflict, a scan).
    NeedsReview,
    /// Its latest registration is complete.
    Registered,
}

impl UnitState {
    /// The contract's name (`status --json`).
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Missing => "missing",
            UnitState::NeedsReview => "needs_review",
            UnitState::Registered => "registered",
        }
    }

    /// In Chinese, for people.
    pub fn zh(self) -> &'static str {
        match self {
            UnitState::Missing => "未报送",
            UnitState::NeedsReview => "待人工处理",
            UnitState::Registered => "已登记",
        }
    }
}

/// A unit's latest credited registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// The message it came from.
    pub message: String,
    pub complete: bool,
    pub received_at: i64,
    /// The registration in the parse contract's JSON shape.
    pub fields: serde_json::Value,
    /// The distinct problem codes of its message, sorted.
    pub problems: Vec<String>,
}

impl Latest {
    /// A field's text (`section`, `key` as in the parse contract).
    pub fn field(&self, section: &str, key: &str) -> Option<&str> {
        self.fields[section][key].as_str()
    }
}

/// One unit's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitProgress {
    pub unit_id: String,
    pub state: UnitState,
    pub latest: Option<Latest>,
    /// Messages credited to the unit, resubmissions included.
    pub submissions: i64,
    /// Reminders of the campaign sent to the unit, and the last one's time.
    pub reminders_sent: i64,
    pub last_reminder_at: Option<i64>,
}

/// `registered` when the unit's latest registration is complete and
/// nothing waits for a person, `needs_review` when something arrived for
/// it that a person must decide, else `missing`.
pub fn unit_state(latest: Option<&Latest>, pending_review: bool) -> UnitState {
    match latest {
        Some(l) if l.complete && !pending_review => UnitState::Registered,
        Some(_) => UnitState::NeedsReview,
        None if pending_review => UnitState::NeedsReview,
        None => UnitState::Missing,
    }
}

#[derive(sqlx::FromRow)]
struct CreditedRow {
    unit_id: String,
    complete: i64,
    received_at: i64,
    fields: String,
    message: String,
    date_header: Option<String>,
    idx: i64,
}

impl CreditedRow {
    /// Newest first: by the time it was received, then — for messages
    /// fetched in the same second (a backlog taken in one poll) — by their
    /// Date header, so a correction sent after the first form is the one
    /// shown however the fetch went.
    fn order(&self) -> (i64, Option<i64>, &str, i64) {
        let sent = self
            .date_header
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.timestamp());
        (self.received_at, sent, &self.message, self.idx)
    }

    fn key(&self) -> String {
        format!("{}#{}", self.message, self.idx)
    }
}

#[derive(sqlx::FromRow)]
struct ProblemCode {
    message: String,
    code: String,
}

#[derive(sqlx::FromRow)]
struct WaitingRow {
    unit: String,
    held: i64,
}

#[derive(sqlx::FromRow)]
struct ReminderCount {
    unit_key: String,
    sent: i64,
    last_at: Option<i64>,
}

impl Store {
    /// The progress of every unit of `roster` (none without one), with
    /// its unit, in roster order.
    pub async fn roster_progress<'r>(
        &self,
        roster: Option<&'r crate::parse::roster::Roster>,
        campaign: &str,
    ) -> Result<Vec<(&'r crate::parse::roster::Unit, UnitProgress)>> {
        let units = roster.map(|r| r.units.as_slice()).unwrap_or_default();
        let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
        let progress = self.unit_progress(&ids, campaign).await?;
        Ok(units.iter().zip(progress).collect())
    }

    /// The progress of each of `units` (roster ids, in the order given) in
    /// the campaign `campaign`: four statements, whatever the number of
    /// units.
    pub async fn unit_progress(&self, units: &[&str], campaign: &str) -> Result<Vec<UnitProgress>> {
        // 1. Registrations credited to units.
        let mut credited: Vec<CreditedRow> = sqlx::query_as(
            "SELECT r.unit_id, r.complete, r.received_at, r.fields, r.message, m.date_header, r.idx
             FROM registration r JOIN message m ON m.id = r.message
             WHERE r.unit_id IS NOT NULL AND m.state = 'done'",
        )
        .fetch_all(&self.pool)
        .await?;
        credited.sort_by(|a, b| Reverse(a.order()).cmp(&Reverse(b.order())));

        // 2. The problem codes of every credited message.
        let codes: Vec<ProblemCode> = sqlx::query_as(
            "SELECT DISTINCT p.message, p.code FROM problem p
             WHERE p.message IN (SELECT r.message FROM registration r JOIN message m ON m.id = r.message
                                 WHERE r.unit_id IS NOT NULL AND m.state = 'done')
             ORDER BY p.message, p.code",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut codes_of: HashMap<String, Vec<String>> = HashMap::new();
        for c in codes {
            codes_of.entry(c.message).or_default().push(c.code);
        }

        // 3. Units whose own address sent a submission that waits for a
        // person and was credited to nobody (a scan, a conflict, a forged
        // sender), and units a held-back replacement names.
        // Also the units a held-back registration would be credited to.
        let waiting_rows: Vec<WaitingRow> = sqlx::query_as(
            "SELECT m.sender_unit AS unit, 0 AS held FROM message m
             WHERE m.state = 'done' AND m.needs_review = 1 AND m.sender_unit IS NOT NULL
               AND m.kind = 'submission'
               AND NOT EXISTS (SELECT 1 FROM registration r WHERE r.message = m.id AND r.unit_id IS NOT NULL)
             UNION
             SELECT r.held_unit AS unit, 1 AS held FROM registration r JOIN message m ON m.id = r.message
             WHERE r.held_unit IS NOT NULL AND m.state = 'done' AND m.needs_review = 1",
        )
        .fetch_all(&self.pool)
        .await?;
        // Per unit: whether a held-back replacement waits (a complete
        // registration does not settle that one: it is what it would
        // replace).
        let mut waiting: HashMap<String, bool> = HashMap::new();
        for w in waiting_rows {
            *waiting.entry(w.unit).or_default() |= w.held != 0;
        }

        // 4. Reminders sent, per unit.
        let reminders: HashMap<String, ReminderCount> = sqlx::query_as::<_, ReminderCount>(
            "SELECT unit_key, COUNT(*) AS sent, MAX(COALESCE(sent_at, created_at)) AS last_at FROM outbox
             WHERE campaign = $1 AND state = 'sent' AND kind IN ('reminder', 'overdue_reminder')
             GROUP BY unit_key",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.unit_key.clone(), r))
        .collect();

        let mut latest: HashMap<&str, Latest> = HashMap::new();
        let mut submissions: HashMap<&str, HashSet<&str>> = HashMap::new();
        for row in &credited {
            submissions
                .entry(row.unit_id.as_str())
                .or_default()
                .insert(row.message.as_str());
            if latest.contains_key(row.unit_id.as_str()) {
                continue;
            }
            latest.insert(
                row.unit_id.as_str(),
                Latest {
                    message: row.message.clone(),
                    complete: flag(row.complete, "registration", row.key(), "complete")?,
                    received_at: row.received_at,
                    fields: json(&row.fields, "registration", row.key(), "fields")?,
                    problems: codes_of.get(&row.message).cloned().unwrap_or_default(),
                },
            );
        }
        Ok(units
            .iter()
            .map(|&unit| {
                let l = latest.get(unit).cloned();
                // A complete registration settles a waiting message, but
                // not a held-back replacement of it.
                let pending = waiting
                    .get(unit)
                    .is_some_and(|&held| held || l.as_ref().is_none_or(|l| !l.complete));
                let sent = reminders.get(unit);
                UnitProgress {
                    unit_id: unit.to_string(),
                    state: unit_state(l.as_ref(), pending),
                    submissions: submissions.get(unit).map_or(0, |s| s.len() as i64),
                    reminders_sent: sent.map_or(0, |r| r.sent),
                    last_reminder_at: sent.and_then(|r| r.last_at),
                    latest: l,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_states() {
        let complete = Latest {
            message: "m".into(),
            complete: true,
            received_at: 0,
            fields: serde_json::Value::Null,
            problems: vec![],
        };
        let partial = Latest {
            complete: false,
            ..complete.clone()
        };
        assert_eq!(unit_state(None, false), UnitState::Missing);
        assert_eq!(unit_state(None, true), UnitState::NeedsReview);
        assert_eq!(unit_state(Some(&complete), false), UnitState::Registered);
        assert_eq!(unit_state(Some(&complete), true), UnitState::NeedsReview);
        assert_eq!(unit_state(Some(&partial), false), UnitState::NeedsReview);
    }
}
