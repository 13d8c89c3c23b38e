//! Golden-file end-to-end tests: every input under
//! `tests/fixtures/golden/cases/` is run through the real binary
//! (`xxdc-intake parse --roster tests/fixtures/golden/roster.csv --json FILE`)
//! and its JSON object is compared with `NAME.json` beside the input.
//!
//! The binary is run (rather than the library called) because it reads
//! attachments in sandboxed child processes of itself.
//!
//! - On a mismatch the actual output is written to `NAME.actual.json`
//!   (pretty-printed) and the test fails listing every mismatching case.
//! - With `XXDC_BLESS=1` the `NAME.json` files are (re)written from the
//!   program's output instead. Blessed files must then be reviewed by hand
//!   (`python3 tests/fixtures/golden/generate.py --check` compares them with
//!   what the generator put into each fixture): they are the correct
//!   answers, not a record of whatever the program printed.
//!
//! The whole object is compared; no key is treated as volatile (the
//! fixtures have fixed dates, Message-IDs and zip timestamps, and `input` is
//! the path relative to the crate root because the binary runs there).
//! See `tests/fixtures/golden/README.md` for the cases.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Fixture directory, relative to the crate root (so that `input` in the
/// output is this relative path).
const CASES: &str = "tests/fixtures/golden/cases";
const ROSTER: &str = "tests/fixtures/golden/roster.csv";

/// Every input file in the cases directory: anything that is not a JSON
/// file (`NAME.json` expected, `NAME.actual.json` left by a failed run).
fn inputs(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root.join(CASES))
        .expect("tests/fixtures/golden/cases must exist")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "json"))
        .map(|p| Path::new(CASES).join(p.file_name().expect("a file name")))
        .collect();
    out.sort();
    out
}

/// `cases/NAME.ext` → `cases/NAME<suffix>` (`.json`, `.actual.json`).
fn beside(input: &Path, suffix: &str) -> PathBuf {
    let stem = input.file_stem().expect("a file stem").to_string_lossy();
    input.with_file_name(format!("{stem}{suffix}"))
}

/// Runs `parse --json` on one input and returns its single JSON object.
fn parse(root: &Path, input: &Path) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_xxdc-intake"))
        .current_dir(root)
        .args(["parse", "--roster", ROSTER, "--json"])
        .arg(input)
        .output()
        .map_err(|e| format!("cannot run xxdc-intake: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    if !out.status.success() || lines.len() != 1 {
        return Err(format!(
            "exit status {}, {} output line(s); stderr:\n{}",
            out.status,
            lines.len(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_str(lines[0]).map_err(|e| format!("output is not JSON ({e}): {}", lines[0]))
}

/// Paths (`registrations[0].officer.mobile`) where `want` and `got` differ.
fn differences(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match g.get(k) {
                    Some(gv) => differences(&p, wv, gv, out),
                    None => out.push(format!("{p}: missing")),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{path}.{k}: unexpected key"));
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                differences(&format!("{path}[{i}]"), wv, gv, out);
            }
        }
        _ if want != got => out.push(format!("{path}: expected {want}, got {got}")),
        _ => {}
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("serialisable") + "\n"
}

#[test]
fn golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("XXDC_BLESS").is_some_and(|v| v == "1");
    let inputs = inputs(root);
    assert!(!inputs.is_empty(), "no golden inputs found in {CASES}");

    let mut failures = Vec::new();
    for input in &inputs {
        let got = match parse(root, input) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: {e}", input.display()));
                continue;
            }
        };
        // Relative to the crate root, for messages; joined to `root` for I/O.
        let expected_rel = beside(input, ".json");
        let actual_rel = beside(input, ".actual.json");
        let (expected_path, actual_path) = (root.join(&expected_rel), root.join(&actual_rel));
        if bless {
            fs::write(&expected_path, pretty(&got)).expect("write expected file");
            let _ = fs::remove_file(&actual_path);
            continue;
        }
        let want: Value = match fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text).expect("expected file is valid JSON"),
            Err(_) => {
                fs::write(&actual_path, pretty(&got)).expect("write actual file");
                failures.push(format!(
                    "{}: no expected file {} (run with XXDC_BLESS=1, then review it)",
                    input.display(),
                    expected_rel.display()
                ));
                continue;
            }
        };
        if want == got {
            let _ = fs::remove_file(&actual_path);
            continue;
        }
        fs::write(&actual_path, pretty(&got)).expect("write actual file");
        let mut diffs = Vec::new();
        differences("", &want, &got, &mut diffs);
        failures.push(format!(
            "{} (actual output in {}):\n    {}",
            input.display(),
            actual_rel.display(),
            diffs.join("\n    ")
        ));
    }

    assert!(
        failures.is_empty(),
        "{} of {} golden case(s) differ:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}
