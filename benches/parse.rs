//! `cargo bench --bench parse`: throughput of [`Pipeline::parse`] on one
//! typical message per format (xlsx, xls, ods, docx, doc, pdf, a form typed
//! into a text body, one in an HTML body, an xlsx inside a zip, a scanned
//! fax TIFF), each read the way the daemon reads it — every attachment in a
//! sandboxed child process of the `xxdc-intake` binary — and, for
//! comparison, in this process (`Isolation::InProcess`).
//!
//! Criterion reports the time per message and, as `thrpt`, messages per
//! second. At the end a summary table gives messages/second per format for
//! both isolations (from a short second timing pass), how many times slower
//! the pool is than in-process reading (target: within 2×), and the peak
//! resident memory: of this process (`VmHWM`), and of the largest worker
//! (`getrusage(RUSAGE_CHILDREN)` once the pool has ended them; workers
//! start no processes of their own).
//!
//! The sandbox needs the release binary, which `cargo bench` does not build
//! for a bench target:
//!
//! ```text
//! cargo build --release && cargo bench --bench parse
//! ```
//!
//! `XXDC_BIN` names another binary (default `target/release/xxdc-intake`).
//! The messages are built from `tests/fixtures/` when the bench starts.

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use xxdc_intake::parse::pipeline::{DEFAULT_REQUIRED, Limits, Pipeline};
use xxdc_intake::parse::roster::Roster;
use xxdc_intake::parse::sandbox::{ChildLimits, Isolation};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{path}")).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// The units the forms below name, in the roster's CSV form.
const ROSTER: &str = "id,name,category,aliases,emails\n\
qiaotou,桥头镇人民政府,乡镇,桥头镇,qtz@yj.gov.cn\n\
jyj,永嘉县教育局,县直单位,县教育局|教育局,jyj@yj.gov.cn\n\
jiangbei,江北街道办事处,街道,江北街道,jbjd@yj.gov.cn\n\
sanjiang,三江街道办事处,街道,三江街道,sjjd@yj.gov.cn\n\
sjj,永嘉县审计局,县直单位,审计局,sjj@yj.gov.cn\n";

const TEXT_BODY: &str = "县府办信息督查科：\n    根据通知要求，现将我街道分管政务信息领导及信息员报送如下：\n\n\
单位：永嘉县三江街道办事处\n分管领导姓名：刘海乐\n职务：党工委副书记\n分管工作：办公室、文秘、信息、档案\n\
手机：13757732773\n办公电话：67613727\n信息员姓名：麻艳\n性别：女\n职务：宣传干事\n手机：13057706444\n\
QQ：40902278\nE-mail：my928@hotmail.com\n\n三江街道党政办\n2007年5月18日\n";

const HTML_BODY: &str = "<html><body>县府办信息督查科：<br>&nbsp;&nbsp;根据通知要求，现将我局分管政务信息领导及信息员报送如下：<br><br>\
单位：永嘉县审计局<br>分管领导：李松军，职务：纪检组长，手机：13957765165，办电：0577-67422869<br>\
信息员：高胜正，职务：秘书，手机：13805776240，QQ：433636，邮箱：gsz665@126.com<br><br>县审计局办公室<br>2007年5月17日<br></body></html>";

