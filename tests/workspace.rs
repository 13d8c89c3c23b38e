//! The office's decisions from the command line, through the real binary,
//! on SQLite and on PostgreSQL: `review list/assign/accept/dismiss`,
//! `registration set/show`, `export` and `user`, and the correction layer
//! across `reprocess` and across a newer submission from the unit.

mod db;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use db::{BIN, Backend, TestDb, both, drop_file, golden, write_config};

/// Runs the binary with `args` on `config`; stdin from `input`.
fn xxdc(config: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    if let Some(text) = input {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("wait")
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = xxdc(config, args, None);
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A refusal: exit code `code` and the Chinese reason on stderr.
fn refused(config: &Path, args: &[&str], code: i32, reason: &str) {
    let out = xxdc(config, args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.contains(reason),
        "{args:?}: “{reason}” not in: {stderr}"
    );
}

fn json(config: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(config, args)).expect("JSON output")
}

fn review(config: &Path) -> Vec<Value> {
    json(config, &["review", "list", "--json"])
        .as_array()
        .expect("an array")
        .clone()
}

fn show(config: &Path, unit: &str) -> Value {
    json(config, &["registration", "show", unit, "--json"])
}

/// The scan from 碧莲镇's own address, a form missing fields from 桥下镇,
/// a form of a unit not on the roster, a complete one from 岩头镇, and an
/// auto-reply.
fn seed(db: &TestDb) -> std::path::PathBuf {
    // Scans entered by hand: OCR off (the OCR path has its own test).
    seed_with(db, "[parse]\nocr = false\n")
}

fn seed_with(db: &TestDb, extra: &str) -> std::path::PathBuf {
    let config = write_config(db, extra);
    for case in [
        "f09_pdf_image_only.eml",
        "p01_missing_field.eml",
        "p04_unknown_unit.eml",
        "f13_body_plain.eml",
        "p06_autoreply.eml",
    ] {
        drop_file(&db.path("spool"), case, &golden(case));
    }
    ok(&config, &["run", "--once"]);
    config
}

fn item<'a>(items: &'a [Value], reason: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["reason"] == reason)
        .unwrap_or_else(|| panic!("no review item {reason} in {items:#?}"))
}

async fn a_scan_is_assigned_then_entered_by_hand(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = seed(&db);
    let items = review(&config);
    let scan = item(&items, "scanned_document");
    assert_eq!(scan["unit_id"], "bilian", "the sender's unit");
    assert_eq!(scan["attachments"][0]["format"], "pdf");
    let message = scan["message_id"].as_str().expect("message_id").to_string();
    assert_eq!(show(&config, "bilian")["state"], "needs_review");

    ok(
        &config,
        &["review", "assign", &message, "bilian", "--note", "传真"],
    );
    let shown = show(&config, "bilian");
    assert_eq!(shown["assigned"], true);
    assert_eq!(shown["registration"]["officer"]["name"], Value::Null);
    assert_eq!(shown["state"], "needs_review", "nothing entered yet");
    assert!(
        review(&config)
            .iter()
            .all(|i| i["message_id"] != message.as_str()),
        "a decided message leaves the review list"
    );

    // An invalid value is refused with the parser's reason.
    refused(
        &config,
        &[
            "registration",
            "set",
            "bilian",
            "officer.mobile",
            "1380577123",
        ],
        1,
        "信息员手机号码应为11位数字：1380577123",
    );
    refused(
        &config,
        &["registration", "set", "bilian", "officer.phone", "1"],
        1,
        "没有字段“officer.phone”",
    );
    for (field, value) in [
        ("unit.name", "碧莲镇人民政府"),
        ("leader.name", "陈国强"),
        ("leader.mobile", "139 5771 0001"),
        ("officer.name", "林小燕"),
        ("officer.mobile", "13857700002"),
        ("officer.email", "blz@yj.gov.cn"),
    ] {
        ok(&config, &["registration", "set", "bilian", field, value]);
    }
    let shown = show(&config, "bilian");
    assert_eq!(shown["state"], "registered");
    assert_eq!(
        shown["registration"]["leader"]["mobile"], "13957710001",
        "normalised"
    );
    let trail = shown["decisions"].as_array().expect("decisions");
    assert_eq!(trail.len(), 7, "assign + six corrections: {trail:#?}");
    assert_eq!(trail[0]["kind"], "assign");
    assert_eq!(trail[0]["note"], "传真");
    assert_eq!(trail[0]["by"], "tester");
    assert_eq!(trail[3]["field"], "leader.mobile");
    assert_eq!(trail[3]["before"], Value::Null);
    assert_eq!(trail[3]["after"], "13957710001");

    // The layer survives a re-read of every message.
    ok(&config, &["reprocess"]);
    let again = show(&config, "bilian");
    assert_eq!(again["state"], "registered");
    assert_eq!(again["registration"], shown["registration"]);

    // The 名册 carries it.
    let csv_path = db.path("名册.csv");
    ok(
        &config,
        &[
            "export",
            "--format",
            "csv",
            "--out",
            csv_path.to_str().expect("utf-8"),
        ],
    );
    let csv = std::fs::read(&csv_path).expect("csv");
    assert!(csv.starts_with(b"\xEF\xBB\xBF"), "UTF-8 with BOM");
    let text = String::from_utf8(csv[3..].to_vec()).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.starts_with("碧莲镇人民政府"))
        .expect("碧莲镇's row");
    assert!(line.contains("林小燕") && line.contains("13857700002") && line.contains("已登记"));
    assert_eq!(text.lines().count(), 1 + 17, "header and every roster unit");
}

