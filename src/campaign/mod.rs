//! The mail the service writes for the campaign: receipts (回执) after a
//! message is recorded, reminders (催报) from the schedule, the overdue
//! list (通报) for the office, and bounces of our own mail.
//!
//! Each step decides with pure code (`crate::campaign::reminders`, the rules below)
//! and only queues into the outbox; [`send_step`] sends what is queued,
//! paced. Nothing here talks SMTP directly.

pub mod mailer;
pub mod reminders;
pub mod templates;

use std::collections::BTreeMap;

use chrono::TimeZone;

use crate::campaign::mailer::{Mailer, Pacing, SendError};
use crate::campaign::reminders::{Decision, Sent, UnitView};
use crate::campaign::templates::{MailKind, Templates};
use crate::config::Config;
use crate::parse::message::{MessageKind, Returned};
use crate::parse::roster::Roster;
use crate::store::outbox::{self, NewMail, OutboxKind, OutboxState};
use crate::store::progress::UnitState;
use crate::store::{ProcessedMessage, Store, StoreError, StoredRegistration};

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("发送失败：{0}")]
    Send(#[from] SendError),
    #[error("{0}")]
    Other(String),
}

/// What the mailing steps need.
#[derive(Debug)]
pub struct Mailing<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
    pub roster: Option<&'a Roster>,
    pub templates: &'a Templates,
    /// Our own address (never acknowledged, never reminded).
    pub our_address: String,
    pub domain: String,
}

impl Mailing<'_> {
    fn campaign_name(&self) -> String {
        self.config.campaign_name().to_string()
    }

    fn fmt_time(&self, t: i64) -> String {
        self.config
            .timezone()
            .timestamp_opt(t, 0)
            .single()
            .map(|d| d.format("%Y年%-m月%-d日 %H:%M").to_string())
            .unwrap_or_default()
    }

    fn base_values(&self, now: i64) -> BTreeMap<&'static str, String> {
        let mut v = BTreeMap::new();
        v.insert("office", self.config.mailing.office_name.clone());
        v.insert("campaign", self.campaign_name());
        v.insert("now", self.fmt_time(now));
        if let Some(c) = &self.config.campaign {
            v.insert("deadline", self.fmt_time(c.deadline.timestamp()));
            v.insert("remaining", reminders::remaining_zh(&c.deadline, now));
        }
        v
    }
}

/// Whether a processed message may get a receipt: a submission from a
/// person — never a bounce, an auto-reply, a list, bulk mail, a robot or
/// ourselves (RFC 3834). A message whose automation flags were not
/// recorded gets none.
pub fn receipt_allowed(message: &ProcessedMessage, our_address: &str) -> bool {
    let Some(automation) = &message.automation else {
        return false;
    };
    message.kind == MessageKind::Submission
        && !automation.never_answered()
        && message
            .from_addr
            .as_deref()
            .is_some_and(|from| from != our_address.to_lowercase())
}

/// Queues the receipt for a processed message, if one is due.
pub async fn acknowledge(
    m: &Mailing<'_>,
    message: &ProcessedMessage,
    now: i64,
) -> Result<bool, CampaignError> {
    if !m.config.mailing.acks_enabled || !receipt_allowed(message, &m.our_address) {
        return Ok(false);
    }
    let (Some(from), Some(automation)) = (&message.from_addr, &message.automation) else {
        return Ok(false);
    };
    let regs = m.store.registrations_of(&message.id).await?;
    // A reply to one of our own mails that brings no form is an
    // auto-responder that does not say so (or a person writing back):
    // answering it could go on forever.
    if regs.is_empty() {
        for parent in &automation.replies_to {
            if outbox::is_ours(m.store, parent).await? {
                return Ok(false);
            }
        }
    }
    let problems = m.store.problem_texts_of(&message.id).await?;
    let mut values = m.base_values(now);
    values.insert("subject", message.subject.clone().unwrap_or_default());
    values.insert("received_at", m.fmt_time(message.received_at));
    let problem_text = if problems.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = problems.iter().map(|p| format!("  · {p}")).collect();
        format!("请注意以下问题：\n{}\n", lines.join("\n"))
    };
    values.insert("problems", problem_text);
    let (kind, unit_key) = match regs.iter().find(|r| r.unit_id.is_some()) {
        Some(reg) => {
            registration_values(m, reg, &mut values);
            (MailKind::Ack, reg.unit_id.clone().unwrap_or_default())
        }
        None => (MailKind::AckUnmatched, String::new()),
    };
    let (subject, body) = m.templates.render(kind, &values);
    let mail = NewMail {
        campaign: m.campaign_name(),
        unit_key,
        slot: format!("ack:{}", message.id),
        kind,
        to: from.clone(),
        subject,
        body,
        in_reply_to: message.message_id.clone(),
        attachment: None,
    };
    Ok(outbox::queue(m.store, &mail, &m.domain, now)
        .await?
        .is_some())
}

