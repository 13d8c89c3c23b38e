//! `config check`: validates a config file and what it points to that can
//! be checked without the network (the templates, the roster).

use std::path::Path;

use super::{CliError, DEFAULT_CONFIG};
use crate::campaign::templates::Templates;
use crate::config::{Config, ConfigError};
use crate::parse::roster::Roster;

pub(super) fn check(path: Option<&Path>) -> Result<(), CliError> {
    let path = path.unwrap_or(Path::new(DEFAULT_CONFIG));
    let config = Config::load(path)?;
    Templates::load(&config.mailing.templates_dir).map_err(|e| ConfigError {
        key: "report.templates".into(),
        reason: e.to_string(),
    })?;
    if let Some(roster) = &config.roster {
        Roster::load(roster).map_err(|e| ConfigError {
            key: "roster.path".into(),
            reason: e.to_string(),
        })?;
    }
    println!(
        "配置文件 {} 正确：{} 个邮件来源，名单 {}。",
        path.display(),
        config.sources.len(),
        config
            .roster
            .as_deref()
            .map_or_else(|| "未配置".to_string(), |p| p.display().to_string())
    );
    Ok(())
}