async fn accept_dismiss_and_refusals(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = seed(&db);
    // 桥下镇's form misses fields: accepted as it is.
    assert_eq!(show(&config, "qiaoxia")["state"], "needs_review");
    ok(
        &config,
        &["review", "accept", "qiaoxia", "--note", "电话确认过"],
    );
    let shown = show(&config, "qiaoxia");
    assert_eq!(shown["state"], "registered");
    assert_eq!(shown["accepted"], true);
    assert!(
        shown["problems"]
            .as_array()
            .expect("problems")
            .contains(&"missing_field".into()),
        "accepted problems stay visible"
    );
    assert!(
        review(&config).iter().all(|i| i["unit_id"] != "qiaoxia"),
        "its message leaves the review list"
    );

    // The unknown unit's form is credited to a roster unit.
    let items = review(&config);
    let unknown = item(&items, "unknown_unit")["message_id"]
        .as_str()
        .expect("id")
        .to_string();
    ok(&config, &["review", "assign", &unknown, "xfb"]);
    let xfb = show(&config, "xfb");
    assert_eq!(
        xfb["registration"]["unit"]["name"], "永嘉县审计局",
        "the form as read"
    );
    assert!(
        !xfb["problems"]
            .as_array()
            .expect("problems")
            .contains(&"unknown_unit".into()),
        "the person settled the unit: {xfb}"
    );

    // The auto-reply is not a submission; a note is required.
    let auto = item(&review(&config), "no_registration_found")["message_id"]
        .as_str()
        .expect("id")
        .to_string();
    refused(&config, &["review", "dismiss", &auto], 2, "--note");
    refused(
        &config,
        &["review", "dismiss", &auto, "--note", " "],
        1,
        "请用 --note 说明原因",
    );
    ok(&config, &["review", "dismiss", &auto, "--note", "自动回复"]);
    assert!(
        review(&config)
            .iter()
            .all(|i| i["message_id"] != auto.as_str())
    );

    refused(
        &config,
        &["review", "assign", &auto, "nosuch"],
        1,
        "名单中没有编号为“nosuch”的单位",
    );
    refused(
        &config,
        &["review", "assign", "<nosuch@x>", "xfb"],
        1,
        "没有找到邮件“<nosuch@x>”",
    );
    refused(
        &config,
        &["review", "accept", "hesheng"],
        1,
        "还没有可确认或更正的登记",
    );
    refused(
        &config,
        &["registration", "set", "yantou", "officer.qq", "12"],
        1,
        "信息员QQ号码应为5至12位数字：12",
    );

    // status --json shows the same states.
    let status = json(&config, &["status", "--json"]);
    let state = |id: &str| {
        status["units"]
            .as_array()
            .expect("units")
            .iter()
            .find(|u| u["unit_id"] == id)
            .expect("unit")["state"]
            .clone()
    };
    assert_eq!(state("qiaoxia"), "registered");
    assert_eq!(state("yantou"), "registered");
}

async fn a_newer_submission_shows_over_a_correction(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = seed(&db);
    ok(
        &config,
        &[
            "registration",
            "set",
            "yantou",
            "officer.mobile",
            "13900000001",
            "--note",
            "电话核实",
        ],
    );
    let corrected = show(&config, "yantou");
    assert_eq!(
        corrected["registration"]["officer"]["mobile"],
        "13900000001"
    );
    assert_eq!(
        corrected["corrected"],
        serde_json::json!(["officer.mobile"])
    );
    // Same value again: nothing to do.
    refused(
        &config,
        &[
            "registration",
            "set",
            "yantou",
            "officer.mobile",
            "13900000001",
        ],
        1,
        "该值与现有值相同",
    );

    let newer = db::body_registration(
        "newer-yantou@yj.gov.cn",
        "yantouzf@163.com",
        "岩头镇人民政府",
        "周新",
        "13811112222",
    );
    // Received later (times are whole seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    drop_file(&db.path("spool"), "newer.eml", &newer);
    ok(&config, &["run", "--once"]);
    let shown = show(&config, "yantou");
    assert_eq!(
        shown["registration"]["officer"]["name"], "周新",
        "the new one"
    );
    assert_eq!(shown["registration"]["officer"]["mobile"], "13811112222");
    assert_eq!(shown["corrected_older"], true);
    assert_eq!(shown["state"], "needs_review", "the office decides");
    assert!(
        shown["problems"]
            .as_array()
            .expect("problems")
            .contains(&"corrected_older".into())
    );
    // Deciding on the new one settles it.
    ok(&config, &["review", "accept", "yantou"]);
    assert_eq!(show(&config, "yantou")["state"], "registered");
    let text = ok(&config, &["registration", "show", "yantou"]);
    assert!(
        text.contains("更正字段") && text.contains("电话核实"),
        "{text}"
    );
}

