//! The command line: one file per command group, each command a function
//! that returns `Result<(), CliError>`; [`main`] turns the one error that
//! comes back into a Chinese message on stderr and an exit code
//! ([`CliError::exit_code`]). Messages for people are Chinese.
//!
//! Exit codes: 0 done; 1 failed or refused; 2 usage; 70 the runtime could
//! not start; 75 `run --once` could not poll every source (try again
//! later); 78 configuration (file, roster, templates).

mod config;
mod logging;
mod parse;
mod remind;
mod report;
mod service;
mod status;
mod workspace;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, EXIT_CONFIG};
use crate::parse::sandbox::Isolation;
use crate::parse::sandbox::worker::{EXIT_WORKER_USAGE, WorkerArgs};
use crate::service::daemon::{App, DaemonError};

/// The default config file of an installed service.
pub const DEFAULT_CONFIG: &str = "/etc/xxdc-intake/config.toml";

/// The exit code of a command-line usage error.
const EXIT_USAGE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "xxdc-intake",
    version,
    about = "永嘉县分管政务信息领导及信息员登记表收集服务",
    after_help = "配置文件和输出格式的说明见 docs/ 文件夹。"
)]
struct Cli {
    /// 配置文件（默认 /etc/xxdc-intake/config.toml；配置项说明见 docs/config.md）
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// 试读邮件（.eml）或附件，显示将会登记的内容（不写入任何数据）
    Parse {
        /// 单位名单（CSV 或 XLSX），优先于配置文件中的名单
        #[arg(long)]
        roster: Option<PathBuf>,
        /// 以 JSON Lines 输出（每个文件一行，格式见 docs/parse-json.md）
        #[arg(long)]
        json: bool,
        /// 要读取的文件
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// 运行服务：收取所有邮件来源并处理（由 systemd 启动）
    Run {
        /// 只收取一遍所有来源并处理完毕后退出
        #[arg(long)]
        once: bool,
    },
    /// 查看各单位报送情况、邮件来源状态和待人工处理的邮件
    Status {
        /// 以 JSON 输出（格式见 docs/status-json.md）
        #[arg(long)]
        json: bool,
    },
    /// 对已保存的全部原始邮件重新处理（更换名单或升级程序后使用）
    Reprocess,
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
    /// 待人工处理的邮件：查看、归属到单位、确认、标记为非报送
    Review {
        #[command(subcommand)]
        action: ReviewAction,
    },
    /// 单位登记：查看或更正某一字段
    Registration {
        #[command(subcommand)]
        action: RegistrationAction,
    },
    /// 导出名册（xlsx、csv 或 vCard 通讯录）
    Export {
        /// 文件格式
        #[arg(long, value_enum)]
        format: workspace::ExportFormat,
        /// 写入的文件
        #[arg(long)]
        out: PathBuf,
    },
    /// 工作台（网页）的用户
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// 只运行工作台网页（不收取邮件），如在第二台机器上读取同一 PostgreSQL
    Web,
    /// Internal: a reader worker; reads attachments sent over stdin.
    #[command(name = "__worker", hide = true)]
    Worker {
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        memory_mb: u64,
        /// The OCR models' folder: scans are read by OCR.
        #[arg(long)]
        ocr_models: Option<PathBuf>,
    },
    /// Internal: confines itself as a worker does and prints what it could
    /// still do (for the tests).
    #[command(name = "__confine-probe", hide = true)]
    ConfineProbe { existing: PathBuf, scratch: PathBuf },
}

#[derive(Debug, Subcommand)]
enum RemindAction {
    /// 显示谁将在何时收到哪一次提醒
    Plan {
        /// 以该时间（本地时间，如“2007-05-19 10:30”）查看，默认为现在
        #[arg(long)]
        at: Option<String>,
    },
    /// 立即向尚未报送的单位发送提醒
    SendNow {
        /// 只提醒这个单位（名单中的编号）
        #[arg(long)]
        unit: Option<String>,
        /// 只显示将发送的邮件，不发送
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ReviewAction {
    /// 列出待人工处理的邮件（最早的在前）
    List {
        /// 以 JSON 输出（与 status --json 的 review 相同）
        #[arg(long)]
        json: bool,
    },
    /// 把邮件归属到某单位（扫描件会得到一份空白登记，再用 registration set 逐项填写）
    Assign {
        /// 邮件（review list 中的 message_id）
        message: String,
        /// 单位编号（名单中的编号）
        unit_id: String,
        #[command(flatten)]
        who: Who,
    },
    /// 确认某单位当前的登记（其余问题一并接受）
    Accept {
        /// 单位编号
        unit_id: String,
        #[command(flatten)]
        who: Who,
    },
    /// 标记邮件不是报送（垃圾邮件、咨询、重复），须说明原因
    Dismiss {
        /// 邮件（review list 中的 message_id）
        message: String,
        /// 处理人（默认为当前登录名）
        #[arg(long)]
        by: Option<String>,
        /// 原因
        #[arg(long, required = true)]
        note: String,
    },
}

/// Who decides, and why.
#[derive(Debug, clap::Args)]
struct Who {
    /// 处理人（默认为当前登录名）
    #[arg(long)]
    by: Option<String>,
    /// 说明
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, Subcommand)]
enum RegistrationAction {
    /// 更正单位当前登记中的一个字段（值按读取表格的规则检查，无效时拒绝）
    Set {
        /// 单位编号
        unit_id: String,
        /// 字段，写作“分组.字段”，如 officer.mobile、leader.name
        field: String,
        /// 新的值（空字符串表示清空）
        value: String,
        #[command(flatten)]
        who: Who,
    },
    /// 显示单位当前的登记和处理记录
    Show {
        /// 单位编号
        unit_id: String,
        /// 以 JSON 输出
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// 添加用户（或为已有用户设置新密码和权限），密码从标准输入读取
    Add {
        /// 用户名（字母、数字、点、下划线、连字符）
        name: String,
        /// 权限：editor（可处理）或 viewer（只读）
        #[arg(long, default_value = "editor", value_parser = parse_role)]
        role: crate::store::Role,
        /// 从标准输入读取密码（第一行）
        #[arg(long)]
        password_stdin: bool,
    },
    /// 列出用户
    List,
    /// 停用用户并结束其会话
    Disable {
        /// 用户名
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ReportAction {
    /// 立即生成并发送未报送单位通报
    Overdue,
}

#[derive(Debug, Subcommand)]
enum DbAction {
    /// 创建或升级数据库结构
    Migrate,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// 检查配置文件是否正确（有误时退出码为 78）
    Check,
}

/// Why a command did not succeed; its message is for people (Chinese).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration (file, roster, templates, mail settings) is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command was used wrongly (a value it cannot take).
    #[error("{0}")]
    Usage(String),
    /// The command could not do its work.
    #[error("{0}")]
    Failed(String),
    /// The async runtime could not start.
    #[error("无法启动运行环境：{0}")]
    Runtime(std::io::Error),
    /// The service could not open what it runs on, or stopped on an error.
    #[error(transparent)]
    Service(#[from] DaemonError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Campaign(#[from] crate::campaign::CampaignError),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) => EXIT_CONFIG,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Runtime(_) => 70,
            CliError::Service(e) => match e {
                DaemonError::Config(_)
                | DaemonError::Roster(_)
                | DaemonError::Templates(_)
                | DaemonError::Mailer(_) => EXIT_CONFIG,
                DaemonError::Store(_) | DaemonError::Intake(_) | DaemonError::Source(_) => 1,
                // EX_TEMPFAIL: a cron job or a person runs it again later.
                DaemonError::PassIncomplete(_) => 75,
            },
            CliError::Failed(_) | CliError::Store(_) | CliError::Campaign(_) => 1,
        }
    }

    /// A configuration error that is not about one key (a missing section).
    fn config(key: &str, reason: impl Into<String>) -> Self {
        CliError::Config(ConfigError {
            key: key.into(),
            reason: reason.into(),
        })
    }
}

impl From<crate::parse::roster::RosterError> for CliError {
    fn from(e: crate::parse::roster::RosterError) -> Self {
        CliError::Service(DaemonError::Roster(e))
    }
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    // Names, mobiles and home phones: whatever umask a cron job or a shell
    // has, every file and folder we create is private to our user.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let in_child = std::env::args().nth(1).as_deref() == Some("__worker");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if in_child => {
            // The parent reads this line into the attachment's error.
            eprintln!("附件读取进程的参数有误：{}", first_line(&e.to_string()));
            return EXIT_WORKER_USAGE;
        }
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match &cli.command {
        Command::Worker {
            memory_mb,
            ocr_models,
        } => {
            return crate::parse::sandbox::worker::worker_main(WorkerArgs {
                memory_mb: *memory_mb,
                ocr_models: ocr_models.clone(),
            });
        }
        Command::ConfineProbe { existing, scratch } => {
            return match crate::parse::sandbox::confine::probe(existing, scratch) {
                Ok(probe) => {
                    println!("{}", serde_json::to_string(&probe).unwrap_or_default());
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    70
                }
            };
        }
        _ => {}
    }
    logging::init();
    match dispatch(cli.config.as_deref(), cli.command) {
        Ok(()) => 0,
        Err(e) => {
            // One line, whatever the error carries (a path, a server's
            // answer): under systemd this is a journal entry.
            eprintln!("{}", logging::escape_controls(&e.to_string()));
            e.exit_code()
        }
    }
}

fn dispatch(config: Option<&Path>, command: Command) -> Result<(), CliError> {
    match command {
        Command::Parse {
            roster,
            json,
            files,
        } => parse::parse(config, roster.as_deref(), json, &files),
        Command::Config {
            action: ConfigAction::Check,
        } => config::check(config),
        Command::Run { once } => with_runtime(service::run(config, once)),
        Command::Status { json } => with_runtime(status::status(config, json)),
        Command::Reprocess => with_runtime(service::reprocess(config)),
        Command::Db {
            action: DbAction::Migrate,
        } => with_runtime(service::migrate(config)),
        Command::Remind {
            action: RemindAction::Plan { at },
        } => with_runtime(remind::plan(config, at)),
        Command::Remind {
            action: RemindAction::SendNow { unit, dry_run },
        } => with_runtime(remind::send_now(config, unit, dry_run)),
        Command::Report {
            action: ReportAction::Overdue,
        } => with_runtime(report::overdue(config)),
        Command::Review { action } => with_runtime(review(config, action)),
        Command::Registration {
            action:
                RegistrationAction::Set {
                    unit_id,
                    field,
                    value,
                    who,
                },
        } => with_runtime(workspace::set(
            config,
            &unit_id,
            &field,
            &value,
            workspace::actor(who.by, who.note),
        )),
        Command::Registration {
            action: RegistrationAction::Show { unit_id, json },
        } => with_runtime(workspace::show(config, &unit_id, json)),
        Command::Export { format, out } => with_runtime(workspace::export(config, format, &out)),
        Command::User {
            action:
                UserAction::Add {
                    name,
                    role,
                    password_stdin,
                },
        } => with_runtime(workspace::user_add(config, &name, role, password_stdin)),
        Command::User {
            action: UserAction::List,
        } => with_runtime(workspace::user_list(config)),
        Command::User {
            action: UserAction::Disable { name },
        } => with_runtime(workspace::user_disable(config, &name)),
        Command::Web => with_runtime(service::web(config)),
        Command::Worker { .. } | Command::ConfineProbe { .. } => {
            Err(CliError::Usage("__worker 只用于附件读取子进程".into()))
        }
    }
}

async fn review(config: Option<&Path>, action: ReviewAction) -> Result<(), CliError> {
    match action {
        ReviewAction::List { json } => workspace::review_list(config, json).await,
        ReviewAction::Assign {
            message,
            unit_id,
            who,
        } => {
            workspace::assign(
                config,
                &message,
                &unit_id,
                workspace::actor(who.by, who.note),
            )
            .await
        }
        ReviewAction::Accept { unit_id, who } => {
            workspace::accept(config, &unit_id, workspace::actor(who.by, who.note)).await
        }
        ReviewAction::Dismiss { message, by, note } => {
            workspace::dismiss(config, &message, workspace::actor(by, Some(note))).await
        }
    }
}

fn parse_role(text: &str) -> Result<crate::store::Role, String> {
    crate::store::Role::parse(text).ok_or_else(|| format!("权限应为 editor 或 viewer：{text}"))
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

fn with_runtime(
    f: impl std::future::Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?
        .block_on(f)
}

/// The config of a command that may run without one (`parse`): the file
/// given, else the installed one when it exists, else the defaults.
fn config_or_defaults(path: Option<&Path>) -> Result<Config, CliError> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None if Path::new(DEFAULT_CONFIG).exists() => Config::load(Path::new(DEFAULT_CONFIG))?,
        None => Config::defaults(),
    })
}

/// The config of a service command: the file given, else the installed
/// one.
fn service_config(path: Option<&Path>) -> Result<Config, CliError> {
    Ok(Config::load(path.unwrap_or(Path::new(DEFAULT_CONFIG)))?)
}

/// The service's pieces (database, archive, roster, templates, mailer),
/// opened from the config file.
async fn open_app(path: Option<&Path>) -> Result<App, CliError> {
    open_app_with(service_config(path)?).await
}

async fn open_app_with(config: Config) -> Result<App, CliError> {
    let isolation = Isolation::current_exe(config.limits.child, config.workers);
    Ok(App::open(config, isolation, crate::clock::Clock::System).await?)
}

/// The app for a campaign command: refused without a `[campaign]`.
async fn open_campaign_app(path: Option<&Path>) -> Result<App, CliError> {
    let config = service_config(path)?;
    if config.campaign.is_none() {
        return Err(CliError::config(
            "campaign",
            "缺少 [campaign]（名称和截止时间），无法安排提醒",
        ));
    }
    open_app_with(config).await
}
