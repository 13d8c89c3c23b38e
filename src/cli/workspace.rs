//! The office's workspace on the command line: `review`, `registration`,
//! `export` and `user`. Every decision goes through
//! [`crate::workspace::decide`], as the web pages' do.

use std::io::Read as _;
use std::path::Path;

use chrono::TimeZone;

use super::{CliError, service_config};
use crate::config::Config;
use crate::parse::registration::Field;
use crate::parse::report::render_table;
use crate::parse::roster::Roster;
use crate::store::{Decision, Role, Store};
use crate::workspace::book::value_text;
use crate::workspace::decide::{self, Actor, Refused, decision_line};
use crate::workspace::{book, export, problem_zh, status, users};

/// The export formats of `export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Xlsx,
    Csv,
    Vcf,
}

impl From<Refused> for CliError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Store(e) => CliError::Store(e),
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl From<users::UserError> for CliError {
    fn from(e: users::UserError) -> Self {
        match e {
            users::UserError::Store(e) => CliError::Store(e),
            other => CliError::Failed(other.to_string()),
        }
    }
}

/// The config, its roster (required here) and the store.
async fn open(config: Option<&Path>) -> Result<(Config, Roster, Store), CliError> {
    let config = service_config(config)?;
    let Some(path) = config.roster.as_deref() else {
        return Err(CliError::config(
            "roster",
            "未配置单位名单（roster），无法对应单位",
        ));
    };
    let roster = Roster::load(path)?;
    let store = Store::open(&config.database_url).await?;
    Ok((config, roster, store))
}

/// Who acts: `--by`, else the login name of the shell.
pub(super) fn actor(by: Option<String>, note: Option<String>) -> Actor {
    let by = by
        .filter(|b| !b.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "命令行".into());
    Actor {
        by,
        note: note.filter(|n| !n.trim().is_empty()),
        now: crate::clock::Clock::System.now(),
    }
}

/// `review list [--json]`.
pub(super) async fn review_list(config: Option<&Path>, json: bool) -> Result<(), CliError> {
    let (config, roster, store) = open(config).await?;
    let now = crate::clock::Clock::System.now();
    let status = status::build(&store, &config, Some(&roster), now).await?;
    if json {
        let text = serde_json::to_string(&status.review)
            .map_err(|e| CliError::Failed(format!("无法输出 JSON：{e}")))?;
        println!("{text}");
        return Ok(());
    }
    if status.review.is_empty() {
        println!("没有待人工处理的邮件。");
        return Ok(());
    }
    let mut rows = vec![
        ["邮件", "收到时间", "发件人", "主题", "原因", "相关单位"]
            .map(String::from)
            .to_vec(),
    ];
    for r in &status.review {
        rows.push(vec![
            r.message_id.clone(),
            r.received_at.clone(),
            r.from.clone().unwrap_or_default(),
            r.subject.clone().unwrap_or_default(),
            problem_zh(&r.reason),
            r.unit_id
                .as_deref()
                .and_then(|u| roster.get(u))
                .map(|u| u.name.clone())
                .unwrap_or_default(),
        ]);
    }
    print!("{}", render_table(&rows));
    Ok(())
}

/// `review assign MESSAGE UNIT_ID`.
pub(super) async fn assign(
    config: Option<&Path>,
    message: &str,
    unit: &str,
    actor: Actor,
) -> Result<(), CliError> {
    let (_, roster, store) = open(config).await?;
    let m = decide::assign(&store, &roster, message, unit, &actor).await?;
    let name = decide::unit(&roster, unit)?.name.clone();
    println!(
        "已将邮件“{}”归属到{name}。",
        m.subject.as_deref().unwrap_or(&m.id)
    );
    Ok(())
}

/// `review accept UNIT_ID`.
pub(super) async fn accept(
    config: Option<&Path>,
    unit: &str,
    actor: Actor,
) -> Result<(), CliError> {
    let (config, roster, store) = open(config).await?;
    let latest = decide::accept(&store, &config, &roster, unit, &actor).await?;
    let name = decide::unit(&roster, unit)?.name.clone();
    if latest.problems.is_empty() {
        println!("已确认{name}的登记。");
    } else {
        let problems: Vec<String> = latest.problems.iter().map(|p| problem_zh(p)).collect();
        println!(
            "已确认{name}的登记（以下问题一并接受：{}）。",
            problems.join("、")
        );
    }
    Ok(())
}

/// `review dismiss MESSAGE --note TEXT`.
pub(super) async fn dismiss(
    config: Option<&Path>,
    message: &str,
    actor: Actor,
) -> Result<(), CliError> {
    let (_, _, store) = open(config).await?;
    let m = decide::dismiss(&store, message, &actor).await?;
    println!(
        "已将邮件“{}”标记为非报送：{}",
        m.subject.as_deref().unwrap_or(&m.id),
        actor.note.unwrap_or_default()
    );
    Ok(())
}

/// `registration set UNIT_ID FIELD VALUE`.
pub(super) async fn set(
    config: Option<&Path>,
    unit: &str,
    field: &str,
    value: &str,
    actor: Actor,
) -> Result<(), CliError> {
    let (config, roster, store) = open(config).await?;
    let done = decide::set_field(&store, &config, &roster, unit, field, value, &actor).await?;
    println!(
        "已更正{}的{}：{} → {}",
        decide::unit(&roster, unit)?.name,
        done.field.label_zh(),
        value_text(&done.before),
        value_text(&done.after)
    );
    Ok(())
}

