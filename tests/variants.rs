//! Scores the reader on the generated variants corpus
//! (`tests/fixtures/variants/`, written by its `generate.py`): the classes
//! of real-world slips (other label wordings, free sentences, replies that
//! quote the office's notice, the office's own contacts in a form,
//! multi-line cells, bounces carrying the original, invalid values), each
//! in every format (xlsx, xls, ods, docx, doc, text PDF, plain and HTML
//! bodies).
//!
//! Every case is run through the real binary,
//! `xxdc-intake --config tests/fixtures/variants/config.toml parse --roster
//! tests/fixtures/golden/roster.csv --json FILE...` (many files per run),
//! and compared field by field with `intent.json`. The test prints a table
//! of field accuracy per class × format and every mismatch (the same report
//! is written to `variants-report.txt` in Cargo's test temp folder), and
//! fails when the overall field accuracy is below 0.99 or when any
//! registration names a wrong unit (one the intent does not have, or credit
//! where none is intended).
//!
//! Counting: each intended registration gives its 25 fields (a missing one
//! counts 25 wrong); each registration the intent does not have counts 25
//! wrong; a case that should give no registration counts one check (right
//! when none is given). Unit matches, sender units, problem codes,
//! attachments and `needs_review` are reported beside, not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const CASES: &str = "tests/fixtures/variants/cases";
const INTENT: &str = "tests/fixtures/variants/intent.json";
const CONFIG: &str = "tests/fixtures/variants/config.toml";
const ROSTER: &str = "tests/fixtures/golden/roster.csv";
const MIN_ACCURACY: f64 = 0.99;
/// Files per `parse` run; a run that does not give one line per file is
/// retried one file at a time.
const BATCH: usize = 40;

const FIELDS: [&str; 25] = [
    "unit.name",
    "unit.address",
    "unit.office_phone",
    "unit.fax",
    "leader.name",
    "leader.title",
    "leader.duties",
    "leader.office_phone",
    "leader.mobile",
    "leader.home_phone",
    "leader.gov_net",
    "leader.email",
    "officer.name",
    "officer.gender",
    "officer.title",
    "officer.birth",
    "officer.native_place",
    "officer.party_member",
    "officer.office_phone",
    "officer.mobile",
    "officer.home_phone",
    "officer.gov_net",
    "officer.qq",
    "officer.email",
    "officer.resume",
];

/// Runs `parse --json` over `files` (paths relative to the crate root) and
/// returns one object per file, in order.
fn run(root: &Path, files: &[String]) -> Result<Vec<Value>, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_xxdc-intake"))
        .current_dir(root)
        .args(["--config", CONFIG, "parse", "--roster", ROSTER, "--json"])
        .args(files)
        .output()
        .map_err(|e| format!("cannot run xxdc-intake: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != files.len() {
        return Err(format!(
            "exit status {}, {} output line(s) for {} file(s); stderr: {}",
            out.status,
            lines.len(),
            files.len(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut values = Vec::new();
    for (line, file) in lines.iter().zip(files) {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("output is not JSON ({e}): {line}"))?;
        if v["input"].as_str() != Some(file.as_str()) {
            return Err(format!(
                "output for {} where {file} was expected",
                v["input"]
            ));
        }
        values.push(v);
    }
    Ok(values)
}

/// Every case's output (or why there is none), by case name.
fn outputs(root: &Path, names: &[String]) -> BTreeMap<String, Result<Value, String>> {
    let mut out = BTreeMap::new();
    for chunk in names.chunks(BATCH) {
        let files: Vec<String> = chunk.iter().map(|n| format!("{CASES}/{n}")).collect();
        match run(root, &files) {
            Ok(values) => {
                for (name, v) in chunk.iter().zip(values) {
                    out.insert(name.clone(), Ok(v));
                }
            }
            Err(_) => {
                for (name, file) in chunk.iter().zip(&files) {
                    let one = run(root, std::slice::from_ref(file)).map(|mut v| v.remove(0));
                    out.insert(name.clone(), one);
                }
            }
        }
    }
    out
}

/// `registration["officer"]["mobile"]` for `"officer.mobile"`.
fn field<'a>(reg: &'a Value, path: &str) -> &'a Value {
    let (section, key) = path.split_once('.').expect("section.key");
    &reg[section][key]
}

fn unit_of(reg: &Value) -> Option<&str> {
    reg["unit_match"]["unit_id"].as_str()
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    right: usize,
    total: usize,
}

impl Tally {
    fn add(&mut self, right: bool) {
        self.total += 1;
        self.right += usize::from(right);
    }

    fn add_wrong(&mut self, n: usize) {
        self.total += n;
    }

    fn merge(&mut self, other: Tally) {
        self.right += other.right;
        self.total += other.total;
    }

    fn ratio(self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.right as f64 / self.total as f64
        }
    }

    fn cell(self) -> String {
        if self.total == 0 {
            "—".to_owned()
        } else {
            format!("{:.3}", self.ratio())
        }
    }
}

