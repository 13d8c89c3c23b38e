//! What the office sees at a glance (`status`, `shared/contract/status-json.md`):
//! per roster unit whether it has registered, each source's health, and the
//! messages waiting for a person. Read from the database only; the mailbox
//! is never touched.
//!
//! The unit states are decided by [`unit_state`], a pure function of what
//! the database holds.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::TimeZone;
use serde::Serialize;
use sqlx::Row;

use crate::config::Config;
use crate::parse::roster::Roster;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub campaign: Option<CampaignStatus>,
    pub sources: Vec<SourceStatus>,
    pub counts: Counts,
    pub units: Vec<UnitStatus>,
    pub review: Vec<ReviewItem>,
    /// Mail refused permanently (5xx), for the office to act on.
    pub failed_mail: Vec<FailedMail>,
    /// Unit addresses that bounced: no more reminders go there.
    pub undeliverable: Vec<Undeliverable>,
    /// Mail written to the outbox, by state (`queued`, `sent`, `failed`).
    pub outbox: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedMail {
    pub to: String,
    pub subject: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Undeliverable {
    pub address: String,
    pub unit_id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CampaignStatus {
    pub name: String,
    pub deadline: String,
    pub now: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub kind: String,
    pub last_poll_ok: Option<String>,
    pub last_error: Option<String>,
    pub messages_seen: i64,
    /// No successful poll for longer than `stall_after`.
    pub stalled: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub units: usize,
    pub registered: usize,
    pub needs_review: usize,
    pub missing: usize,
    pub messages: i64,
    pub unmatched_messages: i64,
    pub failed_messages: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitStatus {
    pub unit_id: String,
    pub unit_name: String,
    pub category: String,
    pub state: &'static str,
    pub received_at: Option<String>,
    pub leader_name: Option<String>,
    pub officer_name: Option<String>,
    pub officer_mobile: Option<String>,
    pub officer_email: Option<String>,
    pub submissions: i64,
    pub problems: Vec<String>,
    pub reminders_sent: i64,
    pub last_reminder_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewItem {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub received_at: String,
    pub reason: String,
}

/// A unit's latest credited registration, as far as status needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    pub complete: bool,
    pub received_at: i64,
    pub fields: serde_json::Value,
    pub problems: Vec<String>,
}

/// `registered` when the unit's latest registration is complete,
/// `needs_review` when something arrived for it that a person must decide,
/// else `missing`.
pub fn unit_state(latest: Option<&Latest>, pending_review: bool) -> &'static str {
    match latest {
        Some(l) if l.complete && !pending_review => "registered",
        Some(_) => "needs_review",
        None if pending_review => "needs_review",
        None => "missing",
    }
}

/// Builds the status at `now` (unix seconds).
pub async fn build(
    store: &Store,
    config: &Config,
    roster: Option<&Roster>,
    now: i64,
) -> Result<Status, StoreError> {
    let tz = config
        .campaign
        .as_ref()
        .map_or(chrono_tz::Asia::Shanghai, |c| c.timezone);
    let fmt = |t: i64| {
        tz.timestamp_opt(t, 0)
            .single()
            .map(|d| d.to_rfc3339())
            .unwrap_or_default()
    };
    let pool = store.pool();

    // Registrations credited to units, newest first.
    let mut rows = sqlx::query(
        "SELECT r.unit_id, r.complete, r.received_at, r.fields, r.message, m.date_header, r.idx FROM registration r
         JOIN message m ON m.id = r.message
         WHERE r.unit_id IS NOT NULL AND m.state = 'done'",
    )
    .fetch_all(pool)
    .await?;
    // Messages fetched in the same second (a backlog taken in one poll)
    // are ordered by their Date header, so a correction sent after the
    // first form is the receipt however the fetch went.
    let order = |row: &sqlx::any::AnyRow| {
        let received: i64 = row.try_get(2).unwrap_or_default();
        let sent = row
            .try_get::<Option<String>, _>(5)
            .ok()
            .flatten()
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d).ok())
            .map(|d| d.timestamp());
        let message: String = row.try_get(4).unwrap_or_default();
        let idx: i32 = row.try_get(6).unwrap_or_default();
        (received, sent, message, idx)
    };
    rows.sort_by_cached_key(|row| std::cmp::Reverse(order(row)));
    let mut latest: HashMap<String, Latest> = HashMap::new();
    let mut submissions: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    let mut latest_message: HashMap<String, String> = HashMap::new();
    for row in &rows {
        let unit: String = row.try_get(0)?;
        let message: String = row.try_get(4)?;
        submissions
            .entry(unit.clone())
            .or_default()
            .insert(message.clone());
        if latest.contains_key(&unit) {
            continue;
        }
        let fields: String = row.try_get(3)?;
        latest_message.insert(unit.clone(), message);
        latest.insert(
            unit,
            Latest {
                complete: row.try_get::<i32, _>(1)? == 1,
                received_at: row.try_get(2)?,
                fields: serde_json::from_str(&fields).unwrap_or_default(),
                problems: Vec::new(),
            },
        );
    }
    for (unit, message) in &latest_message {
        let codes =
            sqlx::query("SELECT DISTINCT code FROM problem WHERE message = $1 ORDER BY code")
                .bind(message)
                .fetch_all(pool)
                .await?;
        if let Some(l) = latest.get_mut(unit) {
            l.problems = codes
                .iter()
                .filter_map(|r| r.try_get::<String, _>(0).ok())
                .collect();
        }
    }

    // Messages from a unit's own address that wait for a person and were
    // not credited (a scan, a conflict): the unit needs review.
    let waiting = sqlx::query(
        "SELECT m.sender_unit FROM message m WHERE m.state = 'done' AND m.needs_review = 1 AND m.sender_unit IS NOT NULL
           AND m.kind = 'submission'
           AND NOT EXISTS (SELECT 1 FROM registration r WHERE r.message = m.id AND r.unit_id IS NOT NULL)",
    )
    .fetch_all(pool)
    .await?;
    let mut pending_review: std::collections::HashSet<String> = std::collections::HashSet::new();
    for row in &waiting {
        let unit: String = row.try_get(0)?;
        pending_review.insert(unit);
    }

    // Reminders sent to each unit, and the last one's time.
    let mut reminders: HashMap<String, (i64, Option<i64>)> = HashMap::new();
    let campaign_name = config
        .campaign
        .as_ref()
        .map_or_else(|| "default".to_string(), |c| c.name.clone());
    for r in crate::store::outbox::reminders(store, &campaign_name).await? {
        if r.state == "sent" {
            let e = reminders.entry(r.unit_key).or_insert((0, None));
            e.0 += 1;
            e.1 = Some(e.1.map_or(r.at, |t| t.max(r.at)));
        }
    }
    let mut units = Vec::new();
    let mut counts = Counts::default();
    for unit in roster.map(|r| r.units.as_slice()).unwrap_or_default() {
        let l = latest.get(&unit.id);
        // A complete registration newer than the waiting message settles it.
        let state = unit_state(
            l,
            pending_review.contains(&unit.id) && l.is_none_or(|l| !l.complete),
        );
        match state {
            "registered" => counts.registered += 1,
            "needs_review" => counts.needs_review += 1,
            _ => counts.missing += 1,
        }
        let field = |section: &str, key: &str| {
            l.and_then(|l| l.fields[section][key].as_str())
                .map(String::from)
        };
        units.push(UnitStatus {
            unit_id: unit.id.clone(),
            unit_name: unit.name.clone(),
            category: unit.category.clone(),
            state,
            received_at: l.map(|l| fmt(l.received_at)),
            leader_name: field("leader", "name"),
            officer_name: field("officer", "name"),
            officer_mobile: field("officer", "mobile"),
            officer_email: field("officer", "email"),
            submissions: submissions.get(&unit.id).map_or(0, |s| s.len() as i64),
            problems: l.map(|l| l.problems.clone()).unwrap_or_default(),
            reminders_sent: reminders.get(&unit.id).map_or(0, |r| r.0),
            last_reminder_at: reminders.get(&unit.id).and_then(|r| r.1).map(fmt),
        });
    }
    counts.units = units.len();

    let scalar = |sql: &'static str| async move {
        let row = sqlx::query(sql).fetch_one(pool).await?;
        Ok::<i64, StoreError>(row.try_get::<i64, _>(0)?)
    };
    counts.messages = scalar("SELECT COUNT(*) FROM message").await?;
    counts.unmatched_messages = scalar(
        "SELECT COUNT(*) FROM message m WHERE m.state = 'done'
           AND NOT EXISTS (SELECT 1 FROM registration r WHERE r.message = m.id AND r.unit_id IS NOT NULL)",
    )
    .await?;
    counts.failed_messages = scalar("SELECT COUNT(*) FROM message WHERE state = 'failed'").await?;

    let review_rows = sqlx::query(
        "SELECT m.message_id, m.from_addr, m.subject, m.received_at, m.state, m.last_error,
                (SELECT p.code FROM problem p WHERE p.message = m.id ORDER BY p.idx LIMIT 1)
         FROM message m
         WHERE (m.state = 'done' AND m.needs_review = 1) OR m.state = 'failed'
         ORDER BY m.received_at, m.id",
    )
    .fetch_all(pool)
    .await?;
    let mut review = Vec::new();
    for row in &review_rows {
        let state: String = row.try_get(4)?;
        let reason = if state == "failed" {
            format!(
                "failed: {}",
                row.try_get::<Option<String>, _>(5)?.unwrap_or_default()
            )
        } else {
            row.try_get::<Option<String>, _>(6)?
                .unwrap_or_else(|| "needs_review".into())
        };
        review.push(ReviewItem {
            message_id: row.try_get(0)?,
            from: row.try_get(1)?,
            subject: row.try_get(2)?,
            received_at: fmt(row.try_get(3)?),
            reason,
        });
    }

    let states: HashMap<String, crate::store::SourceState> = store
        .source_states()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut sources = Vec::new();
    for source in &config.sources {
        let kind = match source.kind {
            crate::config::SourceKind::Imap { .. } => "imap",
            crate::config::SourceKind::Directory { .. } => "directory",
        };
        let st = states.get(&source.name);
        let seen = sqlx::query("SELECT COUNT(*) FROM mailbox_entry WHERE source = $1")
            .bind(&source.name)
            .fetch_one(pool)
            .await?
            .try_get::<i64, _>(0)?;
        let last_ok = st.and_then(|s| s.last_poll_ok);
        let stalled = last_ok.is_none_or(|t| now - t > config.stall_after.as_secs() as i64);
        sources.push(SourceStatus {
            name: source.name.clone(),
            kind: kind.into(),
            last_poll_ok: last_ok.map(fmt),
            last_error: st.and_then(|s| s.last_error.clone()),
            messages_seen: seen,
            stalled,
        });
    }

    let campaign = config.campaign.as_ref().map(|c| CampaignStatus {
        name: c.name.clone(),
        deadline: c.deadline.to_rfc3339(),
        now: fmt(now),
    });
    // Missing units first, then those waiting for a person, then the rest.
    units.sort_by_key(|u| match u.state {
        "missing" => 0,
        "needs_review" => 1,
        _ => 2,
    });
    let failed_mail = crate::store::outbox::failed(store)
        .await?
        .into_iter()
        .map(|(to, subject, error)| FailedMail { to, subject, error })
        .collect();
    let undeliverable = crate::store::outbox::undeliverable(store)
        .await?
        .into_iter()
        .map(|(address, unit_id, reason)| Undeliverable {
            address,
            unit_id,
            reason,
        })
        .collect();
    let outbox = crate::store::outbox::count_by_state(store).await?;
    Ok(Status {
        campaign,
        sources,
        counts,
        units,
        review,
        failed_mail,
        undeliverable,
        outbox,
    })
}