/// What a receipt says of the credited registration.
fn registration_values(
    m: &Mailing<'_>,
    reg: &StoredRegistration,
    values: &mut BTreeMap<&'static str, String>,
) {
    let f = &reg.fields;
    let get = |s: &str, k: &str| f[s][k].as_str().unwrap_or("（未填）").to_string();
    let unit_name = reg
        .unit_id
        .as_deref()
        .and_then(|id| m.roster.and_then(|r| r.get(id)))
        .map_or_else(|| get("unit", "name"), |u| u.name.clone());
    values.insert("unit_name", unit_name);
    for (key, section, field) in [
        ("leader_name", "leader", "name"),
        ("leader_title", "leader", "title"),
        ("leader_mobile", "leader", "mobile"),
        ("officer_name", "officer", "name"),
        ("officer_title", "officer", "title"),
        ("officer_mobile", "officer", "mobile"),
        ("officer_email", "officer", "email"),
    ] {
        values.insert(key, get(section, field));
    }
}

/// Reads a bounce: finds which of our mails it reports on (the references
/// found when it was parsed) and marks that address undeliverable.
/// Returns the address when one was marked.
pub async fn handle_bounce(
    m: &Mailing<'_>,
    returned: &[Returned],
    now: i64,
) -> Result<Option<String>, CampaignError> {
    for reference in returned {
        let found = match reference {
            Returned::Outbox(id) => outbox::by_id(m.store, id).await?,
            Returned::MessageId(id) => outbox::by_message_id(m.store, id).await?,
        };
        if let Some(sent) = found {
            let unit = (!sent.unit_key.is_empty()).then_some(sent.unit_key);
            outbox::mark_undeliverable(
                m.store,
                &sent.to_addr,
                unit.as_deref(),
                Some(&sent.id),
                "退信",
                now,
            )
            .await?;
            tracing::warn!(mail = %sent.id, unit = ?unit, "address bounced; no further reminders");
            return Ok(Some(sent.to_addr));
        }
    }
    Ok(None)
}

/// The units as the reminder planner sees them — missing units first, then
/// those waiting for a person, then the rest, each in roster order — and
/// the reminders already written for them.
pub async fn planner_input(m: &Mailing<'_>) -> Result<(Vec<UnitView>, Vec<Sent>), CampaignError> {
    let roster_units = m.roster.map(|r| r.units.as_slice()).unwrap_or_default();
    let ids: Vec<&str> = roster_units.iter().map(|u| u.id.as_str()).collect();
    let progress = m
        .store
        .unit_progress(&ids, m.config.campaign_name())
        .await?;
    let bounced: Vec<String> = outbox::undeliverable(m.store)
        .await?
        .into_iter()
        .map(|u| u.address)
        .collect();
    let mut units: Vec<UnitView> = roster_units
        .iter()
        .zip(progress)
        .map(|(unit, p)| UnitView {
            unit_id: unit.id.clone(),
            unit_name: unit.name.clone(),
            address: unit.emails.iter().find(|e| !bounced.contains(e)).cloned(),
            review_reason: match (p.state, &p.latest) {
                (UnitState::NeedsReview, Some(l)) => l.problems.join("、"),
                _ => String::new(),
            },
            state: p.state,
            undeliverable: !unit.emails.is_empty()
                && unit.emails.iter().all(|e| bounced.contains(e)),
        })
        .collect();
    units.sort_by_key(|u| match u.state {
        UnitState::Missing => 0,
        UnitState::NeedsReview => 1,
        UnitState::Registered => 2,
    });
    let sent = outbox::reminders(m.store, &m.campaign_name())
        .await?
        .into_iter()
        .map(|r| Sent {
            unit_id: r.unit_key,
            slot: r.slot,
            at: r.at,
            missed: r.kind == OutboxKind::Missed,
        })
        .collect();
    Ok((units, sent))
}