/// What one case scored and where it went wrong.
#[derive(Default)]
struct Score {
    fields: Tally,
    units: Tally,
    wrong_units: usize,
    /// (field, want, got) of counted checks.
    mismatches: Vec<(String, String, String)>,
    /// Reported beside: sender unit, problems, attachments, needs_review.
    notes: Vec<String>,
}

/// Pairs intended registrations with output ones: the same source first,
/// then the most equal fields.
fn pair(want: &[Value], got: &[Value]) -> Vec<Option<usize>> {
    let mut used = vec![false; got.len()];
    let mut out = Vec::new();
    for w in want {
        let best = got
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .max_by_key(|(_, g)| {
                let same_source = usize::from(g["source"] == w["source"]);
                let equal = FIELDS
                    .iter()
                    .filter(|p| field(g, p) == &w["fields"][**p])
                    .count();
                (same_source, equal)
            })
            .map(|(i, _)| i);
        if let Some(i) = best {
            used[i] = true;
        }
        out.push(best);
    }
    out
}

fn score(want: &Value, got: &Value) -> Score {
    let mut s = Score::default();
    let want_regs = want["registrations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let got_regs = got["registrations"].as_array().cloned().unwrap_or_default();
    let intended_units: BTreeSet<&str> = want_regs
        .iter()
        .filter_map(|r| r["unit_id"].as_str())
        .collect();

    let pairs = pair(&want_regs, &got_regs);
    for (k, (w, p)) in want_regs.iter().zip(&pairs).enumerate() {
        let Some(gi) = p else {
            s.fields.add_wrong(FIELDS.len());
            s.units.add(false);
            s.mismatches.push((
                format!("reg{k}"),
                format!("a registration from {} for {}", w["source"], w["unit_id"]),
                "none".to_owned(),
            ));
            continue;
        };
        let g = &got_regs[*gi];
        if g["source"] != w["source"] {
            s.notes.push(format!(
                "reg{k}.source: want {} got {}",
                w["source"], g["source"]
            ));
        }
        for path in FIELDS {
            let (wv, gv) = (&w["fields"][path], field(g, path));
            s.fields.add(wv == gv);
            if wv != gv {
                s.mismatches
                    .push((format!("reg{k}.{path}"), show(wv), show(gv)));
            }
        }
        let (wu, gu) = (w["unit_id"].as_str(), unit_of(g));
        s.units.add(wu == gu);
        if wu != gu {
            if gu.is_some() {
                s.wrong_units += 1;
            }
            s.mismatches.push((
                format!("reg{k}.unit_match"),
                format!("{wu:?}"),
                format!("{gu:?}"),
            ));
        }
    }
    for (i, g) in got_regs.iter().enumerate() {
        if pairs.contains(&Some(i)) {
            continue;
        }
        s.fields.add_wrong(FIELDS.len());
        let gu = unit_of(g);
        if gu.is_some_and(|u| !intended_units.contains(u)) {
            s.wrong_units += 1;
        }
        let names = format!(
            "source {} unit {:?} leader {} officer {}",
            g["source"],
            gu,
            show(field(g, "leader.name")),
            show(field(g, "officer.name"))
        );
        s.mismatches.push((
            "registration not intended".to_owned(),
            "none".to_owned(),
            names,
        ));
    }
    if want_regs.is_empty() {
        s.fields.add(got_regs.is_empty());
    }

    // Beside the count: sender unit, problems, attachments, needs_review.
    let sender = got["sender_unit"]["unit_id"].as_str();
    if want["sender_unit"].as_str() != sender {
        s.notes.push(format!(
            "sender_unit: want {} got {sender:?}",
            want["sender_unit"]
        ));
    }
    if !want["needs_review"].is_null() && want["needs_review"] != got["needs_review"] {
        s.notes.push(format!(
            "needs_review: want {} got {}",
            want["needs_review"], got["needs_review"]
        ));
    }
    let problems: Vec<(String, String)> = got["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["field"].as_str().unwrap_or("").to_owned(),
                        p["code"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for p in want["problems"].as_array().into_iter().flatten() {
        let (f, c) = (p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or(""));
        if !problems.iter().any(|(gf, gc)| gf == f && gc == c) {
            s.notes.push(format!("problem missing: {c} on {f}"));
        }
    }
    let allowed: BTreeSet<&str> = want["codes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .map(|c| c.trim_end_matches('?'))
        .collect();
    for c in want["codes"].as_array().into_iter().flatten() {
        let c = c.as_str().unwrap_or("");
        if !c.ends_with('?') && !problems.iter().any(|(_, gc)| gc == c) {
            s.notes.push(format!("problem code missing: {c}"));
        }
    }
    for (f, c) in &problems {
        if !allowed.contains(c.as_str()) {
            s.notes.push(format!("problem not expected: {c} on {f:?}"));
        }
    }
    let got_atts: Vec<(String, String, String)> = got["attachments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let s = |k: &str| x[k].as_str().unwrap_or("").to_owned();
                    (s("filename"), s("format"), s("outcome"))
                })
                .collect()
        })
        .unwrap_or_default();
    let want_atts: Vec<(String, String, String)> = want["attachments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let s = |i: usize| x[i].as_str().unwrap_or("").to_owned();
                    (s(0), s(1), s(2))
                })
                .collect()
        })
        .unwrap_or_default();
    let atts_ok = want_atts.len() == got_atts.len()
        && want_atts
            .iter()
            .zip(&got_atts)
            .all(|(w, g)| w.0 == g.0 && w.1 == g.1 && w.2.split('|').any(|o| o == g.2));
    if !atts_ok {
        s.notes
            .push(format!("attachments: want {want_atts:?} got {got_atts:?}"));
    }
    s
}

