//! OCR golden tests: scanned registration forms (faxes, scanner PDFs, phone
//! photos) made by `tests/fixtures/ocr/generate.py` are run through the real
//! binary,
//!
//!     xxdc-intake parse --roster tests/fixtures/golden/roster.csv --json tests/fixtures/ocr/cases/NAME.eml
//!
//! from the crate root, and what OCR read is compared with
//! `NAME.expected.json` (what the generator drew on the form, normalised as
//! the parse contract says):
//!
//! - one registration, with `"ocr": true`, matched to the expected roster
//!   unit (or, when the form's unit could not be read, left unmatched but
//!   sent from that unit's own address); never another unit;
//! - the attachment's `meta.pages`, `meta.red_seal` (absent for 1-bit and
//!   greyscale scans) and `meta.ocr.engine`;
//! - `needs_review` and the `scanned_document` problem;
//! - field accuracy: the share of the fields drawn on the form (expected
//!   non-null) whose value equals the registration's once white space is
//!   removed; at least `MIN_CASE_ACCURACY` per case and `MIN_OVERALL_ACCURACY`
//!   over all fields of all cases.
//!
//! Run with `--nocapture` for the per-case table. OCR needs the models in
//! `target/ocr-models` (`scripts/ocr-models`, which `scripts/check` runs);
//! without them the test fails rather than skips.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use wait_timeout::ChildExt;

const BIN: &str = env!("CARGO_BIN_EXE_xxdc-intake");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Relative to the crate root, where the binary runs.
const CASES: &str = "tests/fixtures/ocr/cases";
const ROSTER: &str = "tests/fixtures/golden/roster.csv";
const REC_MODEL: &str = "ch_PP-OCRv4_rec_infer.onnx";

const MIN_CASE_ACCURACY: f64 = 0.8;
const MIN_OVERALL_ACCURACY: f64 = 0.9;
/// Cases read at the same time (the machine has two cores).
const THREADS: usize = 2;
/// One case's time limit (a debug build reads a page in 5–10 s).
const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the binary looks for the models in a development build:
/// `ocr-models` beside the folder it is in (`target/ocr-models`).
fn models_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("ocr-models"))
        .unwrap_or_else(|| Path::new(ROOT).join("target/ocr-models"))
}

/// The cases: every `NAME.eml` in the cases folder, sorted.
fn cases() -> Vec<String> {
    let dir = Path::new(ROOT).join(CASES);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run /usr/bin/python3 tests/fixtures/ocr/generate.py)",
                dir.display()
            )
        })
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            p.file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// What one case came to.
#[derive(Debug, Default)]
struct Outcome {
    name: String,
    seconds: f64,
    /// Expected non-null fields, and how many the program read right.
    total: usize,
    matched: usize,
    /// `field: expected … got …` for each field read wrong or not at all.
    misses: Vec<String>,
    /// Values where the form's cell was empty (reported, not scored).
    extras: Vec<String>,
    /// Broken expectations other than field accuracy.
    failures: Vec<String>,
}

impl Outcome {
    fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.matched as f64 / self.total as f64
        }
    }
}

/// Runs the binary on one input; its JSON object.
fn parse(input: &str, models: &Path) -> Result<Value, String> {
    let mut child = Command::new(BIN)
        .current_dir(ROOT)
        .env("XXDC_OCR_MODELS", models)
        .args(["parse", "--roster", ROSTER, "--json", input])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {BIN}: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let status = match child
        .wait_timeout(CASE_TIMEOUT)
        .map_err(|e| e.to_string())?
    {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {} s", CASE_TIMEOUT.as_secs()));
        }
    };
    let stdout = out
        .join()
        .expect("stdout reader")
        .map_err(|e| e.to_string())?;
    let stderr = err
        .join()
        .expect("stderr reader")
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("exit status {status}; stderr: {stderr}"));
    }
    let line = stdout
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| format!("no output; stderr: {stderr}"))?;
    serde_json::from_str(line).map_err(|e| format!("output is not JSON ({e}): {line}"))
}

