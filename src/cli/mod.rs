//! The command line: `parse`, `config check`, and the hidden `__read` child
//! of the attachment sandbox. Each command returns its exit code; messages
//! for people are Chinese.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, EXIT_CONFIG};
use crate::parse::pipeline::Pipeline;
use crate::parse::roster::Roster;
use crate::parse::sandbox::Isolation;

/// The default config file of an installed service.
pub const DEFAULT_CONFIG: &str = "/etc/xxdc-intake/config.toml";

#[derive(Debug, Parser)]
#[command(
    name = "xxdc-intake",
    version,
    about = "永嘉县分管政务信息领导及信息员登记表收集服务"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// 试读邮件（.eml）或附件，显示将会登记的内容（不写入任何数据）
    Parse {
        /// 配置文件（默认 /etc/xxdc-intake/config.toml，若存在）
        #[arg(long)]
        config: Option<PathBuf>,
        /// 单位名单（CSV 或 XLSX），优先于配置文件中的名单
        #[arg(long)]
        roster: Option<PathBuf>,
        /// 以 JSON Lines 输出（每个文件一行）
        #[arg(long)]
        json: bool,
        /// 要读取的文件
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// 运行服务：收取所有邮件来源并处理（由 systemd 启动）
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// 只收取一遍所有来源并处理完毕后退出
        #[arg(long)]
        once: bool,
    },
    /// 查看各单位报送情况、邮件来源状态和待人工处理的邮件
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        /// 以 JSON 输出
        #[arg(long)]
        json: bool,
    },
    /// 对已保存的全部原始邮件重新处理（更换名单或升级程序后使用）
    Reprocess {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// 催报提醒：查看计划或立即发送
    Remind {
        #[command(subcommand)]
        action: RemindAction,
    },
    /// 通报：把尚未报送的单位名单（含附件）发给科室
    Report {
        #[command(subcommand)]
        action: ReportAction,
    },
    /// 数据库操作
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// 配置文件相关操作
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Internal: reads one attachment from stdin in the sandbox child.
    #[command(name = "__read", hide = true)]
    Read {
        format: String,
        limits: String,
        memory_mb: String,
        cpu_seconds: String,
    },
}

