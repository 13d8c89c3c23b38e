//! What a person decides in the workspace, from the command line or a page:
//! credit a message to a unit, accept a unit's registration, dismiss a
//! message, correct one field. Each action checks what it is given against
//! the roster, the store and the parser's own rules, refuses with a Chinese
//! reason, and records one decision (who, when, before, after, note) that
//! the progress read applies on top of what was read.

use crate::config::Config;
use crate::parse::normalize::{Normalized, invalid_message, normalize};
use crate::parse::registration::{Field, Value};
use crate::parse::roster::{Roster, Unit};
use crate::store::progress::Latest;
use crate::store::{
    Decision, DecisionKind, MessageRef, MessageState, NewDecision, Store, StoreError,
};
use crate::workspace::book::value_text;

/// Why an action was refused; the text is for people.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("名单中没有编号为“{0}”的单位")]
    UnknownUnit(String),
    #[error("没有找到邮件“{0}”（请使用 review list 显示的 message_id）")]
    UnknownMessage(String),
    #[error("“{key}”对应多封邮件，请改用程序编号之一：{ids}")]
    AmbiguousMessage { key: String, ids: String },
    #[error("邮件“{0}”尚未处理完毕，请稍后再试")]
    NotProcessed(String),
    #[error("单位“{0}”还没有可确认或更正的登记（扫描件请先用 review assign 归属到该单位）")]
    NoRegistration(String),
    #[error("没有字段“{0}”；字段写作“分组.字段”，如 officer.mobile、leader.name")]
    UnknownField(String),
    #[error("值无效，未保存：{0}")]
    Invalid(String),
    #[error("请用 --note 说明原因")]
    NoteRequired,
    #[error("该值与现有值相同，未作更改")]
    Unchanged,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who acts and when.
#[derive(Debug, Clone)]
pub struct Actor {
    pub by: String,
    pub note: Option<String>,
    pub now: i64,
}

/// The unit of `id` in the roster.
pub fn unit<'r>(roster: &'r Roster, id: &str) -> Result<&'r Unit, Refused> {
    roster
        .units
        .iter()
        .find(|u| u.id == id)
        .ok_or_else(|| Refused::UnknownUnit(id.to_string()))
}

/// The one message `key` names (Message-ID or the program's id).
pub async fn message(store: &Store, key: &str) -> Result<MessageRef, Refused> {
    let mut found = store.find_messages(key).await?;
    match found.len() {
        0 => Err(Refused::UnknownMessage(key.to_string())),
        1 => Ok(found.remove(0)),
        _ => Err(Refused::AmbiguousMessage {
            key: key.to_string(),
            ids: found
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join("、"),
        }),
    }
}

/// The current registration of a unit, decisions applied.
pub async fn current(
    store: &Store,
    config: &Config,
    unit: &str,
) -> Result<Option<Latest>, StoreError> {
    Ok(store
        .unit_progress(&[unit], config.campaign_name(), &config.required)
        .await?
        .pop()
        .and_then(|p| p.latest))
}

/// `review assign`: credits the message to the unit (for a scan: an empty
/// registration to fill field by field).
pub async fn assign(
    store: &Store,
    roster: &Roster,
    key: &str,
    unit_id: &str,
    actor: &Actor,
) -> Result<MessageRef, Refused> {
    let unit = unit(roster, unit_id)?;
    let m = message(store, key).await?;
    if !matches!(m.state, MessageState::Done | MessageState::Failed) {
        return Err(Refused::NotProcessed(key.to_string()));
    }
    record(
        store,
        DecisionKind::Assign,
        Some(&m.id),
        Some(&unit.id),
        actor,
    )
    .await?;
    Ok(m)
}

/// `review dismiss`: the message is not a submission; a note is required.
pub async fn dismiss(store: &Store, key: &str, actor: &Actor) -> Result<MessageRef, Refused> {
    if actor.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(Refused::NoteRequired);
    }
    let m = message(store, key).await?;
    record(store, DecisionKind::Dismiss, Some(&m.id), None, actor).await?;
    Ok(m)
}

/// `review accept`: the unit's current registration is accepted as it is.
pub async fn accept(
    store: &Store,
    config: &Config,
    roster: &Roster,
    unit_id: &str,
    actor: &Actor,
) -> Result<Latest, Refused> {
    let unit = unit(roster, unit_id)?;
    let latest = current(store, config, &unit.id)
        .await?
        .ok_or_else(|| Refused::NoRegistration(unit.name.clone()))?;
    record(
        store,
        DecisionKind::Accept,
        Some(&latest.message),
        Some(&unit.id),
        actor,
    )
    .await?;
    Ok(latest)
}