/// Queues the reminders due at `now` (optionally for one unit only);
/// returns how many were queued.
pub async fn queue_reminders(
    m: &Mailing<'_>,
    now: i64,
    only: Option<&str>,
) -> Result<usize, CampaignError> {
    let Some(campaign) = &m.config.campaign else {
        return Ok(0);
    };
    let (units, sent) = planner_input(m).await?;
    let units: Vec<UnitView> = units
        .into_iter()
        .filter(|u| only.is_none_or(|id| u.unit_id == id))
        .collect();
    // Reminders queued earlier but still unsent (paced, retried) that
    // are no longer wanted go before anything is sent.
    outbox::cancel_reminders_to_undeliverable(m.store).await?;
    let waiting: std::collections::BTreeSet<String> =
        outbox::reminders(m.store, &m.campaign_name())
            .await?
            .into_iter()
            .filter(|r| r.state == OutboxState::Queued)
            .map(|r| r.unit_key)
            .collect();
    for unit in units.iter().filter(|u| waiting.contains(&u.unit_id)) {
        if let Some(why) = reminders::eligibility(&m.config.mailing.schedule, unit, false) {
            let n = outbox::cancel_reminders(m.store, &m.campaign_name(), &unit.unit_id, why.zh())
                .await?;
            tracing::info!(unit = %unit.unit_id, reason = why.zh(), cancelled = n, "queued reminder no longer wanted");
        }
    }
    let mut queued = 0;
    for decision in reminders::due(
        &m.config.mailing.schedule,
        &campaign.deadline,
        &units,
        &sent,
        now,
    ) {
        match decision {
            Decision::Missed { unit_id, slot, .. } => {
                outbox::record_missed(m.store, &m.campaign_name(), &unit_id, &slot, now).await?;
                tracing::warn!(unit = %unit_id, slot = %slot, "reminder slot missed while the service was down");
            }
            Decision::Send {
                unit_id,
                slot,
                overdue,
                ..
            } => {
                let Some(unit) = units.iter().find(|u| u.unit_id == unit_id) else {
                    continue;
                };
                let Some(to) = unit.address.clone() else {
                    continue;
                };
                let mail = reminder_mail(m, unit, &slot, overdue, &to, now);
                if outbox::queue(m.store, &mail, &m.domain, now)
                    .await?
                    .is_some()
                {
                    queued += 1;
                }
            }
        }
    }
    Ok(queued)
}

fn reminder_mail(
    m: &Mailing<'_>,
    unit: &UnitView,
    slot: &str,
    overdue: bool,
    to: &str,
    now: i64,
) -> NewMail {
    let mut values = m.base_values(now);
    values.insert("unit_name", unit.unit_name.clone());
    let reason = match unit.state {
        UnitState::NeedsReview => format!(
            "已收到您单位发来的邮件，但需要人工核对（{}），请检查后重新报送。\n",
            unit.review_reason
        ),
        UnitState::Missing | UnitState::Registered => String::new(),
    };
    values.insert("reason", reason);
    let kind = if overdue {
        MailKind::OverdueReminder
    } else {
        MailKind::Reminder
    };
    let (subject, body) = m.templates.render(kind, &values);
    NewMail {
        campaign: m.campaign_name(),
        unit_key: unit.unit_id.clone(),
        slot: slot.to_string(),
        kind,
        to: to.to_string(),
        subject,
        body,
        in_reply_to: None,
        attachment: None,
    }
}

