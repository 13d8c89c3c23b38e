//! The configuration file (every key is described for users in
//! `docs/config.md`): read once, checked once.
//!
//! [`RawConfig`] is what serde reads (unknown keys are errors: a typo must
//! not silently turn a feature off); [`Config`] is the checked form the rest
//! of the program uses, with relative paths resolved against the config
//! file's folder. Secrets are never in the file: only the path or variable
//! that holds them, and [`Secret`] never prints its value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::parse::pipeline::Limits;
use crate::parse::registration::Field;
use crate::parse::sandbox::pool::PoolConfig;

/// The exit code for a configuration error (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub archive: RawArchive,
    #[serde(default)]
    pub roster: Option<RawRoster>,
    #[serde(default)]
    pub campaign: Option<RawCampaign>,
    #[serde(default, rename = "source")]
    pub sources: Vec<RawSource>,
    #[serde(default)]
    pub smtp: Option<RawSmtp>,
    #[serde(default)]
    pub parse: RawParse,
    #[serde(default)]
    pub limits: Limits,
    /// `[workers]`: the warm reader processes.
    #[serde(default)]
    pub workers: PoolConfig,
    #[serde(default)]
    pub service: RawService,
    #[serde(default)]
    pub reminders: RawReminders,
    #[serde(default)]
    pub acknowledgements: RawAcknowledgements,
    #[serde(default)]
    pub report: RawReport,
    #[serde(default)]
    pub web: Option<RawWeb>,
}

/// `[web]`: the office's workspace in a browser.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    /// Address and port, e.g. `127.0.0.1:8080` (default).
    pub listen: Option<String>,
    /// PEM certificate chain and private key: served over HTTPS when both
    /// are given.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// How long a login lasts (default 8h).
    pub session: Option<String>,
    /// Served behind a reverse proxy that terminates TLS: cookies get
    /// `Secure` although this program speaks plain HTTP.
    pub behind_tls_proxy: Option<bool>,
}

/// `[reminders]`: the 催报 schedule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReminders {
    pub enabled: Option<bool>,
    /// Offsets from the deadline's day with a time: `-2d 10:00`.
    pub slots: Option<Vec<String>>,
    pub min_gap: Option<String>,
    pub max_per_unit: Option<usize>,
    pub skip_weekends: Option<bool>,
    pub grace: Option<String>,
    pub include_needs_review: Option<bool>,
    /// How long reminders may be held back, waiting for a source to catch
    /// up, before the office is told (default 1h).
    pub hold_limit: Option<String>,
}

/// `[acknowledgements]`: the 回执 sent after a message is recorded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcknowledgements {
    pub enabled: Option<bool>,
}

/// `[report]`: the office that gets the overdue list (通报) and signs mail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    pub office: Option<Vec<String>>,
    pub office_name: Option<String>,
    pub templates: Option<String>,
}