impl Status {
    /// The same as a Chinese table, missing units first.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.campaign {
            let _ = writeln!(out, "{}（截止 {}，现在 {}）", c.name, c.deadline, c.now);
        }
        let c = &self.counts;
        let _ = writeln!(
            out,
            "单位 {} 个：已登记 {}，待人工处理 {}，未报送 {}；共收到邮件 {} 封，未能对应单位 {} 封，处理失败 {} 封。",
            c.units,
            c.registered,
            c.needs_review,
            c.missing,
            c.messages,
            c.unmatched_messages,
            c.failed_messages
        );
        for s in &self.sources {
            let _ = writeln!(
                out,
                "来源 {}（{}）：最近成功 {}{}{}",
                s.name,
                s.kind,
                s.last_poll_ok.as_deref().unwrap_or("从未"),
                s.last_error
                    .as_deref()
                    .map(|e| format!("，最近错误：{e}"))
                    .unwrap_or_default(),
                if s.stalled { "【已停滞】" } else { "" }
            );
        }
        let state_zh = |s: &str| match s {
            "registered" => "已登记",
            "needs_review" => "待人工处理",
            _ => "未报送",
        };
        let mut rows = vec![
            [
                "单位",
                "状态",
                "信息员",
                "手机",
                "报送次数",
                "已提醒",
                "问题",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for u in &self.units {
            rows.push(vec![
                u.unit_name.clone(),
                state_zh(u.state).into(),
                u.officer_name.clone().unwrap_or_default(),
                u.officer_mobile.clone().unwrap_or_default(),
                u.submissions.to_string(),
                u.reminders_sent.to_string(),
                u.problems.join(","),
            ]);
        }
        out.push_str(&crate::parse::report::render_table(&rows));
        if !self.review.is_empty() {
            let _ = writeln!(out, "待人工处理的邮件：");
            for r in &self.review {
                let _ = writeln!(
                    out,
                    "  {} {} “{}” — {}",
                    r.received_at,
                    r.from.as_deref().unwrap_or(""),
                    r.subject.as_deref().unwrap_or(""),
                    r.reason
                );
            }
        }
        if !self.outbox.is_empty() {
            let state_zh = |s: &str| match s {
                "sent" => "已发送",
                "queued" => "待发送",
                "failed" => "发送失败",
                "cancelled" => "已取消",
                _ => "其他",
            };
            let parts: Vec<String> = self
                .outbox
                .iter()
                .map(|(k, v)| format!("{} {v}", state_zh(k)))
                .collect();
            let _ = writeln!(out, "发出的邮件：{}", parts.join("，"));
        }
        for f in &self.failed_mail {
            let _ = writeln!(out, "  发送失败：{} “{}” — {}", f.to, f.subject, f.error);
        }
        if !self.undeliverable.is_empty() {
            let _ = writeln!(out, "退信地址（不再发送提醒，请核实名单中的邮箱）：");
            for u in &self.undeliverable {
                let _ = writeln!(
                    out,
                    "  {}（{}）",
                    u.address,
                    u.unit_id.as_deref().unwrap_or("未知单位")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_states() {
        let complete = Latest {
            complete: true,
            received_at: 0,
            fields: serde_json::Value::Null,
            problems: vec![],
        };
        let partial = Latest {
            complete: false,
            ..complete.clone()
        };
        assert_eq!(unit_state(None, false), "missing");
        assert_eq!(unit_state(None, true), "needs_review");
        assert_eq!(unit_state(Some(&complete), false), "registered");
        assert_eq!(unit_state(Some(&partial), false), "needs_review");
    }
}