#[derive(Debug, Subcommand)]
enum RemindAction {
    /// 显示谁将在何时收到哪一次提醒
    Plan {
        #[arg(long)]
        config: Option<PathBuf>,
        /// 以该时间（本地时间，如“2007-05-19 10:30”）查看，默认为现在
        #[arg(long)]
        at: Option<String>,
    },
    /// 立即向尚未报送的单位发送提醒
    SendNow {
        #[arg(long)]
        config: Option<PathBuf>,
        /// 只提醒这个单位（名单中的编号）
        #[arg(long)]
        unit: Option<String>,
        /// 只显示将发送的邮件，不发送
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ReportAction {
    /// 立即生成并发送未报送单位通报
    Overdue {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DbAction {
    /// 创建或升级数据库结构
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// 检查配置文件是否正确（有误时退出码为 78）
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Read {
            format,
            limits,
            memory_mb,
            cpu_seconds,
        } => crate::parse::sandbox::child_main(&format, &limits, &memory_mb, &cpu_seconds),
        command => {
            init_logging();
            match command {
                Command::Parse {
                    config,
                    roster,
                    json,
                    files,
                } => parse(config.as_deref(), roster.as_deref(), json, &files),
                Command::Config {
                    action: ConfigAction::Check { config },
                } => config_check(config.as_deref()),
                Command::Run { config, once } => with_runtime(run(config, once)),
                Command::Status { config, json } => with_runtime(status(config, json)),
                Command::Reprocess { config } => with_runtime(reprocess(config)),
                Command::Db {
                    action: DbAction::Migrate { config },
                } => with_runtime(migrate(config)),
                Command::Remind {
                    action: RemindAction::Plan { config, at },
                } => with_runtime(remind_plan(config, at)),
                Command::Remind {
                    action:
                        RemindAction::SendNow {
                            config,
                            unit,
                            dry_run,
                        },
                } => with_runtime(remind_send_now(config, unit, dry_run)),
                Command::Report {
                    action: ReportAction::Overdue { config },
                } => with_runtime(report_overdue(config)),
                Command::Read { .. } => 2,
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // One event a line, no colours when journald (not a terminal) reads it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Loads `path`, or the default config file when it exists, or defaults.
fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if Path::new(DEFAULT_CONFIG).exists() => Config::load(Path::new(DEFAULT_CONFIG)),
        None => Ok(Config::defaults()),
    }
}

fn config_check(path: Option<&Path>) -> i32 {
    let path = path.unwrap_or(Path::new(DEFAULT_CONFIG));
    match Config::load(path).and_then(|c| check_files(&c).map(|()| c)) {
        Ok(c) => {
            println!(
                "配置文件 {} 正确：{} 个邮件来源，名单 {}。",
                path.display(),
                c.sources.len(),
                c.roster
                    .as_deref()
                    .map_or_else(|| "未配置".to_string(), |p| p.display().to_string())
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_CONFIG
        }
    }
}

/// Checks what the config points to that can be checked without the
/// network: the roster loads.
fn check_files(config: &Config) -> Result<(), ConfigError> {
    crate::campaign::templates::Templates::load(&config.mailing.templates_dir).map_err(|e| {
        ConfigError {
            key: "report.templates".into(),
            reason: e.to_string(),
        }
    })?;
    if let Some(path) = &config.roster {
        Roster::load(path).map_err(|e| ConfigError {
            key: "roster.path".into(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

fn parse(config: Option<&Path>, roster: Option<&Path>, json: bool, files: &[PathBuf]) -> i32 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    let roster_path = roster
        .map(Path::to_path_buf)
        .or_else(|| config.roster.clone());
    let roster = match roster_path.as_deref().map(Roster::load).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    let pipeline = Pipeline::new(
        roster,
        config.required.clone(),
        Isolation::current_exe(config.limits.child),
        config.limits,
    );
    let mut status = 0;
    let mut reports = Vec::new();
    let stdout = std::io::stdout();
    for file in files {
        let shown = file.display().to_string();
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("无法打开文件 {shown}：{e}");
                status = 1;
                continue;
            }
        };
        let report = pipeline.parse(&shown, &bytes);
        let mut out = stdout.lock();
        let written = if json {
            writeln!(out, "{}", report.to_json())
        } else {
            writeln!(out, "{}", report.to_text())
        };
        if written.is_err() {
            // stdout closed (e.g. piped into `head`): nothing more to say.
            return status;
        }
        if !json {
            reports.push(report);
        }
    }
    if reports.len() > 1 {
        println!(
            "== 汇总（{} 个文件）==\n{}",
            reports.len(),
            crate::parse::report::summary_table(&reports)
        );
    }
    status
}

fn with_runtime(f: impl std::future::Future<Output = i32>) -> i32 {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("无法启动运行环境：{e}");
            70
        }
    }
}

/// Loads the config for a service command, or reports and gives the exit
/// code.
fn service_config(path: Option<PathBuf>) -> Result<Config, i32> {
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    Config::load(&path).map_err(|e| {
        eprintln!("{e}");
        EXIT_CONFIG
    })
}

async fn open_app(config: Config) -> Result<crate::service::daemon::App, i32> {
    let isolation = Isolation::current_exe(config.limits.child);
    crate::service::daemon::App::open(config, isolation, crate::clock::Clock::System)
        .await
        .map_err(|e| {
            eprintln!("{e}");
            match e {
                crate::service::daemon::DaemonError::Config(_)
                | crate::service::daemon::DaemonError::Roster(_) => EXIT_CONFIG,
                _ => 1,
            }
        })
}

async fn run(config: Option<PathBuf>, once: bool) -> i32 {
    let config = match service_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let app = match open_app(config).await {
        Ok(a) => std::sync::Arc::new(a),
        Err(code) => return code,
    };
    let opts = crate::service::daemon::RunOptions { once };
    match crate::service::daemon::run(app, opts, shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "service stopped on an error");
            1
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the service can still be stopped by kill -9.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

async fn status(config: Option<PathBuf>, json: bool) -> i32 {
    let config = match service_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let roster = match config.roster.as_deref().map(Roster::load).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    let store = match crate::store::Store::open(&config.database_url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let now = crate::clock::Clock::System.now();
    match crate::workspace::status::build(&store, &config, roster.as_ref(), now).await {
        Ok(status) if json => {
            println!("{}", serde_json::to_string(&status).unwrap_or_default());
            0
        }
        Ok(status) => {
            print!("{}", status.to_text());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

async fn reprocess(config: Option<PathBuf>) -> i32 {
    let config = match service_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let app = match open_app(config).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let total = match app.intake.store().requeue_all().await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("重新处理 {bar:40} {pos}/{len} 封（{eta}）")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        match app.intake.step(app.clock.now()).await {
            Ok(crate::service::intake::Step::Idle) => break,
            Ok(_) => bar.inc(1),
            Err(e) => {
                bar.abandon();
                eprintln!("{e}");
                return 1;
            }
        }
    }
    bar.finish();
    println!("已重新处理 {total} 封邮件。");
    0
}

async fn migrate(config: Option<PathBuf>) -> i32 {
    let config = match service_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::store::Store::open(&config.database_url).await {
        Ok(_) => {
            println!("数据库结构已是最新：{}", redact_url(&config.database_url));
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The pieces the mail commands need, opened from the config.
struct MailCtx {
    app: crate::service::daemon::App,
    templates: crate::campaign::templates::Templates,
    mailer: Option<crate::campaign::mailer::Mailer>,
}

async fn mail_ctx(config: Option<PathBuf>) -> Result<MailCtx, i32> {
    let config = service_config(config)?;
    if config.campaign.is_none() {
        eprintln!("配置中没有 [campaign]（名称和截止时间），无法安排提醒");
        return Err(EXIT_CONFIG);
    }
    let templates = crate::campaign::templates::Templates::load(&config.mailing.templates_dir)
        .map_err(|e| {
            eprintln!("{e}");
            EXIT_CONFIG
        })?;
    let mailer = match config
        .smtp
        .as_ref()
        .map(crate::campaign::mailer::Mailer::new)
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return Err(EXIT_CONFIG);
        }
    };
    let app = open_app(config).await?;
    Ok(MailCtx {
        app,
        templates,
        mailer,
    })
}

impl MailCtx {
    fn mailing(&self) -> crate::campaign::Mailing<'_> {
        let our = self
            .mailer
            .as_ref()
            .map(|m| m.from_address())
            .unwrap_or_default();
        let domain = self
            .mailer
            .as_ref()
            .map_or_else(|| "localhost".into(), |m| m.domain.clone());
        crate::campaign::Mailing {
            store: self.app.intake.store(),
            config: &self.app.config,
            roster: self.app.roster.as_ref(),
            templates: &self.templates,
            our_address: our,
            domain,
        }
    }

    /// Sends everything queued, paced; returns how many were handled.
    async fn flush(&self) -> Result<usize, crate::campaign::CampaignError> {
        let Some(mailer) = &self.mailer else {
            return Ok(0);
        };
        let pacing = self
            .app
            .config
            .smtp
            .as_ref()
            .map(|s| s.pacing)
            .unwrap_or_default();
        let mut handled = 0;
        loop {
            let now = self.app.clock.now();
            let day = crate::campaign::day_start(&self.app.config, now);
            if crate::campaign::send_step(self.app.intake.store(), mailer, pacing, now, day).await?
            {
                handled += 1;
                continue;
            }
            // Nothing due now: a mail waiting for its retry is left to the
            // service, rather than holding this command for hours.
            if crate::store::outbox::next_due(self.app.intake.store(), now)
                .await?
                .is_none()
            {
                return Ok(handled);
            }
            // Paced: wait a little.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    }
}

fn parse_local(config: &Config, text: &str) -> Option<i64> {
    use chrono::TimeZone;
    let tz = config
        .campaign
        .as_ref()
        .map_or(chrono_tz::Asia::Shanghai, |c| c.timezone);
    let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M").ok()?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|d| d.timestamp())
}

async fn remind_plan(config: Option<PathBuf>, at: Option<String>) -> i32 {
    let ctx = match mail_ctx(config).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let config = &ctx.app.config;
    let now = match at.as_deref() {
        None => ctx.app.clock.now(),
        Some(t) => match parse_local(config, t) {
            Some(n) => n,
            None => {
                eprintln!("时间应写成“2007-05-19 10:30”这样的本地时间：{t}");
                return 2;
            }
        },
    };
    let Some(campaign) = &config.campaign else {
        return EXIT_CONFIG;
    };
    let m = ctx.mailing();
    let (units, sent) = match crate::campaign::planner_input(&m, now).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let lines = crate::campaign::reminders::plan(
        &config.mailing.schedule,
        &campaign.deadline,
        &units,
        &sent,
        now,
    );
    let fmt = |t: i64| {
        use chrono::TimeZone;
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
        crate::campaign::reminders::remaining_zh(&campaign.deadline, now)
    );
    if !config.mailing.reminders_enabled {
        println!("注意：[reminders] enabled = false，服务不会自动发送提醒。");
    }
    let mut rows = vec![["单位", "时段", "时间", "安排"].map(String::from).to_vec()];
    for l in &lines {
        let what = match &l.outcome {
            crate::campaign::reminders::PlanOutcome::DueNow { overdue: false } => {
                "现在发送提醒".to_string()
            }
            crate::campaign::reminders::PlanOutcome::DueNow { overdue: true } => {
                "现在发送逾期提醒".to_string()
            }
            crate::campaign::reminders::PlanOutcome::Later { overdue: false } => {
                "届时仍未报送则提醒".to_string()
            }
            crate::campaign::reminders::PlanOutcome::Later { overdue: true } => {
                "届时仍未报送则发逾期提醒".to_string()
            }
            crate::campaign::reminders::PlanOutcome::Missed => {
                "已错过（服务停止期间），不再补发".to_string()
            }
            crate::campaign::reminders::PlanOutcome::Skipped(skip) => {
                format!("不发送：{}", skip.zh())
            }
        };
        rows.push(vec![l.unit_name.clone(), l.slot.clone(), fmt(l.at), what]);
    }
    print!("{}", crate::parse::report::render_table(&rows));
    0
}

async fn remind_send_now(config: Option<PathBuf>, unit: Option<String>, dry_run: bool) -> i32 {
    let ctx = match mail_ctx(config).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let now = ctx.app.clock.now();
    let m = ctx.mailing();
    let result = crate::campaign::queue_manual(&m, now, unit.as_deref(), dry_run).await;
    let planned = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if planned.is_empty() {
        println!("没有需要提醒的单位。");
        return 0;
    }
    for (unit, to, subject) in &planned {
        println!(
            "{}{unit} <{to}>：{subject}",
            if dry_run { "（试运行）" } else { "" }
        );
    }
    if dry_run {
        println!("试运行：共 {} 封，未发送。", planned.len());
        return 0;
    }
    if ctx.mailer.is_none() {
        eprintln!("配置中没有 [smtp]，邮件已排队但无法发送");
        return EXIT_CONFIG;
    }
    match ctx.flush().await {
        Ok(n) => {
            println!("已处理 {n} 封邮件。");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

async fn report_overdue(config: Option<PathBuf>) -> i32 {
    let ctx = match mail_ctx(config).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if ctx.app.config.mailing.office.is_empty() {
        eprintln!("配置 [report] office 中没有收件地址");
        return EXIT_CONFIG;
    }
    let now = ctx.app.clock.now();
    let m = ctx.mailing();
    match crate::campaign::queue_overdue_report(&m, now, &format!("report:manual:{now}")).await {
        Ok(n) => println!("通报已排队：未报送单位 {n} 个。"),
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    }
    match ctx.flush().await {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