/// How the daemon runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// A source without a successful poll for this long is shown as stalled
    /// and logged as an error once (default 30m).
    pub stall_after: Option<String>,
    /// How long a worker's claim on a message holds without a heartbeat
    /// before another worker may take the message (default 5m; renewed
    /// every third of it while the message is processed).
    pub claim_lease: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoster {
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCampaign {
    pub name: String,
    pub deadline: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "Asia/Shanghai".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: String,
    pub kind: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub ca_file: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub mailbox: Option<String>,
    pub poll_interval: Option<String>,
    pub path: Option<String>,
    /// First start: take messages since this date (`2007-05-10`), not the
    /// whole mailbox history.
    pub since: Option<String>,
    /// After a message is recorded: `none` (default), `flag` or `move`.
    pub after_action: Option<String>,
    /// The keyword set by `after_action = "flag"` (default `$XxdcRecorded`).
    pub flag: Option<String>,
    /// The folder for `after_action = "move"`.
    pub move_to: Option<String>,
    /// Send the IMAP ID command after login (163.com requires it; default true).
    pub send_id: Option<bool>,
    /// Use IDLE when the server offers it (default true).
    pub idle: Option<bool>,
    /// Seconds for every network call (default 60).
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub transport: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub ca_file: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub from: Option<String>,
    pub dir: Option<String>,
    /// Mails per minute at most (163 rejects bursts as spam).
    pub rate_per_minute: Option<u32>,
    /// Mails per day at most.
    pub daily_cap: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParse {
    /// Field paths that must be filled (`officer.mobile` …).
    pub required: Option<Vec<String>>,
    /// Authserv-ids of the receiving server whose `Authentication-Results`
    /// are believed (e.g. `mx.163.com`); unset: the topmost header.
    pub trusted_authserv: Option<Vec<String>>,
    /// Read scans by OCR (default true, when the models are installed).
    pub ocr: Option<bool>,
    /// The folder of the OCR models (default: `$XXDC_OCR_MODELS`, else
    /// `/usr/share/xxdc-intake/ocr`, else `ocr-models` beside the program's
    /// folder, for a development build).
    pub ocr_models: Option<String>,
    /// The office's own phone/fax numbers and addresses (as printed in the
    /// notice): never taken as a unit's values. The `[smtp] from` and
    /// `[report] office` addresses are added.
    pub office_contacts: Option<Vec<String>>,
}

/// A configuration error: the key and the reason, in Chinese.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("配置错误：{key}：{reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Where a secret comes from; its value is read only when needed.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    File(PathBuf),
    Env(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value; only where it lives.
        match self {
            Secret::File(p) => write!(f, "Secret(file {})", p.display()),
            Secret::Env(v) => write!(f, "Secret(env {v})"),
        }
    }
}

impl Secret {
    /// Reads the secret's value (trimmed); the error names where it was
    /// looked for, never the value.
    pub fn read(&self) -> Result<String, ConfigError> {
        match self {
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    ConfigError::new(
                        "password_file",
                        format!("无法读取密码文件 {}（{e}）", p.display()),
                    )
                }),
            Secret::Env(v) => std::env::var(v)
                .map(|s| s.trim().to_string())
                .map_err(|_| ConfigError::new("password_env", format!("环境变量 {v} 未设置"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    Implicit,
    StartTls,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub name: String,
    pub deadline: chrono::DateTime<chrono_tz::Tz>,
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    Imap(Box<ImapSettings>),
    /// A folder; `poll_interval` is how often it is looked at (default 10s).
    Directory {
        path: PathBuf,
        poll_interval: Duration,
    },
}

/// What to do on the server once a message is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAction {
    None,
    Flag(String),
    Move(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub ca_file: Option<PathBuf>,
    pub username: String,
    pub password: Secret,
    pub mailbox: String,
    pub poll_interval: Duration,
    pub since: Option<chrono::NaiveDate>,
    pub after_action: AfterAction,
    pub send_id: bool,
    pub idle: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SmtpTransport {
    Smtp {
        host: String,
        port: u16,
        tls: Tls,
        ca_file: Option<PathBuf>,
        username: Option<String>,
        password: Option<Secret>,
    },
    File {
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Smtp {
    pub transport: SmtpTransport,
    pub from: String,
    pub pacing: crate::campaign::mailer::Pacing,
}

/// Mail the service sends: acknowledgements, reminders, the overdue list.
#[derive(Debug, Clone, PartialEq)]
pub struct Mailing {
    pub reminders_enabled: bool,
    /// How long reminders may wait for the sources to catch up before the
    /// office is told.
    pub hold_limit: Duration,
    pub schedule: crate::campaign::reminders::Schedule,
    pub acks_enabled: bool,
    /// Who gets the overdue list (通报).
    pub office: Vec<String>,
    /// How mail is signed (`{office}`).
    pub office_name: String,
    pub templates_dir: PathBuf,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: Option<PathBuf>,
    pub database_url: String,
    pub archive_dir: PathBuf,
    pub roster: Option<PathBuf>,
    pub campaign: Option<Campaign>,
    pub sources: Vec<Source>,
    pub smtp: Option<Smtp>,
    pub required: Vec<Field>,
    /// See `RawParse::trusted_authserv`.
    pub trusted_authserv: Vec<String>,
    pub limits: Limits,
    pub workers: PoolConfig,
    /// The office's own numbers and addresses (`parse.office_contacts`,
    /// `[smtp] from`, `[report] office`): never a unit's values.
    pub office_contacts: Vec<String>,
    /// The OCR models' folder, when scans are read by OCR.
    pub ocr_models: Option<PathBuf>,
    pub stall_after: Duration,
    pub claim_lease: Duration,
    pub mailing: Mailing,
    pub web: Option<Web>,
}

/// The checked `[web]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    pub listen: std::net::SocketAddr,
    pub tls: Option<WebTls>,
    pub session: Duration,
    pub behind_tls_proxy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The campaign's time zone when none is configured.
pub const DEFAULT_TIMEZONE: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

/// The campaign name used in the outbox when no `[campaign]` is configured.
const DEFAULT_CAMPAIGN: &str = "default";

impl Config {
    /// The campaign's time zone (Asia/Shanghai without a `[campaign]`).
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.campaign
            .as_ref()
            .map_or(DEFAULT_TIMEZONE, |c| c.timezone)
    }

    /// The campaign's name, which keys its mail in the outbox.
    pub fn campaign_name(&self) -> &str {
        self.campaign.as_ref().map_or(DEFAULT_CAMPAIGN, |c| &c.name)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                format!("无法读取配置文件（{e}）"),
            )
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| toml_error(&e))?;
        // Absolute, so that paths taken from it never depend on the working
        // directory of whoever runs us.
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
            .unwrap_or_default();
        let mut config = Self::check(raw, &base)?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// The built-in defaults, used when no config file is given.
    pub fn defaults() -> Self {
        Self::check(RawConfig::default(), Path::new(".")).unwrap_or_else(|_| unreachable_defaults())
    }

    /// Checks a raw config; relative paths are taken from `base`.
    pub fn check(raw: RawConfig, base: &Path) -> Result<Self, ConfigError> {
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let database_url = match raw.database.url {
            Some(url)
                if url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://") =>
            {
                resolve_sqlite(&url, base)
            }
            Some(url) => {
                return Err(ConfigError::new(
                    "database.url",
                    format!("应为 sqlite:// 文件路径或 postgres:// 地址，而不是“{url}”"),
                ));
            }
            None => "sqlite:///var/lib/xxdc-intake/xxdc.db".into(),
        };
        let archive_dir = raw
            .archive
            .dir
            .as_deref()
            .map_or_else(|| PathBuf::from("/var/lib/xxdc-intake/messages"), resolve);
        let roster = raw.roster.as_ref().map(|r| resolve(&r.path));
        let campaign = raw.campaign.map(check_campaign).transpose()?;
        let mut sources = Vec::new();
        for (i, s) in raw.sources.into_iter().enumerate() {
            if sources.iter().any(|x: &Source| x.name == s.name) {
                return Err(ConfigError::new(
                    format!("source[{i}].name"),
                    format!("来源名称“{}”重复", s.name),
                ));
            }
            sources.push(check_source(i, s, &resolve)?);
        }
        let smtp = raw.smtp.map(|s| check_smtp(s, &resolve)).transpose()?;
        let ocr_models = ocr_models(&raw.parse, &resolve)?;
        let required = match raw.parse.required {
            None => crate::parse::pipeline::DEFAULT_REQUIRED.to_vec(),
            Some(list) => list
                .iter()
                .map(|p| {
                    Field::from_path(p).ok_or_else(|| {
                        ConfigError::new(
                            "parse.required",
                            format!("没有名为“{p}”的字段（例如 officer.mobile）"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let trusted_authserv = raw.parse.trusted_authserv.clone().unwrap_or_default();
        if let Some(bad) = trusted_authserv
            .iter()
            .find(|id| id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == ';'))
        {
            return Err(ConfigError::new(
                "parse.trusted_authserv",
                format!("应为收件服务器的名称（如 mx.163.com），而不是“{bad}”"),
            ));
        }
        check_limits(&raw.limits)?;
        let stall_after = duration_at_least(
            "service.stall_after",
            raw.service.stall_after.as_deref(),
            Duration::from_secs(30 * 60),
            60,
            "应为“30m”这样的时长且不少于 1 分钟",
        )?;
        let claim_lease = duration_at_least(
            "service.claim_lease",
            raw.service.claim_lease.as_deref(),
            Duration::from_secs(300),
            2,
            "应为“5m”这样的时长且不少于 2 秒",
        )?;
        let mailing = check_mailing(&raw.reminders, &raw.acknowledgements, &raw.report, &resolve)?;
        let office_contacts = check_office_contacts(
            raw.parse.office_contacts.as_deref().unwrap_or_default(),
            smtp.as_ref().map(|s| s.from.as_str()),
            &mailing.office,
        )?;
        Ok(Self {
            path: None,
            database_url,
            archive_dir,
            roster,
            campaign,
            sources,
            smtp,
            required,
            trusted_authserv,
            limits: raw.limits,
            workers: check_workers(raw.workers)?,
            office_contacts,
            ocr_models,
            stall_after,
            claim_lease,
            mailing,
            web: raw.web.map(|w| check_web(w, &resolve)).transpose()?,
        })
    }
}

fn unreachable_defaults() -> Config {
    // `check` cannot fail on an empty RawConfig; keep a value regardless.
    Config {
        path: None,
        database_url: "sqlite:///var/lib/xxdc-intake/xxdc.db".into(),
        archive_dir: PathBuf::from("/var/lib/xxdc-intake/messages"),
        roster: None,
        campaign: None,
        sources: Vec::new(),
        smtp: None,
        required: crate::parse::pipeline::DEFAULT_REQUIRED.to_vec(),
        trusted_authserv: Vec::new(),
        limits: Limits::default(),
        workers: PoolConfig::default(),
        office_contacts: Vec::new(),
        ocr_models: None,
        stall_after: Duration::from_secs(30 * 60),
        claim_lease: Duration::from_secs(300),
        web: None,
        mailing: Mailing {
            reminders_enabled: true,
            hold_limit: DEFAULT_HOLD_LIMIT,
            schedule: crate::campaign::reminders::Schedule::default(),
            acks_enabled: true,
            office: Vec::new(),
            office_name: DEFAULT_OFFICE.into(),
            templates_dir: PathBuf::from("/etc/xxdc-intake/templates"),
        },
    }
}

const DEFAULT_OFFICE: &str = "永嘉县人民政府办公室信息督查科";

const DEFAULT_HOLD_LIMIT: Duration = Duration::from_secs(3600);

fn check_mailing(
    r: &RawReminders,
    a: &RawAcknowledgements,
    p: &RawReport,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Mailing, ConfigError> {
    let defaults = crate::campaign::reminders::Schedule::default();
    let duration = |key: &str,
                    value: Option<&str>,
                    default: chrono::Duration|
     -> Result<chrono::Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v)
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .ok_or_else(|| {
                    ConfigError::new(key, format!("应为“20h”“30m”这样的时长，而不是“{v}”"))
                }),
        }
    };
    let slots = match &r.slots {
        None => defaults.slots.clone(),
        Some(list) => list
            .iter()
            .map(|s| {
                crate::campaign::reminders::Slot::parse(s).ok_or_else(|| {
                    ConfigError::new(
                        "reminders.slots",
                        format!("应为“-2d 10:00”（截止日前两天10点）这样的写法，而不是“{s}”"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let schedule = crate::campaign::reminders::Schedule {
        slots,
        min_gap: duration("reminders.min_gap", r.min_gap.as_deref(), defaults.min_gap)?,
        max_per_unit: r.max_per_unit.unwrap_or(defaults.max_per_unit),
        skip_weekends: r.skip_weekends.unwrap_or(defaults.skip_weekends),
        grace: duration("reminders.grace", r.grace.as_deref(), defaults.grace)?,
        include_needs_review: r
            .include_needs_review
            .unwrap_or(defaults.include_needs_review),
    };
    let office = p.office.clone().unwrap_or_default();
    if let Some(bad) = office.iter().find(|o| !o.contains('@')) {
        return Err(ConfigError::new(
            "report.office",
            format!("不是有效的邮箱地址：“{bad}”"),
        ));
    }
    Ok(Mailing {
        reminders_enabled: r.enabled.unwrap_or(true),
        hold_limit: duration_at_least(
            "reminders.hold_limit",
            r.hold_limit.as_deref(),
            DEFAULT_HOLD_LIMIT,
            60,
            "应为“1h”这样的时长且不少于 1 分钟",
        )?,
        schedule,
        acks_enabled: a.enabled.unwrap_or(true),
        office,
        office_name: p
            .office_name
            .clone()
            .unwrap_or_else(|| DEFAULT_OFFICE.into()),
        templates_dir: resolve(p.templates.as_deref().unwrap_or("templates")),
    })
}

fn toml_error(e: &toml::de::Error) -> ConfigError {
    let message = e.message().to_string();
    let key = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
        .map_or_else(|| "（配置文件）".to_string(), String::from);
    let reason = if message.starts_with("unknown field") {
        "不认识的配置项（是否拼写有误？）".to_string()
    } else if message.starts_with("missing field") {
        format!(
            "缺少必填项：{}",
            message.trim_start_matches("missing field ")
        )
    } else {
        format!("格式有误（{}）", message.trim())
    };
    let at = e
        .span()
        .map(|s| format!("（位置 {}）", s.start))
        .unwrap_or_default();
    ConfigError::new(key, format!("{reason}{at}"))
}

fn resolve_sqlite(url: &str, base: &Path) -> String {
    // sqlite:///abs/path stays; sqlite://rel/path and sqlite:rel are taken
    // from the config file's folder, like every other relative path.
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return url.to_string();
    };
    let path = rest.trim_start_matches("//");
    if path.starts_with('/') || path == ":memory:" {
        url.to_string()
    } else {
        format!("sqlite://{}", base.join(path).display())
    }
}

fn check_campaign(c: RawCampaign) -> Result<Campaign, ConfigError> {
    let timezone: chrono_tz::Tz = c.timezone.parse().map_err(|_| {
        ConfigError::new(
            "campaign.timezone",
            format!("不认识的时区“{}”（例如 Asia/Shanghai）", c.timezone),
        )
    })?;
    let naive = chrono::NaiveDateTime::parse_from_str(&c.deadline, "%Y-%m-%d %H:%M")
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(&c.deadline, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(23, 59, 59).unwrap_or_default())
        })
        .map_err(|_| {
            ConfigError::new(
                "campaign.deadline",
                format!(
                    "应为“2007-05-20 23:59”这样的本地时间，而不是“{}”",
                    c.deadline
                ),
            )
        })?;
    let deadline = naive
        .and_local_timezone(timezone)
        .earliest()
        .ok_or_else(|| ConfigError::new("campaign.deadline", "该时间在所选时区中不存在"))?;
    if c.name.trim().is_empty() {
        return Err(ConfigError::new("campaign.name", "不能为空"));
    }
    Ok(Campaign {
        name: c.name,
        deadline,
        timezone,
    })
}

fn check_tls(key: &str, tls: Option<&str>, host: &str) -> Result<Tls, ConfigError> {
    let tls = match tls.unwrap_or("implicit") {
        "implicit" => Tls::Implicit,
        "starttls" => Tls::StartTls,
        "none" => Tls::None,
        other => {
            return Err(ConfigError::new(
                key,
                format!("应为 implicit、starttls 或 none，而不是“{other}”"),
            ));
        }
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if tls == Tls::None && !loopback {
        return Err(ConfigError::new(
            key,
            format!("不加密连接只允许用于本机（127.0.0.1），{host} 必须使用 implicit 或 starttls"),
        ));
    }
    Ok(tls)
}

fn check_secret(
    key: &str,
    file: Option<&str>,
    env: Option<&str>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Option<Secret>, ConfigError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key,
            "password_file 与 password_env 只能填写一个",
        )),
        (Some(f), None) => Ok(Some(Secret::File(resolve(f)))),
        (None, Some(v)) => Ok(Some(Secret::Env(v.to_string()))),
        (None, None) => Ok(None),
    }
}

/// `60s`, `5m`, `1h`, or a number of seconds.
/// Where the OCR models are, if scans are to be read: a configured folder
/// must hold them; otherwise the usual places are tried, and without models
/// scans are recorded unread as before.
fn ocr_models(
    raw: &RawParse,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Option<PathBuf>, ConfigError> {
    if raw.ocr == Some(false) {
        return Ok(None);
    }
    if let Some(dir) = &raw.ocr_models {
        let dir = resolve(dir);
        return match crate::parse::ocr::models_present(&dir) {
            Ok(()) => Ok(Some(dir)),
            Err(why) => Err(ConfigError::new("parse.ocr_models", why)),
        };
    }
    let exe_side = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|p| p.join("ocr-models")));
    let found = std::env::var_os("XXDC_OCR_MODELS")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/share/xxdc-intake/ocr")])
        .chain(exe_side)
        .find(|dir| crate::parse::ocr::models_present(dir).is_ok());
    Ok(found)
}

fn check_web(raw: RawWeb, resolve: &dyn Fn(&str) -> PathBuf) -> Result<Web, ConfigError> {
    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen = listen.parse().map_err(|_| {
        ConfigError::new(
            "web.listen",
            format!("应为“127.0.0.1:8080”这样的地址和端口，而不是“{listen}”"),
        )
    })?;
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some(WebTls {
            cert: resolve(&cert),
            key: resolve(&key),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "web.tls_key",
                "给出了 tls_cert，还需要 tls_key",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "web.tls_cert",
                "给出了 tls_key，还需要 tls_cert",
            ));
        }
    };
    let session = duration_at_least(
        "web.session",
        raw.session.as_deref(),
        Duration::from_secs(8 * 3600),
        60,
        "应为“8h”这样的时长且不少于 1 分钟",
    )?;
    Ok(Web {
        listen,
        tls,
        session,
        behind_tls_proxy: raw.behind_tls_proxy.unwrap_or(false),
    })
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "s" | "" => n,
        "m" | "min" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// A duration key: its default when absent, else a duration of at least
/// `min_seconds`; `expected` says what was expected, in Chinese.
fn duration_at_least(
    key: &str,
    value: Option<&str>,
    default: Duration,
    min_seconds: u64,
    expected: &str,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v)
            .filter(|d| d.as_secs() >= min_seconds)
            .ok_or_else(|| ConfigError::new(key, format!("{expected}，而不是“{v}”"))),
    }
}

fn check_source(
    i: usize,
    s: RawSource,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Source, ConfigError> {
    let key = |k: &str| format!("source[{i}].{k}");
    let kind = match s.kind.as_str() {
        "imap" => check_imap(&s, &key, resolve)?,
        "directory" => {
            let path = s
                .path
                .as_deref()
                .ok_or_else(|| ConfigError::new(key("path"), "directory 来源必须填写文件夹路径"))?;
            let poll_interval = duration_at_least(
                &key("poll_interval"),
                s.poll_interval.as_deref(),
                Duration::from_secs(10),
                1,
                "应为“10s”这样的时长且不少于 1 秒",
            )?;
            SourceKind::Directory {
                path: resolve(path),
                poll_interval,
            }
        }
        other => {
            return Err(ConfigError::new(
                key("kind"),
                format!("应为 imap 或 directory，而不是“{other}”"),
            ));
        }
    };
    if s.name.trim().is_empty() {
        return Err(ConfigError::new(key("name"), "不能为空"));
    }
    Ok(Source { name: s.name, kind })
}

/// An IMAP `[[source]]`; `key` names its keys in errors.
fn check_imap(
    s: &RawSource,
    key: &dyn Fn(&str) -> String,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<SourceKind, ConfigError> {
    let host = s
        .host
        .clone()
        .ok_or_else(|| ConfigError::new(key("host"), "IMAP 来源必须填写服务器地址"))?;
    let tls = check_tls(&key("tls"), s.tls.as_deref(), &host)?;
    let port = s
        .port
        .unwrap_or(if tls == Tls::Implicit { 993 } else { 143 });
    let username = s
        .username
        .clone()
        .ok_or_else(|| ConfigError::new(key("username"), "IMAP 来源必须填写用户名（邮箱地址）"))?;
    let password = check_secret(
        &key("password_file"),
        s.password_file.as_deref(),
        s.password_env.as_deref(),
        resolve,
    )?
    .ok_or_else(|| {
        ConfigError::new(
            key("password_file"),
            "必须填写 password_file 或 password_env（163 邮箱请使用授权码）",
        )
    })?;
    let poll_interval = duration_at_least(
        &key("poll_interval"),
        s.poll_interval.as_deref(),
        Duration::from_secs(60),
        5,
        "应为“60s”“5m”这样的时长且不少于 5 秒",
    )?;
    let since = s
        .since
        .as_deref()
        .map(|d| {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                ConfigError::new(
                    key("since"),
                    format!("应为“2007-05-10”这样的日期，而不是“{d}”"),
                )
            })
        })
        .transpose()?;
    let after_action = match s.after_action.as_deref().unwrap_or("none") {
        "none" => AfterAction::None,
        "flag" => AfterAction::Flag(s.flag.clone().unwrap_or_else(|| "$XxdcRecorded".into())),
        "move" => AfterAction::Move(s.move_to.clone().ok_or_else(|| {
            ConfigError::new(
                key("move_to"),
                "after_action = \"move\" 时必须填写目标文件夹 move_to",
            )
        })?),
        other => {
            return Err(ConfigError::new(
                key("after_action"),
                format!("应为 none、flag 或 move，而不是“{other}”（默认 none，从不删除邮件）"),
            ));
        }
    };
    let timeout = duration_at_least(
        &key("timeout"),
        s.timeout.as_deref(),
        Duration::from_secs(60),
        1,
        "应为“60s”这样的时长",
    )?;
    Ok(SourceKind::Imap(Box::new(ImapSettings {
        host,
        port,
        tls,
        ca_file: s.ca_file.as_deref().map(resolve),
        username,
        password,
        mailbox: s.mailbox.clone().unwrap_or_else(|| "INBOX".into()),
        poll_interval,
        since,
        after_action,
        send_id: s.send_id.unwrap_or(true),
        idle: s.idle.unwrap_or(true),
        timeout,
    })))
}

fn check_smtp(s: RawSmtp, resolve: &dyn Fn(&str) -> PathBuf) -> Result<Smtp, ConfigError> {
    let from = s.from.clone().ok_or_else(|| {
        ConfigError::new(
            "smtp.from",
            "必须填写发件人，例如“信息督查科 <xxdc2004@163.com>”",
        )
    })?;
    if !from.contains('@') {
        return Err(ConfigError::new(
            "smtp.from",
            format!("不是有效的邮箱地址：“{from}”"),
        ));
    }
    let transport = match s.transport.as_str() {
        "smtp" => {
            let host = s
                .host
                .clone()
                .ok_or_else(|| ConfigError::new("smtp.host", "必须填写 SMTP 服务器地址"))?;
            let tls = check_tls("smtp.tls", s.tls.as_deref(), &host)?;
            let port = s.port.unwrap_or(match tls {
                Tls::Implicit => 465,
                Tls::StartTls => 587,
                Tls::None => 25,
            });
            SmtpTransport::Smtp {
                host,
                port,
                tls,
                ca_file: s.ca_file.as_deref().map(resolve),
                username: s.username.clone(),
                password: check_secret(
                    "smtp.password_file",
                    s.password_file.as_deref(),
                    s.password_env.as_deref(),
                    resolve,
                )?,
            }
        }
        "file" => SmtpTransport::File {
            dir: resolve(s.dir.as_deref().unwrap_or("outbox")),
        },
        other => {
            return Err(ConfigError::new(
                "smtp.transport",
                format!("应为 smtp 或 file，而不是“{other}”"),
            ));
        }
    };
    let defaults = crate::campaign::mailer::Pacing::default();
    let pacing = crate::campaign::mailer::Pacing {
        per_minute: s.rate_per_minute.unwrap_or(defaults.per_minute),
        daily_cap: s.daily_cap.unwrap_or(defaults.daily_cap),
    };
    if pacing.per_minute == 0 || pacing.daily_cap == 0 {
        return Err(ConfigError::new(
            "smtp.rate_per_minute",
            "发送速率和每日上限必须大于 0",
        ));
    }
    Ok(Smtp {
        transport,
        from,
        pacing,
    })
}

fn check_office_contacts(
    given: &[String],
    from: Option<&str>,
    office: &[String],
) -> Result<Vec<String>, ConfigError> {
    if let Some(bad) = given.iter().find(|c| {
        let digits = c.chars().filter(char::is_ascii_digit).count();
        !c.contains('@') && digits < 7
    }) {
        return Err(ConfigError::new(
            "parse.office_contacts",
            format!("“{bad}”既不是邮箱地址，也不是电话或传真号码（至少 7 位数字）"),
        ));
    }
    Ok(given
        .iter()
        .cloned()
        .chain(from.map(str::to_string))
        .chain(office.iter().cloned())
        .collect())
}

fn check_workers(w: PoolConfig) -> Result<PoolConfig, ConfigError> {
    if w.count > 256 {
        return Err(ConfigError::new(
            "workers.count",
            "最多 256（0 表示与 CPU 核数相同）",
        ));
    }
    if w.max_jobs == 0 {
        return Err(ConfigError::new("workers.max_jobs", "必须大于 0"));
    }
    if w.max_peak_mb < 64 {
        return Err(ConfigError::new("workers.max_peak_mb", "至少 64（MB）"));
    }
    Ok(w)
}

fn check_limits(l: &Limits) -> Result<(), ConfigError> {
    let positive = [
        ("limits.read.max_cells", l.read.max_cells as u64),
        ("limits.read.max_part_bytes", l.read.max_part_bytes),
        ("limits.read.max_total_bytes", l.read.max_total_bytes),
        ("limits.read.max_zip_entries", l.read.max_zip_entries as u64),
        ("limits.read.max_pages", l.read.max_pages as u64),
        ("limits.child.memory_mb", l.child.memory_mb),
        ("limits.child.cpu_seconds", l.child.cpu_seconds),
        ("limits.child.timeout_seconds", l.child.timeout_seconds),
        ("limits.attachment.max_bytes", l.attachment.max_bytes as u64),
        ("limits.attachment.max_count", l.attachment.max_count as u64),
        (
            "limits.attachment.max_zip_entries",
            l.attachment.max_zip_entries as u64,
        ),
        (
            "limits.attachment.max_zip_ratio",
            l.attachment.max_zip_ratio,
        ),
        ("limits.message.max_depth", l.message.max_depth as u64),
        ("limits.message.max_parts", l.message.max_parts as u64),
        ("limits.message.max_bytes", l.message.max_bytes as u64),
    ];
    if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(ConfigError::new(*key, "必须大于 0"));
    }
    if l.child.memory_mb < 64 {
        return Err(ConfigError::new(
            "limits.child.memory_mb",
            "至少 64（MB），否则任何附件都无法读取",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(&e))?;
        Config::check(raw, Path::new("/etc/xxdc-intake"))
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c =
            check("[roster]\npath = \"roster.csv\"\n[database]\nurl = \"sqlite://state/x.db\"\n")
                .expect("ok");
        assert_eq!(c.roster, Some(PathBuf::from("/etc/xxdc-intake/roster.csv")));
        assert_eq!(c.database_url, "sqlite:///etc/xxdc-intake/state/x.db");
    }

    #[test]
    fn errors_name_the_key() {
        let e = check("[roster]\npaht = \"x\"\n").unwrap_err();
        assert_eq!(e.key, "paht");
        let e = check("[campaign]\nname = \"x\"\ndeadline = \"5月20日\"\n").unwrap_err();
        assert_eq!(e.key, "campaign.deadline");
        let e = check("[[source]]\nname = \"a\"\nkind = \"imap\"\nhost = \"imap.163.com\"\ntls = \"none\"\nusername = \"u\"\npassword_env = \"P\"\n").unwrap_err();
        assert_eq!(e.key, "source[0].tls");
        let e = check("[parse]\nrequired = [\"officer.phone\"]\n").unwrap_err();
        assert_eq!(e.key, "parse.required");
        let e = check("[limits.child]\nmemory_mb = 0\n").unwrap_err();
        assert_eq!(e.key, "limits.child.memory_mb");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::Env("IMAP_PASSWORD".into());
        assert_eq!(format!("{s:?}"), "Secret(env IMAP_PASSWORD)");
    }
}