/// What `registration set` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Corrected {
    pub field: Field,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// The value a person typed for `field`, normalised and checked as a
/// parsed one is: `Null` clears the field; an invalid value is refused
/// with the parser's own sentence.
pub fn checked_value(field: Field, raw: &str) -> Result<serde_json::Value, Refused> {
    match normalize(field, raw) {
        Normalized::Ok(Value::Text(s)) => Ok(serde_json::Value::String(s)),
        Normalized::Ok(Value::Bool(b)) => Ok(serde_json::Value::Bool(b)),
        Normalized::Empty if raw.trim().is_empty() => Ok(serde_json::Value::Null),
        Normalized::Empty => Err(Refused::Invalid(format!(
            "{}无法识别：{}",
            field.label_zh(),
            raw.trim()
        ))),
        Normalized::Invalid(_, code) => {
            Err(Refused::Invalid(invalid_message(field, code, raw.trim())))
        }
    }
}

/// `registration set`: corrects one field of the unit's current
/// registration.
pub async fn set_field(
    store: &Store,
    config: &Config,
    roster: &Roster,
    unit_id: &str,
    path: &str,
    raw: &str,
    actor: &Actor,
) -> Result<Corrected, Refused> {
    let unit = unit(roster, unit_id)?;
    let field = Field::from_path(path.trim()).ok_or_else(|| Refused::UnknownField(path.into()))?;
    let after = checked_value(field, raw)?;
    let latest = current(store, config, &unit.id)
        .await?
        .ok_or_else(|| Refused::NoRegistration(unit.name.clone()))?;
    let before = latest.value(field.path()).clone();
    if before == after {
        return Err(Refused::Unchanged);
    }
    store
        .record_decision(&NewDecision {
            kind: DecisionKind::Set,
            message: Some(latest.message.clone()),
            unit_id: Some(unit.id.clone()),
            field: Some(field.path().to_string()),
            before: Some(before.clone()),
            after: Some(after.clone()),
            note: actor.note.clone(),
            by: actor.by.clone(),
            at: actor.now,
        })
        .await?;
    Ok(Corrected {
        field,
        before,
        after,
    })
}

async fn record(
    store: &Store,
    kind: DecisionKind,
    message: Option<&str>,
    unit: Option<&str>,
    actor: &Actor,
) -> Result<String, StoreError> {
    store
        .record_decision(&NewDecision {
            kind,
            message: message.map(String::from),
            unit_id: unit.map(String::from),
            field: None,
            before: None,
            after: None,
            note: actor.note.clone(),
            by: actor.by.clone(),
            at: actor.now,
        })
        .await
}

/// One line of the audit trail, in Chinese.
pub fn decision_line(d: &Decision, time: &dyn Fn(i64) -> String) -> String {
    let what = match (&d.field, &d.before, &d.after) {
        (Some(f), before, after) => format!(
            "{}：{} → {}",
            Field::from_path(f).map_or_else(|| f.clone(), |f| f.label_zh().to_string()),
            value_text(before.as_ref().unwrap_or(&serde_json::Value::Null)),
            value_text(after.as_ref().unwrap_or(&serde_json::Value::Null))
        ),
        _ => String::new(),
    };
    let mut line = format!("{} {} {}", time(d.at), d.by, d.kind.zh());
    if !what.is_empty() {
        line.push_str(&format!(" {what}"));
    }
    if let Some(note) = &d.note {
        line.push_str(&format!("（{note}）"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_are_checked_as_parsed_ones() {
        assert_eq!(
            checked_value(Field::OfficerMobile, "139 5778 5650").unwrap(),
            serde_json::json!("13957785650")
        );
        assert_eq!(
            checked_value(Field::OfficerPartyMember, "是").unwrap(),
            serde_json::json!(true)
        );
        assert_eq!(
            checked_value(Field::OfficerQq, "  ").unwrap(),
            serde_json::Value::Null
        );
        let refused = checked_value(Field::OfficerMobile, "1380577123").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "值无效，未保存：信息员手机号码应为11位数字：1380577123"
        );
        assert!(checked_value(Field::OfficerGender, "未知").is_err());
    }
}
