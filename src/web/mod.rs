//! The office's workspace in a browser: server-rendered pages (askama
//! templates, checked at compile time, escaping by default) over the same
//! store and decisions as the command line. No script and nothing from
//! the internet: the county network may have none.
//!
//! - [`auth`]: users, sessions, CSRF tokens, the login limit, and which
//!   requests need what;
//! - [`pages`]: what is read (dashboard, units, review, reminders, the
//!   printable 名册, exports, the status JSON, original attachments);
//! - [`actions`]: what changes (every `POST`: decisions, corrections,
//!   mail to a unit, reminders now);
//! - [`chart`]: the SVG charts.
//!
//! [`serve`] binds the listener (plain HTTP, or HTTPS with rustls when a
//! certificate is configured) and serves until shutdown.

pub mod actions;
pub mod auth;
pub mod chart;
pub mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};

use crate::config::Web;
use crate::service::daemon::App;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct WebState {
    pub app: Arc<App>,
    pub limiter: Arc<auth::LoginLimiter>,
    /// Cookies get `Secure` (served over TLS, here or by a proxy).
    pub secure_cookies: bool,
    /// The client address is the proxy's `X-Forwarded-For`.
    pub behind_proxy: bool,
    pub session_seconds: i64,
}

impl WebState {
    pub fn new(app: Arc<App>, web: &Web) -> Self {
        Self {
            app,
            limiter: Arc::default(),
            secure_cookies: web.tls.is_some() || web.behind_tls_proxy,
            behind_proxy: web.behind_tls_proxy,
            session_seconds: i64::try_from(web.session.as_secs()).unwrap_or(8 * 3600),
        }
    }
}

/// Every route of the workspace.
pub fn router(state: WebState) -> Router {
    let private = Router::new()
        .route("/", get(pages::dashboard))
        .route("/units", get(pages::units))
        .route("/units/{unit_id}", get(pages::unit))
        .route("/review", get(pages::review))
        .route("/remind", get(pages::remind))
        .route("/roster", get(pages::roster))
        .route("/export/registrations.xlsx", get(pages::export_xlsx))
        .route("/export/registrations.csv", get(pages::export_csv))
        .route("/export/officers.vcf", get(pages::export_vcf))
        .route("/api/status", get(pages::api_status))
        .route("/messages/{id}/raw", get(pages::raw_message))
        .route("/messages/{id}/parts/{n}", get(pages::message_part))
        .route("/logout", post(auth::logout))
        .route("/review/assign", post(actions::assign))
        .route("/review/dismiss", post(actions::dismiss))
        .route("/units/{unit_id}/accept", post(actions::accept))
        .route("/units/{unit_id}/set", post(actions::set_field))
        .route("/units/{unit_id}/ask", post(actions::ask))
        .route("/remind/send-now", post(actions::send_now))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/static/app.css", get(pages::stylesheet))
        .merge(private)
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// The content security policy: nothing but our own stylesheet and
/// images, no script at all, no framing, forms only to us.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers on every answer: the pages show names, phones and addresses.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The client's address, for the login limit (`ConnectInfo`), over HTTP
/// and HTTPS alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("无法监听 {addr}：{source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("无法读取 TLS 证书或私钥 {path}：{reason}")]
    Tls { path: String, reason: String },
    #[error("工作台网页服务出错：{0}")]
    Serve(std::io::Error),
}

/// Binds `[web] listen`. Binding is done before anything else starts, so
/// that a port in use is a clear error at start and READY follows a bound
/// listener.
pub async fn bind(web: &Web) -> Result<tokio::net::TcpListener, WebError> {
    let listener = tokio::net::TcpListener::bind(web.listen)
        .await
        .map_err(|source| WebError::Bind {
            addr: web.listen,
            source,
        })?;
    if !web.listen.ip().is_loopback() && web.tls.is_none() && !web.behind_tls_proxy {
        tracing::warn!(
            listen = %web.listen,
            "the workspace listens beyond this machine without TLS: passwords and personal data cross the network in clear text; configure [web] tls_cert/tls_key or a reverse proxy with TLS"
        );
        eprintln!(
            "警告：工作台在 {} 上以明文 HTTP 提供服务，密码和个人信息将以明文在网络上传输；\
             请配置 [web] tls_cert 和 tls_key，或在前面使用启用 TLS 的反向代理（见 docs/workspace.md）。",
            web.listen
        );
    }
    Ok(listener)
}

/// Serves the workspace on `listener` until `shutdown` completes.
pub async fn serve(
    state: WebState,
    web: &Web,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    let address = listener.local_addr().map_err(WebError::Serve)?;
    let app = router(state).into_make_service_with_connect_info::<PeerAddr>();
    match &web.tls {
        None => {
            tracing::info!(address = %address, "workspace listening (http)");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(WebError::Serve)
        }
        Some(tls) => {
            let acceptor = tls_acceptor(tls)?;
            tracing::info!(address = %address, "workspace listening (https)");
            axum::serve(tls::TlsListener::new(listener, acceptor), app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(WebError::Serve)
        }
    }
}

fn tls_acceptor(tls: &crate::config::WebTls) -> Result<tokio_rustls::TlsAcceptor, WebError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |path: &std::path::Path, reason: String| WebError::Tls {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| fail(&tls.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(&tls.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(fail(&tls.cert, "文件中没有证书".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| fail(&tls.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&tls.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail(&tls.key, e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

mod tls {
    //! HTTPS for axum: a listener that completes each TLS handshake (with a
    //! time limit, so a silent client cannot hold the accept loop) before
    //! handing the stream on. Written here because axum's own `serve`
    //! takes any `Listener`, and a TLS server crate would bring a second
    //! TLS stack beside the rustls we already use.

    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::server::TlsStream;

    const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

    pub struct TlsListener {
        tcp: TcpListener,
        acceptor: TlsAcceptor,
    }

    impl std::fmt::Debug for TlsListener {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TlsListener")
                .field("tcp", &self.tcp)
                .finish_non_exhaustive()
        }
    }

    impl TlsListener {
        pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
            Self { tcp, acceptor }
        }
    }

    impl axum::serve::Listener for TlsListener {
        type Io = TlsStream<TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let (stream, addr) = match self.tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a
                        // moment rather than spin.
                        tracing::warn!(error = %e, "workspace accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                match tokio::time::timeout(HANDSHAKE_LIMIT, self.acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => return (tls, addr),
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.tcp.local_addr()
        }
    }
}
