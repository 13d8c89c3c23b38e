//! The workspace's HTTP rules against the real server on a loopback port,
//! on SQLite and PostgreSQL: who gets 303, 401 and 403, CSRF, viewer and
//! editor, the login limit, session expiry and logout, the security
//! headers, escaping of values from mail, and how original attachments are
//! served.
//!
//! The requests are written by hand (HTTP/1.1, one per connection): the
//! test must see every status and header exactly as sent, redirects
//! included.

mod db;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use db::{BIN, Backend, TestDb, both, drop_file, golden, write_config};
use xxdc_intake::clock::Clock;

/// One answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, Vec<String>>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map_or("", String::as_str)
    }

    /// The value of the hidden `csrf` input of the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("closing quote")].to_string()
    }

    /// `name=value` of a cookie the answer sets.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers.get("set-cookie")?.iter().find_map(|c| {
            let pair = c.split(';').next()?;
            pair.starts_with(&format!("{name}="))
                .then(|| pair.to_string())
        })
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> Answer {
    let body = serde_urlencoded::to_string(form).expect("form");
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    if method == "POST" {
        stream.write_all(body.as_bytes()).expect("write body");
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines.next().expect("status line")[9..12]
        .parse()
        .expect("status");
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.iter().any(|t| t == "chunked"))
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

fn get(addr: SocketAddr, path: &str, cookie: &str) -> Answer {
    request(addr, "GET", path, cookie, &[])
}

fn add_user(config: &Path, name: &str, role: &str, password: &str) {
    let mut child = Command::new(BIN)
        .args([
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--config",
        ])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password");
    assert!(child.wait().expect("wait").success());
}

/// Logs in; returns the session cookie (`xxdc_session=…`).
fn login(addr: SocketAddr, user: &str, password: &str) -> String {
    let page = get(addr, "/login", "");
    let login_cookie = page.cookie("xxdc_login").expect("login cookie");
    let answer = request(
        addr,
        "POST",
        "/login",
        &login_cookie,
        &[
            ("username", user),
            ("password", password),
            ("csrf", &page.csrf()),
        ],
    );
    assert_eq!(answer.status, 303, "login of {user}: {}", answer.body);
    assert_eq!(answer.header("location"), "/");
    answer.cookie("xxdc_session").expect("session cookie")
}

/// A mail whose subject and form carry script, with an attached page.
fn hostile_mail() -> Vec<u8> {
    b"Message-ID: <hostile@x.cn>\r\n\
Date: Wed, 16 May 2007 10:00:00 +0800\r\n\
From: <stranger@x.cn>\r\n\
To: xxdc2004@163.com\r\n\
Subject: <script>alert('subject')</script>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
\xe5\x8d\x95\xe4\xbd\x8d\xef\xbc\x9a<script>alert('unit')</script>\r\n\
\xe5\x88\x86\xe7\xae\xa1\xe9\xa2\x86\xe5\xaf\xbc\xe5\xa7\x93\xe5\x90\x8d\xef\xbc\x9a\xe7\x8e\x8b\xe5\xbc\xba\r\n\
--b\r\n\
Content-Type: text/html; name=\"page.html\"\r\n\
Content-Disposition: attachment; filename=\"page.html\"\r\n\
\r\n\
<html><body><script>alert('attachment')</script></body></html>\r\n\
--b--\r\n"
        .to_vec()
}

/// The script `alert('{what}')` is on the page as text, and nowhere as
/// markup.
fn escaped(page: &str, what: &str) -> bool {
    let as_text = [
        format!("&#60;script&#62;alert(&#39;{what}&#39;)"),
        format!("&lt;script&gt;alert(&#x27;{what}&#x27;)"),
    ];
    !page.contains("<script") && as_text.iter().any(|t| page.contains(t.as_str()))
}

struct Served {
    addr: SocketAddr,
    clock: Clock,
    config: std::path::PathBuf,
    _db: TestDb,
    _task: tokio::task::JoinHandle<()>,
}

async fn serve(backend: Backend) -> Served {
    let db = TestDb::new(backend).await;
    // Scans entered by hand: OCR off (tests/ocr.rs reads scans).
    let config = write_config(
        &db,
        "[web]\nlisten = \"127.0.0.1:0\"\nsession = \"1h\"\n[parse]\nocr = false\n",
    );
    for case in ["f09_pdf_image_only.eml", "f13_body_plain.eml"] {
        drop_file(&db.path("spool"), case, &golden(case));
    }
    drop_file(&db.path("spool"), "hostile.eml", &hostile_mail());
    let once = Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&config)
        .output()
        .expect("run --once");
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    add_user(&config, "editor", "editor", "editor password");
    add_user(&config, "viewer", "viewer", "viewer password");
    let clock = Clock::fixed(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64,
    );
    let app = db::open_app(&config, clock.clone()).await;
    let web = app.config.web.clone().expect("[web]");
    let listener = xxdc_intake::web::bind(&web).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let state = xxdc_intake::web::WebState::new(Arc::clone(&app), &web);
    let task = tokio::spawn(async move {
        xxdc_intake::web::serve(state, &web, listener, std::future::pending())
            .await
            .expect("serve");
    });
    Served {
        addr,
        clock,
        config,
        _db: db,
        _task: task,
    }
}

