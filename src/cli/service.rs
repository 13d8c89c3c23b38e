//! The service's commands: `run`, `reprocess`, `db migrate`.

use std::path::Path;
use std::sync::Arc;

use super::{CliError, open_app, service_config};
use crate::service::daemon::{self, RunOptions};
use crate::service::intake::Step;
use crate::store::Store;

/// `run`: the service until SIGTERM/SIGINT, or one pass with `--once`.
pub(super) async fn run(config: Option<&Path>, once: bool) -> Result<(), CliError> {
    warn_if_root();
    let app = Arc::new(open_app(config).await?);
    let result = daemon::run(Arc::clone(&app), RunOptions { once }, shutdown_signal()).await;
    app.close().await;
    Ok(result?)
}

/// Files written as root belong to root: the service, started later as its
/// own user, could not read them.
fn warn_if_root() {
    if rustix::process::geteuid().is_root() {
        tracing::warn!("running as root: the files written now will belong to root");
        eprintln!(
            "注意：正以 root 身份运行，现在写入的数据库、存档和发件文件都将属于 root；\
             服务应以 xxdc-intake 用户运行（见 deploy/README.md）。"
        );
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

/// `reprocess`: every stored raw message through the pipeline again, with
/// a progress bar.
pub(super) async fn reprocess(config: Option<&Path>) -> Result<(), CliError> {
    warn_if_root();
    let app = open_app(config).await?;
    let total = app.intake.store().requeue_all().await?;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("重新处理 {bar:40} {pos}/{len} 封（{eta}）")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        match app.intake.step(app.clock.now()).await {
            Ok(Step::Idle) => break,
            Ok(_) => bar.inc(1),
            Err(e) => {
                bar.abandon();
                return Err(CliError::Failed(e.to_string()));
            }
        }
    }
    bar.finish();
    app.close().await;
    println!("已重新处理 {total} 封邮件。");
    Ok(())
}

/// `db migrate`: creates or upgrades the schema.
pub(super) async fn migrate(config: Option<&Path>) -> Result<(), CliError> {
    let config = service_config(config)?;
    Store::open(&config.database_url).await?;
    println!("数据库结构已是最新：{}", redact_url(&config.database_url));
    Ok(())
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