/// `registration show UNIT_ID [--json]`.
pub(super) async fn show(config: Option<&Path>, unit: &str, json: bool) -> Result<(), CliError> {
    let (config, roster, store) = open(config).await?;
    let u = decide::unit(&roster, unit)?;
    let progress = store
        .unit_progress(&[u.id.as_str()], config.campaign_name(), &config.required)
        .await?
        .pop()
        .ok_or_else(|| CliError::Failed(format!("无法读取{}的登记", u.name)))?;
    let decisions = store.decisions_about(&u.id).await?;
    let tz = config.timezone();
    let time = |t: i64| {
        tz.timestamp_opt(t, 0)
            .single()
            .map(|d| d.to_rfc3339())
            .unwrap_or_default()
    };
    let latest = progress.latest.as_ref();
    if json {
        let value = serde_json::json!({
            "unit_id": u.id,
            "unit_name": u.name,
            "state": progress.state,
            "message": latest.map(|l| &l.message),
            "received_at": latest.map(|l| time(l.received_at)),
            "registration": latest.map(|l| &l.fields),
            "problems": latest.map(|l| l.problems.clone()).unwrap_or_default(),
            "corrected": latest.map(|l| l.corrected.clone()).unwrap_or_default(),
            "accepted": latest.is_some_and(|l| l.accepted),
            "assigned": latest.is_some_and(|l| l.assigned),
            "corrected_older": latest.is_some_and(|l| l.corrected_older),
            "submissions": progress.submissions,
            "reminders_sent": progress.reminders_sent,
            "decisions": decisions.iter().map(|d| decision_json(d, &time)).collect::<Vec<_>>(),
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "{}（{}）：{}{}",
        u.name,
        u.id,
        progress.state.zh(),
        latest
            .map(|l| format!("，报送时间 {}", time(l.received_at)))
            .unwrap_or_default()
    );
    if let Some(l) = latest {
        let mut rows = vec![["字段", "名称", "内容", ""].map(String::from).to_vec()];
        for f in Field::ALL {
            rows.push(vec![
                f.path().into(),
                f.label_zh().into(),
                match l.value(f.path()) {
                    serde_json::Value::Null => String::new(),
                    v => value_text(v),
                },
                if l.corrected.iter().any(|c| c == f.path()) {
                    "已更正".into()
                } else {
                    String::new()
                },
            ]);
        }
        print!("{}", render_table(&rows));
        let note = book::note(&progress);
        if !note.is_empty() {
            println!("备注：{note}");
        }
    }
    if !decisions.is_empty() {
        println!("处理记录：");
        for d in &decisions {
            println!("  {}", decision_line(d, &time));
        }
    }
    Ok(())
}

fn decision_json(d: &Decision, time: &dyn Fn(i64) -> String) -> serde_json::Value {
    serde_json::json!({
        "kind": d.kind,
        "message": d.message,
        "unit_id": d.unit_id,
        "field": d.field,
        "before": d.before,
        "after": d.after,
        "note": d.note,
        "by": d.by,
        "at": time(d.at),
    })
}

/// `export --format F --out FILE`.
pub(super) async fn export(
    config: Option<&Path>,
    format: ExportFormat,
    out: &Path,
) -> Result<(), CliError> {
    let (config, roster, store) = open(config).await?;
    let book = book::build(&store, &config, &roster).await?;
    let bytes = match format {
        ExportFormat::Xlsx => {
            export::write_xlsx(&book).map_err(|e| CliError::Failed(e.to_string()))?
        }
        ExportFormat::Csv => export::write_csv(&book),
        ExportFormat::Vcf => export::write_vcf(&book).into_bytes(),
    };
    std::fs::write(out, bytes)
        .map_err(|e| CliError::Failed(format!("无法写入 {}：{e}", out.display())))?;
    println!(
        "已导出 {} 个单位的名册到 {}",
        book.rows.len(),
        out.display()
    );
    Ok(())
}

/// `user add NAME [--role] --password-stdin`.
pub(super) async fn user_add(
    config: Option<&Path>,
    name: &str,
    role: Role,
    password_stdin: bool,
) -> Result<(), CliError> {
    if !password_stdin {
        return Err(CliError::Usage(
            "请用 --password-stdin 从标准输入提供密码（密码不应出现在命令行中）".into(),
        ));
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| CliError::Failed(format!("无法读取标准输入：{e}")))?;
    let password = input.lines().next().unwrap_or_default();
    let config = service_config(config)?;
    let store = Store::open(&config.database_url).await?;
    let now = crate::clock::Clock::System.now();
    let new = users::put(&store, name, password, role, now).await?;
    if new {
        println!("已添加用户 {name}（{}）。", role.zh());
    } else {
        println!(
            "已更新用户 {name} 的密码和权限（{}），其已登录的会话已结束。",
            role.zh()
        );
    }
    Ok(())
}

/// `user list`.
pub(super) async fn user_list(config: Option<&Path>) -> Result<(), CliError> {
    let config = service_config(config)?;
    let store = Store::open(&config.database_url).await?;
    let list = store.users().await?;
    if list.is_empty() {
        println!("还没有用户；用 user add 添加。");
        return Ok(());
    }
    let tz = config.timezone();
    let mut rows = vec![
        ["用户", "权限", "状态", "创建时间"]
            .map(String::from)
            .to_vec(),
    ];
    for u in list {
        rows.push(vec![
            u.name,
            u.role.zh().into(),
            if u.disabled { "已停用" } else { "正常" }.into(),
            tz.timestamp_opt(u.created_at, 0)
                .single()
                .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
        ]);
    }
    print!("{}", render_table(&rows));
    Ok(())
}

/// `user disable NAME`.
pub(super) async fn user_disable(config: Option<&Path>, name: &str) -> Result<(), CliError> {
    let config = service_config(config)?;
    let store = Store::open(&config.database_url).await?;
    users::disable(&store, name).await?;
    println!("已停用用户 {name}，其已登录的会话已结束。");
    Ok(())
}