async fn who_gets_what(backend: Backend) {
    let s = serve(backend).await;
    let addr = s.addr;
    // Without a session.
    for page in [
        "/",
        "/units",
        "/units/yantou",
        "/review",
        "/remind",
        "/roster",
    ] {
        let a = get(addr, page, "");
        assert_eq!(a.status, 303, "{page}");
        assert_eq!(a.header("location"), "/login", "{page}");
    }
    for path in [
        "/api/status",
        "/export/registrations.xlsx",
        "/export/registrations.csv",
        "/export/officers.vcf",
    ] {
        assert_eq!(get(addr, path, "").status, 401, "{path}");
    }
    assert_eq!(
        request(
            addr,
            "POST",
            "/review/dismiss",
            "",
            &[("message", "x"), ("note", "n")]
        )
        .status,
        401
    );
    // A forged cookie is no session.
    assert_eq!(get(addr, "/api/status", "xxdc_session=forged").status, 401);

    // The login form and its own CSRF token.
    let page = get(addr, "/login", "");
    assert_eq!(page.status, 200);
    let login_cookie = page.cookie("xxdc_login").expect("login cookie");
    let no_token = request(
        addr,
        "POST",
        "/login",
        &login_cookie,
        &[("username", "editor"), ("password", "editor password")],
    );
    assert_eq!(no_token.status, 403);
    let wrong = request(
        addr,
        "POST",
        "/login",
        &login_cookie,
        &[
            ("username", "editor"),
            ("password", "nope"),
            ("csrf", &page.csrf()),
        ],
    );
    assert_eq!(wrong.status, 200);
    assert!(wrong.body.contains("用户名或密码不正确"));

    let answer = {
        let page = get(addr, "/login", "");
        request(
            addr,
            "POST",
            "/login",
            &page.cookie("xxdc_login").expect("cookie"),
            &[
                ("username", "editor"),
                ("password", "editor password"),
                ("csrf", &page.csrf()),
            ],
        )
    };
    assert_eq!(answer.status, 303);
    let set = answer
        .headers
        .get("set-cookie")
        .expect("cookies")
        .iter()
        .find(|c| c.starts_with("xxdc_session="))
        .expect("session cookie")
        .clone();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let editor = answer.cookie("xxdc_session").expect("session");

    // Pages, the status JSON and the headers every answer carries.
    for page in [
        "/",
        "/units",
        "/units/yantou",
        "/review",
        "/remind",
        "/roster",
    ] {
        let a = get(addr, page, &editor);
        assert_eq!(a.status, 200, "{page}: {}", a.body);
        let csp = a.header("content-security-policy");
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(!a.body.contains("<script"), "{page} carries script");
        assert_eq!(a.header("x-content-type-options"), "nosniff");
        assert!(!a.header("referrer-policy").is_empty());
    }
    let status = get(addr, "/api/status", &editor);
    assert_eq!(status.status, 200);
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    assert_eq!(json["counts"]["units"], 17);
    let xlsx = get(addr, "/export/registrations.xlsx", &editor);
    assert_eq!(xlsx.status, 200);
    assert!(xlsx.header("content-disposition").starts_with("attachment"));

    // Actions need the session's CSRF token, and an editor.
    let review = get(addr, "/review", &editor);
    let csrf = review.csrf();
    let scan_id = {
        let json: serde_json::Value =
            serde_json::from_str(&get(addr, "/api/status", &editor).body).expect("json");
        json["review"]
            .as_array()
            .expect("review")
            .iter()
            .find(|r| r["reason"] == "scanned_document")
            .expect("the scan")["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let form = [("message", scan_id.as_str()), ("unit_id", "bilian")];
    assert_eq!(
        request(addr, "POST", "/review/assign", &editor, &form).status,
        403
    );
    let with_token = [
        ("csrf", csrf.as_str()),
        ("message", &scan_id),
        ("unit_id", "bilian"),
    ];
    let done = request(addr, "POST", "/review/assign", &editor, &with_token);
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(done.header("location").starts_with("/units/bilian?ok="));

    // An invalid correction comes back with the parser's reason.
    let bad = request(
        addr,
        "POST",
        "/units/bilian/set",
        &editor,
        &[
            ("csrf", &csrf),
            ("field", "officer.mobile"),
            ("value", "1385770000"),
        ],
    );
    let back = get(addr, bad.header("location"), &editor);
    assert!(back.body.contains("应为11位数字"), "{}", back.body);

    // A viewer reads everything and changes nothing.
    let viewer = login(addr, "viewer", "viewer password");
    let page = get(addr, "/units/bilian", &viewer);
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("/units/bilian/set"),
        "no forms for a viewer"
    );
    let vcsrf = page.csrf();
    for (path, form) in [
        (
            "/units/bilian/set",
            vec![
                ("csrf", vcsrf.as_str()),
                ("field", "officer.name"),
                ("value", "王"),
            ],
        ),
        ("/units/bilian/accept", vec![("csrf", vcsrf.as_str())]),
        (
            "/review/dismiss",
            vec![
                ("csrf", vcsrf.as_str()),
                ("message", scan_id.as_str()),
                ("note", "x"),
            ],
        ),
        ("/remind/send-now", vec![("csrf", vcsrf.as_str())]),
    ] {
        assert_eq!(
            request(addr, "POST", path, &viewer, &form).status,
            403,
            "{path}"
        );
    }
    // The editor's token is not the viewer's.
    assert_eq!(
        request(
            addr,
            "POST",
            "/units/bilian/accept",
            &editor,
            &[("csrf", vcsrf.as_str())]
        )
        .status,
        403
    );

    // Logout ends the session; sessions expire.
    let out = request(addr, "POST", "/logout", &viewer, &[("csrf", &vcsrf)]);
    assert_eq!(out.status, 303);
    assert_eq!(get(addr, "/", &viewer).status, 303);
    assert_eq!(get(addr, "/", &editor).status, 200);
    s.clock.advance(3601);
    assert_eq!(
        get(addr, "/", &editor).status,
        303,
        "expired after [web] session"
    );
    let _ = &s.config;
}

async fn the_login_limit(backend: Backend) {
    let s = serve(backend).await;
    let addr = s.addr;
    let attempt = |user: &str, password: &str| {
        let page = get(addr, "/login", "");
        request(
            addr,
            "POST",
            "/login",
            &page.cookie("xxdc_login").expect("cookie"),
            &[
                ("username", user),
                ("password", password),
                ("csrf", &page.csrf()),
            ],
        )
    };
    for _ in 0..5 {
        assert_eq!(attempt("editor", "wrong").status, 200);
    }
    let blocked = attempt("editor", "editor password");
    assert_eq!(blocked.status, 429, "even the right password waits");
    assert!(
        blocked.body.contains("登录失败次数过多"),
        "{}",
        blocked.body
    );
    // Another user from the same address is not locked out.
    assert_eq!(attempt("viewer", "viewer password").status, 303);
}

async fn values_from_mail_are_escaped_and_attachments_downloaded(backend: Backend) {
    let s = serve(backend).await;
    let addr = s.addr;
    let editor = login(addr, "editor", "editor password");
    let review = get(addr, "/review", &editor);
    assert!(
        escaped(&review.body, "subject"),
        "escaped subject: {}",
        review.body
    );
    assert!(!review.body.contains("<script>alert("), "no live script");
    let status: serde_json::Value =
        serde_json::from_str(&get(addr, "/api/status", &editor).body).expect("json");
    let item = status["review"]
        .as_array()
        .expect("review")
        .iter()
        .find(|r| r["from"] == "stranger@x.cn")
        .expect("the hostile mail")
        .clone();
    let id = item["id"].as_str().expect("id");
    // Credited to a unit: the form's unit name shows on the unit's page.
    let csrf = review.csrf();
    let done = request(
        addr,
        "POST",
        "/review/assign",
        &editor,
        &[
            ("csrf", csrf.as_str()),
            ("message", id),
            ("unit_id", "hesheng"),
        ],
    );
    assert_eq!(done.status, 303);
    let unit = get(addr, "/units/hesheng", &editor);
    assert!(escaped(&unit.body, "unit"), "{}", unit.body);
    assert!(!unit.body.contains("<script>alert("));

    // The attached page is a download of plain text, never HTML.
    let part = (0..3)
        .map(|n| get(addr, &format!("/messages/{id}/parts/{n}"), &editor))
        .find(|a| a.status == 200 && a.header("content-disposition").contains("page.html"))
        .expect("the attached page");
    assert!(part.header("content-disposition").starts_with("attachment"));
    assert!(
        !part.header("content-type").contains("html"),
        "{}",
        part.header("content-type")
    );
    assert_eq!(part.header("x-content-type-options"), "nosniff");
    assert!(
        part.header("content-security-policy")
            .contains("default-src 'none'")
    );
    let raw = get(addr, &format!("/messages/{id}/raw"), &editor);
    assert_eq!(raw.status, 200);
    assert!(raw.header("content-disposition").starts_with("attachment"));
    assert_eq!(get(addr, "/messages/nosuch/raw", &editor).status, 404);
    assert_eq!(get(addr, &format!("/messages/{id}/raw"), "").status, 303);
}

async fn asking_a_unit_to_correct_goes_through_the_outbox(backend: Backend) {
    let s = serve(backend).await;
    let addr = s.addr;
    let editor = login(addr, "editor", "editor password");
    let page = get(addr, "/units/yantou", &editor);
    let csrf = page.csrf();
    // A complete registration: nothing to list, so a note is needed.
    let nothing = request(
        addr,
        "POST",
        "/units/yantou/ask",
        &editor,
        &[("csrf", csrf.as_str())],
    );
    let back = get(addr, nothing.header("location"), &editor);
    assert!(back.body.contains("没有缺少或有误的内容"), "{}", back.body);
    for _ in 0..2 {
        let asked = request(
            addr,
            "POST",
            "/units/yantou/ask",
            &editor,
            &[("csrf", csrf.as_str()), ("note", "请补充信息员QQ号码")],
        );
        assert_eq!(asked.status, 303);
        assert!(
            asked.header("location").contains("ok="),
            "{}",
            asked.header("location")
        );
    }
    let mails = db::scalar(
        &s._db.url,
        "SELECT COUNT(*) FROM outbox WHERE kind = 'correction_request' AND unit_key = 'yantou' AND state = 'queued'",
    )
    .await;
    assert_eq!(mails, 2, "once per click, queued for the paced sender");
    let unit = get(addr, "/units/yantou", &editor);
    assert!(
        unit.body.contains("请核对：岩头镇人民政府"),
        "the mail in the unit's history"
    );
    assert_eq!(
        unit.body
            .matches("请单位更正（请补充信息员QQ号码）")
            .count(),
        2,
        "{}",
        unit.body
    );

    // Reminders now, from the plan page.
    let plan = get(addr, "/remind", &editor);
    assert_eq!(plan.status, 200);
    let sent = request(
        addr,
        "POST",
        "/remind/send-now",
        &editor,
        &[("csrf", plan.csrf().as_str())],
    );
    assert_eq!(sent.status, 303);
    let queued = db::scalar(
        &s._db.url,
        "SELECT COUNT(*) FROM outbox WHERE kind IN ('reminder', 'overdue_reminder')",
    )
    .await;
    assert!(queued >= 10, "the units still missing: {queued}");
}

both!(2; asking_a_unit_to_correct_goes_through_the_outbox, who_gets_what, the_login_limit, values_from_mail_are_escaped_and_attachments_downloaded);
