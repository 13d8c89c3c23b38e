//! The workspace in a real browser: headless Debian Chromium, driven through
//! chromedriver (WebDriver) with fantoccini, over `xxdc-intake web` on
//! SQLite.
//!
//! The office's day in five steps: log in and see the dashboard (with its
//! SVG charts), credit a scanned fax to its unit from the review page,
//! correct a field on the unit's page (and see an invalid value refused),
//! and download the 名册 with the browser's own session. Every page is
//! checked for a server error; a missing element fails the test naming its
//! selector, and the page's source is saved beside the screenshots in
//! `target/browser-test/`.
//!
//! Chromium and chromedriver are Debian packages that `scripts/check`
//! installs; without them this test fails (it never skips).

mod db;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calamine::{Data, Reader as _};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use db::{BIN, Backend, TestDb, drop_file, golden, write_config};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Screenshots and the source of a page that failed.
const OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/browser-test");
/// How long a server, a page or a navigation may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// What a page shows when the server failed or refused it. The workspace
/// answers errors with a bare line of text (see `src/web/pages.rs` and
/// `src/web/auth.rs`); Chromium shows "HTTP ERROR 500" for an empty one.
const ERROR_TEXTS: [&str; 8] = [
    "服务器内部错误",
    "数据库暂时无法访问",
    "没有这个页面",
    "需要登录",
    "请求无效（缺少或错误的表单令牌）",
    "登录表单已失效",
    "HTTP ERROR",
    "ERR_CONNECTION",
];

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// A child process killed (and reaped) when dropped, also on a panic.
struct Killed {
    child: Child,
    what: &'static str,
    log: PathBuf,
}

impl Killed {
    fn spawn(what: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
        Self { child, what, log }
    }

