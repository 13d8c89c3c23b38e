//! Who may see and do what in the workspace.
//!
//! - A login checks the password against its argon2 hash and opens a
//!   session in the database: the cookie carries a random token
//!   (HttpOnly, SameSite=Strict, Secure over TLS), the table its SHA-256
//!   and the session's CSRF token. Sessions expire; logout ends them.
//! - Without a valid session a page answers 303 to `/login`; `/api/*` and
//!   `/export/*` (and any other method) answer 401.
//! - Every `POST` carries the session's CSRF token in the form field
//!   `csrf` (the login form: a token of its own, also in a cookie); a
//!   missing or wrong one is 403. So is any action by a `viewer`.
//! - Failed logins are counted per user name and per client address over
//!   a window; past the limit the login is refused for a while with a
//!   clear message, for that name or that address only.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::WebState;
use super::pages::{html, render};
use crate::store::{Role, Session};
use crate::workspace::users::verify_password;

const SESSION_COOKIE: &str = "xxdc_session";
const LOGIN_COOKIE: &str = "xxdc_login";

/// Failed logins allowed per user name, and per client address, within
/// [`LIMIT_WINDOW`].
pub const USER_FAILURES: usize = 5;
pub const ADDRESS_FAILURES: usize = 20;
pub const LIMIT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The logged-in user of a request.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

impl Authed {
    pub fn can_edit(&self) -> bool {
        self.role == Role::Editor
    }
}

/// Recent failed logins, in memory (a restart forgets them; the window is
/// short anyway).
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    /// When the user or the address may try again, if they are over the
    /// limit now.
    pub fn blocked(&self, user: &str, addr: IpAddr, now: Instant) -> Option<Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None;
        for (key, limit) in [
            (format!("user:{user}"), USER_FAILURES),
            (format!("addr:{addr}"), ADDRESS_FAILURES),
        ] {
            let Some(times) = map.get_mut(&key) else {
                continue;
            };
            times.retain(|t| now.duration_since(*t) < LIMIT_WINDOW);
            if times.len() >= limit {
                let until = LIMIT_WINDOW.saturating_sub(now.duration_since(times[0]));
                wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
            }
        }
        wait
    }

    pub fn failed(&self, user: &str, addr: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: names are whatever a client typed.
        if map.len() > 10_000 {
            map.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < LIMIT_WINDOW));
        }
        map.entry(format!("user:{user}")).or_default().push(now);
        map.entry(format!("addr:{addr}")).or_default().push(now);
    }

    pub fn succeeded(&self, user: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("user:{user}"));
    }
}

/// A random token, URL-safe.
pub fn token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(state: &WebState, name: &str, value: &str, max_age: i64) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if state.secure_cookies { "; Secure" } else { "" }
    )
}

/// Equal in constant time (tokens compared with what a client sent).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session of a request, if it has a valid one.
async fn session_of(state: &WebState, headers: &HeaderMap) -> Option<Session> {
    let token = cookie(headers, SESSION_COOKIE)?;
    let now = state.app.clock.now();
    match state
        .app
        .intake
        .store()
        .session(&token_hash(&token), now)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a session");
            None
        }
    }
}

/// Lets through requests with a valid session (the user is then an
/// [`Authed`] extension); answers the others as the module doc says.
pub async fn require_session(
    State(state): State<WebState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(session) = session_of(&state, request.headers()).await else {
        let path = request.uri().path();
        let page = request.method() == Method::GET
            && !path.starts_with("/api/")
            && !path.starts_with("/export/");
        return if page {
            Redirect::to("/login").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "需要登录").into_response()
        };
    };
    request.extensions_mut().insert(Authed {
        user: session.user,
        role: session.role,
        csrf: session.csrf,
    });
    next.run(request).await
}

/// The refusal of a state-changing request, if it is refused: 403
/// without the session's CSRF token, or by a user who may only read.
pub fn refusal(user: &Authed, csrf: &str) -> Option<Response> {
    let why = if !same(csrf, &user.csrf) {
        "请求无效（缺少或错误的表单令牌），请刷新页面后重试"
    } else if !user.can_edit() {
        "您的账户只能查看，不能进行处理"
    } else {
        return None;
    };
    Some((StatusCode::FORBIDDEN, why).into_response())
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
    username: String,
}

