//! `remind plan` and `remind send-now`: the reminder schedule as it stands,
//! and reminders sent now, through the same outbox and sending as the
//! service's.

use std::path::Path;

use chrono::TimeZone;

use super::{CliError, open_campaign_app};
use crate::campaign::reminders;
use crate::config::Config;
use crate::service::daemon::{App, HELD_NOTE, SendUntil};

/// `remind plan [--at TIME]`: who gets which reminder when.
pub(super) async fn plan(config: Option<&Path>, at: Option<String>) -> Result<(), CliError> {
    let app = open_campaign_app(config).await?;
    let config = &app.config;
    let now = match at.as_deref() {
        None => app.clock.now(),
        Some(t) => parse_local(config, t).ok_or_else(|| {
            CliError::Usage(format!("时间应写成“2007-05-19 10:30”这样的本地时间：{t}"))
        })?,
    };
    let Some(campaign) = &config.campaign else {
        return Ok(());
    };
    let (units, sent) = crate::campaign::planner_input(&app.mailing()).await?;
    let lines = reminders::plan(
        &config.mailing.schedule,
        &campaign.deadline,
        &units,
        &sent,
        now,
    );
    let fmt = |t: i64| {
        campaign
            .timezone
            .timestamp_opt(t, 0)
            .single()
            .map(|d| d.format("%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    println!(
        "{}：截止 {}，查看时间 {}（{}）",
        campaign.name,
        campaign.deadline.format("%Y-%m-%d %H:%M"),
        fmt(now),
        reminders::remaining_zh(&campaign.deadline, now)
    );
    if !config.mailing.reminders_enabled {
        println!("注意：[reminders] enabled = false，服务不会自动发送提醒。");
    }
    let mut rows = vec![["单位", "时段", "时间", "安排"].map(String::from).to_vec()];
    for l in &lines {
        rows.push(vec![
            l.unit_name.clone(),
            l.slot.clone(),
            fmt(l.at),
            l.outcome.zh(),
        ]);
    }
    print!("{}", crate::parse::report::render_table(&rows));
    Ok(())
}

/// `remind send-now [--unit ID] [--dry-run]`.
pub(super) async fn send_now(
    config: Option<&Path>,
    unit: Option<String>,
    dry_run: bool,
) -> Result<(), CliError> {
    let app = open_campaign_app(config).await?;
    warn_if_behind(&app).await?;
    let now = app.clock.now();
    let planned =
        crate::campaign::queue_manual(&app.mailing(), now, unit.as_deref(), dry_run).await?;
    if planned.is_empty() {
        println!("没有需要提醒的单位。");
        return Ok(());
    }
    for (unit, to, subject) in &planned {
        println!(
            "{}{unit} <{to}>：{subject}",
            if dry_run { "（试运行）" } else { "" }
        );
    }
    if dry_run {
        println!("试运行：共 {} 封，未发送。", planned.len());
        return Ok(());
    }
    if app.mailer.is_none() {
        return Err(CliError::config(
            "smtp",
            "缺少 [smtp]，邮件已排队但无法发送",
        ));
    }
    let handled = app.send_queued(SendUntil::NothingDue).await?;
    app.close().await;
    println!("已处理 {handled} 封邮件。");
    Ok(())
}

/// Warns when the service has not caught up: a reminder sent now may go
/// to a unit whose submission is still in the mailbox or the queue.
async fn warn_if_behind(app: &App) -> Result<(), CliError> {
    let store = app.intake.store();
    if let Some(held) = store.read_note(HELD_NOTE).await? {
        eprintln!(
            "注意：服务的催报提醒正在等待（{}），现在发出的提醒可能发给已经报送的单位。",
            held.value
        );
    }
    let unprocessed = store.unprocessed().await?;
    if unprocessed > 0 {
        eprintln!("注意：还有 {unprocessed} 封邮件尚未处理完，其中可能有单位的报送。");
    }
    Ok(())
}

/// A local time `2007-05-19 10:30` in the campaign's time zone.
fn parse_local(config: &Config, text: &str) -> Option<i64> {
    let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M").ok()?;
    config
        .timezone()
        .from_local_datetime(&naive)
        .earliest()
        .map(|d| d.timestamp())
}