/// `remind send-now`: a reminder now to every unit still missing (or to
/// `only`), outside the schedule. Each call is its own slot, so it is one
/// mail per unit per call; bounced and registered units are left out.
/// Returns (unit, address, subject) of what was (or would be) queued.
pub async fn queue_manual(
    m: &Mailing<'_>,
    now: i64,
    only: Option<&str>,
    dry_run: bool,
) -> Result<Vec<(String, String, String)>, CampaignError> {
    let Some(campaign) = &m.config.campaign else {
        return Ok(Vec::new());
    };
    let (units, _) = planner_input(m).await?;
    let overdue = now > campaign.deadline.timestamp();
    let slot = format!("manual:{now}");
    let mut out = Vec::new();
    for unit in units
        .iter()
        .filter(|u| only.is_none_or(|id| u.unit_id == id))
    {
        if reminders::eligibility(&m.config.mailing.schedule, unit, overdue).is_some() {
            continue;
        }
        let Some(to) = unit.address.clone() else {
            continue;
        };
        let mail = reminder_mail(m, unit, &slot, overdue, &to, now);
        if !dry_run {
            outbox::queue(m.store, &mail, &m.domain, now).await?;
        }
        out.push((unit.unit_name.clone(), to, mail.subject));
    }
    Ok(out)
}

/// Queues the overdue list (通报) to the office: once automatically after
/// the deadline (`slot = "report:deadline"`), or on demand with a slot of
/// its own. Returns the number of units listed.
pub async fn queue_overdue_report(
    m: &Mailing<'_>,
    now: i64,
    slot: &str,
) -> Result<usize, CampaignError> {
    let Some(campaign) = &m.config.campaign else {
        return Err(CampaignError::Other(
            "配置中没有 [campaign]，无法生成通报".into(),
        ));
    };
    let roster_units = m.roster.map(|r| r.units.as_slice()).unwrap_or_default();
    let ids: Vec<&str> = roster_units.iter().map(|u| u.id.as_str()).collect();
    let progress = m
        .store
        .unit_progress(&ids, m.config.campaign_name())
        .await?;
    let missing: Vec<&crate::parse::roster::Unit> = roster_units
        .iter()
        .zip(&progress)
        .filter(|(_, p)| p.state == UnitState::Missing)
        .map(|(unit, _)| unit)
        .collect();
    let sent = outbox::reminders(m.store, &m.campaign_name()).await?;
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for u in &missing {
        let reminded: Vec<String> = sent
            .iter()
            .filter(|r| r.unit_key == u.id && r.state == OutboxState::Sent)
            .map(|r| m.fmt_time(r.at))
            .collect();
        let reminded_text = if reminded.is_empty() {
            "未发送提醒".to_string()
        } else {
            format!("已提醒 {} 次：{}", reminded.len(), reminded.join("、"))
        };
        lines.push(format!("  {}（{}）", u.name, reminded_text));
        rows.push(vec![
            u.id.clone(),
            u.name.clone(),
            u.category.clone(),
            reminded.len().to_string(),
            reminded.join("、"),
        ]);
    }
    let mut values = m.base_values(now);
    values.insert("count", missing.len().to_string());
    values.insert(
        "units",
        if lines.is_empty() {
            "  （无，所有单位均已报送）".into()
        } else {
            lines.join("\n")
        },
    );
    let (subject, body) = m.templates.render(MailKind::OverdueReport, &values);
    let xlsx = overdue_xlsx(&rows, &campaign.name).map_err(CampaignError::Other)?;
    for office in &m.config.mailing.office {
        let mail = NewMail {
            campaign: m.campaign_name(),
            unit_key: format!("office:{office}"),
            slot: slot.to_string(),
            kind: MailKind::OverdueReport,
            to: office.clone(),
            subject: subject.clone(),
            body: body.clone(),
            in_reply_to: None,
            attachment: Some(("未报送单位名单.xlsx".into(), xlsx.clone())),
        };
        outbox::queue(m.store, &mail, &m.domain, now).await?;
    }
    Ok(missing.len())
}

