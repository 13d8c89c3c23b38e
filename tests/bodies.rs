//! What units type into a mail instead of filling in the form, run through
//! the real binary (`parse --json`): free sentences, replies that quote the
//! office's notice (text, `>` and HTML), forwards, the office's own numbers
//! in a form, HTML cells of several lines, and a bounce that carries a
//! unit's form back.

use std::io::Write;
use std::process::Command;

use serde_json::Value;

const ROSTER: &str = "tests/fixtures/golden/roster.csv";
const FORM_XLSX: &[u8] = include_bytes!("fixtures/hostile/form.xlsx");

/// The office's numbers, as the notice prints them.
const OFFICE_CONFIG: &str = "[parse]\noffice_contacts = [\"0577-67221531\", \"传真 0577-67221532\", \"xxdc2004@163.com\"]\n";

fn parse(raw: &[u8], config: Option<&str>) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("message.eml");
    std::fs::write(&input, raw).expect("write the message");
    let mut command = Command::new(env!("CARGO_BIN_EXE_xxdc-intake"));
    if let Some(text) = config {
        let path = dir.path().join("config.toml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write the config");
        command.arg("--config").arg(path);
    }
    let out = command
        .args(["parse", "--json", "--roster", ROSTER])
        .arg(&input)
        .output()
        .expect("run parse");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn mail(subject: &str, body: &str) -> Vec<u8> {
    mail_of(subject, "text/plain", body)
}

/// A one-part mail from a unit, its body of `content_type` in UTF-8.
fn mail_of(subject: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "From: hfp@yj.gov.cn\r\nTo: xxdc2004@163.com\r\nSubject: =?UTF-8?B?{}?=\r\n\
         Date: Tue, 15 May 2007 10:00:00 +0800\r\nMessage-ID: <t@yj.gov.cn>\r\nMIME-Version: 1.0\r\n\
         Content-Type: {content_type}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        b64(subject.as_bytes()),
        body.replace('\n', "\r\n")
    )
    .into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn only_registration(report: &Value) -> &Value {
    let regs = report["registrations"].as_array().expect("registrations");
    assert_eq!(regs.len(), 1, "{report:#}");
    &regs[0]
}

#[test]
fn a_leader_and_an_officer_typed_as_sentences() {
    let report = parse(
        &mail(
            "民政局信息员登记",
            "县府办信息督查科：\n  现将我局分管政务信息领导及信息员报送如下：\n单位：永嘉县民政局\n\
             分管领导：厉丹芳（副局长），手机13957785650，办公电话67121553，分管宣传、统战、信息\n\
             信息员：胡峰平（文秘），男，1982年3月，中共党员，手机13857712669，办公电话67121554，电子邮箱hfp@yjmz.gov.cn\n\
             民政局办公室\n",
        ),
        None,
    );
    let reg = only_registration(&report);
    assert_eq!(reg["unit"]["name"], "永嘉县民政局");
    assert_eq!(reg["leader"]["name"], "厉丹芳");
    assert_eq!(reg["leader"]["title"], "副局长");
    assert_eq!(reg["leader"]["mobile"], "13957785650");
    assert_eq!(reg["leader"]["office_phone"], "67121553");
    assert_eq!(reg["leader"]["duties"], "宣传、统战、信息");
    assert_eq!(reg["officer"]["name"], "胡峰平");
    assert_eq!(reg["officer"]["title"], "文秘");
    assert_eq!(reg["officer"]["gender"], "男");
    assert_eq!(reg["officer"]["birth"], "1982-03");
    assert_eq!(reg["officer"]["party_member"], true);
    assert_eq!(reg["officer"]["mobile"], "13857712669");
    assert_eq!(reg["officer"]["email"], "hfp@yjmz.gov.cn");
    assert_eq!(reg["unit_match"]["unit_id"], "mzj", "{report:#}");
}

/// The same sentences in an HTML-only body (webmail without a plain-text
/// part).
#[test]
fn sentences_in_an_html_body() {
    let html = "<html><body><div>单位：永嘉县民政局</div>\
        <div>分管领导：厉丹芳（副局长），手机13957785650，分管宣传、统战、信息</div>\
        <div>信息员：胡峰平（文秘），男，手机13857712669，电子邮箱hfp@yjmz.gov.cn</div></body></html>";
    let report = parse(&mail_of("登记", "text/html", html), None);
    let reg = only_registration(&report);
    assert_eq!(reg["leader"]["name"], "厉丹芳");
    assert_eq!(reg["leader"]["title"], "副局长");
    assert_eq!(reg["leader"]["duties"], "宣传、统战、信息");
    assert_eq!(reg["officer"]["name"], "胡峰平");
    assert_eq!(reg["officer"]["email"], "hfp@yjmz.gov.cn");
}

