//! Every unit's progress in one read: its state, its latest credited
//! registration, how many messages were credited to it and the reminders it
//! was sent. A fixed number of statements whatever the number of units;
//! status, the campaign and the workspace all read it.
//!
//! The state rule itself, [`unit_state`], is a pure function.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use super::decisions::{Decision, DecisionKind};
use super::text::MessageState;
use super::{Result, Store, flag, json};
use crate::parse::registration::Field;

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

/// The problem code of a unit whose registration was replaced by a newer
/// submission after a person corrected it: the office decides.
pub const CORRECTED_OLDER: &str = "corrected_older";

/// A unit's latest credited registration, with the office's decisions
/// applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// The message it came from.
    pub message: String,
    /// Every required field is there (after corrections).
    pub complete: bool,
    pub received_at: i64,
    /// The registration in the parse contract's JSON shape, corrected.
    pub fields: serde_json::Value,
    /// The distinct problem codes that still apply, sorted.
    pub problems: Vec<String>,
    /// Fields a person corrected (`group.field`), in the order corrected.
    pub corrected: Vec<String>,
    /// A person accepted it as it is.
    pub accepted: bool,
    /// A person credited its message to the unit (for a scan: an empty
    /// registration filled by hand).
    pub assigned: bool,
    /// A person corrected an older registration of the unit that this one
    /// replaced.
    pub corrected_older: bool,
}

impl Latest {
    /// A field's text (`section`, `key` as in the parse contract).
    pub fn field(&self, section: &str, key: &str) -> Option<&str> {
        self.fields[section][key].as_str()
    }

    /// A field's value by path (`leader.mobile`); `Null` when empty.
    pub fn value(&self, path: &str) -> &serde_json::Value {
        let (section, key) = path.split_once('.').unwrap_or(("", path));
        &self.fields[section][key]
    }

    /// Counts as registered by itself: complete or accepted, and no
    /// correction of an older one left to look at.
    pub fn settled(&self) -> bool {
        (self.complete || self.accepted) && !self.corrected_older
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

/// `registered` when the unit's latest registration is settled (complete
/// or accepted) and nothing waits for a person, `needs_review` when
/// something arrived for it that a person must decide, else `missing`.
pub fn unit_state(latest: Option<&Latest>, pending_review: bool) -> UnitState {
    match latest {
        Some(l) if l.settled() && !pending_review => UnitState::Registered,
        Some(_) => UnitState::NeedsReview,
        None if pending_review => UnitState::NeedsReview,
        None => UnitState::Missing,
    }
}

/// The office's decisions, as the progress read applies them.
#[derive(Debug, Default)]
struct Layer<'d> {
    /// Message → the unit a person credited it to (the last decision on a
    /// message wins between assign and dismiss).
    assigned: HashMap<&'d str, &'d Decision>,
    dismissed: HashSet<&'d str>,
    /// Corrections, in the order made.
    sets: Vec<&'d Decision>,
    /// Unit → its acceptances, in order.
    accepts: HashMap<&'d str, Vec<&'d Decision>>,
}

impl<'d> Layer<'d> {
    fn new(decisions: &'d [Decision]) -> Self {
        let mut layer = Layer::default();
        for d in decisions {
            let (Some(message), unit) = (d.message.as_deref(), d.unit_id.as_deref()) else {
                continue;
            };
            match d.kind {
                DecisionKind::Assign => {
                    layer.dismissed.remove(message);
                    layer.assigned.insert(message, d);
                }
                DecisionKind::Dismiss => {
                    layer.assigned.remove(message);
                    layer.dismissed.insert(message);
                }
                DecisionKind::Set => layer.sets.push(d),
                DecisionKind::Accept => {
                    if let Some(unit) = unit {
                        layer.accepts.entry(unit).or_default().push(d);
                    }
                }
                DecisionKind::Ask => {}
            }
        }
        layer
    }

    /// A person decided what the message is (credited or dismissed it).
    fn decided(&self, message: &str) -> bool {
        self.assigned.contains_key(message) || self.dismissed.contains(message)
    }
}

/// A registration credited to a unit, by processing or by a person.
struct Credit {
    unit: String,
    message: String,
    idx: i64,
    received_at: i64,
    sent: Option<i64>,
    fields: serde_json::Value,
    complete: bool,
    by_person: bool,
}

impl Credit {
    /// Newest first: by the time it was received, then — for messages
    /// fetched in the same second (a backlog taken in one poll) — by their
    /// Date header, so a correction sent after the first form is the one
    /// shown however the fetch went.
    fn order(&self) -> (i64, Option<i64>, &str, i64) {
        (self.received_at, self.sent, &self.message, self.idx)
    }
}

fn date_header(text: Option<&str>) -> Option<i64> {
    text.and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.timestamp())
}