fn login_answer(
    state: &WebState,
    status: StatusCode,
    error: Option<String>,
    username: String,
) -> Response {
    let csrf = token();
    let page = LoginPage {
        csrf: csrf.clone(),
        error,
        username,
    };
    let mut response = html(status, render(&page));
    if let Ok(v) = set_cookie(state, LOGIN_COOKIE, &csrf, 3600).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// `GET /login`.
pub async fn login_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    if session_of(&state, &headers).await.is_some() {
        return Redirect::to("/").into_response();
    }
    login_answer(&state, StatusCode::OK, None, String::new())
}

#[derive(Debug, serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn client_ip(state: &WebState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if state.behind_proxy
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    peer.ip()
}

/// `POST /login`.
pub async fn login(
    State(state): State<WebState>,
    ConnectInfo(super::PeerAddr(peer)): ConnectInfo<super::PeerAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&form.csrf, &expected) {
        return (StatusCode::FORBIDDEN, "登录表单已失效，请刷新页面后重试").into_response();
    }
    let name = form.username.trim().to_string();
    let ip = client_ip(&state, peer, &headers);
    let now = Instant::now();
    if let Some(wait) = state.limiter.blocked(&name, ip, now) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        tracing::warn!(address = %ip, "login refused: too many failed attempts");
        return login_answer(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!("登录失败次数过多，请 {minutes} 分钟后再试。")),
            name,
        );
    }
    let store = state.app.intake.store();
    let user = match store.user(&name).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cannot read users");
            return (StatusCode::INTERNAL_SERVER_ERROR, "数据库暂时无法访问").into_response();
        }
    };
    let password = form.password;
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    // Hashing is slow on purpose: off the async threads.
    let ok = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => verify_password(&password, &phc),
        None => {
            // The same work for an unknown name, so that timing does not
            // tell which names exist.
            let _ = crate::workspace::users::hash_password(&password);
            false
        }
    })
    .await
    .unwrap_or(false);
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        _ => {
            state.limiter.failed(&name, ip, now);
            tracing::info!(address = %ip, "login failed");
            return login_answer(
                &state,
                StatusCode::OK,
                Some("用户名或密码不正确，或账户已停用。".into()),
                name,
            );
        }
    };
    state.limiter.succeeded(&user.name);
    let session = token();
    let t = state.app.clock.now();
    if let Err(e) = store
        .create_session(
            &token_hash(&session),
            &user.name,
            &token(),
            t,
            t + state.session_seconds,
        )
        .await
    {
        tracing::error!(error = %e, "cannot open a session");
        return (StatusCode::INTERNAL_SERVER_ERROR, "数据库暂时无法访问").into_response();
    }
    tracing::info!(address = %ip, "login");
    let mut response = Redirect::to("/").into_response();
    for c in [
        set_cookie(&state, SESSION_COOKIE, &session, state.session_seconds),
        set_cookie(&state, LOGIN_COOKIE, "", 0),
    ] {
        if let Ok(v) = c.parse() {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session (viewers too).
pub async fn logout(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !same(&form.csrf, &user.csrf) {
        return (StatusCode::FORBIDDEN, "请求无效（缺少或错误的表单令牌）").into_response();
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let now = state.app.clock.now();
        if let Err(e) = state
            .app
            .intake
            .store()
            .end_session(&token_hash(&token), now)
            .await
        {
            tracing::error!(error = %e, "cannot end a session");
        }
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = set_cookie(&state, SESSION_COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_per_user_and_per_address() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..USER_FAILURES {
            assert!(limiter.blocked("li", a, t0).is_none());
            limiter.failed("li", a, t0);
        }
        assert!(
            limiter.blocked("li", b, t0).is_some(),
            "the name, from anywhere"
        );
        assert!(limiter.blocked("wang", a, t0).is_none(), "another name");
        assert!(
            limiter.blocked("li", a, t0 + LIMIT_WINDOW).is_none(),
            "after the window"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; xxdc_session=tok; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "zz"), None);
    }
}