    /// Panics with the log if the process has ended.
    fn still_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{} exited early ({status}); its output:\n{log}", self.what);
        }
    }

    /// Waits until `GET path` on 127.0.0.1:`port` gets any HTTP answer.
    fn wait_http(&mut self, port: u16, path: &str) {
        let start = Instant::now();
        loop {
            self.still_running();
            if http_get(port, path, None).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{} did not answer GET {path} on port {port} within {PATIENCE:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.1, written by hand: the
/// request the browser would make for a download, with its session cookie.
/// The answer ends at its `Content-Length`, at the end of its chunks, or
/// when the server closes (chromedriver keeps the connection open despite
/// `Connection: close`).
fn http_get(port: u16, path: &str, cookie: Option<&str>) -> std::io::Result<Answer> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        request.push_str(&format!("Cookie: {c}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Where the body starts, and the answer without its body.
    let mut head: Option<(usize, Answer)> = None;
    loop {
        let n = stream.read(&mut buf)?;
        raw.extend_from_slice(&buf[..n]);
        if head.is_none()
            && let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let text = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
            let mut lines = text.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("no status line"))?;
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            let answer = Answer {
                status,
                headers,
                body: Vec::new(),
            };
            head = Some((split + 4, answer));
        }
        let Some((body_at, head)) = &head else {
            if n == 0 {
                return Err(bad("no end of headers"));
            }
            continue;
        };
        let mut answer = Answer {
            status: head.status,
            headers: head.headers.clone(),
            body: raw[*body_at..].to_vec(),
        };
        let length: Option<usize> = answer.header("content-length").and_then(|v| v.parse().ok());
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            if let Some(body) = dechunk(&answer.body) {
                answer.body = body;
                return Ok(answer);
            }
            if n == 0 {
                return Err(bad("bad or cut chunked body"));
            }
        } else if let Some(length) = length {
            if answer.body.len() >= length {
                answer.body.truncate(length);
                return Ok(answer);
            }
            if n == 0 {
                return Err(bad("body shorter than its Content-Length"));
            }
        } else if n == 0 {
            return Ok(answer);
        }
    }
}

/// A chunked body's bytes.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// The browser, the server's address, and the step being run (names the
/// files saved when it fails).
struct Browser {
    client: Client,
    base: String,
    step: String,
}

impl Browser {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Saves the page's source to `target/browser-test/<step>-failed.html`
    /// and panics with `message`, the URL and where the source is.
    async fn fail<T>(&self, message: String) -> T {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|e| format!("(unknown: {e})"));
        let saved = match self.client.source().await {
            Ok(source) => {
                let path = Path::new(OUT).join(format!("{}-failed.html", self.step));
                match std::fs::write(&path, source) {
                    Ok(()) => format!("page source saved to {}", path.display()),
                    Err(e) => format!("page source not saved: {e}"),
                }
            }
            Err(e) => format!("page source unavailable: {e}"),
        };
        panic!("step {}: {message}\n  at {url}\n  {saved}", self.step);
    }

    /// Loads `path` and checks the page.
    async fn goto(&self, path: &str) {
        if let Err(e) = self.client.goto(&self.url(path)).await {
            self.fail::<()>(format!("could not load {path}: {e}")).await;
        }
        self.check_page().await;
    }

    /// Waits for the page to be loaded, then fails if it shows a server
    /// error: an HTTP status of 400 or more (the navigation's own, from the
    /// Navigation Timing API), one of [`ERROR_TEXTS`], or no body.
    async fn check_page(&self) {
        let start = Instant::now();
        loop {
            let state = self
                .client
                .execute("return document.readyState;", vec![])
                .await;
            if matches!(&state, Ok(s) if s == "complete") {
                break;
            }
            if start.elapsed() > PATIENCE {
                self.fail::<()>(format!("page not loaded within {PATIENCE:?}: {state:?}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = self
            .client
            .execute(
                "const n = performance.getEntriesByType('navigation')[0];\
                 return n && n.responseStatus ? n.responseStatus : 0;",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => self.fail(format!("the page has no <body>: {e}")).await,
        };
        if let Some(error) = ERROR_TEXTS.iter().find(|t| text.contains(**t)) {
            self.fail::<()>(format!(
                "the page shows an error (“{error}”, HTTP status {status}): {}",
                text.chars().take(300).collect::<String>()
            ))
            .await;
        }
        if status >= 400 {
            self.fail::<()>(format!(
                "the page was answered with HTTP status {status}: {}",
                text.chars().take(300).collect::<String>()
            ))
            .await;
        }
    }

    /// The element at `selector`; fails naming the selector if missing.
    async fn find(&self, selector: &str) -> Element {
        match self.client.find(Locator::Css(selector)).await {
            Ok(e) => e,
            Err(e) => {
                self.fail(format!("element `{selector}` is missing: {e}"))
                    .await
            }
        }
    }

    /// The text of the element at `selector`.
    async fn text(&self, selector: &str) -> String {
        let element = self.find(selector).await;
        match element.text().await {
            Ok(t) => t,
            Err(e) => self.fail(format!("no text for `{selector}`: {e}")).await,
        }
    }

    /// Fails unless the element at `selector` shows `expected`.
    async fn expect_text(&self, selector: &str, expected: &str) {
        let text = self.text(selector).await;
        if !text.contains(expected) {
            self.fail::<()>(format!(
                "`{selector}` shows “{text}”, expected “{expected}”"
            ))
            .await;
        }
    }

    /// Replaces the value of the input at `selector` with `value`.
    async fn fill(&self, selector: &str, value: &str) {
        let input = self.find(selector).await;
        self.fill_element(&input, selector, value).await;
    }

    async fn fill_element(&self, input: &Element, selector: &str, value: &str) {
        if let Err(e) = input.clear().await {
            self.fail::<()>(format!("could not clear `{selector}`: {e}"))
                .await;
        }
        if let Err(e) = input.send_keys(value).await {
            self.fail::<()>(format!("could not type into `{selector}`: {e}"))
                .await;
        }
    }

    /// Clicks `button` (found as `selector`), which submits a form: waits
    /// until the old page is gone and the new one at `path` is loaded, and
    /// checks it.
    async fn submit(&self, button: &Element, selector: &str, path: &str) {
        let old = self.find("html").await;
        if let Err(e) = button.click().await {
            self.fail::<()>(format!("could not click `{selector}`: {e}"))
                .await;
        }
        let start = Instant::now();
        // A reference to the old page's root goes stale once it is replaced.
        while old.tag_name().await.is_ok() {
            if start.elapsed() > PATIENCE {
                self.fail::<()>(format!(
                    "clicking `{selector}` loaded no new page within {PATIENCE:?}"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.check_page().await;
        self.expect_path(path).await;
    }

    async fn click(&self, selector: &str, path: &str) {
        let button = self.find(selector).await;
        self.submit(&button, selector, path).await;
    }

    /// Fails unless the browser is at `path` (query string aside).
    async fn expect_path(&self, path: &str) {
        match self.client.current_url().await {
            Ok(url) if url.path() == path => {}
            Ok(url) => {
                self.fail::<()>(format!("expected to be at {path}, the browser is at {url}"))
                    .await
            }
            Err(e) => self.fail::<()>(format!("no current URL: {e}")).await,
        }
    }

    /// Saves a screenshot of the window as `target/browser-test/<name>`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = match self.client.screenshot().await {
            Ok(png) => png,
            Err(e) => self.fail(format!("no screenshot: {e}")).await,
        };
        let path = Path::new(OUT).join(name);
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }
}

/// Starts chromedriver and opens a headless Chromium session through it.
async fn open_browser(dir: &Path) -> (Killed, Client) {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: run scripts/check, which installs the Debian packages \
             chromium and chromium-driver (this test needs {package})"
        );
    }
    let port = free_port();
    let mut driver = Killed::spawn(
        "chromedriver",
        Command::new(CHROMEDRIVER).arg(format!("--port={port}")),
        dir.join("chromedriver.log"),
    );
    driver.wait_http(port, "/status");

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1366,768",
                "--lang=zh-CN",
            ],
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(&driver.log).unwrap_or_default();
            panic!("no Chromium session through chromedriver: {e}\nchromedriver's log:\n{log}")
        });
    client
        .set_window_size(1366, 768)
        .await
        .expect("set the window size");
    (driver, client)
}

/// Runs the binary with `args` on `config`, `stdin` as its input; it must
/// succeed.
fn xxdc(config: &Path, args: &[&str], stdin: &str) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_in_a_browser() {
    std::fs::create_dir_all(OUT).expect("target/browser-test");
    let db = TestDb::new(Backend::Sqlite).await;
    let web_port = free_port();
    // The fax is entered by hand: OCR off (tests/ocr.rs reads scans).
    let config = write_config(
        &db,
        &format!("[web]\nlisten = \"127.0.0.1:{web_port}\"\n[parse]\nocr = false\n"),
    );
    // The scan from 碧莲镇's own address, a form missing fields, and a
    // complete form from 岩头镇.
    for case in [
        "f09_pdf_image_only.eml",
        "p01_missing_field.eml",
        "f13_body_plain.eml",
    ] {
        drop_file(&db.path("spool"), case, &golden(case));
    }
    xxdc(&config, &["run", "--once"], "");
    xxdc(
        &config,
        &[
            "user",
            "add",
            "staff",
            "--role",
            "editor",
            "--password-stdin",
        ],
        "correct horse 1\n",
    );

    let mut web = Killed::spawn(
        "xxdc-intake web",
        Command::new(BIN)
            .args(["web", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info"),
        db.path("web.log"),
    );
    web.wait_http(web_port, "/login");

    let (_driver, client) = open_browser(db.dir()).await;
    let mut b = Browser {
        client,
        base: format!("http://127.0.0.1:{web_port}"),
        step: String::new(),
    };

    // 1. Log in; the dashboard.
    b.step = "1-login".into();
    b.goto("/").await;
    b.expect_path("/login").await;
    b.fill("#username", "staff").await;
    b.fill("#password", "correct horse 1").await;
    b.click("#login", "/").await;
    b.step = "1-dashboard".into();
    b.expect_text("main", "应报单位").await;
    b.find("svg").await;
    let dashboard_png = b.screenshot("dashboard.png").await;

    // 2. The scan, credited to 碧莲镇 from the review page.
    b.step = "2-review".into();
    b.goto("/review").await;
    let items = match b.client.find_all(Locator::Css("div.review-item")).await {
        Ok(items) => items,
        Err(e) => b.fail(format!("`div.review-item` not found: {e}")).await,
    };
    let mut scan = None;
    for item in items {
        if item.text().await.is_ok_and(|t| t.contains("扫描件或传真")) {
            scan = Some(item);
            break;
        }
    }
    let Some(scan) = scan else {
        return b
            .fail("no `div.review-item` with the reason “扫描件或传真” (the scanned fax)".into())
            .await;
    };
    let input = match scan.find(Locator::Css("input.assign-unit")).await {
        Ok(i) => i,
        Err(e) => {
            b.fail(format!(
                "`input.assign-unit` missing in the scan's item: {e}"
            ))
            .await
        }
    };
    b.fill_element(&input, "input.assign-unit", "bilian").await;
    let assign = match scan.find(Locator::Css("button.assign")).await {
        Ok(button) => button,
        Err(e) => {
            b.fail(format!("`button.assign` missing in the scan's item: {e}"))
                .await
        }
    };
    b.submit(&assign, "button.assign", "/units/bilian").await;
    b.expect_text("#flash-ok", "已归属到").await;

    // 3. A correction on 碧莲镇's page, and an invalid value refused.
    b.step = "3-unit".into();
    b.fill(r"#input-officer\.mobile", "13857700002").await;
    b.click(r#"[id="save-officer.mobile"]"#, "/units/bilian")
        .await;
    b.expect_text("#flash-ok", "已更正").await;
    b.expect_text(r#"[id="value-officer.mobile"]"#, "13857700002")
        .await;
    b.fill(r"#input-officer\.mobile", "1385770000").await;
    b.click(r#"[id="save-officer.mobile"]"#, "/units/bilian")
        .await;
    b.expect_text("#flash-err", "应为11位数字").await;
    b.expect_text(r#"[id="value-officer.mobile"]"#, "13857700002")
        .await;
    let unit_png = b.screenshot("unit.png").await;
    // The corrected row itself, further down the page.
    let row = b.find(r#"[id="value-officer.mobile"]"#).await;
    if let Err(e) = b
        .client
        .execute(
            "arguments[0].scrollIntoView({block: 'center'});",
            vec![json!(row)],
        )
        .await
    {
        b.fail::<()>(format!("could not scroll to the officer's mobile: {e}"))
            .await;
    }
    b.screenshot("unit-officer.png").await;

    // 4. The 名册 as the browser would download it.
    b.step = "4-export".into();
    b.goto("/").await;
    let link = b.find(r#"a[href="/export/registrations.xlsx"]"#).await;
    let href = match link.attr("href").await {
        Ok(Some(h)) => h,
        other => {
            b.fail(format!("the export link has no href: {other:?}"))
                .await
        }
    };
    let session = match b.client.get_named_cookie("xxdc_session").await {
        Ok(c) => c.value().to_string(),
        Err(e) => b.fail(format!("no xxdc_session cookie: {e}")).await,
    };
    let answer = http_get(web_port, &href, Some(&format!("xxdc_session={session}")))
        .unwrap_or_else(|e| panic!("GET {href}: {e}"));
    let body_start =
        String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]).into_owned();
    assert_eq!(answer.status, 200, "GET {href}: {body_start}");
    assert_eq!(answer.header("content-type"), Some(XLSX), "{answer:?}");
    let disposition = answer.header("content-disposition").unwrap_or_default();
    assert!(
        disposition.starts_with("attachment"),
        "Content-Disposition: {disposition}"
    );
    assert!(answer.body.starts_with(b"PK"), "not a zip: {body_start}");
    let xlsx_path = Path::new(OUT).join("registrations.xlsx");
    std::fs::write(&xlsx_path, &answer.body).expect("save the download");
    let mut workbook =
        calamine::open_workbook_from_rs::<calamine::Xlsx<_>, _>(std::io::Cursor::new(answer.body))
            .expect("the download opens as xlsx");
    let summary = workbook.worksheet_range("汇总表").expect("sheet 汇总表");
    assert_eq!(
        summary.get_size().0,
        18,
        "汇总表: the header and the 17 roster units"
    );
    let bilian = summary
        .rows()
        .find(|row| row.first() == Some(&Data::String("碧莲镇人民政府".into())))
        .expect("碧莲镇人民政府's row in 汇总表");
    assert!(
        bilian.iter().any(|c| c.to_string().contains("13857700002")),
        "碧莲镇人民政府's row lacks the corrected mobile: {bilian:?}"
    );
    println!("download: {}", xlsx_path.display());

    if let Err(e) = b.client.close().await {
        eprintln!("closing the browser session: {e}");
    }
    web.still_running();
    println!(
        "browser test passed; screenshots {} and {}",
        dashboard_png.display(),
        unit_png.display()
    );
}