async fn users_and_exports(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = seed(&db);
    let out = xxdc(
        &config,
        &["user", "add", "li", "--password-stdin"],
        Some("short\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("密码至少需要 8 个字符"));
    let out = xxdc(&config, &["user", "add", "li"], Some("long enough\n"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "no password on the command line"
    );
    let out = xxdc(
        &config,
        &["user", "add", "li", "--role", "viewer", "--password-stdin"],
        Some("long enough\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = ok(&config, &["user", "list"]);
    assert!(
        list.contains("li") && list.contains("只读") && list.contains("正常"),
        "{list}"
    );
    ok(&config, &["user", "disable", "li"]);
    assert!(ok(&config, &["user", "list"]).contains("已停用"));
    refused(
        &config,
        &["user", "disable", "nobody"],
        1,
        "没有用户“nobody”",
    );

    let xlsx = db.path("名册.xlsx");
    ok(
        &config,
        &[
            "export",
            "--format",
            "xlsx",
            "--out",
            xlsx.to_str().expect("utf-8"),
        ],
    );
    use calamine::Reader as _;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).expect("xlsx opens");
    assert_eq!(
        book.sheet_names(),
        vec!["汇总表".to_string(), "未报送".to_string()]
    );
    let sheet = book.worksheet_range("汇总表").expect("汇总表");
    let header: Vec<String> = sheet
        .rows()
        .next()
        .expect("header")
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(header[0], "单位");
    assert!(header.contains(&"信息员手机号码".to_string()));
    assert!(header.ends_with(&["状态".into(), "报送时间".into(), "备注".into()]));
    assert_eq!(sheet.height(), 1 + 17, "every roster unit, in roster order");
    assert_eq!(
        sheet.rows().nth(1).expect("first unit")[0].to_string(),
        "桥头镇人民政府"
    );

    let vcf = db.path("通讯录.vcf");
    ok(
        &config,
        &[
            "export",
            "--format",
            "vcf",
            "--out",
            vcf.to_str().expect("utf-8"),
        ],
    );
    let cards = std::fs::read_to_string(&vcf).expect("vcf");
    assert!(cards.contains("BEGIN:VCARD\r\nVERSION:3.0\r\n"));
    assert!(cards.contains("ORG:岩头镇人民政府"), "{cards}");
    refused(
        &config,
        &["export", "--format", "pdf", "--out", "x"],
        2,
        "pdf",
    );
}

/// With the OCR models (target/ocr-models, which scripts/check fetches),
/// the scan from 碧莲镇's address is read and credited, pre-filled, and
/// waits for a person: corrections do not settle it, an acceptance does.
async fn a_scan_read_by_ocr_waits_for_a_person(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = seed_with(&db, "");
    let shown = show(&config, "bilian");
    assert_eq!(shown["state"], "needs_review", "{shown}");
    assert_eq!(shown["registration"]["ocr"], true);
    assert_eq!(shown["assigned"], false, "credited by the reading itself");
    assert!(
        shown["registration"]["officer"]["name"].is_string(),
        "pre-filled: {shown}"
    );
    ok(
        &config,
        &[
            "registration",
            "set",
            "bilian",
            "leader.title",
            "党委委员、副镇长",
        ],
    );
    assert_eq!(show(&config, "bilian")["state"], "needs_review");
    ok(
        &config,
        &["review", "accept", "bilian", "--note", "已与传真原件核对"],
    );
    let accepted = show(&config, "bilian");
    assert_eq!(accepted["state"], "registered");
    assert_eq!(
        accepted["registration"]["leader"]["title"],
        "党委委员、副镇长"
    );
}

both!(2; a_scan_read_by_ocr_waits_for_a_person, a_scan_is_assigned_then_entered_by_hand, accept_dismiss_and_refusals,
      a_newer_submission_shows_over_a_correction, users_and_exports);
