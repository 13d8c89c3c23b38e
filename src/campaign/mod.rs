//! The mail the service writes for the campaign: receipts (回执) after a
//! message is recorded, reminders (催报) from the schedule, the overdue
//! list (通报) for the office, and bounces of our own mail.
//!
//! Each step decides with pure code (`reminders`, `receipts`, the rules
//! below) and only queues into the outbox; `sending` sends what is queued,
//! paced, and `mailer` talks SMTP.

pub mod mailer;
pub mod receipts;
pub mod reminders;
pub mod sending;
pub mod templates;

use std::collections::BTreeMap;

use chrono::TimeZone;

use crate::campaign::mailer::SendError;
use crate::campaign::reminders::{Decision, Sent, UnitView};
use crate::campaign::templates::{MailKind, Templates};
use crate::config::Config;
use crate::parse::roster::Roster;
use crate::store::outbox::{self, NewMail, OutboxKind, OutboxState};
use crate::store::progress::UnitState;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("发送失败：{0}")]
    Send(#[from] SendError),
    #[error("{0}")]
    Other(String),
}

/// What the campaign's mail is written from: the configuration, the
/// roster, the templates, and who we are.
#[derive(Debug, Clone)]
pub struct Letters {
    pub config: Config,
    pub roster: Option<Roster>,
    pub templates: Templates,
    /// Our own address (never acknowledged); empty without `[smtp]`.
    pub our_address: String,
    /// The domain of our Message-IDs.
    pub domain: String,
}

impl Letters {
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

/// What the mailing steps need: the database and what mail is written from.
#[derive(Debug, Clone, Copy)]
pub struct Mailing<'a> {
    pub store: &'a Store,
    pub letters: &'a Letters,
}

impl<'a> Mailing<'a> {
    /// Every roster unit with its progress in the campaign.
    async fn roster_progress(
        &self,
    ) -> Result<
        Vec<(
            &'a crate::parse::roster::Unit,
            crate::store::progress::UnitProgress,
        )>,
        StoreError,
    > {
        self.store
            .roster_progress(
                self.letters.roster.as_ref(),
                self.letters.config.campaign_name(),
                &self.letters.config.required,
            )
            .await
    }
}

/// Why reminders and the overdue list must wait, or `None` when what the
/// database holds is current: every source (name, last successful poll)
/// has polled successfully since this instance started at `started_at`,
/// and nothing recorded waits for processing (`unprocessed`). Reminding
/// on an older picture tells units that already submitted to submit.
pub fn why_wait(
    sources: &[(String, Option<i64>)],
    started_at: i64,
    unprocessed: i64,
) -> Option<String> {
    let behind: Vec<&str> = sources
        .iter()
        .filter(|(_, ok)| ok.is_none_or(|t| t < started_at))
        .map(|(name, _)| name.as_str())
        .collect();
    let mut reasons = Vec::new();
    if !behind.is_empty() {
        reasons.push(format!(
            "邮件来源 {} 自服务启动以来尚未收取成功",
            behind.join("、")
        ));
    }
    if unprocessed > 0 {
        reasons.push(format!("还有 {unprocessed} 封邮件尚未处理完"));
    }
    (!reasons.is_empty()).then(|| reasons.join("；"))
}

/// Tells the office that reminders have been held since `held.since`
/// (once per hold); returns how many mails were queued.
pub async fn queue_held_notice(
    m: &Mailing<'_>,
    held: &crate::store::Note,
    now: i64,
) -> Result<usize, CampaignError> {
    let mut values = m.letters.base_values(now);
    values.insert("reason", held.value.clone());
    values.insert("since", m.letters.fmt_time(held.since));
    let (subject, body) = m.letters.templates.render(MailKind::RemindersHeld, &values);
    let mut queued = 0;
    for office in &m.letters.config.mailing.office {
        let mail = NewMail {
            campaign: m.letters.campaign_name(),
            unit_key: format!("office:{office}"),
            slot: format!("held:{}", held.since),
            kind: MailKind::RemindersHeld,
            to: office.clone(),
            subject: subject.clone(),
            body: body.clone(),
            in_reply_to: None,
            attachment: None,
        };
        if outbox::queue(m.store, &mail, &m.letters.domain, now)
            .await?
            .is_some()
        {
            queued += 1;
        }
    }
    Ok(queued)
}