/// The registration shape of the parse contract with every field empty:
/// what a person fills for a scan credited by hand.
fn empty_fields(unit: &str) -> serde_json::Value {
    let mut value = serde_json::json!({
        "source": "人工录入",
        "unit": {}, "leader": {}, "officer": {},
        "unit_match": { "unit_id": unit, "by": "person" },
    });
    for field in Field::ALL {
        let (section, key) = field.path().split_once('.').unwrap_or(("", field.path()));
        value[section][key] = serde_json::Value::Null;
    }
    value
}

fn present(fields: &serde_json::Value, path: &str) -> bool {
    let (section, key) = path.split_once('.').unwrap_or(("", path));
    match &fields[section][key] {
        serde_json::Value::Null => false,
        serde_json::Value::String(s) => !s.trim().is_empty(),
        _ => true,
    }
}

#[derive(sqlx::FromRow)]
struct CreditedRow {
    unit_id: Option<String>,
    complete: i64,
    received_at: i64,
    fields: String,
    message: String,
    date_header: Option<String>,
    idx: i64,
}

#[derive(sqlx::FromRow)]
struct ProblemCode {
    message: String,
    field: Option<String>,
    code: String,
}

#[derive(sqlx::FromRow)]
struct WaitingRow {
    unit: String,
    held: i64,
    message: String,
    received_at: i64,
}

#[derive(sqlx::FromRow)]
struct ReminderCount {
    unit_key: String,
    sent: i64,
    last_at: Option<i64>,
}

