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
use crate::campaign::reminders::{Decision, Sent, UnitState, UnitView};
use crate::campaign::templates::{MailKind, Templates};
use crate::config::Config;
use crate::parse::roster::Roster;
use crate::store::outbox::{self, NewMail};
use crate::store::{Store, StoreError};
use crate::workspace::status;

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
        self.config
            .campaign
            .as_ref()
            .map_or_else(|| "default".into(), |c| c.name.clone())
    }

    fn fmt_time(&self, t: i64) -> String {
        let tz = self
            .config
            .campaign
            .as_ref()
            .map_or(chrono_tz::Asia::Shanghai, |c| c.timezone);
        tz.timestamp_opt(t, 0)
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

/// Whether a sender must never get an automatic reply: bounces,
/// auto-replies, mailing lists, `noreply` robots, ourselves (RFC 3834).
pub fn must_not_reply(
    from: &str,
    kind: &str,
    list_id: Option<&str>,
    auto_submitted: Option<&str>,
    ours: &str,
) -> bool {
    let from = from.to_lowercase();
    let local = from.split('@').next().unwrap_or("");
    let robot = [
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "mailer-daemon",
        "postmaster",
        "bounce",
    ]
    .iter()
    .any(|r| local.contains(r));
    kind != "submission"
        || list_id.is_some()
        || auto_submitted.is_some_and(|a| !a.trim().eq_ignore_ascii_case("no"))
        || robot
        || from == ours.to_lowercase()
}

/// `Precedence: bulk / junk / list`: never answered (RFC 3834 §2).
fn bulk(raw: &[u8]) -> bool {
    mail_parser::MessageParser::default()
        .parse_headers(raw)
        .and_then(|m| {
            m.header_raw("Precedence")
                .map(|v| v.trim().to_ascii_lowercase())
        })
        .is_some_and(|v| matches!(v.as_str(), "bulk" | "junk" | "list"))
}

/// The Message-IDs a message replies to (`In-Reply-To`, `References`),
/// in angle brackets.
fn parents(raw: &[u8]) -> Vec<String> {
    let Some(m) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for value in [m.in_reply_to(), m.references()] {
        if let Some(list) = value.as_text_list() {
            ids.extend(list.iter().map(|id| format!("<{id}>")));
        } else if let Some(id) = value.as_text() {
            ids.push(format!("<{id}>"));
        }
    }
    ids
}

/// Queues the receipt for a processed message, if one is due.
pub async fn acknowledge(
    m: &Mailing<'_>,
    message: &str,
    raw: &[u8],
    now: i64,
) -> Result<bool, CampaignError> {
    if !m.config.mailing.acks_enabled {
        return Ok(false);
    }
    let parsed = crate::parse::message::parse_envelope(raw);
    let Some(from) = parsed.from.clone() else {
        return Ok(false);
    };
    let row = message_summary(m.store, message).await?;
    let Some(row) = row else { return Ok(false) };
    if must_not_reply(
        &from,
        &row.kind,
        parsed.list_id.as_deref(),
        parsed.auto_submitted.as_deref(),
        &m.our_address,
    ) || bulk(raw)
    {
        return Ok(false);
    }
    let regs = registrations_of(m.store, message).await?;
    // A reply to one of our own mails that brings no form is an
    // auto-responder that does not say so (or a person writing back):
    // answering it could go on forever.
    if regs.is_empty() {
        for parent in parents(raw) {
            if outbox::is_ours(m.store, &parent).await? {
                return Ok(false);
            }
        }
    }
    let problems = problems_of(m.store, message).await?;
    let mut values = m.base_values(now);
    values.insert("subject", row.subject.clone().unwrap_or_default());
    values.insert("received_at", m.fmt_time(row.received_at));
    let problem_text = if problems.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = problems.iter().map(|p| format!("  · {p}")).collect();
        format!("请注意以下问题：\n{}\n", lines.join("\n"))
    };
    values.insert("problems", problem_text);
    let credited = regs.iter().find(|r| r.unit_id.is_some());
    let (kind, unit_key) = match credited {
        Some(reg) => {
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
            (MailKind::Ack, reg.unit_id.clone().unwrap_or_default())
        }
        None => (MailKind::AckUnmatched, String::new()),
    };
    let (subject, body) = m.templates.render(kind, &values);
    let mail = NewMail {
        campaign: m.campaign_name(),
        unit_key,
        slot: format!("ack:{message}"),
        kind: kind.stem().into(),
        to: from,
        subject,
        body,
        in_reply_to: row.message_id.clone(),
        attachment: None,
    };
    Ok(outbox::queue(m.store, &mail, &m.domain, now)
        .await?
        .is_some())
}