/// The answer above, the office's notice quoted below (Outlook style): only
/// the answer is read, and the notice's contact numbers are nobody's.
#[test]
fn a_reply_quoting_the_notice_is_read_without_the_quote() {
    let body = "单位：永嘉县民政局\n信息员姓名：胡峰平\n手机：13857712669\n电子邮箱：hfp@yjmz.gov.cn\n\n\
                -----原始邮件-----\n发件人: \"信息督查科\" <xxdc2004@163.com>\n发送时间: 2007年5月10日 9:00\n\
                主题: 关于报送分管政务信息领导及信息员的通知\n各乡镇、街道，县直各单位：\n\
                分管领导姓名：\n办公电话：0577-67221531\n信息员姓名：陈立\n传真：0577-67221532\n";
    for config in [None, Some(OFFICE_CONFIG)] {
        let report = parse(&mail("回复：关于报送的通知", body), config);
        let reg = only_registration(&report);
        assert_eq!(reg["officer"]["name"], "胡峰平");
        assert_eq!(reg["unit"]["fax"], Value::Null, "{report:#}");
        assert_eq!(reg["leader"]["office_phone"], Value::Null, "{report:#}");
    }
    // `>` quoting, as Thunderbird and mutt write it.
    let quoted = "单位：永嘉县民政局\n信息员姓名：胡峰平\n手机：13857712669\n\
                  > 信息员姓名：陈立\n> 办公电话：0577-67221531\n";
    let report = parse(&mail("Re: 登记表", quoted), None);
    let reg = only_registration(&report);
    assert_eq!(reg["officer"]["name"], "胡峰平");
    assert_eq!(reg["officer"]["office_phone"], Value::Null);
}

/// A forward passes on a unit's own mail: what is below the marker is read.
#[test]
fn a_forward_is_read() {
    let body = "请查收。\n\n---------- Forwarded message ---------\nFrom: 胡峰平 <hfp@yjmz.gov.cn>\n\
                Subject: 登记表\n\n单位：永嘉县民政局\n信息员姓名：胡峰平\n手机：13857712669\n";
    let report = parse(&mail("Fwd: 登记表", body), None);
    assert_eq!(only_registration(&report)["officer"]["name"], "胡峰平");
}

/// A unit that copied the office's example numbers into its form: they are
/// dropped (and a required one is then reported missing).
#[test]
fn the_offices_own_numbers_never_become_a_units() {
    let body = "单位：永嘉县民政局\n分管领导姓名：厉丹芳\n手机：13957785650\n办公电话：0577-67221531\n\
                信息员姓名：胡峰平\n手机：13857712669\n电子邮箱：xxdc2004@163.com\n传真：(0577)67221532\n";
    let report = parse(&mail("登记表", body), Some(OFFICE_CONFIG));
    let reg = only_registration(&report);
    assert_eq!(reg["leader"]["office_phone"], Value::Null, "{report:#}");
    assert_eq!(reg["officer"]["email"], Value::Null);
    assert_eq!(reg["unit"]["fax"], Value::Null);
    assert_eq!(reg["leader"]["mobile"], "13957785650");
    let missing: Vec<&Value> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|p| p["code"] == "missing_field")
        .map(|p| &p["field"])
        .collect();
    assert!(
        missing.contains(&&Value::from("officer.email")),
        "{report:#}"
    );
}

/// An HTML table pasted into a mail: a cell of several paragraphs keeps
/// every line; the quoted notice after QQ's marker is not read.
#[test]
fn html_cells_keep_every_line_and_the_quote_is_left_out() {
    let html = "<html><body><table border=1>\
        <tr><td>单位</td><td colspan=3>永嘉县民政局</td></tr>\
        <tr><td>信息员姓名</td><td>胡峰平</td><td>手机</td><td>13857712669</td></tr>\
        <tr><td>个人简历</td><td colspan=3><p>2000.09-2004.07 浙江师范大学学习</p><div>2004.08-今 永嘉县民政局工作</div>2008.01-今 兼任信息员</td></tr>\
        </table><div>------------------&nbsp;原始邮件&nbsp;------------------</div>\
        <div>发件人: xxdc2004@163.com</div><table><tr><td>信息员姓名</td><td>陈立</td></tr></table>\
        <blockquote><p>信息员姓名：王五</p></blockquote></body></html>";
    let report = parse(&mail_of("回复：登记表", "text/html", html), None);
    let reg = only_registration(&report);
    assert_eq!(reg["officer"]["name"], "胡峰平");
    assert_eq!(
        reg["officer"]["resume"],
        "2000.09-2004.07 浙江师范大学学习\n2004.08-今 永嘉县民政局工作\n2008.01-今 兼任信息员"
    );
}

/// A bounce returning a unit's mail: its form is listed with what it
/// holds, nothing is credited.
#[test]
fn a_bounce_lists_the_returned_form_and_credits_nothing() {
    let raw = format!(
        "From: MAILER-DAEMON@163.com\r\nTo: xxdc2004@163.com\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <b1@163.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n\r\n\
         --B1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
         --B1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; 163.com\r\n\r\n\
         Final-Recipient: rfc822; nobody@yj.gov.cn\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         --B1\r\nContent-Type: message/rfc822\r\n\r\nFrom: qtz@yj.gov.cn\r\nTo: xxdc2004@163.com\r\n\
         Subject: form\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B2\"\r\n\r\n\
         --B2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n信息员姓名：张三\r\n\
         --B2\r\nContent-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet; name=\"form.xlsx\"\r\n\
         Content-Disposition: attachment; filename=\"form.xlsx\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --B2--\r\n--B1--\r\n",
        b64(FORM_XLSX)
    );
    let report = parse(raw.as_bytes(), None);
    assert_eq!(report["kind"], "bounce");
    assert_eq!(report["registrations"], Value::Array(Vec::new()));
    let atts = report["attachments"].as_array().expect("attachments");
    assert_eq!(atts.len(), 1, "{report:#}");
    assert_eq!(atts[0]["filename"], "form.xlsx");
    assert_eq!(atts[0]["format"], "xlsx");
    let codes: Vec<&Value> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| &p["code"])
        .collect();
    assert_eq!(codes, [&Value::from("no_registration_found")]);
}
