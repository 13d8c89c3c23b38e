//! What the office sees at a glance (`status`; its JSON is described in
//! `docs/status-json.md`): per roster unit whether it has registered, each
//! source's health, and the messages waiting for a person. Read from the
//! database only; the mailbox is never touched.
//!
//! The units' progress and states come from the store's one progress read
//! ([`Store::unit_progress`]); this module shapes and formats it.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::TimeZone;
use chrono_tz::Tz;
use serde::Serialize;

use crate::config::Config;
use crate::parse::roster::{Roster, Unit};
use crate::service::daemon::HELD_NOTE;
use crate::service::intake::SILENT_AFTER;
use crate::service::sources::{kind_name, stalled};
use crate::store::outbox::{self, OutboxState};
use crate::store::progress::{UnitProgress, UnitState};
use crate::store::{AttachmentBrief, MessageState, SourceState, Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub campaign: Option<CampaignStatus>,
    /// Reminders and the overdue list wait because the service has not
    /// caught up (a source behind, messages not processed yet).
    pub reminders_held: Option<Held>,
    pub sources: Vec<SourceStatus>,
    pub counts: Counts,
    pub units: Vec<UnitStatus>,
    pub review: Vec<ReviewItem>,
    /// Mail refused permanently (5xx), for the office to act on.
    pub failed_mail: Vec<FailedMail>,
    /// Unit addresses that bounced: no more reminders go there.
    pub undeliverable: Vec<Undeliverable>,
    /// Mail written to the outbox, by state (`queued`, `sending`, `sent`,
    /// `failed`, `cancelled`).
    pub outbox: std::collections::BTreeMap<OutboxState, i64>,
    /// Mails taken again after their sender stopped in the middle of
    /// sending: each may have reached its recipient twice (same
    /// Message-ID).
    pub outbox_resends: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub reason: String,
    pub since: String,
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
    /// Messages being processed now.
    pub processing_messages: i64,
    /// Of those, the ones whose claim is stale (its lease ran out, or the
    /// instance holding it stopped beating): given back to another
    /// instance shortly.
    pub stale_claims: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitStatus {
    pub unit_id: String,
    pub unit_name: String,
    pub category: String,
    pub state: UnitState,
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
    /// The message's Message-ID, or the program's id of a message without
    /// one: what `review assign`/`dismiss` take.
    pub message_id: String,
    /// The program's id of the message.
    pub id: String,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub received_at: String,
    /// A problem code (or `failed: …`).
    pub reason: String,
    /// The unit it concerns, or null.
    pub unit_id: Option<String>,
    pub attachments: Vec<AttachmentBrief>,
    /// For the time ordering of pages (not in the JSON).
    #[serde(skip)]
    pub received_ts: i64,
}

/// RFC 3339 in the campaign's time zone.
fn rfc3339(tz: Tz, t: i64) -> String {
    tz.timestamp_opt(t, 0)
        .single()
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

/// Builds the status at `now` (unix seconds).
pub async fn build(
    store: &Store,
    config: &Config,
    roster: Option<&Roster>,
    now: i64,
) -> Result<Status, StoreError> {
    let tz = config.timezone();
    let progress = store
        .roster_progress(roster, config.campaign_name(), &config.required)
        .await?;
    let review = review_items(store, tz, &progress).await?;
    let mut counts = Counts::default();
    let mut units: Vec<UnitStatus> = progress
        .into_iter()
        .map(|(unit, p)| {
            match p.state {
                UnitState::Registered => counts.registered += 1,
                UnitState::NeedsReview => counts.needs_review += 1,
                UnitState::Missing => counts.missing += 1,
            }
            unit_status(unit, p, tz)
        })
        .collect();
    counts.units = units.len();
    // Missing units first, then those waiting for a person, then the rest.
    units.sort_by_key(|u| match u.state {
        UnitState::Missing => 0,
        UnitState::NeedsReview => 1,
        UnitState::Registered => 2,
    });
    let messages = store.message_counts().await?;
    counts.messages = messages.messages;
    counts.unmatched_messages = messages.unmatched;
    counts.failed_messages = messages.failed;
    let claims = store.claim_counts(now, now - SILENT_AFTER).await?;
    counts.processing_messages = claims.processing;
    counts.stale_claims = claims.stale;

    let reminders_held = store.read_note(HELD_NOTE).await?.map(|n| Held {
        reason: n.value,
        since: rfc3339(tz, n.since),
    });
    Ok(Status {
        reminders_held,
        campaign: config.campaign.as_ref().map(|c| CampaignStatus {
            name: c.name.clone(),
            deadline: c.deadline.to_rfc3339(),
            now: rfc3339(tz, now),
        }),
        sources: sources(store, config, now).await?,
        counts,
        units,
        review,
        failed_mail: outbox::failed(store)
            .await?
            .into_iter()
            .map(|f| FailedMail {
                to: f.to_addr,
                subject: f.subject,
                error: f.error,
            })
            .collect(),
        undeliverable: outbox::undeliverable(store)
            .await?
            .into_iter()
            .map(|u| Undeliverable {
                address: u.address,
                unit_id: u.unit_id,
                reason: u.reason,
            })
            .collect(),
        outbox: outbox::count_by_state(store).await?,
        outbox_resends: outbox::resends(store).await?,
    })
}

/// The messages waiting for a person, oldest first: those not decided
/// yet, except the ones a settled registration of their unit covers (the
/// unit is registered with a registration received as late, or accepted).
pub async fn review_items(
    store: &Store,
    tz: Tz,
    progress: &[(&Unit, UnitProgress)],
) -> Result<Vec<ReviewItem>, StoreError> {
    let settled: HashMap<&str, i64> = progress
        .iter()
        .filter(|(_, p)| p.state == UnitState::Registered)
        .filter_map(|(u, p)| p.latest.as_ref().map(|l| (u.id.as_str(), l.received_at)))
        .collect();
    Ok(store
        .review_rows()
        .await?
        .into_iter()
        .filter(|r| {
            r.unit_id
                .as_deref()
                .and_then(|u| settled.get(u))
                .is_none_or(|&at| r.received_at > at)
        })
        .map(|r| ReviewItem {
            reason: match r.state {
                MessageState::Failed => {
                    format!("failed: {}", r.last_error.unwrap_or_default())
                }
                _ => r.first_problem.unwrap_or_else(|| "needs_review".into()),
            },
            message_id: r.message_id.unwrap_or_else(|| r.id.clone()),
            id: r.id,
            from: r.from_addr,
            subject: r.subject,
            received_at: rfc3339(tz, r.received_at),
            received_ts: r.received_at,
            unit_id: r.unit_id,
            attachments: r.attachments,
        })
        .collect())
}

fn unit_status(unit: &Unit, p: UnitProgress, tz: Tz) -> UnitStatus {
    let field = |section: &str, key: &str| {
        p.latest
            .as_ref()
            .and_then(|l| l.field(section, key))
            .map(String::from)
    };
    UnitStatus {
        unit_id: unit.id.clone(),
        unit_name: unit.name.clone(),
        category: unit.category.clone(),
        state: p.state,
        received_at: p.latest.as_ref().map(|l| rfc3339(tz, l.received_at)),
        leader_name: field("leader", "name"),
        officer_name: field("officer", "name"),
        officer_mobile: field("officer", "mobile"),
        officer_email: field("officer", "email"),
        submissions: p.submissions,
        problems: p
            .latest
            .as_ref()
            .map(|l| l.problems.clone())
            .unwrap_or_default(),
        reminders_sent: p.reminders_sent,
        last_reminder_at: p.last_reminder_at.map(|t| rfc3339(tz, t)),
    }
}

/// Each configured source's health, in config order.
async fn sources(
    store: &Store,
    config: &Config,
    now: i64,
) -> Result<Vec<SourceStatus>, StoreError> {
    let tz = config.timezone();
    let mut states: HashMap<String, SourceState> = store
        .source_states()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let seen = store.entries_by_source().await?;
    // A source that never polled successfully is stalled `stall_after`
    // after the service started, not at once.
    let started = store.first_start().await?;
    Ok(config
        .sources
        .iter()
        .map(|source| {
            let st = states.remove(&source.name);
            let last_ok = st.as_ref().and_then(|s| s.last_poll_ok);
            SourceStatus {
                name: source.name.clone(),
                kind: kind_name(&source.kind).into(),
                last_poll_ok: last_ok.map(|t| rfc3339(tz, t)),
                last_error: st.and_then(|s| s.last_error),
                messages_seen: seen.get(&source.name).copied().unwrap_or(0),
                stalled: stalled(last_ok.or(started), now, config.stall_after),
            }
        })
        .collect())
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
        if c.processing_messages > 0 {
            let _ = writeln!(
                out,
                "正在处理 {} 封{}。",
                c.processing_messages,
                if c.stale_claims > 0 {
                    format!(
                        "（其中 {} 封的处理进程已停止，稍后由其他进程接手）",
                        c.stale_claims
                    )
                } else {
                    String::new()
                }
            );
        }
        if let Some(h) = &self.reminders_held {
            let _ = writeln!(out, "催报提醒暂停（自 {}）：{}", h.since, h.reason);
        }
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
        out.push_str(&self.units_table());
        self.write_review(&mut out);
        self.write_mail(&mut out);
        out
    }

    fn units_table(&self) -> String {
        let header = [
            "单位",
            "状态",
            "信息员",
            "手机",
            "报送次数",
            "已提醒",
            "问题",
        ];
        let mut rows = vec![header.map(String::from).to_vec()];
        for u in &self.units {
            rows.push(vec![
                u.unit_name.clone(),
                u.state.zh().into(),
                u.officer_name.clone().unwrap_or_default(),
                u.officer_mobile.clone().unwrap_or_default(),
                u.submissions.to_string(),
                u.reminders_sent.to_string(),
                u.problems.join(","),
            ]);
        }
        crate::parse::report::render_table(&rows)
    }

    fn write_review(&self, out: &mut String) {
        if self.review.is_empty() {
            return;
        }
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

    fn write_mail(&self, out: &mut String) {
        if !self.outbox.is_empty() {
            let parts: Vec<String> = self
                .outbox
                .iter()
                .map(|(state, n)| format!("{} {n}", outbox_state_zh(*state)))
                .collect();
            let _ = writeln!(out, "发出的邮件：{}", parts.join("，"));
        }
        if self.outbox_resends > 0 {
            let _ = writeln!(
                out,
                "  其中 {} 封在发送途中服务中断、已重新发送，收件人可能收到两次（邮件编号相同）。",
                self.outbox_resends
            );
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
    }
}

fn outbox_state_zh(state: OutboxState) -> &'static str {
    match state {
        OutboxState::Sent => "已发送",
        OutboxState::Queued => "待发送",
        OutboxState::Sending => "发送中",
        OutboxState::Failed => "发送失败",
        OutboxState::Cancelled => "已取消",
        OutboxState::Missed => "已错过",
    }
}