/// A value as compared: strings without white space, `true`/`false`.
fn comparable(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.chars().filter(|c| !c.is_whitespace()).collect()),
        other => Some(other.to_string()),
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Runs one case and checks it.
fn check(name: &str, models: &Path) -> Outcome {
    let mut o = Outcome {
        name: name.to_string(),
        ..Outcome::default()
    };
    let expected_path = Path::new(ROOT)
        .join(CASES)
        .join(format!("{name}.expected.json"));
    let expected: Value = match std::fs::read_to_string(&expected_path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            o.failures.push(format!("{}: {e}", expected_path.display()));
            return o;
        }
    };
    let fields = expected["fields"].as_object().cloned().unwrap_or_default();
    o.total = fields.values().filter(|v| !v.is_null()).count();

    let started = Instant::now();
    let report = parse(&format!("{CASES}/{name}.eml"), models);
    o.seconds = started.elapsed().as_secs_f64();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            o.failures.push(e);
            return o;
        }
    };

    let unit = expected["unit_id"].as_str().unwrap_or_default();
    let from = report["message"]["from"].as_str().unwrap_or_default();
    let sender_unit = report["sender_unit"]["unit_id"].as_str();
    if let Some(s) = sender_unit.filter(|s| *s != unit) {
        o.failures
            .push(format!("sender_unit is {s}, expected {unit} or none"));
    }

    // The registration.
    let registrations = report["registrations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if registrations.len() != 1 {
        o.failures.push(format!(
            "{} registrations, expected one",
            registrations.len()
        ));
    }
    for other in &registrations {
        if let Some(id) = other["unit_match"]["unit_id"]
            .as_str()
            .filter(|id| *id != unit)
        {
            o.failures
                .push(format!("a registration matched to {id}, expected {unit}"));
        }
    }
    let reg = registrations.first().cloned().unwrap_or(Value::Null);
    if !registrations.is_empty() {
        if reg["ocr"] != Value::Bool(true) {
            o.failures.push(format!(
                "registration without \"ocr\": true: ocr = {}",
                reg["ocr"]
            ));
        }
        match reg["unit_match"]["unit_id"].as_str() {
            Some(id) if id == unit => {}
            Some(_) => {}                           // reported above as a wrong unit
            None if sender_unit == Some(unit) => {} // from the unit's own address
            None => o.failures.push(format!(
                "unit_match is null (sender {from}), expected {unit}"
            )),
        }
    }

    // The attachment.
    let attachments = report["attachments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let source = reg["source"].as_str();
    let attachment = attachments
        .iter()
        .find(|a| source.is_some() && a["filename"].as_str() == source)
        .or_else(|| attachments.first().filter(|_| attachments.len() == 1));
    match attachment {
        None => o.failures.push(format!(
            "no attachment named {source:?} among {} attachments",
            attachments.len()
        )),
        Some(a) => {
            let meta = &a["meta"];
            if meta["pages"] != expected["pages"] {
                o.failures.push(format!(
                    "meta.pages = {}, expected {}",
                    meta["pages"], expected["pages"]
                ));
            }
            let seal = meta.get("red_seal");
            match (&expected["red_seal"], seal) {
                (Value::Null, None) => {}
                (Value::Null, Some(v)) => o.failures.push(format!(
                    "meta.red_seal = {v}, expected no red_seal key (1-bit or greyscale scan)"
                )),
                (want, got) if got == Some(want) => {}
                (want, got) => o.failures.push(format!(
                    "meta.red_seal = {}, expected {want}",
                    got.map_or("absent".into(), Value::to_string)
                )),
            }
            if meta["ocr"]["engine"].as_str().is_none_or(str::is_empty) {
                o.failures.push(format!(
                    "meta.ocr.engine missing: meta.ocr = {}",
                    meta["ocr"]
                ));
            }
        }
    }

    // Review.
    if report["needs_review"] != Value::Bool(true) {
        o.failures.push(format!(
            "needs_review = {}, expected true",
            report["needs_review"]
        ));
    }
    let codes: Vec<&str> = report["problems"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["code"].as_str()).collect())
        .unwrap_or_default();
    if !codes.contains(&"scanned_document") {
        o.failures
            .push(format!("no scanned_document problem: {codes:?}"));
    }

    // Fields.
    for (path, want) in &fields {
        let (section, key) = path.split_once('.').unwrap_or((path, ""));
        let got = &reg[section][key];
        match (comparable(want), comparable(got)) {
            (None, None) => {}
            (None, Some(_)) => o
                .extras
                .push(format!("{path}: empty on the form, got {}", short(got))),
            (Some(w), g) => {
                if g.as_deref() == Some(w.as_str()) {
                    o.matched += 1;
                } else {
                    o.misses.push(format!(
                        "{path}: expected {}, got {}",
                        short(want),
                        short(got)
                    ));
                }
            }
        }
    }
    if o.accuracy() < MIN_CASE_ACCURACY {
        o.failures.push(format!(
            "field accuracy {:.3} ({}/{}) below {MIN_CASE_ACCURACY}",
            o.accuracy(),
            o.matched,
            o.total
        ));
    }
    o
}

#[test]
fn scanned_forms_are_read_by_ocr() {
    let models = models_dir();
    assert!(
        models.join(REC_MODEL).is_file(),
        "the OCR models are missing: {} has no {REC_MODEL}. Run scripts/ocr-models \
         (scripts/check does) to put them into target/ocr-models",
        models.display()
    );
    let names = cases();
    assert!(
        names.len() >= 8,
        "expected at least 8 cases in {CASES}, found {} (run /usr/bin/python3 \
         tests/fixtures/ocr/generate.py)",
        names.len()
    );

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(name) = names.get(i) else { break };
                    let outcome = check(name, &models);
                    outcomes.lock().expect("outcomes").push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("outcomes");
    outcomes.sort_by(|a, b| a.name.cmp(&b.name));

    // The table.
    let width = outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!();
    println!(
        "{:<width$}  {:>6}  {:>6}  {:>5}  misses",
        "case", "secs", "fields", "acc"
    );
    let (mut matched, mut total) = (0, 0);
    for o in &outcomes {
        matched += o.matched;
        total += o.total;
        println!(
            "{:<width$}  {:>6.1}  {:>6}  {:>5.3}  {}",
            o.name,
            o.seconds,
            format!("{}/{}", o.matched, o.total),
            o.accuracy(),
            o.misses.len()
        );
        for m in &o.misses {
            println!("{:<width$}    miss: {m}", "");
        }
        for e in &o.extras {
            println!("{:<width$}    extra: {e}", "");
        }
        for f in &o.failures {
            println!("{:<width$}    FAIL: {f}", "");
        }
    }
    let overall = if total == 0 {
        0.0
    } else {
        matched as f64 / total as f64
    };
    println!(
        "overall field accuracy {overall:.3} ({matched}/{total}) over {} cases in {:.1} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );

    let mut failures: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.failures.iter().map(move |f| format!("{}: {f}", o.name)))
        .collect();
    if overall < MIN_OVERALL_ACCURACY {
        failures.push(format!(
            "overall field accuracy {overall:.3} ({matched}/{total}) below {MIN_OVERALL_ACCURACY}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} OCR expectation(s) broken:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