/// The overdue list as an xlsx workbook.
pub fn overdue_xlsx(rows: &[Vec<String>], title: &str) -> Result<Vec<u8>, String> {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let sheet = wb.add_worksheet();
    let e = |e: rust_xlsxwriter::XlsxError| e.to_string();
    sheet.set_name("未报送单位").map_err(e)?;
    sheet
        .write_string(0, 0, format!("{title}：未报送单位名单"))
        .map_err(e)?;
    for (c, h) in ["单位编号", "单位名称", "类别", "已提醒次数", "提醒时间"]
        .iter()
        .enumerate()
    {
        sheet.write_string(1, c as u16, *h).map_err(e)?;
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            sheet.write_string(r as u32 + 2, c as u16, v).map_err(e)?;
        }
    }
    sheet.set_column_width(1, 30).map_err(e)?;
    sheet.set_column_width(4, 40).map_err(e)?;
    wb.save_to_buffer().map_err(e)
}

/// Seconds all sending pauses after the server judged us a spammer
/// (doubled for each time the same mail met it, up to 8×).
pub const THROTTLE_PAUSE: i64 = 30 * 60;

/// Sends one due outbox mail if pacing allows; returns whether one was
/// handled (sent, retried later or failed).
pub async fn send_step(
    store: &Store,
    mailer: &Mailer,
    pacing: Pacing,
    now: i64,
    day_start: i64,
) -> Result<bool, CampaignError> {
    if outbox::sent_since(store, now - 60).await? >= i64::from(pacing.per_minute)
        || outbox::sent_since(store, day_start).await? >= i64::from(pacing.daily_cap)
    {
        return Ok(false);
    }
    let Some(mail) = outbox::next_due(store, now).await? else {
        return Ok(false);
    };
    // The row (and its Message-ID) is on disk before the mail leaves.
    store.sync().await?;
    match mailer.send(&mail).await {
        Ok(()) => {
            outbox::mark_sent(store, &mail.id, now).await?;
            tracing::info!(mail = %mail.id, unit = %mail.unit_key, kind = mail.kind.stem(), slot = %mail.slot, "mail sent");
        }
        // A day of retries (backoff doubling to an hour) is enough: the
        // mail is then failed and shown in `status` for a person to act.
        Err(SendError::Transient(e)) if mail.attempts + 1 >= MAX_TRANSIENT_ATTEMPTS => {
            let reason = format!("{e}（已重试 {} 次，放弃发送）", mail.attempts + 1);
            outbox::mark_failed(store, &mail.id, &reason).await?;
            tracing::error!(mail = %mail.id, unit = %mail.unit_key, error = %e, "mail given up after repeated transient failures");
        }
        Err(SendError::Transient(e)) => {
            let backoff = 60 * (1_i64 << mail.attempts.clamp(0, 6));
            outbox::mark_retry(store, &mail.id, &e, now + backoff).await?;
            tracing::warn!(mail = %mail.id, unit = %mail.unit_key, error = %e, retry_in = backoff, "mail not sent, will retry");
        }
        Err(SendError::Permanent(e)) => {
            outbox::mark_failed(store, &mail.id, &e).await?;
            tracing::error!(mail = %mail.id, unit = %mail.unit_key, error = %e, "mail refused permanently");
        }
        Err(SendError::Throttled(e)) => {
            // Everything waits, not only this mail: the next one would be
            // refused the same way, and each refusal prolongs the block.
            let pause = THROTTLE_PAUSE * (1_i64 << mail.attempts.clamp(0, 3));
            outbox::mark_retry(store, &mail.id, &e, now + pause).await?;
            outbox::pause_all(store, now + pause).await?;
            tracing::warn!(mail = %mail.id, unit = %mail.unit_key, error = %e, pause, "server asks us to slow down; sending paused");
        }
    }
    Ok(true)
}

