//! An IMAP mailbox (163.com, or any server). Placeholder until the IMAP
//! source lands: reports that IMAP is not available in this build.

use super::{SourceCtx, SourceError};
use crate::config::ImapSettings;

pub async fn run(name: &str, settings: &ImapSettings, ctx: SourceCtx) {
    let _ = poll_once(name, settings, &ctx).await;
}

pub async fn poll_once(
    _name: &str,
    settings: &ImapSettings,
    _ctx: &SourceCtx,
) -> Result<usize, SourceError> {
    Err(SourceError::Io(format!(
        "IMAP 来源 {} 尚未实现",
        settings.host
    )))
}