/// The units as the reminder planner sees them — missing units first, then
/// those waiting for a person, then the rest, each in roster order — and
/// the reminders already written for them.
pub async fn planner_input(m: &Mailing<'_>) -> Result<(Vec<UnitView>, Vec<Sent>), CampaignError> {
    let progress = m.roster_progress().await?;
    let bounced: Vec<String> = outbox::undeliverable(m.store)
        .await?
        .into_iter()
        .map(|u| u.address)
        .collect();
    let mut units: Vec<UnitView> = progress
        .into_iter()
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
    let sent = outbox::reminders(m.store, &m.letters.campaign_name())
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
    let Some(campaign) = &m.letters.config.campaign else {
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
        outbox::reminders(m.store, &m.letters.campaign_name())
            .await?
            .into_iter()
            .filter(|r| r.state == OutboxState::Queued)
            .map(|r| r.unit_key)
            .collect();
    for unit in units.iter().filter(|u| waiting.contains(&u.unit_id)) {
        if let Some(why) = reminders::eligibility(&m.letters.config.mailing.schedule, unit, false) {
            let n = outbox::cancel_reminders(
                m.store,
                &m.letters.campaign_name(),
                &unit.unit_id,
                why.zh(),
            )
            .await?;
            tracing::info!(unit = %unit.unit_id, reason = why.zh(), cancelled = n, "queued reminder no longer wanted");
        }
    }
    let mut queued = 0;
    for decision in reminders::due(
        &m.letters.config.mailing.schedule,
        &campaign.deadline,
        &units,
        &sent,
        now,
    ) {
        match decision {
            Decision::Missed { unit_id, slot, .. } => {
                outbox::record_missed(m.store, &m.letters.campaign_name(), &unit_id, &slot, now)
                    .await?;
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
                if outbox::queue(m.store, &mail, &m.letters.domain, now)
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
    let mut values = m.letters.base_values(now);
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
    let (subject, body) = m.letters.templates.render(kind, &values);
    NewMail {
        campaign: m.letters.campaign_name(),
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
    let Some(campaign) = &m.letters.config.campaign else {
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
        if reminders::eligibility(&m.letters.config.mailing.schedule, unit, overdue).is_some() {
            continue;
        }
        let Some(to) = unit.address.clone() else {
            continue;
        };
        let mail = reminder_mail(m, unit, &slot, overdue, &to, now);
        if !dry_run {
            outbox::queue(m.store, &mail, &m.letters.domain, now).await?;
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
    let Some(campaign) = &m.letters.config.campaign else {
        return Err(CampaignError::Other(
            "配置中没有 [campaign]，无法生成通报".into(),
        ));
    };
    let missing: Vec<&crate::parse::roster::Unit> = m
        .roster_progress()
        .await?
        .into_iter()
        .filter(|(_, p)| p.state == UnitState::Missing)
        .map(|(unit, _)| unit)
        .collect();
    let sent = outbox::reminders(m.store, &m.letters.campaign_name()).await?;
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for u in &missing {
        let reminded: Vec<String> = sent
            .iter()
            .filter(|r| r.unit_key == u.id && r.state == OutboxState::Sent)
            .map(|r| m.letters.fmt_time(r.at))
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
    let mut values = m.letters.base_values(now);
    values.insert("count", missing.len().to_string());
    values.insert(
        "units",
        if lines.is_empty() {
            "  （无，所有单位均已报送）".into()
        } else {
            lines.join("\n")
        },
    );
    let (subject, body) = m.letters.templates.render(MailKind::OverdueReport, &values);
    let xlsx = overdue_xlsx(&rows, &campaign.name).map_err(CampaignError::Other)?;
    for office in &m.letters.config.mailing.office {
        let mail = NewMail {
            campaign: m.letters.campaign_name(),
            unit_key: format!("office:{office}"),
            slot: slot.to_string(),
            kind: MailKind::OverdueReport,
            to: office.clone(),
            subject: subject.clone(),
            body: body.clone(),
            in_reply_to: None,
            attachment: Some(("未报送单位名单.xlsx".into(), xlsx.clone())),
        };
        outbox::queue(m.store, &mail, &m.letters.domain, now).await?;
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

    #[test]
    fn reminders_wait_for_every_source_and_the_queue() {
        let started = 1000;
        let fine = [("a".to_string(), Some(1000)), ("b".to_string(), Some(1500))];
        assert_eq!(why_wait(&fine, started, 0), None);
        let behind = [("a".to_string(), Some(999)), ("b".to_string(), None)];
        assert_eq!(
            why_wait(&behind, started, 3).as_deref(),
            Some("邮件来源 a、b 自服务启动以来尚未收取成功；还有 3 封邮件尚未处理完")
        );
        assert_eq!(
            why_wait(&fine, started, 1).as_deref(),
            Some("还有 1 封邮件尚未处理完")
        );
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

/// What a correction request says and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrectionRequest {
    pub outbox_id: String,
    pub to: String,
    pub subject: String,
}

/// Queues a polite mail asking the unit to correct its registration
/// (`items`: one line per missing or invalid field), to the address its
/// registration came from, else its roster address. Each call is its own
/// mail (a person clicked), paced and retried like every other. `None`
/// when the unit has no address to write to.
pub async fn queue_correction_request(
    m: &Mailing<'_>,
    unit: &crate::parse::roster::Unit,
    reply_to: Option<(&str, Option<&str>)>,
    items: &[String],
    note: Option<&str>,
    now: i64,
) -> Result<Option<CorrectionRequest>, CampaignError> {
    let bounced: Vec<String> = outbox::undeliverable(m.store)
        .await?
        .into_iter()
        .map(|u| u.address)
        .collect();
    let to = reply_to
        .map(|(from, _)| from.to_string())
        .filter(|a| !bounced.contains(a))
        .or_else(|| unit.emails.iter().find(|e| !bounced.contains(e)).cloned());
    let Some(to) = to else {
        return Ok(None);
    };
    let mut values = m.letters.base_values(now);
    values.insert("unit_name", unit.name.clone());
    values.insert(
        "items",
        items
            .iter()
            .map(|i| format!("  · {i}\n"))
            .collect::<String>(),
    );
    values.insert(
        "note",
        note.filter(|n| !n.trim().is_empty())
            .map(|n| format!("说明：{n}\n"))
            .unwrap_or_default(),
    );
    let (subject, body) = m
        .letters
        .templates
        .render(MailKind::CorrectionRequest, &values);
    let mail = NewMail {
        campaign: m.letters.campaign_name(),
        unit_key: unit.id.clone(),
        slot: format!("ask:{now}:{:08x}", rand::random::<u32>()),
        kind: MailKind::CorrectionRequest,
        to: to.clone(),
        subject: subject.clone(),
        body,
        in_reply_to: reply_to.and_then(|(_, id)| id.map(String::from)),
        attachment: None,
    };
    let Some(outbox_id) = outbox::queue(m.store, &mail, &m.letters.domain, now).await? else {
        return Ok(None);
    };
    Ok(Some(CorrectionRequest {
        outbox_id,
        to,
        subject,
    }))
}
