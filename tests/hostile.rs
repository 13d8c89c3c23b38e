//! Hostile input, end to end: each case is an e-mail built here, carrying one
//! hostile attachment next to a good registration form, and run through the
//! real binary (`xxdc-intake parse --json`), which reads every attachment in a
//! sandboxed child process. Every case checks that
//!
//! - the process survives: exit status 0 and one JSON report;
//! - the hostile attachment ends as `outcome: "error"` (or `unsupported`)
//!   with a Chinese `detail` naming the limit that stopped it, and an
//!   `unreadable_attachment` problem says so;
//! - the good form next to it is still `parsed`, with its registration;
//! - the peak memory of the parent process stays under 200 MB;
//! - nothing is written: the run's working directory stays empty.
//!
//! Hostile files are built at run time (they are tiny to build, however
//! large they claim or expand to); only the `.xls` files come from
//! `tests/fixtures/hostile/generate.py` (xlwt). Zip archives are assembled by
//! hand so that sizes can lie and deflate streams can be crafted: a
//! zip bomb of 1.5 GB is a 1.5 MB deflate stream written directly as bits
//! (see [`deflate_run`]), which takes no time to build, where compressing
//! 1.5 GB in a debug build would take minutes.
//!
//! Every limit of `[limits]` (see `src/config.rs`) has a case that lowers it
//! through a `--config` file and shows the attachment it stops.
//!
//! # How the parent's peak memory is measured
//!
//! The binary is spawned with `std::process::Command`, and while it runs its
//! `/proc/<pid>/status` is read every 2 ms for `VmHWM` (the peak resident
//! set size the kernel keeps for that one process; the sandbox children are
//! separate processes with their own counters and are not included). The
//! last value read before the process exits is the peak. `getrusage` cannot
//! be used: `RUSAGE_CHILDREN` would add the sandbox grandchildren, which are
//! allowed up to `limits.child.memory_mb` each. Growth in the last 2 ms
//! before exit could be missed; the parent's work is done well before it
//! prints its report, so this is not a concern in practice.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The parent's peak resident memory must stay under this (KiB).
const PEAK_LIMIT_KB: u64 = 200 * 1024;

const GOOD_XLSX: &[u8] = include_bytes!("fixtures/hostile/form.xlsx");
const GOOD_XLS: &[u8] = include_bytes!("fixtures/hostile/form.xls");
const FAR_CORNER_XLS: &[u8] = include_bytes!("fixtures/hostile/far_corner.xls");
const FORM_PDF: &[u8] = include_bytes!("fixtures/pdf/form_ruled.pdf");
const TWO_PAGES_PDF: &[u8] = include_bytes!("fixtures/pdf/two_pages.pdf");

const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const DOCX_TYPE: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

// ---------------------------------------------------------------------------
// Running the binary

/// One run of `xxdc-intake parse --json`.
struct Run {
    status: ExitStatus,
    reports: Vec<Value>,
    stderr: String,
    /// Peak resident set size of the parent process, KiB (`VmHWM`).
    peak_kb: u64,
}

/// A scratch folder for one case: inputs in `in/`, an empty working
/// directory `cwd/a/b/c/d` for the run (deep, so that `../../..` from it
/// still lands inside the scratch folder).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("in")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("cwd/a/b/c/d")).expect("mkdir");
        Self { dir }
    }

    fn input(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join("in").join(name);
        std::fs::write(&path, bytes).expect("write input");
        path
    }

    /// Writes a config file holding `toml` and returns its path.
    fn config(&self, toml: &str) -> PathBuf {
        self.input("config.toml", toml.as_bytes())
    }

    fn cwd(&self) -> PathBuf {
        self.dir.path().join("cwd/a/b/c/d")
    }

    /// Every file below `cwd/`: parse must write none.
    fn written(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.path().join("cwd"), &mut out);
        out
    }

    /// Runs `parse --json` on `files` with an optional config and checks
    /// what every run must show: exit 0, one report per file, nothing
    /// written, the parent's peak memory under the limit.
    fn parse(&self, label: &str, config: Option<&Path>, files: &[&Path]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xxdc-intake"));
        cmd.arg("parse");
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--json").args(files);
        let run = run_measured(cmd.current_dir(self.cwd()));
        assert!(
            run.status.success(),
            "{label}: exit status {:?}, stderr: {}",
            run.status,
            run.stderr
        );
        assert_eq!(
            run.reports.len(),
            files.len(),
            "{label}: one report per input"
        );
        assert_eq!(
            self.written(),
            Vec::<PathBuf>::new(),
            "{label}: parse wrote files"
        );
        eprintln!(
            "{label}: parent peak RSS {:.1} MB",
            run.peak_kb as f64 / 1024.0
        );
        assert!(
            run.peak_kb < PEAK_LIMIT_KB,
            "{label}: parent peak RSS {} KiB is not under {PEAK_LIMIT_KB} KiB",
            run.peak_kb
        );
        run
    }

    /// One message file made of `parts`, parsed with `config` (TOML, or
    /// none for the defaults); returns the report.
    fn parse_message(&self, label: &str, config: Option<&str>, parts: &[Part<'_>]) -> Value {
        let file = self.input(&format!("{label}.eml"), &message(label, parts));
        let config = config.map(|c| self.config(c));
        let mut run = self.parse(label, config.as_deref(), &[&file]);
        run.reports.remove(0)
    }
}

/// Spawns `cmd`, drains its output, and polls the parent's `VmHWM` until it
/// exits (see the module documentation).
fn run_measured(cmd: &mut Command) -> Run {
    let mut child = cmd
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xxdc-intake");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let mut peak_kb = 0;
    let status = loop {
        if let Some(kb) = vm_hwm_kb(pid) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out.join().expect("stdout thread");
    let stderr = err.join().expect("stderr thread");
    let reports = String::from_utf8(stdout)
        .expect("stdout is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    Run {
        status,
        reports,
        stderr,
        peak_kb,
    }
}

/// `VmHWM` of a live process, KiB; `None` once it has exited.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

// ---------------------------------------------------------------------------
// Checking a report

fn attachments(report: &Value) -> &Vec<Value> {
    report["attachments"].as_array().expect("attachments")
}

fn attachment<'a>(report: &'a Value, filename: &str) -> &'a Value {
    attachments(report)
        .iter()
        .find(|a| a["filename"] == filename)
        .unwrap_or_else(|| panic!("no attachment {filename} in {report:#}"))
}

fn problems<'a>(report: &'a Value, code: &str) -> Vec<&'a str> {
    report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|p| p["code"] == code)
        .map(|p| p["message"].as_str().expect("problem message"))
        .collect()
}

fn has_cjk(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// The attachment is an `error` (or `unsupported`) whose Chinese detail
/// contains every one of `words`, and an `unreadable_attachment` problem
/// names it. Returns the detail.
fn assert_unreadable<'a>(report: &'a Value, filename: &str, words: &[&str]) -> &'a str {
    let att = attachment(report, filename);
    let outcome = att["outcome"].as_str().unwrap_or_default();
    assert!(
        outcome == "error" || outcome == "unsupported",
        "{filename}: outcome {outcome}: {att:#}"
    );
    let detail = att["detail"].as_str().unwrap_or_default();
    assert!(
        has_cjk(detail),
        "{filename}: detail {detail:?} is not a Chinese sentence"
    );
    for word in words {
        assert!(
            detail.contains(word),
            "{filename}: detail {detail:?} does not mention {word:?}"
        );
    }
    let named = problems(report, "unreadable_attachment")
        .into_iter()
        .any(|m| m.contains(filename));
    assert!(
        named,
        "{filename}: no unreadable_attachment problem names it: {report:#}"
    );
    detail
}