/// After a message was processed: a bounce of our own mail marks the
/// address undeliverable; anything else may get a receipt.
pub async fn after_processing(m: &Mailing<'_>, id: &str, now: i64) -> Result<(), CampaignError> {
    let Some(message) = m.store.processed_message(id).await? else {
        return Ok(());
    };
    match message.kind {
        MessageKind::Bounce => {
            let returned = message
                .automation
                .as_ref()
                .map(|a| a.returned.as_slice())
                .unwrap_or_default();
            handle_bounce(m, returned, now).await?;
        }
        MessageKind::Submission | MessageKind::AutoReply => {
            acknowledge(m, &message, now).await?;
        }
    }
    Ok(())
}

/// Sends tried for a mail whose failures are all transient, before it is
/// marked failed.
const MAX_TRANSIENT_ATTEMPTS: i64 = 30;

/// The start of `now`'s local day, for the daily cap.
pub fn day_start(config: &Config, now: i64) -> i64 {
    let tz = config.timezone();
    tz.timestamp_opt(now, 0)
        .single()
        .and_then(|d| d.date_naive().and_hms_opt(0, 0, 0))
        .and_then(|d| tz.from_local_datetime(&d).earliest())
        .map_or(now - 86_400, |d| d.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::message::Automation;

    fn message(kind: MessageKind, from: &str, automation: Option<Automation>) -> ProcessedMessage {
        ProcessedMessage {
            id: "m".into(),
            kind,
            from_addr: Some(from.into()),
            subject: None,
            message_id: None,
            received_at: 0,
            automation,
        }
    }

    #[test]
    fn robots_lists_bounces_and_ourselves_get_no_receipt() {
        let ours = "XXDC2004@163.com";
        let person = Some(Automation::default());
        let submission = |from: &str| message(MessageKind::Submission, from, person.clone());
        assert!(receipt_allowed(&submission("obj@yj.gov.cn"), ours));
        assert!(!receipt_allowed(&submission("xxdc2004@163.com"), ours));
        assert!(!receipt_allowed(
            &message(MessageKind::AutoReply, "obj@yj.gov.cn", person.clone()),
            ours
        ));
        assert!(!receipt_allowed(
            &message(MessageKind::Bounce, "obj@yj.gov.cn", person.clone()),
            ours
        ));
        let set: [fn(&mut Automation); 5] = [
            |a| a.list = true,
            |a| a.bulk = true,
            |a| a.auto_submitted = true,
            |a| a.robot_sender = true,
            |a| a.ours = true,
        ];
        for flag in set {
            let mut automation = Automation::default();
            flag(&mut automation);
            let m = message(
                MessageKind::Submission,
                "a@yj.gov.cn",
                Some(automation.clone()),
            );
            assert!(!receipt_allowed(&m, ours), "{automation:?}");
        }
        // Flags never recorded (processed by an older version): no receipt.
        assert!(!receipt_allowed(
            &message(MessageKind::Submission, "a@yj.gov.cn", None),
            ours
        ));
        let mut no_sender = submission("a@yj.gov.cn");
        no_sender.from_addr = None;
        assert!(!receipt_allowed(&no_sender, ours));
    }

    #[test]
    fn overdue_list_is_a_workbook() {
        let bytes = overdue_xlsx(
            &[vec![
                "a".into(),
                "甲单位".into(),
                "乡镇".into(),
                "2".into(),
                "x".into(),
            ]],
            "登记",
        )
        .expect("xlsx");
        assert!(bytes.starts_with(b"PK"));
    }
}
