//! The service's commands: `run`, `reprocess`, `db migrate`.

use std::path::Path;
use std::sync::Arc;

use super::{CliError, open_app, service_config};
use crate::service::daemon::{self, RunOptions};
use crate::service::intake::Step;
use crate::store::Store;

/// `run`: the service until SIGTERM/SIGINT, or one pass with `--once`.
/// With `[web]` (and not `--once`), the workspace is served beside the
/// mailbox work; its listener is bound first, so that a port in use is a
/// clear error at start.
pub(super) async fn run(config: Option<&Path>, once: bool) -> Result<(), CliError> {
    warn_if_root();
    let config = service_config(config)?;
    let web = config.web.clone().filter(|_| !once);
    let listener = match &web {
        Some(web) => Some(
            crate::web::bind(web)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?,
        ),
        None => None,
    };
    let app = Arc::new(super::open_app_with(config).await?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let pages = match (web, listener) {
        (Some(web), Some(listener)) => {
            tracing::info!(address = %address_text(&web), "workspace served beside the service");
            let state = crate::web::WebState::new(Arc::clone(&app), &web);
            let until = stopped(stop_rx.clone());
            Some(tokio::spawn(async move {
                crate::web::serve(state, &web, listener, until).await
            }))
        }
        _ => None,
    };
    let signal = tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        }
    });
    let result = daemon::run(Arc::clone(&app), RunOptions { once }, stopped(stop_rx)).await;
    signal.abort();
    let _ = stop_tx.send(true);
    if let Some(pages) = pages {
        match pages.await {
            Ok(Err(e)) => tracing::error!(error = %e, "workspace stopped on an error"),
            Err(e) => tracing::error!(error = %e, "workspace task failed"),
            Ok(Ok(())) => {}
        }
    }
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
        indicatif::ProgressStyle::with_template(
            "重新处理 {bar:40} {pos}/{len} 封（{per_sec}，还需 {eta}）",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let failed = std::sync::atomic::AtomicU64::new(0);
    let (_, error) = app
        .process_pending_with(None, &|step| {
            if matches!(step, Step::Failed { .. }) {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            bar.inc(1);
        })
        .await;
    if let Some(error) = error {
        bar.abandon();
        app.close().await;
        return Err(CliError::Failed(error));
    }
    bar.finish();
    app.close().await;
    match failed.into_inner() {
        0 => println!("已重新处理 {total} 封邮件。"),
        n => println!("已重新处理 {total} 封邮件，其中 {n} 封处理失败（原因见 status）。"),
    }
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

/// `web`: the workspace alone (no mailbox work), e.g. on a second machine
/// reading the same PostgreSQL.
pub(super) async fn web(config: Option<&Path>) -> Result<(), CliError> {
    let config = service_config(config)?;
    let Some(web) = config.web.clone() else {
        return Err(CliError::config(
            "web",
            "缺少 [web]（如 listen = \"127.0.0.1:8080\"），无法提供工作台网页",
        ));
    };
    let listener = crate::web::bind(&web)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let app = Arc::new(super::open_app_with(config).await?);
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("工作台网页已开始服务"),
    ]);
    eprintln!("工作台：{}", address_text(&web));
    let state = crate::web::WebState::new(Arc::clone(&app), &web);
    let served = crate::web::serve(state, &web, listener, shutdown_signal()).await;
    app.close().await;
    served.map_err(|e| CliError::Failed(e.to_string()))
}

/// The address people type into the browser.
pub(super) fn address_text(web: &crate::config::Web) -> String {
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let host = if web.listen.ip().is_unspecified() {
        "本机地址".to_string()
    } else {
        web.listen.ip().to_string()
    };
    format!("{scheme}://{host}:{}/", web.listen.port())
}