/// The good form (`form.xlsx`, 李晓燕 of 桥头镇) is parsed, with its registration.
fn assert_good_form(report: &Value) {
    let att = attachment(report, "form.xlsx");
    assert_eq!(att["outcome"], "parsed", "{att:#}");
    let regs = report["registrations"].as_array().expect("registrations");
    let reg = regs
        .iter()
        .find(|r| r["source"] == "form.xlsx")
        .unwrap_or_else(|| panic!("no registration from form.xlsx: {report:#}"));
    assert_eq!(reg["officer"]["name"], "李晓燕");
    assert_eq!(reg["leader"]["mobile"], "13805772001");
    assert_eq!(reg["unit"]["name"], "桥头镇人民政府");
}

fn good() -> Part<'static> {
    Part::file("form.xlsx", XLSX_TYPE, GOOD_XLSX)
}

// ---------------------------------------------------------------------------
// Building messages

/// One MIME part of a test message.
enum Part<'a> {
    /// A base64 file attachment.
    File {
        name: &'a str,
        ctype: &'a str,
        bytes: &'a [u8],
    },
    /// A raw part (headers and body) placed as is.
    Raw(Vec<u8>),
}

impl<'a> Part<'a> {
    fn file(name: &'a str, ctype: &'a str, bytes: &'a [u8]) -> Self {
        Part::File { name, ctype, bytes }
    }
}

const HEAD: &str = "Received: from yj.gov.cn by mx1.163.com; Wed, 16 May 2007 09:12:05 +0800\r\n\
Date: Wed, 16 May 2007 09:12:00 +0800\r\n\
From: test@yj.gov.cn\r\n\
To: xxdc2004@163.com\r\n\
MIME-Version: 1.0\r\n";

/// A multipart/mixed message with a short text body and `parts`.
fn message(subject: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(HEAD.as_bytes());
    out.extend_from_slice(
        format!("Subject: {subject}\r\nMessage-ID: <{subject}@test>\r\n").as_bytes(),
    );
    out.extend_from_slice(b"Content-Type: multipart/mixed; boundary=\"top\"\r\n\r\n");
    out.extend_from_slice(
        b"--top\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attachments\r\n",
    );
    for part in parts {
        out.extend_from_slice(b"--top\r\n");
        match part {
            Part::File { name, ctype, bytes } => {
                out.extend_from_slice(file_part(name, ctype, bytes).as_slice());
            }
            Part::Raw(raw) => out.extend_from_slice(raw),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--top--\r\n");
    out
}

/// Headers and base64 body of one attachment. The name is sent as written
/// (quoted; RFC 2047 for non-ASCII).
fn file_part(name: &str, ctype: &str, bytes: &[u8]) -> Vec<u8> {
    let name = if name.is_ascii() {
        name.replace('\\', "\\\\")
    } else {
        format!("=?UTF-8?B?{}?=", base64(name.as_bytes(), usize::MAX))
    };
    let mut out = format!(
        "Content-Type: {ctype}; name=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(base64(bytes, 76).as_bytes());
    out
}

fn base64(bytes: &[u8], line: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + bytes.len() / 38 + 4);
    let mut col = 0;
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            };
            out.push(c as char);
        }
        col += 4;
        if col >= line {
            out.push_str("\r\n");
            col = 0;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Building zip archives by hand

/// One member of a hand-made zip archive.
struct Entry {
    name: String,
    /// 0 stored, 8 deflated.
    method: u16,
    data: Vec<u8>,
    crc: u32,
    /// The uncompressed size written into both headers (it may lie).
    declared_size: u32,
}

impl Entry {
    fn stored(name: &str, data: impl Into<Vec<u8>>) -> Self {
        let data = data.into();
        Self {
            name: name.into(),
            method: 0,
            crc: crc32(&data),
            declared_size: size_u32(data.len() as u64),
            data,
        }
    }

    /// A crafted deflate stream (`deflate_run`); the CRC is not that of the
    /// content: no reader gets to the end of these members to check it.
    fn deflated(name: &str, deflate: Vec<u8>, declared_size: u64) -> Self {
        Self {
            name: name.into(),
            method: 8,
            data: deflate,
            crc: 0,
            declared_size: size_u32(declared_size),
        }
    }
}

fn size_u32(n: u64) -> u32 {
    u32::try_from(n).expect("entries stay under 4 GiB (no zip64)")
}

/// A zip archive of `entries`: local headers, central directory, end record.
fn zip(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = size_u32(out.len() as u64);
        let name = e.name.as_bytes();
        let csize = size_u32(e.data.len() as u64);
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        out.extend_from_slice(&e.method.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0x21, 0]); // time 00:00, date 1980-01-01
        out.extend_from_slice(&e.crc.to_le_bytes());
        out.extend_from_slice(&csize.to_le_bytes());
        out.extend_from_slice(&e.declared_size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&e.data);
        // Central directory entry.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // made by
        central.extend_from_slice(&20u16.to_le_bytes()); // needed
        central.extend_from_slice(&0x0800u16.to_le_bytes());
        central.extend_from_slice(&e.method.to_le_bytes());
        central.extend_from_slice(&[0, 0, 0x21, 0]);
        central.extend_from_slice(&e.crc.to_le_bytes());
        central.extend_from_slice(&csize.to_le_bytes());
        central.extend_from_slice(&e.declared_size.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk number, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let cd_offset = size_u32(out.len() as u64);
    let count = u16::try_from(entries.len()).expect("under 65535 entries");
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&size_u32(central.len() as u64).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// LSB-first bit writer for deflate streams.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u64, count: u32) {
        self.acc |= value << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: sent most significant bit first.
    fn code(&mut self, (code, len): (u32, u32)) {
        let reversed = (0..len).fold(0u64, |r, i| r | u64::from(code >> i & 1) << (len - 1 - i));
        self.put(reversed, len);
    }

    fn align(&mut self) {
        if self.n > 0 {
            self.put(0, 8 - self.n);
        }
    }

    /// `count` zero bits, fast.
    fn zeros(&mut self, mut count: u64) {
        while count > 0 && self.n > 0 {
            self.put(0, 1);
            count -= 1;
        }
        self.out.resize(self.out.len() + (count / 8) as usize, 0);
        self.put(0, (count % 8) as u32);
    }

    fn stored_block(&mut self, data: &[u8], last: bool) {
        for (i, chunk) in data.chunks(65535).enumerate() {
            let final_chunk = last && (i + 1) * 65535 >= data.len();
            self.put(u64::from(final_chunk), 1);
            self.put(0, 2);
            self.align();
            let len = chunk.len() as u16;
            self.out.extend_from_slice(&len.to_le_bytes());
            self.out.extend_from_slice(&(!len).to_le_bytes());
            self.out.extend_from_slice(chunk);
        }
        if data.is_empty() {
            self.put(u64::from(last), 1);
            self.put(0, 2);
            self.align();
            self.out.extend_from_slice(&[0, 0, 0xff, 0xff]);
        }
    }
}

/// Canonical Huffman codes (RFC 1951 3.2.2) for code lengths.
fn canonical(lengths: &[u32]) -> Vec<(u32, u32)> {
    let max = lengths.iter().copied().max().unwrap_or(0) as usize;
    let mut count = vec![0u32; max + 1];
    for &l in lengths.iter().filter(|&&l| l > 0) {
        count[l as usize] += 1;
    }
    let mut next = vec![0u32; max + 2];
    let mut code = 0;
    for bits in 1..=max {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                return (0, 0);
            }
            let c = next[l as usize];
            next[l as usize] += 1;
            (c, l)
        })
        .collect()
}