/// Reads a bounce: finds which of our mails it reports on and marks that
/// address undeliverable. Returns the address when one was marked.
pub async fn handle_bounce(
    m: &Mailing<'_>,
    raw: &[u8],
    now: i64,
) -> Result<Option<String>, CampaignError> {
    let text = bounce_text(raw);
    // Our Message-IDs and outbox header travel in the returned original or
    // in the report's text part.
    let mut candidates = Vec::new();
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("x-xxdc-outbox:") {
            candidates.push(("outbox", line[14..].trim().to_string()));
        }
        if let Some(start) = line
            .find(&format!("@{}>", m.domain))
            .and_then(|at| line[..at].rfind("<xxdc-"))
            && let Some(end) = line[start..].find('>')
        {
            candidates.push(("message_id", line[start..start + end + 1].to_string()));
        }
    }
    for (how, value) in candidates {
        let found = match how {
            "outbox" => outbox::by_id(m.store, &value).await?,
            _ => outbox::by_message_id(m.store, &value).await?,
        };
        if let Some((id, unit, to)) = found {
            let unit = (!unit.is_empty()).then_some(unit);
            outbox::mark_undeliverable(m.store, &to, unit.as_deref(), Some(&id), "退信", now)
                .await?;
            tracing::warn!(address = %to, unit = ?unit, "address bounced; no further reminders");
            return Ok(Some(to));
        }
    }
    Ok(None)
}

/// The raw bounce plus the decoded content of each of its parts: servers
/// return the original base64-encoded as often as not, and our headers are
/// only readable once decoded.
fn bounce_text(raw: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    if let Some(msg) = mail_parser::MessageParser::default().parse(raw) {
        let mut stack = vec![msg];
        let mut budget = 64;
        while let Some(m) = stack.pop() {
            for part in &m.parts {
                budget -= 1;
                if budget == 0 {
                    return text;
                }
                match &part.body {
                    mail_parser::PartType::Message(inner) => {
                        text.push('\n');
                        text.push_str(&String::from_utf8_lossy(inner.raw_message()));
                        stack.push(inner.clone().into_owned());
                    }
                    other => {
                        text.push('\n');
                        text.push_str(&String::from_utf8_lossy(other_contents(other)));
                    }
                }
            }
        }
    }
    text
}

fn other_contents<'a>(body: &'a mail_parser::PartType<'_>) -> &'a [u8] {
    match body {
        mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => t.as_bytes(),
        mail_parser::PartType::Binary(b) | mail_parser::PartType::InlineBinary(b) => b.as_ref(),
        _ => &[],
    }
}

