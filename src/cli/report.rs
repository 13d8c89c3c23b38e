//! `report overdue`: the list of units still missing (通报) to the office,
//! now, through the same outbox and sending as the service's.

use std::path::Path;

use super::{CliError, open_campaign_app};
use crate::service::daemon::SendUntil;

pub(super) async fn overdue(config: Option<&Path>) -> Result<(), CliError> {
    let app = open_campaign_app(config).await?;
    if app.config.mailing.office.is_empty() {
        return Err(CliError::config(
            "report.office",
            "没有收件地址，无法发送通报",
        ));
    }
    let now = app.clock.now();
    let slot = format!("report:manual:{now}");
    let n = crate::campaign::queue_overdue_report(&app.mailing(), now, &slot).await?;
    println!("通报已排队：未报送单位 {n} 个。");
    app.send_queued(SendUntil::NothingDue).await?;
    app.close().await;
    Ok(())
}