/// Lengths of a complete prefix code over `n` symbols, each `extra` longer
/// (so that together they fill 2^-extra of the code space): with
/// L = ceil(log2 n), 2^L - n symbols get L - 1 bits and the rest L.
fn complete_lengths(n: usize, extra: u32) -> Vec<u32> {
    assert!(n >= 2, "a complete code needs two symbols");
    let l = usize::BITS - (n - 1).leading_zeros();
    let short = (1usize << l) - n;
    (0..n)
        .map(|i| extra + if i < short { l - 1 } else { l })
        .collect()
}

/// A raw deflate stream of `prefix`, then `unit` (1 to 4 bytes) repeated
/// `1 + 258 * copies / unit.len()` times, then `suffix`; with its inflated
/// size. The repetition is one dynamic-Huffman block in which a copy of
/// length 258 at distance `unit.len()` costs two zero bits, so a gigabyte
/// takes a megabyte of zero bytes: the densest a deflate bomb gets.
fn deflate_run(prefix: &[u8], unit: &[u8], copies: u64, suffix: &[u8]) -> (Vec<u8>, u64) {
    assert!((1..=4).contains(&unit.len()));
    let copies = copies.next_multiple_of(unit.len() as u64); // keep the run whole units
    let mut bits = Bits::default();
    bits.stored_block(prefix, false);

    // Literal/length alphabet: 285 (length 258) gets the one 1-bit code;
    // the unit's bytes and end-of-block share the other half.
    let mut others: Vec<usize> = unit.iter().map(|&b| usize::from(b)).collect();
    others.sort_unstable();
    others.dedup();
    others.push(256);
    let mut lit_lengths = vec![0u32; 286];
    lit_lengths[285] = 1;
    for (&sym, len) in others.iter().zip(complete_lengths(others.len(), 1)) {
        lit_lengths[sym] = len;
    }
    // Distance alphabet: the single code for distance unit.len().
    let dist_code = unit.len() - 1;
    let mut dist_lengths = vec![0u32; dist_code + 1];
    dist_lengths[dist_code] = 1;

    // The code lengths, run-length coded (16 unused; 17: 3-10 zeros, 18: 11-138).
    let all: Vec<u32> = lit_lengths.iter().chain(&dist_lengths).copied().collect();
    let mut rle: Vec<(usize, u64, u32)> = Vec::new(); // (symbol, extra value, extra bits)
    let mut i = 0;
    while i < all.len() {
        let run = all[i..].iter().take_while(|&&l| l == all[i]).count();
        if all[i] == 0 && run >= 11 {
            let n = run.min(138);
            rle.push((18, (n - 11) as u64, 7));
            i += n;
        } else if all[i] == 0 && run >= 3 {
            let n = run.min(10);
            rle.push((17, (n - 3) as u64, 3));
            i += n;
        } else {
            rle.push((all[i] as usize, 0, 0));
            i += 1;
        }
    }
    let mut used: Vec<usize> = rle.iter().map(|r| r.0).collect();
    used.sort_unstable();
    used.dedup();
    let mut cl_lengths = [0u32; 19];
    for (&sym, len) in used.iter().zip(complete_lengths(used.len(), 0)) {
        cl_lengths[sym] = len;
    }
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let hclen = ORDER
        .iter()
        .rposition(|&s| cl_lengths[s] > 0)
        .map_or(4, |p| (p + 1).max(4));

    bits.put(0, 1); // not final
    bits.put(2, 2); // dynamic Huffman
    bits.put(286 - 257, 5);
    bits.put(dist_lengths.len() as u64 - 1, 5);
    bits.put(hclen as u64 - 4, 4);
    for &s in &ORDER[..hclen] {
        bits.put(u64::from(cl_lengths[s]), 3);
    }
    let cl_codes = canonical(&cl_lengths);
    for &(sym, value, count) in &rle {
        bits.code(cl_codes[sym]);
        bits.put(value, count);
    }
    let lit_codes = canonical(&lit_lengths);
    for &b in unit {
        bits.code(lit_codes[usize::from(b)]);
    }
    assert_eq!(lit_codes[285], (0, 1));
    assert_eq!(canonical(&dist_lengths)[dist_code], (0, 1));
    bits.zeros(copies * 2);
    bits.code(lit_codes[256]);
    bits.stored_block(suffix, true);
    bits.align();
    let size = prefix.len() as u64 + unit.len() as u64 + copies * 258 + suffix.len() as u64;
    (bits.out, size)
}

/// The crafted stream inflates to what it says (checked with the zip crate,
/// on a small instance whose CRC can be computed).
#[test]
fn crafted_deflate_streams_inflate_as_declared() {
    for unit in [&b"A"[..], b"ab", b"xyz", b"<x/>"] {
        let (deflate, size) = deflate_run(b"<pre>", unit, 1001, b"</pre>");
        let mut expect = b"<pre>".to_vec();
        while expect.len() < size as usize - 6 {
            expect.extend_from_slice(unit);
        }
        expect.extend_from_slice(b"</pre>");
        assert_eq!(expect.len() as u64, size);
        let mut entry = Entry::deflated("x", deflate, size);
        entry.crc = crc32(&expect);
        let archive = zip(&[entry, Entry::stored("y", "plain")]);
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(archive)).expect("zip");
        let mut got = Vec::new();
        z.by_name("x")
            .expect("x")
            .read_to_end(&mut got)
            .expect("inflate");
        assert_eq!(got, expect, "unit {unit:?}");
        let mut plain = String::new();
        z.by_name("y")
            .expect("y")
            .read_to_string(&mut plain)
            .expect("stored");
        assert_eq!(plain, "plain");
    }
}

// ---------------------------------------------------------------------------
// Building office files

const WORKBOOK_PARTS: [(&str, &str); 4] = [
    (
        "[Content_Types].xml",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#,
    ),
    (
        "_rels/.rels",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
    ),
    (
        "xl/workbook.xml",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#,
    ),
    (
        "xl/_rels/workbook.xml.rels",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#,
    ),
];

const SHEET_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#;
const SHEET_TAIL: &str = "</sheetData></worksheet>";

/// An xlsx package of the fixed workbook parts plus `more` (a sheet, shared
/// strings). Without `xl/sharedStrings.xml` in `more`, an empty one is added.
fn xlsx(more: Vec<Entry>) -> Vec<u8> {
    let mut entries: Vec<Entry> = WORKBOOK_PARTS
        .iter()
        .map(|(n, x)| Entry::stored(n, *x))
        .collect();
    if !more.iter().any(|e| e.name == "xl/sharedStrings.xml") {
        entries.push(Entry::stored(
            "xl/sharedStrings.xml",
            r#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="0" uniqueCount="0"></sst>"#,
        ));
    }
    entries.extend(more);
    zip(&entries)
}