/// The units as the reminder planner sees them, and what was sent.
pub async fn planner_input(
    m: &Mailing<'_>,
    now: i64,
) -> Result<(Vec<UnitView>, Vec<Sent>), CampaignError> {
    let st = status::build(m.store, m.config, m.roster, now).await?;
    let bounced: Vec<String> = outbox::undeliverable(m.store)
        .await?
        .into_iter()
        .map(|(a, _, _)| a)
        .collect();
    let units = st
        .units
        .iter()
        .map(|u| {
            let roster_unit = m.roster.and_then(|r| r.get(&u.unit_id));
            let address =
                roster_unit.and_then(|ru| ru.emails.iter().find(|e| !bounced.contains(e)).cloned());
            let all_bounced = roster_unit.is_some_and(|ru| {
                !ru.emails.is_empty() && ru.emails.iter().all(|e| bounced.contains(e))
            });
            UnitView {
                unit_id: u.unit_id.clone(),
                unit_name: u.unit_name.clone(),
                address,
                state: match u.state {
                    "registered" => UnitState::Registered,
                    "needs_review" => UnitState::NeedsReview(u.problems.join("、")),
                    _ => UnitState::Missing,
                },
                undeliverable: all_bounced,
            }
        })
        .collect();
    let sent = outbox::reminders(m.store, &m.campaign_name())
        .await?
        .into_iter()
        .map(|r| Sent {
            unit_id: r.unit_key,
            slot: r.slot,
            at: r.at,
            missed: r.kind == "missed",
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
    let (units, sent) = planner_input(m, now).await?;
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
            .filter(|r| r.state == "queued")
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
    let reason = match &unit.state {
        UnitState::NeedsReview(why) => {
            format!("已收到您单位发来的邮件，但需要人工核对（{why}），请检查后重新报送。\n")
        }
        _ => String::new(),
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
        kind: kind.stem().into(),
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
    let (units, _) = planner_input(m, now).await?;
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
    let st = status::build(m.store, m.config, m.roster, now).await?;
    let sent = outbox::reminders(m.store, &m.campaign_name()).await?;
    let missing: Vec<&status::UnitStatus> =
        st.units.iter().filter(|u| u.state == "missing").collect();
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for u in &missing {
        let reminded: Vec<String> = sent
            .iter()
            .filter(|r| r.unit_key == u.unit_id && r.state == "sent")
            .map(|r| m.fmt_time(r.at))
            .collect();
        let reminded_text = if reminded.is_empty() {
            "未发送提醒".to_string()
        } else {
            format!("已提醒 {} 次：{}", reminded.len(), reminded.join("、"))
        };
        lines.push(format!("  {}（{}）", u.unit_name, reminded_text));
        rows.push(vec![
            u.unit_id.clone(),
            u.unit_name.clone(),
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
            kind: MailKind::OverdueReport.stem().into(),
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
            tracing::info!(to = %mail.to, kind = %mail.kind, slot = %mail.slot, "mail sent");
        }
        // A day of retries (backoff doubling to an hour) is enough: the
        // mail is then failed and shown in `status` for a person to act.
        Err(SendError::Transient(e)) if mail.attempts + 1 >= MAX_TRANSIENT_ATTEMPTS => {
            let reason = format!("{e}（已重试 {} 次，放弃发送）", mail.attempts + 1);
            outbox::mark_failed(store, &mail.id, &reason).await?;
            tracing::error!(to = %mail.to, error = %e, "mail given up after repeated transient failures");
        }
        Err(SendError::Transient(e)) => {
            let backoff = 60 * (1_i64 << mail.attempts.clamp(0, 6));
            outbox::mark_retry(store, &mail.id, &e, now + backoff).await?;
            tracing::warn!(to = %mail.to, error = %e, retry_in = backoff, "mail not sent, will retry");
        }
        Err(SendError::Permanent(e)) => {
            outbox::mark_failed(store, &mail.id, &e).await?;
            tracing::error!(to = %mail.to, error = %e, "mail refused permanently");
        }
        Err(SendError::Throttled(e)) => {
            // Everything waits, not only this mail: the next one would be
            // refused the same way, and each refusal prolongs the block.
            let pause = THROTTLE_PAUSE * (1_i64 << mail.attempts.clamp(0, 3));
            outbox::mark_retry(store, &mail.id, &e, now + pause).await?;
            outbox::pause_all(store, now + pause).await?;
            tracing::warn!(to = %mail.to, error = %e, pause, "server asks us to slow down; sending paused");
        }
    }
    Ok(true)
}

/// The raw bytes of a stored message.
pub async fn raw_of(
    store: &Store,
    archive: &crate::service::archive::Archive,
    id: &str,
) -> Result<Option<Vec<u8>>, CampaignError> {
    use sqlx::Row;
    let row = sqlx::query("SELECT archive_path FROM message WHERE id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await
        .map_err(StoreError::from)?;
    let Some(row) = row else { return Ok(None) };
    let path: String = row.try_get(0).map_err(StoreError::from)?;
    archive
        .read(&path)
        .map(Some)
        .map_err(|e| CampaignError::Other(format!("无法读取存档邮件：{e}")))
}

/// After a message was processed: a bounce of our own mail marks the
/// address undeliverable; anything else may get a receipt.
pub async fn after_processing(
    m: &Mailing<'_>,
    id: &str,
    raw: &[u8],
    now: i64,
) -> Result<(), CampaignError> {
    match message_summary(m.store, id).await? {
        Some(s) if s.kind == "bounce" => {
            handle_bounce(m, raw, now).await?;
        }
        Some(_) => {
            acknowledge(m, id, raw, now).await?;
        }
        None => {}
    }
    Ok(())
}

/// What a receipt needs to know about a processed message.
#[derive(Debug, Clone)]
struct Summary {
    kind: String,
    subject: Option<String>,
    message_id: Option<String>,
    received_at: i64,
}

async fn message_summary(store: &Store, id: &str) -> Result<Option<Summary>, StoreError> {
    use sqlx::Row;
    let row = sqlx::query("SELECT COALESCE(kind, 'submission'), subject, message_id, received_at FROM message WHERE id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.map(|r| {
        Ok(Summary {
            kind: r.try_get(0)?,
            subject: r.try_get(1)?,
            message_id: r.try_get(2)?,
            received_at: r.try_get(3)?,
        })
    })
    .transpose()
}

#[derive(Debug, Clone)]
struct Reg {
    unit_id: Option<String>,
    fields: serde_json::Value,
}

async fn registrations_of(store: &Store, id: &str) -> Result<Vec<Reg>, StoreError> {
    use sqlx::Row;
    let rows =
        sqlx::query("SELECT unit_id, fields FROM registration WHERE message = $1 ORDER BY idx")
            .bind(id)
            .fetch_all(store.pool())
            .await?;
    rows.iter()
        .map(|r| {
            let fields: String = r.try_get(1)?;
            Ok(Reg {
                unit_id: r.try_get(0)?,
                fields: serde_json::from_str(&fields).unwrap_or_default(),
            })
        })
        .collect()
}

async fn problems_of(store: &Store, id: &str) -> Result<Vec<String>, StoreError> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT text FROM problem WHERE message = $1 ORDER BY idx")
        .bind(id)
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Sends tried for a mail whose failures are all transient, before it is
/// marked failed.
const MAX_TRANSIENT_ATTEMPTS: i64 = 30;

/// The start of `now`'s local day, for the daily cap.
pub fn day_start(config: &Config, now: i64) -> i64 {
    let tz = config
        .campaign
        .as_ref()
        .map_or(chrono_tz::Asia::Shanghai, |c| c.timezone);
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
    fn robots_lists_and_bounces_get_no_receipt() {
        let ours = "xxdc2004@163.com";
        assert!(!must_not_reply(
            "obj@yj.gov.cn",
            "submission",
            None,
            None,
            ours
        ));
        assert!(must_not_reply(
            "obj@yj.gov.cn",
            "auto_reply",
            None,
            None,
            ours
        ));
        assert!(must_not_reply(
            "mailer-daemon@163.com",
            "submission",
            None,
            None,
            ours
        ));
        assert!(must_not_reply(
            "noreply@qq.com",
            "submission",
            None,
            None,
            ours
        ));
        assert!(must_not_reply(
            "a@yj.gov.cn",
            "submission",
            Some("<list.yj.gov.cn>"),
            None,
            ours
        ));
        assert!(must_not_reply(
            "a@yj.gov.cn",
            "submission",
            None,
            Some("auto-replied"),
            ours
        ));
        assert!(!must_not_reply(
            "a@yj.gov.cn",
            "submission",
            None,
            Some("no"),
            ours
        ));
        assert!(must_not_reply(
            "XXDC2004@163.com",
            "submission",
            None,
            None,
            ours
        ));
    }

    #[test]
    fn bulk_mail_and_replies_are_recognised() {
        assert!(bulk(b"From: a@b.c\r\nPrecedence: Bulk\r\n\r\nx"));
        assert!(bulk(b"From: a@b.c\r\nPrecedence: junk\r\n\r\nx"));
        assert!(!bulk(b"From: a@b.c\r\nPrecedence: first-class\r\n\r\nx"));
        assert!(!bulk(b"From: a@b.c\r\n\r\nx"));
        let raw = b"From: a@b.c\r\nIn-Reply-To: <xxdc-1@163.com>\r\n\
References: <m0@yj.gov.cn> <xxdc-1@163.com>\r\n\r\nx";
        assert_eq!(
            parents(raw),
            vec!["<xxdc-1@163.com>", "<m0@yj.gov.cn>", "<xxdc-1@163.com>"]
        );
        assert!(parents(b"From: a@b.c\r\n\r\nx").is_empty());
    }

    #[test]
    fn our_ids_are_found_in_a_base64_returned_original() {
        use base64::Engine;
        let original =
            "Message-ID: <xxdc-0001@163.com>\r\nX-Xxdc-Outbox: 0001\r\nSubject: x\r\n\r\nbody\r\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(original);
        let bounce = format!(
            "From: MAILER-DAEMON@163.com\r\nSubject: 系统退信\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n\
             --b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        );
        assert!(!bounce.contains("X-Xxdc-Outbox"));
        let text = bounce_text(bounce.as_bytes());
        assert!(text.contains("X-Xxdc-Outbox: 0001"), "{text}");
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
