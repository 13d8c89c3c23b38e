//! The 名册 as it stands ([`Book`]): every roster unit in roster order
//! with its current registration (decisions applied), state, time and
//! what the office should know; written out by [`super::export`].

use chrono::TimeZone;

use super::export::{Book, BookRow};
use super::problem_zh;
use crate::config::Config;
use crate::parse::registration::Field;
use crate::parse::roster::Roster;
use crate::store::progress::UnitProgress;
use crate::store::{Store, StoreError};

/// Builds the 名册 from the units' progress.
pub async fn build(store: &Store, config: &Config, roster: &Roster) -> Result<Book, StoreError> {
    let progress = store
        .roster_progress(Some(roster), config.campaign_name(), &config.required)
        .await?;
    let tz = config.timezone();
    let time = |t: i64| {
        tz.timestamp_opt(t, 0)
            .single()
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
    };
    let rows = progress
        .into_iter()
        .map(|(unit, p)| BookRow {
            unit_id: unit.id.clone(),
            unit_name: unit.name.clone(),
            category: unit.category.clone(),
            state: p.state.as_str().into(),
            state_zh: p.state.zh().into(),
            received_at: p.latest.as_ref().and_then(|l| time(l.received_at)),
            fields: fields_text(&p),
            note: note(&p),
            reminders_sent: p.reminders_sent,
            last_reminder_at: p.last_reminder_at.and_then(time),
        })
        .collect();
    Ok(Book {
        title: format!("{}名册", config.campaign_name()),
        rows,
    })
}

/// Every non-empty field of the unit's current registration as text.
fn fields_text(p: &UnitProgress) -> std::collections::BTreeMap<Field, String> {
    let Some(l) = &p.latest else {
        return Default::default();
    };
    Field::ALL
        .into_iter()
        .filter_map(|f| {
            let text = match l.value(f.path()) {
                serde_json::Value::String(s) if !s.trim().is_empty() => s.clone(),
                serde_json::Value::Bool(true) => "是".into(),
                serde_json::Value::Bool(false) => "否".into(),
                _ => return None,
            };
            Some((f, text))
        })
        .collect()
}

/// What the office should know about a unit's registration, in Chinese.
pub fn note(p: &UnitProgress) -> String {
    let Some(l) = &p.latest else {
        return String::new();
    };
    let mut parts: Vec<String> = l.problems.iter().map(|c| problem_zh(c)).collect();
    if !l.corrected.is_empty() {
        let labels: Vec<&str> = l
            .corrected
            .iter()
            .filter_map(|path| Field::from_path(path).map(Field::label_zh))
            .collect();
        parts.push(format!("已人工更正：{}", labels.join("、")));
    }
    if l.assigned {
        parts.push("由工作人员归属".into());
    }
    if l.accepted {
        parts.push("已人工确认".into());
    }
    parts.join("；")
}

/// A stored field value for people.
pub fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "（空）".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(true) => "是".into(),
        serde_json::Value::Bool(false) => "否".into(),
        other => other.to_string(),
    }
}