#[test]
fn variants_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let intent: BTreeMap<String, Value> = serde_json::from_str(
        &fs::read_to_string(root.join(INTENT)).expect("intent.json (run generate.py)"),
    )
    .expect("intent.json is JSON");
    let mut on_disk: Vec<String> = fs::read_dir(root.join(CASES))
        .expect("the cases folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let names: Vec<String> = intent.keys().cloned().collect();
    assert_eq!(
        on_disk, names,
        "cases/ and intent.json disagree: run tests/fixtures/variants/generate.py"
    );
    assert!(names.len() >= 200, "only {} cases", names.len());

    let outputs = outputs(root, &names);
    let mut cells: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut cases: BTreeMap<(String, String), usize> = BTreeMap::new();
    let (mut all, mut units, mut wrong_units) = (Tally::default(), Tally::default(), 0);
    let mut details = String::new();
    let mut beside = String::new();
    for name in &names {
        let want = &intent[name];
        let key = (
            want["class"].as_str().unwrap_or("?").to_owned(),
            want["format"].as_str().unwrap_or("?").to_owned(),
        );
        *cases.entry(key.clone()).or_default() += 1;
        let s = match &outputs[name] {
            Ok(got) => score(want, got),
            Err(e) => {
                let mut s = Score::default();
                let n = want["registrations"].as_array().map_or(0, Vec::len);
                s.fields.add_wrong((n * FIELDS.len()).max(1));
                s.mismatches
                    .push(("run".to_owned(), "output".to_owned(), e.clone()));
                s
            }
        };
        cells.entry(key).or_default().merge(s.fields);
        all.merge(s.fields);
        units.merge(s.units);
        wrong_units += s.wrong_units;
        for (f, w, g) in &s.mismatches {
            let _ = writeln!(details, "{name}  {f}: want {w} got {g}");
        }
        for n in &s.notes {
            let _ = writeln!(beside, "{name}  {n}");
        }
    }

    let classes: Vec<String> = cells
        .keys()
        .map(|k| k.0.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let formats = ["xlsx", "xls", "ods", "docx", "doc", "pdf", "text", "html"];
    let mut report = String::new();
    let _ = writeln!(
        report,
        "field accuracy per class × format (cases in brackets)"
    );
    let (blank, total) = ("", "all");
    let _ = write!(report, "{blank:<10}");
    for f in formats {
        let _ = write!(report, "{f:>12}");
    }
    let _ = writeln!(report, "{total:>12}");
    let mut per_format: BTreeMap<&str, Tally> = BTreeMap::new();
    for c in &classes {
        let _ = write!(report, "{c:<10}");
        let mut row = Tally::default();
        for f in formats {
            let key = (c.clone(), f.to_owned());
            let t = cells.get(&key).copied().unwrap_or_default();
            let n = cases.get(&key).copied().unwrap_or(0);
            let shown = format!("{} ({n})", t.cell());
            let _ = write!(report, "{shown:>12}");
            row.merge(t);
            per_format.entry(f).or_default().merge(t);
        }
        let _ = writeln!(report, "{:>12}", row.cell());
    }
    let _ = write!(report, "{total:<10}");
    for f in formats {
        let _ = write!(
            report,
            "{:>12}",
            per_format.get(f).copied().unwrap_or_default().cell()
        );
    }
    let _ = writeln!(report, "{:>12}", all.cell());
    let _ = writeln!(
        report,
        "\n{} cases; fields {}/{} = {:.4}; unit matches {}/{}; wrong units {wrong_units}",
        names.len(),
        all.right,
        all.total,
        all.ratio(),
        units.right,
        units.total
    );
    let _ = writeln!(report, "\nmismatches (counted):\n{details}");
    let _ = writeln!(
        report,
        "reported beside (not counted: sender unit, problems, attachments, needs_review):\n{beside}"
    );
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("variants-report.txt");
    let _ = fs::write(&path, &report);
    println!("{report}\n(also in {})", path.display());

    assert!(
        all.ratio() >= MIN_ACCURACY && wrong_units == 0,
        "variants corpus: field accuracy {:.4} (at least {MIN_ACCURACY} wanted), {wrong_units} wrong unit(s); \
         the table and every mismatch are printed above and in {}",
        all.ratio(),
        path.display()
    );
}
