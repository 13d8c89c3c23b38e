//! The command line: `parse`, `config check`, and the hidden `__read` child
//! of the attachment sandbox. Each command returns its exit code; messages
//! for people are Chinese.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, EXIT_CONFIG};
use crate::pipeline::Pipeline;
use crate::roster::Roster;
use crate::sandbox::Isolation;

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
        } => crate::sandbox::child_main(&format, &limits, &memory_mb, &cpu_seconds),
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
                Command::Read { .. } => 2,
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
            crate::report::summary_table(&reports)
        );
    }
    status
}
