//! `status`: what the office sees, as a Chinese table or as JSON.

use std::path::Path;

use super::{CliError, service_config};
use crate::parse::roster::Roster;
use crate::store::Store;

pub(super) async fn status(config: Option<&Path>, json: bool) -> Result<(), CliError> {
    let config = service_config(config)?;
    let roster = config.roster.as_deref().map(Roster::load).transpose()?;
    let store = Store::open(&config.database_url).await?;
    let now = crate::clock::Clock::System.now();
    let status = crate::workspace::status::build(&store, &config, roster.as_ref(), now).await?;
    if json {
        let text = serde_json::to_string(&status)
            .map_err(|e| CliError::Failed(format!("无法输出 JSON：{e}")))?;
        println!("{text}");
    } else {
        print!("{}", status.to_text());
    }
    Ok(())
}