impl Store {
    /// The progress of every unit of `roster` (none without one), with
    /// its unit, in roster order. `required`: the fields a complete
    /// registration has.
    pub async fn roster_progress<'r>(
        &self,
        roster: Option<&'r crate::parse::roster::Roster>,
        campaign: &str,
        required: &[Field],
    ) -> Result<Vec<(&'r crate::parse::roster::Unit, UnitProgress)>> {
        let units = roster.map(|r| r.units.as_slice()).unwrap_or_default();
        let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
        let progress = self.unit_progress(&ids, campaign, required).await?;
        Ok(units.iter().zip(progress).collect())
    }

    /// The progress of each of `units` (roster ids, in the order given) in
    /// the campaign `campaign`, with the office's decisions applied: five
    /// statements, whatever the number of units.
    pub async fn unit_progress(
        &self,
        units: &[&str],
        campaign: &str,
        required: &[Field],
    ) -> Result<Vec<UnitProgress>> {
        // 1. Registrations credited to units, and those of messages a
        // person credited.
        let credited: Vec<CreditedRow> = sqlx::query_as(
            "SELECT r.unit_id, r.complete, r.received_at, r.fields, r.message, m.date_header, r.idx
             FROM registration r JOIN message m ON m.id = r.message
             WHERE m.state = 'done'
               AND (r.unit_id IS NOT NULL
                    OR r.message IN (SELECT d.message FROM decision d WHERE d.kind = 'assign'))
             ORDER BY r.message, r.idx",
        )
        .fetch_all(&self.pool)
        .await?;

        // 2. The problems of those messages.
        let codes: Vec<ProblemCode> = sqlx::query_as(
            "SELECT DISTINCT p.message, p.field, p.code FROM problem p
             WHERE p.message IN (SELECT r.message FROM registration r JOIN message m ON m.id = r.message
                                 WHERE r.unit_id IS NOT NULL AND m.state = 'done')
                OR p.message IN (SELECT d.message FROM decision d WHERE d.kind = 'assign')
             ORDER BY p.message, p.code",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut codes_of: HashMap<&str, Vec<(Option<&str>, &str)>> = HashMap::new();
        for c in &codes {
            codes_of
                .entry(c.message.as_str())
                .or_default()
                .push((c.field.as_deref(), c.code.as_str()));
        }

        // 3. Units whose own address sent a submission that waits for a
        // person and was credited to nobody (a scan, a conflict, a forged
        // sender), and the units a held-back registration would be
        // credited to.
        let waiting_rows: Vec<WaitingRow> = sqlx::query_as(
            "SELECT m.sender_unit AS unit, 0 AS held, m.id AS message, m.received_at FROM message m
             WHERE m.state = 'done' AND m.needs_review = 1 AND m.sender_unit IS NOT NULL
               AND m.kind = 'submission'
               AND NOT EXISTS (SELECT 1 FROM registration r WHERE r.message = m.id AND r.unit_id IS NOT NULL)
             UNION
             SELECT r.held_unit AS unit, 1 AS held, m.id AS message, m.received_at
             FROM registration r JOIN message m ON m.id = r.message
             WHERE r.held_unit IS NOT NULL AND m.state = 'done' AND m.needs_review = 1",
        )
        .fetch_all(&self.pool)
        .await?;

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

        // 5. The office's decisions.
        let decisions = self.decisions().await?;
        let layer = Layer::new(&decisions);

        let mut credits = credits(credited, &layer)?;
        credits.sort_by(|a, b| Reverse(a.order()).cmp(&Reverse(b.order())));

        let mut latest: HashMap<&str, Latest> = HashMap::new();
        let mut submissions: HashMap<&str, HashSet<&str>> = HashMap::new();
        for credit in &credits {
            submissions
                .entry(credit.unit.as_str())
                .or_default()
                .insert(credit.message.as_str());
            if !latest.contains_key(credit.unit.as_str()) {
                let problems = codes_of.get(credit.message.as_str());
                let l = apply(credit, problems.map_or(&[][..], |p| p), &layer, required);
                latest.insert(credit.unit.as_str(), l);
            }
        }

        // Per unit: the newest waiting message, and whether a held-back
        // replacement waits (a complete registration does not settle that
        // one: it is what it would replace).
        let mut waiting: HashMap<&str, (bool, i64)> = HashMap::new();
        for w in waiting_rows.iter().filter(|w| !layer.decided(&w.message)) {
            let entry = waiting.entry(w.unit.as_str()).or_insert((false, i64::MIN));
            entry.0 |= w.held != 0;
            entry.1 = entry.1.max(w.received_at);
        }

        Ok(units
            .iter()
            .map(|&unit| {
                let l = latest.remove(unit);
                // What a person accepted settles what had arrived by then.
                let accepted_at = l.as_ref().and_then(|l| {
                    layer.accepts.get(unit).and_then(|a| {
                        a.iter()
                            .filter(|d| d.message.as_deref() == Some(l.message.as_str()))
                            .map(|d| d.at)
                            .max()
                    })
                });
                let pending = waiting.get(unit).is_some_and(|&(held, newest)| {
                    accepted_at.is_none_or(|at| newest > at)
                        && (held || l.as_ref().is_none_or(|l| !l.settled()))
                });
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

/// Every credited registration: those processing credited, except the
/// messages a person dismissed; and for each message a person credited to
/// a unit, its first registration credited to nobody (else its first), or
/// an empty one when it has none (a scan).
fn credits(rows: Vec<CreditedRow>, layer: &Layer) -> Result<Vec<Credit>> {
    let mut out = Vec::with_capacity(rows.len());
    let mut seen_assigned: HashSet<String> = HashSet::new();
    let mut chosen: HashMap<String, i64> = HashMap::new();
    for r in &rows {
        if layer.assigned.contains_key(r.message.as_str()) {
            let first_free = r.unit_id.is_none() && !seen_assigned.contains(&r.message);
            if first_free || !chosen.contains_key(&r.message) {
                chosen.insert(r.message.clone(), r.idx);
            }
            if first_free {
                seen_assigned.insert(r.message.clone());
            }
        }
    }
    for r in rows {
        if layer.dismissed.contains(r.message.as_str()) {
            continue;
        }
        let key = format!("{}#{}", r.message, r.idx);
        let person = layer
            .assigned
            .get(r.message.as_str())
            .filter(|_| chosen.get(&r.message) == Some(&r.idx))
            .and_then(|d| d.unit_id.clone());
        let (unit, by_person) = match (person, r.unit_id) {
            (Some(unit), _) => (unit, true),
            (None, Some(unit)) => (unit, false),
            (None, None) => continue,
        };
        out.push(Credit {
            unit,
            complete: flag(r.complete, "registration", key.as_str(), "complete")?,
            fields: json(&r.fields, "registration", key, "fields")?,
            sent: date_header(r.date_header.as_deref()),
            received_at: r.received_at,
            message: r.message,
            idx: r.idx,
            by_person,
        });
    }
    for (message, d) in &layer.assigned {
        let processed = matches!(
            d.message_state,
            Some(MessageState::Done | MessageState::Failed)
        );
        if chosen.contains_key(*message) || !processed {
            continue;
        }
        let (Some(unit), Some(received_at)) = (&d.unit_id, d.message_received_at) else {
            continue;
        };
        out.push(Credit {
            unit: unit.clone(),
            message: message.to_string(),
            idx: 0,
            received_at,
            sent: date_header(d.message_date.as_deref()),
            fields: empty_fields(unit),
            complete: false,
            by_person: true,
        });
    }
    Ok(out)
}

/// The problems a person settles by crediting a message to a unit.
const SETTLED_BY_ASSIGN: [&str; 7] = [
    "unknown_unit",
    "unit_conflict",
    "scanned_document",
    "no_registration_found",
    "sender_unverified",
    "unverified_replacement",
    "unreadable_attachment",
];

/// The unit's latest registration with the layer applied: its corrections,
/// whether it was accepted, and the problems that still apply.
fn apply(
    credit: &Credit,
    problems: &[(Option<&str>, &str)],
    layer: &Layer,
    required: &[Field],
) -> Latest {
    let unit = credit.unit.as_str();
    let mine = |d: &&&Decision| {
        d.unit_id.as_deref() == Some(unit) && d.message.as_deref() == Some(credit.message.as_str())
    };
    let mut fields = credit.fields.clone();
    let mut corrected: Vec<String> = Vec::new();
    for d in layer.sets.iter().filter(mine) {
        let Some(path) = d.field.as_deref() else {
            continue;
        };
        let (section, key) = path.split_once('.').unwrap_or(("", path));
        if fields[section].is_object() {
            fields[section][key] = d.after.clone().unwrap_or_default();
        }
        if !corrected.iter().any(|c| c == path) {
            corrected.push(path.to_string());
        }
    }
    let accepted = layer
        .accepts
        .get(unit)
        .is_some_and(|a| a.iter().any(|d| mine(&d)));
    // Corrections made on an older registration, not followed by any
    // decision on this one.
    let last_on_this = layer
        .sets
        .iter()
        .filter(mine)
        .chain(layer.accepts.get(unit).into_iter().flatten().filter(mine))
        .map(|d| d.seq)
        .max();
    let corrected_older = layer.sets.iter().any(|d| {
        d.unit_id.as_deref() == Some(unit)
            && d.message.as_deref() != Some(credit.message.as_str())
            && last_on_this.is_none_or(|seq| seq < d.seq)
    });

    let recomputed = credit.by_person || !corrected.is_empty();
    // A registration read by OCR is a reading: complete only once a person
    // accepts it, however many fields were filled or corrected.
    let read_by_ocr = credit.fields["ocr"] == serde_json::Value::Bool(true);
    let all_present = required.iter().all(|f| present(&fields, f.path()));
    let complete = if read_by_ocr {
        false
    } else if recomputed {
        all_present
    } else {
        credit.complete
    };
    let mut codes: Vec<String> = problems
        .iter()
        .filter(|(field, code)| {
            // A person crediting the message settles how it was matched
            // (unknown unit, conflict, scan, sender).
            let settled = credit.by_person && SETTLED_BY_ASSIGN.contains(code);
            // A corrected field's problem is gone; a missing field is
            // counted again below.
            let recounted = recomputed && *code == "missing_field";
            let fixed = field.is_some_and(|f| corrected.iter().any(|c| c == f));
            !(settled || recounted || fixed)
        })
        .map(|(_, code)| code.to_string())
        .collect();
    if recomputed && !all_present {
        codes.push("missing_field".into());
    }
    if corrected_older {
        codes.push(CORRECTED_OLDER.into());
    }
    codes.sort();
    codes.dedup();
    Latest {
        message: credit.message.clone(),
        complete,
        received_at: credit.received_at,
        fields,
        problems: codes,
        corrected,
        accepted,
        assigned: credit.by_person,
        corrected_older,
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
            corrected: vec![],
            accepted: false,
            assigned: false,
            corrected_older: false,
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