/// A message as a 2007 mail client sent it: a short text body and one
/// base64 attachment, or only a body.
fn message(from: &str, body: (&str, &str), attachment: Option<(&str, &str, &[u8])>) -> Vec<u8> {
    let mut out = format!(
        "Received: from yj.gov.cn by mx1.163.com; Wed, 16 May 2007 09:12:05 +0800\r\n\
         Date: Wed, 16 May 2007 09:12:00 +0800\r\nFrom: {from}\r\nTo: xxdc2004@163.com\r\n\
         Subject: =?UTF-8?B?55m76K6w6KGo?=\r\nMessage-ID: <bench@yj.gov.cn>\r\nMIME-Version: 1.0\r\n"
    );
    let (ctype, text) = body;
    match attachment {
        None => out.push_str(&format!(
            "Content-Type: {ctype}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
        )),
        Some((name, atype, bytes)) => {
            out.push_str("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n");
            out.push_str(&format!("Content-Type: {ctype}; charset=utf-8\r\n\r\n{text}\r\n--b\r\n"));
            out.push_str(&format!(
                "Content-Type: {atype}; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}\r\n--b--\r\n",
                base64(bytes)
            ));
        }
    }
    out.into_bytes()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for k in 0..4 {
            out.push(if k <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn zip_of(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default())
        .expect("zip entry");
    w.write_all(bytes).expect("zip write");
    w.finish().expect("zip finish").into_inner()
}

/// One typical message per format: (name, raw message).
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let note = ("text/plain", "附件是我单位的登记表，请查收。");
    let xlsx = fixture("hostile/form.xlsx");
    let file = |from: &str, name: &str, ctype: &str, bytes: &[u8]| {
        message(from, note, Some((name, ctype, bytes)))
    };
    vec![
        (
            "xlsx",
            file(
                "qtz@yj.gov.cn",
                "登记表.xlsx",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                &xlsx,
            ),
        ),
        (
            "xls",
            file(
                "jyj@yj.gov.cn",
                "登记表.xls",
                "application/vnd.ms-excel",
                &fixture("hostile/form.xls"),
            ),
        ),
        (
            "ods",
            file(
                "qtz@yj.gov.cn",
                "登记表.ods",
                "application/vnd.oasis.opendocument.spreadsheet",
                &fixture("office/form.ods"),
            ),
        ),
        (
            "docx",
            file(
                "jyj@yj.gov.cn",
                "登记表.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                &fixture("office/form.docx"),
            ),
        ),
        (
            "doc",
            file(
                "jbjd@yj.gov.cn",
                "登记表.doc",
                "application/msword",
                &fixture("doc/form.doc"),
            ),
        ),
        (
            "pdf",
            file(
                "jyj@yj.gov.cn",
                "登记表.pdf",
                "application/pdf",
                &fixture("pdf/form_ruled.pdf"),
            ),
        ),
        (
            "body_text",
            message("sjjd@yj.gov.cn", ("text/plain", TEXT_BODY), None),
        ),
        (
            "body_html",
            message("sjj@yj.gov.cn", ("text/html", HTML_BODY), None),
        ),
        (
            "zip",
            file(
                "qtz@yj.gov.cn",
                "登记表.zip",
                "application/zip",
                &zip_of("登记表.xlsx", &xlsx),
            ),
        ),
        (
            "tiff_scanned",
            file(
                "fax@yj.gov.cn",
                "fax.tif",
                "image/tiff",
                &fixture("image/fax_g4.tif"),
            ),
        ),
    ]
}

fn binary() -> PathBuf {
    let path = std::env::var_os("XXDC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/release/xxdc-intake"
            ))
        });
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --release` first, or set XXDC_BIN",
        path.display()
    );
    path
}

fn pipelines() -> Vec<(&'static str, Pipeline)> {
    let mut roster_file = tempfile::NamedTempFile::with_suffix(".csv").expect("temp roster");
    roster_file
        .write_all(ROSTER.as_bytes())
        .expect("write roster");
    let roster = || Some(Roster::load(roster_file.path()).expect("roster"));
    let child = Isolation::workers(binary(), ChildLimits::default(), Default::default());
    vec![
        (
            "pool",
            Pipeline::new(
                roster(),
                DEFAULT_REQUIRED.to_vec(),
                child,
                Limits::default(),
            ),
        ),
        (
            "in_process",
            Pipeline::new(
                roster(),
                DEFAULT_REQUIRED.to_vec(),
                Isolation::InProcess,
                Limits::default(),
            ),
        ),
    ]
}

/// Messages per second of one case, from parsing it for about `span`.
fn rate(pipeline: &Pipeline, name: &str, raw: &[u8], span: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u32;
    while n < 3 || start.elapsed() < span {
        black_box(pipeline.parse(name, black_box(raw)));
        n += 1;
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

/// Peak resident set size of this process, KiB.
fn own_peak_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set size of the largest waited-for child, KiB.
#[expect(
    unsafe_code,
    reason = "getrusage has no safe wrapper in our dependencies"
)]
fn children_peak_kb() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the call's duration.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } == 0;
    if ok {
        u64::try_from(usage.ru_maxrss).unwrap_or(0)
    } else {
        0
    }
}

fn main() {
    let messages = messages();
    let pipelines = pipelines();

    // Every case must read as intended, or the figures mean nothing.
    for (format, raw) in &messages {
        for (isolation, pipeline) in &pipelines {
            let report = pipeline.parse(&format!("{format}.eml"), raw);
            let found = !report.registrations.is_empty() || *format == "tiff_scanned";
            assert!(found, "{format} ({isolation}): no registration read");
        }
    }

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
        .configure_from_args();
    for (isolation, pipeline) in &pipelines {
        let mut group = criterion.benchmark_group(format!("parse/{isolation}"));
        group.throughput(Throughput::Elements(1));
        for (format, raw) in &messages {
            let input = format!("{format}.eml");
            group.bench_function(*format, |b| {
                b.iter(|| pipeline.parse(&input, black_box(raw)))
            });
        }
        group.finish();
    }
    criterion.final_summary();

    println!("\nmessages/second (each case parsed for about 0.5 s)");
    println!(
        "{:<14}{:>12}{:>14}{:>16}",
        "format", "pool", "in_process", "in_process/pool"
    );
    for (format, raw) in &messages {
        let input = format!("{format}.eml");
        let rates: Vec<f64> = pipelines
            .iter()
            .map(|(_, p)| rate(p, &input, raw, Duration::from_millis(500)))
            .collect();
        let slower = rates[1] / rates[0].max(f64::MIN_POSITIVE);
        println!(
            "{format:<14}{:>12.1}{:>14.1}{:>15.2}×{}",
            rates[0],
            rates[1],
            slower,
            if slower > 2.0 { "  (over 2×)" } else { "" }
        );
    }
    // The workers are waited for when the pool ends: only then do they
    // count in RUSAGE_CHILDREN.
    drop(pipelines);
    println!(
        "peak RSS: bench process (parent, incl. in-process reads) {:.1} MB; largest sandbox child {:.1} MB",
        own_peak_kb() as f64 / 1024.0,
        children_peak_kb() as f64 / 1024.0
    );
}