/// A sheet of inline-string cells.
fn sheet(cells: &[(&str, &str)]) -> Entry {
    let body: String = cells
        .iter()
        .map(|(r, t)| format!(r#"<row><c r="{r}" t="inlineStr"><is><t>{t}</t></is></c></row>"#))
        .collect();
    Entry::stored(
        "xl/worksheets/sheet1.xml",
        format!("{SHEET_HEAD}{body}{SHEET_TAIL}"),
    )
}

/// A minimal docx whose `word/document.xml` is `document`.
fn docx(document: &str) -> Vec<u8> {
    zip(&[
        Entry::stored(
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#,
        ),
        Entry::stored(
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#,
        ),
        Entry::stored("word/document.xml", document),
    ])
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// `xl/sharedStrings.xml` holding one string of `bytes` letters `A`.
fn huge_shared_strings(bytes: u64) -> (Vec<u8>, u64) {
    deflate_run(
        br#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>"#,
        b"A",
        bytes / 258,
        b"</t></si></sst>",
    )
}

// ---------------------------------------------------------------------------
// The hostile inputs of the acceptance list

/// A zip-bomb xlsx: 1.6 MB whose shared strings inflate to 1.5 GB, sizes
/// declared truthfully. The central directory check rejects it before
/// anything is inflated.
#[test]
fn zip_bomb_xlsx_is_rejected_by_its_declared_size() {
    let s = Scratch::new();
    let (deflate, size) = huge_shared_strings(3 * GIB / 2);
    assert!(size > GIB && deflate.len() < 2 * MIB as usize);
    let bomb = xlsx(vec![
        sheet(&[("A1", "x")]),
        Entry::deflated("xl/sharedStrings.xml", deflate, size),
    ]);
    let report = s.parse_message(
        "zip_bomb_xlsx",
        None,
        &[good(), Part::file("bomb.xlsx", XLSX_TYPE, &bomb)],
    );
    assert_unreadable(
        &report,
        "bomb.xlsx",
        &["sharedStrings.xml", "超过单个部件上限"],
    );
    assert_good_form(&report);
}

/// The same bomb with its sizes understated (4 KiB declared): it passes the
/// directory check, and the inflater stops at the declared size.
#[test]
fn zip_bomb_xlsx_with_lying_sizes_is_stopped_at_the_declared_size() {
    let s = Scratch::new();
    let (deflate, size) = huge_shared_strings(3 * GIB / 2);
    let bomb = xlsx(vec![
        sheet(&[("A1", "x")]),
        Entry::deflated("xl/sharedStrings.xml", deflate, size.min(4096)),
    ]);
    let report = s.parse_message(
        "zip_bomb_lying_xlsx",
        None,
        &[good(), Part::file("bomb.xlsx", XLSX_TYPE, &bomb)],
    );
    assert_unreadable(
        &report,
        "bomb.xlsx",
        &["损坏", "declared uncompressed size"],
    );
    assert_good_form(&report);
}

/// `limits.child.memory_mb`: with the office-file limits raised out of the
/// way, the bomb's 1.5 GB string is read until the child's address-space
/// limit (256 MB here, to keep the test quick) aborts it.
#[test]
fn child_memory_limit() {
    let s = Scratch::new();
    let (deflate, size) = huge_shared_strings(3 * GIB / 2);
    let bomb = xlsx(vec![
        sheet(&[("A1", "x")]),
        Entry::deflated("xl/sharedStrings.xml", deflate, size),
    ]);
    let report = s.parse_message(
        "child_memory",
        Some(&*format!(
            "{RAISED_READ_LIMITS}[limits.child]\nmemory_mb = 256\n"
        )),
        &[good(), Part::file("bomb.xlsx", XLSX_TYPE, &bomb)],
    );
    assert_unreadable(&report, "bomb.xlsx", &["内存", "256 MB"]);
    assert_good_form(&report);
}

/// A 700-byte xlsx whose shared-string table claims 10^13 entries: a reader
/// that reserves room for the claim asks for hundreds of terabytes and
/// aborts; the child's death is this attachment's error.
#[test]
fn shared_string_count_claim_is_contained() {
    let s = Scratch::new();
    let claim = xlsx(vec![
        sheet(&[("A1", "x")]),
        Entry::stored(
            "xl/sharedStrings.xml",
            r#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="10000000000000"><si><t>x</t></si></sst>"#,
        ),
    ]);
    let report = s.parse_message(
        "sst_count_claim",
        None,
        &[good(), Part::file("claim.xlsx", XLSX_TYPE, &claim)],
    );
    assert_unreadable(&report, "claim.xlsx", &[]);
    assert_good_form(&report);
}

/// One cell at A1 and one at the far corner. As xlsx (XFD1048576, the last
/// cell of a sheet) it is legal and read cell by cell: two cells, no form,
/// no error. As xls (XFD65536, the farthest an .xls record can address)
/// calamine would allocate the whole rectangle, 2^30 cells; the reader
/// hands it the cells packed together and puts them back at their places,
/// so it reads them too, within a worker limited to 512 MB here.
#[test]
fn far_corner_cells_are_contained() {
    let s = Scratch::new();
    let corner = xlsx(vec![sheet(&[("A1", "一"), ("XFD1048576", "二")])]);
    let report = s.parse_message(
        "far_corner",
        Some("[limits.child]\nmemory_mb = 512\n"),
        &[
            good(),
            Part::file("corner.xlsx", XLSX_TYPE, &corner),
            Part::file("corner.xls", "application/vnd.ms-excel", FAR_CORNER_XLS),
        ],
    );
    let att = attachment(&report, "corner.xlsx");
    assert_eq!(att["outcome"], "no_form", "{att:#}");
    assert_eq!(att["meta"]["sheets"], 1);
    let att = attachment(&report, "corner.xls");
    assert_eq!(att["outcome"], "no_form", "{att:#}");
    assert_eq!(att["meta"]["sheets"], 1);
    assert_good_form(&report);
}

/// A truncated xls (the good form.xls cut at 60 %).
#[test]
fn truncated_xls_is_an_error() {
    let s = Scratch::new();
    let cut = &GOOD_XLS[..GOOD_XLS.len() * 6 / 10];
    let report = s.parse_message(
        "truncated_xls",
        None,
        &[
            good(),
            Part::file("cut.xls", "application/vnd.ms-excel", cut),
        ],
    );
    assert_unreadable(&report, "cut.xls", &["损坏"]);
    assert_good_form(&report);
}

/// A corrupt PDF: the form PDF cut in half (no cross-reference table, no
/// trailer, no catalog) is an error; one whose cross-reference table and
/// trailer are overwritten is rebuilt from its objects and read, as viewers
/// do.
#[test]
fn corrupt_pdf_is_an_error() {
    let s = Scratch::new();
    let cut = &FORM_PDF[..FORM_PDF.len() / 2];
    let mut mangled = FORM_PDF.to_vec();
    let xref = FORM_PDF
        .windows(4)
        .rposition(|w| w == b"xref")
        .expect("xref");
    mangled[xref..]
        .iter_mut()
        .filter(|b| b.is_ascii_digit())
        .for_each(|b| *b = b'9');
    let report = s.parse_message(
        "corrupt_pdf",
        None,
        &[
            good(),
            Part::file("cut.pdf", "application/pdf", cut),
            Part::file("mangled.pdf", "application/pdf", &mangled),
        ],
    );
    assert_unreadable(&report, "cut.pdf", &["损坏"]);
    assert_eq!(attachment(&report, "mangled.pdf")["outcome"], "parsed");
    assert_good_form(&report);
}

/// 300 levels of multipart inside multipart, next to the good form: the walk
/// stops at its depth limit, says so, and the form is read.
#[test]
fn deep_multipart_nesting_is_cut_off() {
    let s = Scratch::new();
    let mut nested = file_part("deep.xlsx", XLSX_TYPE, GOOD_XLSX);
    for level in (0..300).rev() {
        let b = format!("d{level}");
        let mut outer = format!("Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\n")
            .into_bytes();
        outer.extend_from_slice(&nested);
        outer.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
        nested = outer;
    }
    let report = s.parse_message("deep_multipart", None, &[good(), Part::Raw(nested)]);
    let cut = problems(&report, "unreadable_attachment");
    assert!(
        cut.iter().any(|m| m.contains("嵌套") && m.contains('8')),
        "{report:#}"
    );
    assert!(
        attachments(&report)
            .iter()
            .all(|a| a["filename"] != "deep.xlsx")
    );
    assert_good_form(&report);
}

/// 300 levels of forwarded message (`message/rfc822`) inside forwarded
/// message, next to the good form. Such a message is read for its headers
/// only (mail-parser recurses once per level and would overflow the stack),
/// and says so: the process lives, nothing below the headers is read.
#[test]
fn deep_forwarded_message_nesting_is_contained() {
    let s = Scratch::new();
    let mut nested = message(
        "innermost",
        &[Part::file("deep.xlsx", XLSX_TYPE, GOOD_XLSX)],
    );
    for level in (0..300).rev() {
        let mut outer = format!(
            "{HEAD}Subject: level {level}\r\nContent-Type: multipart/mixed; boundary=\"m{level}\"\r\n\r\n\
             --m{level}\r\nContent-Type: message/rfc822\r\n\r\n"
        )
        .into_bytes();
        outer.extend_from_slice(&nested);
        outer.extend_from_slice(format!("\r\n--m{level}--\r\n").as_bytes());
        nested = outer;
    }
    let mut part = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
    part.extend_from_slice(&nested);
    let report = s.parse_message("deep_rfc822", None, &[good(), Part::Raw(part)]);
    let cut = problems(&report, "unreadable_attachment");
    assert!(cut.iter().any(|m| m.contains("嵌套")), "{report:#}");
    // The form next to the hostile chain is still read. (The innermost
    // message reuses the outer boundary `top`, which MIME forbids; a
    // delimiter-based split then reads its deep.xlsx as a top-level part,
    // as any conforming parser would, so that file is not asserted on.)
    assert_good_form(&report);
}

/// A message of 10,000 parts after the good form: the walk stops at its part
/// limit (twice `limits.attachment.max_count`), attachments past
/// `max_count` are listed as errors, and the form is read.
#[test]
fn ten_thousand_parts_are_cut_off() {
    let s = Scratch::new();
    let mut parts = vec![good()];
    let filler: Vec<Vec<u8>> = (0..10_000)
        .map(|i| {
            format!("Content-Type: application/octet-stream; name=\"p{i}.bin\"\r\n\r\nx")
                .into_bytes()
        })
        .collect();
    parts.extend(filler.into_iter().map(Part::Raw));
    let report = s.parse_message(
        "ten_thousand_parts",
        Some("[limits.attachment]\nmax_count = 100\n"),
        &parts,
    );
    let atts = attachments(&report);
    assert!(atts.len() <= 200, "{} attachments listed", atts.len());
    let msgs = problems(&report, "unreadable_attachment");
    assert!(
        msgs.iter().any(|m| m.contains("部件数超过上限 200")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("附件数量超过上限 100")),
        "{msgs:?}"
    );
    let last = atts.last().expect("attachments");
    assert_eq!(last["outcome"], "error");
    assert!(
        last["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("附件数量超过上限 100")
    );
    assert_good_form(&report);
}

/// An entity-expansion ("billion laughs") docx: ten levels of ten nested
/// entities, 10^10 copies of "lol" if expanded, referenced from
/// `word/document.xml`. Office files never carry a DTD; the reader refuses
/// it instead of expanding anything.
#[test]
fn entity_expansion_docx_is_refused() {
    let s = Scratch::new();
    let mut dtd = String::from(r#"<!ENTITY lol0 "lol">"#);
    for i in 1..10 {
        let refs = format!("&lol{};", i - 1).repeat(10);
        dtd.push_str(&format!(r#"<!ENTITY lol{i} "{refs}">"#));
    }
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><!DOCTYPE w:document [{dtd}]><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:tbl><w:tr><w:tc><w:p><w:r><w:t>单位&lol9;</w:t></w:r></w:p></w:tc></w:tr></w:tbl></w:body></w:document>"#
    );
    let bomb = docx(&document);
    let report = s.parse_message(
        "billion_laughs",
        None,
        &[good(), Part::file("laughs.docx", DOCX_TYPE, &bomb)],
    );
    assert_unreadable(&report, "laughs.docx", &["实体"]);
    assert_good_form(&report);
}

/// Attachment names that climb out of a folder, in the MIME headers and
/// inside a zip: each is reported under its base name, and nothing is
/// written anywhere (the run's working directory, four levels below the
/// scratch folder, stays empty, and so does the scratch folder).
#[test]
fn path_traversal_names_are_reduced_to_base_names() {
    let s = Scratch::new();
    let archive = zip(&[
        Entry::stored("../../../../evil.txt", "evil"),
        Entry::stored("/abs/path.txt", "abs"),
        Entry::stored("..\\..\\win.txt", "win"),
    ]);
    let report = s.parse_message(
        "traversal",
        None,
        &[
            good(),
            Part::file(
                "../../../../etc/passwd",
                "text/plain",
                b"root:x:0:0::/root:/bin/sh\n",
            ),
            Part::file("..\\..\\x.xls", "application/vnd.ms-excel", GOOD_XLS),
            Part::file("/abs/x.xlsx", XLSX_TYPE, GOOD_XLSX),
            Part::file("../../up.zip", "application/zip", &archive),
        ],
    );
    let names: Vec<&str> = attachments(&report)
        .iter()
        .map(|a| a["filename"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "form.xlsx",
            "passwd",
            "x.xls",
            "x.xlsx",
            "up.zip",
            "evil.txt",
            "path.txt",
            "win.txt"
        ]
    );
    assert_eq!(attachment(&report, "x.xls")["outcome"], "parsed");
    let sources: Vec<&str> = report["registrations"]
        .as_array()
        .expect("regs")
        .iter()
        .map(|r| r["source"].as_str().unwrap_or(""))
        .collect();
    assert!(sources.contains(&"x.xls"), "{sources:?}");
    assert_good_form(&report);
    let entries: Vec<_> = std::fs::read_dir(s.dir.path())
        .expect("scratch")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        entries.len(),
        2,
        "only in/ and cwd/ in the scratch folder: {entries:?}"
    );
}

// ---------------------------------------------------------------------------
// Each limit, lowered through the config file

/// Office-file limits raised out of the way (4 GB per part and in total), so
/// that a bomb reaches the reader and the child's own limits are tested.
const RAISED_READ_LIMITS: &str =
    "[limits.read]\nmax_part_bytes = 4000000000\nmax_total_bytes = 4000000000\n";

/// An xlsx whose one sheet is an endless run of empty elements (`<x/>`,
/// 3 GiB of them, 3 MB compressed): reading it costs CPU and no memory, for
/// longer than any limit allows. Its declared size passes only with
/// [`RAISED_READ_LIMITS`].
fn endless_sheet() -> Vec<u8> {
    let (deflate, size) = deflate_run(
        SHEET_HEAD.as_bytes(),
        b"<x/>",
        3 * GIB / 258,
        SHEET_TAIL.as_bytes(),
    );
    xlsx(vec![Entry::deflated(
        "xl/worksheets/sheet1.xml",
        deflate,
        size,
    )])
}

/// `limits.child.timeout_seconds`: the wall-clock limit kills the child.
#[test]
fn child_wall_clock_limit() {
    let s = Scratch::new();
    let slow = endless_sheet();
    let report = s.parse_message(
        "child_timeout",
        Some(&*format!(
            "{RAISED_READ_LIMITS}[limits.child]\ntimeout_seconds = 1\ncpu_seconds = 600\n"
        )),
        &[good(), Part::file("slow.xlsx", XLSX_TYPE, &slow)],
    );
    assert_unreadable(&report, "slow.xlsx", &["超时", "1 秒"]);
    assert_good_form(&report);
}

/// `limits.child.cpu_seconds`: the CPU limit (SIGXCPU) stops the child.
#[test]
fn child_cpu_limit() {
    let s = Scratch::new();
    let slow = endless_sheet();
    let report = s.parse_message(
        "child_cpu",
        Some(&*format!(
            "{RAISED_READ_LIMITS}[limits.child]\ncpu_seconds = 1\ntimeout_seconds = 600\n"
        )),
        &[good(), Part::file("slow.xlsx", XLSX_TYPE, &slow)],
    );
    assert_unreadable(&report, "slow.xlsx", &["CPU 1 秒"]);
    assert_good_form(&report);
}

/// `limits.child.max_output_bytes`: a child that prints more than allowed
/// (here a 60 KB text attachment's grid against a 16 KB bound).
#[test]
fn child_output_limit() {
    let s = Scratch::new();
    let text = "单位：某某单位\n".repeat(3000);
    let report = s.parse_message(
        "child_output",
        Some("[limits.child]\nmax_output_bytes = 16000\n"),
        &[
            good(),
            Part::file("long.txt", "text/plain; charset=utf-8", text.as_bytes()),
        ],
    );
    assert_unreadable(&report, "long.txt", &["输出上限", "16000"]);
    assert_good_form(&report);
}

/// `limits.attachment.max_bytes`: an attachment over the size limit is not
/// read at all.
#[test]
fn attachment_size_limit() {
    let s = Scratch::new();
    let big = vec![b'x'; 200_000];
    let report = s.parse_message(
        "attachment_size",
        Some("[limits.attachment]\nmax_bytes = 100000\n"),
        &[
            good(),
            Part::file("big.bin", "application/octet-stream", &big),
        ],
    );
    assert_unreadable(&report, "big.bin", &["200000", "100000"]);
    assert_good_form(&report);
}

/// `limits.attachment.max_count`: attachments past the count are listed as
/// errors and not read.
#[test]
fn attachment_count_limit() {
    let s = Scratch::new();
    let names = ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"];
    let mut parts = vec![good()];
    parts.extend(names.iter().map(|n| Part::file(n, "text/plain", b"hello")));
    let report = s.parse_message(
        "attachment_count",
        Some("[limits.attachment]\nmax_count = 4\n"),
        &parts,
    );
    assert_eq!(attachment(&report, "c.txt")["outcome"], "no_form");
    for name in ["d.txt", "e.txt"] {
        let att = attachment(&report, name);
        assert_eq!(att["outcome"], "error");
        assert!(
            att["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("附件数量超过上限 4"),
            "{att:#}"
        );
    }
    assert!(
        problems(&report, "unreadable_attachment")
            .iter()
            .any(|m| m.contains("附件数量超过上限 4"))
    );
    assert_good_form(&report);
}

/// `limits.attachment.max_depth`: a zip inside a zip inside … is read down
/// to the limit only.
#[test]
fn archive_nesting_limit() {
    let s = Scratch::new();
    let mut nested = zip(&[Entry::stored("form.xls", GOOD_XLS)]);
    for level in (1..=3).rev() {
        nested = zip(&[Entry::stored(&format!("level{level}.zip"), nested)]);
    }
    let report = s.parse_message(
        "archive_depth",
        Some("[limits.attachment]\nmax_depth = 2\n"),
        &[good(), Part::file("level0.zip", "application/zip", &nested)],
    );
    assert_unreadable(&report, "level2.zip", &["嵌套超过 2 层"]);
    assert!(
        attachments(&report)
            .iter()
            .all(|a| a["filename"] != "form.xls")
    );
    assert_good_form(&report);
}

/// `limits.read.max_zip_entries`: a `.zip` attachment with more entries.
#[test]
fn zip_entry_count_limit() {
    let s = Scratch::new();
    let entries: Vec<Entry> = (0..10)
        .map(|i| Entry::stored(&format!("f{i}.txt"), "x"))
        .collect();
    let many = zip(&entries);
    let report = s.parse_message(
        "zip_entries",
        Some("[limits.read]\nmax_zip_entries = 8\n"),
        &[good(), Part::file("many.zip", "application/zip", &many)],
    );
    assert_unreadable(&report, "many.zip", &["条目数 10", "上限 8"]);
    assert_good_form(&report);
}

/// `limits.read.max_part_bytes`: one member of a `.zip` attachment (stored,
/// so no compression ratio is involved) over the per-member limit.
#[test]
fn zip_member_size_limit() {
    let s = Scratch::new();
    let archive = zip(&[Entry::stored("big.txt", vec![b'x'; 150_000])]);
    let report = s.parse_message(
        "zip_member_bytes",
        Some("[limits.read]\nmax_part_bytes = 100000\n"),
        &[good(), Part::file("big.zip", "application/zip", &archive)],
    );
    assert_unreadable(&report, "big.zip", &["big.txt", "单个文件上限", "100000"]);
    assert_good_form(&report);
}

/// `limits.read.max_total_bytes`: the members of a `.zip` attachment
/// together over the expansion limit, each under the per-member limit.
#[test]
fn zip_total_expansion_limit() {
    let s = Scratch::new();
    let entries: Vec<Entry> = (0..3)
        .map(|i| Entry::stored(&format!("m{i}.txt"), vec![b'x'; 80_000]))
        .collect();
    let archive = zip(&entries);
    let report = s.parse_message(
        "zip_total_bytes",
        Some("[limits.read]\nmax_part_bytes = 100000\nmax_total_bytes = 150000\n"),
        &[good(), Part::file("three.zip", "application/zip", &archive)],
    );
    assert_unreadable(&report, "three.zip", &["总大小超过上限", "150000"]);
    assert_good_form(&report);
}

/// The compression-ratio limit of `.zip` attachments (200:1, fixed in
/// `container::ZipLimits`): a member of 100 MB of zeros in 100 KB is stopped
/// at the ratio, long before the size limits (50 MiB per member).
#[test]
fn zip_ratio_limit() {
    let s = Scratch::new();
    let (deflate, size) = deflate_run(b"", b"\0", 100 * MIB / 258, b"");
    let archive = zip(&[Entry::deflated("zeros.xls", deflate, size)]);
    let report = s.parse_message(
        "zip_ratio",
        None,
        &[good(), Part::file("zeros.zip", "application/zip", &archive)],
    );
    assert_unreadable(&report, "zeros.zip", &["压缩比超过上限 200:1"]);
    assert_good_form(&report);
}

/// `limits.read.max_part_bytes` and `max_total_bytes` inside an office file:
/// the declared sizes are checked before anything is inflated.
#[test]
fn office_part_limits() {
    let s = Scratch::new();
    let padding = "<row/>".repeat(20_000); // a 120 KB sheet of empty rows
    let big_sheet = xlsx(vec![Entry::stored(
        "xl/worksheets/sheet1.xml",
        format!(
            "{SHEET_HEAD}{padding}<row><c r=\"A1\" t=\"inlineStr\"><is><t>x</t></is></c></row>{SHEET_TAIL}"
        ),
    )]);
    let report = s.parse_message(
        "office_part_bytes",
        Some("[limits.read]\nmax_part_bytes = 100000\nmax_total_bytes = 1000000\n"),
        &[good(), Part::file("big_sheet.xlsx", XLSX_TYPE, &big_sheet)],
    );
    assert_unreadable(
        &report,
        "big_sheet.xlsx",
        &["sheet1.xml", "单个部件上限 100000"],
    );
    assert_good_form(&report);

    let s = Scratch::new();
    let report = s.parse_message(
        "office_total_bytes",
        Some("[limits.read]\nmax_part_bytes = 200000\nmax_total_bytes = 50000\n"),
        &[Part::file("big_sheet.xlsx", XLSX_TYPE, &big_sheet)],
    );
    assert_unreadable(&report, "big_sheet.xlsx", &["总量上限 50000"]);
}

/// `limits.read.max_cells`: a sheet with more cells than allowed is read up
/// to the limit and marked truncated (a form on its first rows would still
/// be read).
#[test]
fn cell_limit() {
    let s = Scratch::new();
    let refs: Vec<String> = (1..=200).map(|r| format!("A{r}")).collect();
    let cells: Vec<(&str, &str)> = refs.iter().map(|r| (r.as_str(), "格")).collect();
    let wide = xlsx(vec![sheet(&cells)]);
    let report = s.parse_message(
        "cells",
        Some("[limits.read]\nmax_cells = 150\n"),
        &[good(), Part::file("wide.xlsx", XLSX_TYPE, &wide)],
    );
    let att = attachment(&report, "wide.xlsx");
    assert_eq!(att["outcome"], "no_form", "{att:#}");
    assert_eq!(att["meta"]["truncated"], true, "{att:#}");
    assert_good_form(&report);
}

/// `limits.read.max_pages`: only the first pages of a PDF are read, while
/// `meta.pages` still gives the real count. The two-page form has its
/// officer on page 2: with the default limit it is read, with one page not.
#[test]
fn pdf_page_limit() {
    let s = Scratch::new();
    let file = s.input("two_pages.pdf", TWO_PAGES_PDF);
    let full = s
        .parse("pdf_pages_default", None, &[&file])
        .reports
        .remove(0);
    let att = attachment(&full, "two_pages.pdf");
    assert_eq!(att["meta"]["pages"], 2);
    assert_eq!(full["registrations"][0]["officer"]["name"], "夏微红");

    let config = s.config("[limits.read]\nmax_pages = 1\n");
    let one = s
        .parse("pdf_pages_1", Some(&config), &[&file])
        .reports
        .remove(0);
    let att = attachment(&one, "two_pages.pdf");
    assert_eq!(
        att["meta"]["pages"], 2,
        "meta.pages is the real count: {att:#}"
    );
    let officers: Vec<&Value> = one["registrations"]
        .as_array()
        .expect("regs")
        .iter()
        .map(|r| &r["officer"]["name"])
        .collect();
    assert!(
        officers.iter().all(|o| *o != "夏微红"),
        "page 2 was read: {one:#}"
    );
}

/// Limits are explicit: a misspelt limit key is a configuration error
/// (exit 78, naming the key), never silently the default.
#[test]
fn unknown_limit_keys_are_config_errors() {
    let s = Scratch::new();
    let config = s.config("[limits.read]\nmax_page = 1\n");
    let file = s.input("form.xlsx", GOOD_XLSX);
    let run = run_measured(
        Command::new(env!("CARGO_BIN_EXE_xxdc-intake"))
            .args(["parse", "--json", "--config"])
            .arg(&config)
            .arg(&file)
            .current_dir(s.cwd()),
    );
    assert_eq!(run.status.code(), Some(78), "{}", run.stderr);
    assert!(run.stderr.contains("max_page"), "{}", run.stderr);
    assert!(run.reports.is_empty());
}

/// A reader worker is started with typed arguments and takes typed jobs;
/// one it cannot take (a memory limit that is not a number or is 0; a job
/// whose read limits miss a key, or of an unknown format) is refused with a
/// clear message and exit code 64, which the parent records as the
/// attachment's error, instead of reading under a limit nobody chose.
#[test]
fn sandbox_worker_refuses_arguments_and_jobs_it_cannot_take() {
    use std::io::Write;
    for args in [["lots"], ["0"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_xxdc-intake"))
            .arg("__worker")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the worker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("附件读取进程的参数有误："),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing read");
    }
    let limits = r#"{"max_cells":20000,"max_part_bytes":52428800,"max_total_bytes":209715200,"max_zip_entries":10000,"max_pages":20}"#;
    let jobs = [
        (
            r#"{"format":"xlsx","limits":{"max_cells":20000},"cpu_seconds":20}"#.to_string(),
            "缺少",
        ),
        (
            format!(r#"{{"format":"spreadsheet","limits":{limits},"cpu_seconds":20}}"#),
            "不认识的文件格式",
        ),
    ];
    for (header, why) in jobs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xxdc-intake"))
            .args(["__worker", "1024"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the worker");
        let mut frame = (header.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(header.as_bytes());
        frame.extend_from_slice(&0u64.to_le_bytes());
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&frame).expect("send the job");
        drop(stdin);
        let out = child.wait_with_output().expect("the worker ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{header}: {stderr}");
        assert!(
            stderr.starts_with("附件读取进程的任务有误：") && stderr.contains(why),
            "{header}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{header}: nothing read");
    }
    // Well formed and given no job, the worker ends quietly.
    let out = Command::new(env!("CARGO_BIN_EXE_xxdc-intake"))
        .args(["__worker", "1024"])
        .stdin(Stdio::null())
        .output()
        .expect("run the worker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A password-protected ODS (its manifest lists `encryption-data`, its
/// content is ciphertext) is reported as encrypted, as xlsx, docx and PDF
/// are, not as a text-encoding error.
#[test]
fn encrypted_ods_is_reported_as_encrypted() {
    let s = Scratch::new();
    let manifest = r#"<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml" manifest:size="4096"><manifest:encryption-data manifest:checksum-type="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0#sha256-1k" manifest:checksum="AAAA"><manifest:algorithm manifest:algorithm-name="http://www.w3.org/2001/04/xmlenc#aes256-cbc" manifest:initialisation-vector="AAAA"/><manifest:key-derivation manifest:key-derivation-name="PBKDF2" manifest:key-size="32" manifest:iteration-count="100000" manifest:salt="AAAA"/></manifest:encryption-data></manifest:file-entry></manifest:manifest>"#;
    let ciphertext: Vec<u8> = (0..4096u32).map(|i| (i * 151 % 251) as u8 | 0x80).collect();
    let ods = zip(&[
        Entry::stored("mimetype", "application/vnd.oasis.opendocument.spreadsheet"),
        Entry::stored("META-INF/manifest.xml", manifest),
        Entry::stored("content.xml", ciphertext),
    ]);
    let report = s.parse_message(
        "encrypted_ods",
        None,
        &[
            good(),
            Part::file(
                "locked.ods",
                "application/vnd.oasis.opendocument.spreadsheet",
                &ods,
            ),
        ],
    );
    assert_unreadable(&report, "locked.ods", &["加密"]);
    assert_good_form(&report);
}

/// An OOXML package whose parts lie at its root or are named with
/// backslashes is still an OOXML package: `[Content_Types].xml` says so. It
/// must not be taken for a plain zip whose XML is read as text.
#[test]
fn ooxml_is_known_by_its_content_types_not_its_folders() {
    let s = Scratch::new();
    let types = r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>"#;
    let at_root = zip(&[
        Entry::stored("[Content_Types].xml", types),
        Entry::stored("workbook.xml", "<workbook/>"),
        Entry::stored(
            "sheet1.xml",
            "<worksheet><sheetData><row><c t=\"inlineStr\"><is><t>单位：桥头镇</t></is></c></row></sheetData></worksheet>",
        ),
    ]);
    let backslashes = zip(&[
        Entry::stored(
            "[Content_Types].xml",
            types.replace("/workbook.xml", "/xl/workbook.xml"),
        ),
        Entry::stored("xl\\workbook.xml", "<workbook/>"),
    ]);
    let report = s.parse_message(
        "ooxml_layouts",
        None,
        &[
            good(),
            Part::file("root.zip", "application/zip", &at_root),
            Part::file("slashes.zip", "application/zip", &backslashes),
        ],
    );
    for name in ["root.zip", "slashes.zip"] {
        let att = attachment(&report, name);
        assert_eq!(att["format"], "xlsx", "{att:#}");
    }
    assert_good_form(&report);
}

// ---------------------------------------------------------------------------
// The warm reader workers (parse::sandbox::pool), driven directly

mod workers {
    use super::*;
    use xxdc_intake::parse::grid::{ReadError, ReadLimits};
    use xxdc_intake::parse::sandbox::ChildLimits;
    use xxdc_intake::parse::sandbox::confine::Probe;
    use xxdc_intake::parse::sandbox::pool::{Pool, PoolConfig, PoolStats};
    use xxdc_intake::parse::sniff::Format;

    const BIN: &str = env!("CARGO_BIN_EXE_xxdc-intake");

    fn pool(count: usize, max_jobs: u64) -> Pool {
        Pool::new(
            BIN.into(),
            PoolConfig {
                count,
                max_jobs,
                max_peak_mb: 1024,
            },
        )
    }

    /// Office-file limits out of the way, as [`RAISED_READ_LIMITS`].
    fn raised() -> ReadLimits {
        ReadLimits {
            max_part_bytes: 4 * GIB,
            max_total_bytes: 4 * GIB,
            ..ReadLimits::default()
        }
    }

    fn read_good(pool: &Pool) {
        let grid = pool
            .read(
                &ChildLimits::default(),
                Format::Xlsx,
                GOOD_XLSX,
                &ReadLimits::default(),
                None,
            )
            .expect("the good form is read");
        let text: String = grid
            .grids
            .iter()
            .flat_map(|g| &g.cells)
            .map(|c| c.text.as_str())
            .collect();
        assert!(text.contains("李晓燕"), "{text}");
    }

    /// One worker reads one attachment after another, and is replaced after
    /// `max_jobs`.
    #[test]
    fn a_worker_reads_many_attachments_and_is_recycled() {
        let pool = pool(1, 3);
        for _ in 0..7 {
            read_good(&pool);
        }
        let stats = pool.stats();
        assert_eq!(stats.jobs, 7);
        assert_eq!(stats.started, 3, "{stats:?}");
        assert_eq!(stats.recycled_jobs, 2, "{stats:?}");
        assert_eq!(pool.worker_pids().len(), 1);
    }

    /// A worker that never finishes is killed at the job's wall deadline;
    /// the next attachment is read by a fresh worker.
    #[test]
    fn a_hanging_worker_is_killed_at_its_deadline() {
        let pool = pool(1, 100);
        let limits = ChildLimits {
            timeout_seconds: 1,
            cpu_seconds: 600,
            ..ChildLimits::default()
        };
        let err = pool
            .read(&limits, Format::Xlsx, &endless_sheet(), &raised(), None)
            .expect_err("never finishes");
        assert!(
            matches!(&err, ReadError::TooLarge(t) if t.contains("超时")),
            "{err:?}"
        );
        read_good(&pool);
        let stats = pool.stats();
        assert_eq!(
            (stats.killed, stats.started, stats.retried),
            (1, 2, 0),
            "{stats:?}"
        );
    }

    /// A worker that overruns its CPU budget dies of SIGXCPU: the CPU limit
    /// is this job's, counted from the job's start however long the worker
    /// has lived, and is not tried again.
    #[test]
    fn the_cpu_budget_is_per_job() {
        let pool = pool(1, 100);
        let limits = ChildLimits {
            timeout_seconds: 600,
            cpu_seconds: 1,
            ..ChildLimits::default()
        };
        // Warm jobs under the same budget first: they do not use it up.
        for _ in 0..3 {
            read_good(&pool);
        }
        let err = pool
            .read(&limits, Format::Xlsx, &endless_sheet(), &raised(), None)
            .expect_err("overruns");
        assert!(
            matches!(&err, ReadError::TooLarge(t) if t.contains("CPU 1 秒")),
            "{err:?}"
        );
        read_good(&pool);
        let stats = pool.stats();
        assert_eq!((stats.died, stats.retried), (1, 0), "{stats:?}");
    }

    /// A worker that exhausts its address space aborts; the error names the
    /// limit, and the next attachment is read normally.
    #[test]
    fn a_worker_out_of_memory_is_replaced() {
        let pool = pool(1, 100);
        let limits = ChildLimits {
            memory_mb: 256,
            ..ChildLimits::default()
        };
        let (deflate, size) = huge_shared_strings(3 * GIB / 2);
        let bomb = xlsx(vec![
            sheet(&[("A1", "x")]),
            Entry::deflated("xl/sharedStrings.xml", deflate, size),
        ]);
        let err = pool
            .read(&limits, Format::Xlsx, &bomb, &raised(), None)
            .expect_err("out of memory");
        assert!(
            matches!(&err, ReadError::TooLarge(t) if t.contains("256 MB")),
            "{err:?}"
        );
        read_good(&pool);
        assert_eq!(pool.stats().retried, 0);
    }

    /// A worker killed from outside in the middle of a job (the OOM killer,
    /// an administrator): the job is tried once more on a fresh worker.
    #[test]
    fn a_worker_killed_mid_job_is_replaced_and_the_job_tried_again() {
        let pool = std::sync::Arc::new(pool(1, 100));
        // Seconds of reading in a debug build (4 MiB of empty elements).
        let (deflate, size) = deflate_run(
            SHEET_HEAD.as_bytes(),
            b"<x/>",
            (4 << 20) / 258,
            SHEET_TAIL.as_bytes(),
        );
        let slow = xlsx(vec![Entry::deflated(
            "xl/worksheets/sheet1.xml",
            deflate,
            size,
        )]);
        let job = {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || {
                let limits = ChildLimits {
                    cpu_seconds: 600,
                    timeout_seconds: 600,
                    ..ChildLimits::default()
                };
                pool.read(&limits, Format::Xlsx, &slow, &raised(), None)
            })
        };
        let victim = (0..500)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                pool.worker_pids().first().copied()
            })
            .expect("a worker started");
        std::thread::sleep(Duration::from_millis(300));
        let killed = Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let result = job.join().expect("the job's thread");
        let grid = result.expect("read by the second worker");
        assert!(grid.grids.iter().all(|g| g.cells.is_empty()));
        let stats: PoolStats = pool.stats();
        assert_eq!(
            (stats.died, stats.retried, stats.started),
            (1, 1, 2),
            "{stats:?}"
        );
        read_good(&pool);
    }

    /// A confined worker cannot read or create a file, open a socket or
    /// start a program; it can still allocate and set its CPU budget.
    #[test]
    fn a_confined_worker_cannot_open_files_or_sockets() {
        let scratch = tempfile::tempdir().expect("scratch");
        let existing = scratch.path().join("secret.txt");
        std::fs::write(&existing, "宅电 0577-1234567").expect("write");
        let out = Command::new(BIN)
            .arg("__confine-probe")
            .arg(&existing)
            .arg(scratch.path())
            .output()
            .expect("run the probe");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe: Probe = serde_json::from_slice(&out.stdout).expect("probe JSON");
        assert_eq!(
            probe,
            Probe {
                read_file: false,
                create_file: false,
                tcp_socket: false,
                unix_socket: false,
                start_program: false,
                allocate_and_limit: true,
            }
        );
        assert!(!scratch.path().join("created-by-worker").exists());
    }

    /// Every worker ends with the pool.
    #[test]
    fn workers_end_with_the_pool() {
        let pool = pool(2, 100);
        read_good(&pool);
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), 1, "one job, one worker");
        drop(pool);
        assert!(
            !std::path::Path::new(&format!("/proc/{}", pids[0])).exists(),
            "worker {} outlived the pool",
            pids[0]
        );
    }
}
