//! What each fuzz target does with its input (`fuzz/fuzz_targets/*.rs` are
//! one line each over this), so that a crashing input kept in
//! `tests/fixtures/hostile/fuzz/TARGET/` is replayed by `tests/hostile.rs`
//! exactly as the fuzzer ran it. Everything here runs in process, without
//! the worker that catches a reader's panic in the service: a panic is a
//! finding.

use std::sync::OnceLock;

use crate::parse::grid::{Cell, Grid, ReadLimits};
use crate::parse::pipeline::{DEFAULT_REQUIRED, Limits, Pipeline};
use crate::parse::sandbox::Isolation;
use crate::parse::sniff::Format;
use crate::parse::{form, quote, readers, sentence};

/// The targets, by name.
pub const TARGETS: [&str; 6] = ["message", "workbook", "word", "pdf", "markup", "form"];

/// Runs `target` over `data`; false for an unknown target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "message" => message(data),
        "workbook" => pick(
            data,
            &[Format::Xlsx, Format::Xlsb, Format::Xls, Format::Ods],
        ),
        "word" => pick(data, &[Format::Docx, Format::Doc, Format::Rtf]),
        "pdf" => drop(readers::read(Format::Pdf, data, &ReadLimits::default())),
        "markup" => markup(data),
        "form" => drop(form::extract(&grid_of(data))),
        _ => return false,
    }
    true
}

/// A whole message through the pipeline: envelope, MIME walk, charsets,
/// archives, bodies and every reader an attachment reaches, matching and
/// normalising.
fn message(data: &[u8]) {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    let pipeline = PIPELINE.get_or_init(|| {
        Pipeline::new(
            None,
            DEFAULT_REQUIRED.to_vec(),
            Isolation::InProcess,
            Limits::default(),
        )
    });
    drop(pipeline.parse("fuzz.eml", data));
}

/// One of `formats`, chosen by the first byte, reads the rest (one corpus
/// seeds every reader of a kind).
fn pick(data: &[u8], formats: &[Format]) {
    if let Some((&first, bytes)) = data.split_first() {
        let format = formats[usize::from(first) % formats.len()];
        drop(readers::read(format, bytes, &ReadLimits::default()));
    }
}

/// Text typed by a person: a text file, a plain body (its quote cut, free
/// sentences expanded, as the pipeline does), an HTML body, own or
/// forwarded.
fn markup(data: &[u8]) {
    const FORMATS: [Format; 4] = [
        Format::Text,
        Format::BodyText,
        Format::BodyHtml,
        Format::BodyHtmlForward,
    ];
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(first) % FORMATS.len()];
    let limits = ReadLimits::default();
    if format == Format::BodyText {
        let text = String::from_utf8_lossy(bytes);
        let (own, _quoted) = quote::split(&text);
        let own = sentence::expand(&own).unwrap_or(own);
        drop(readers::read(format, own.as_bytes(), &limits));
    } else {
        drop(readers::read(format, bytes, &limits));
    }
}

/// Pieces that make the extractor's paths reachable from a few bytes.
const WORDS: [&str; 32] = [
    "单位",
    "地址",
    "分管领导",
    "信息员",
    "姓名",
    "职务",
    "办电",
    "手机",
    "宅电",
    "机关网",
    "E-mail",
    "QQ",
    "性别",
    "出生年月",
    "籍贯",
    "是否党员",
    "简历",
    "分管工作",
    "：",
    "，",
    "\n",
    "13957785650",
    "张三",
    "67221531",
    " ",
    "（",
    "）",
    "男",
    "是",
    "1980.05",
    "xx@163.com",
    "传真",
];

/// A grid from bytes: per cell, row, column, spans and up to seven words.
fn grid_of(data: &[u8]) -> Grid {
    let mut grid = Grid::new("fuzz");
    let mut rest = data;
    while let [row, col, rowspan, colspan, len, tail @ ..] = rest {
        let take = usize::from(*len % 8).min(tail.len());
        let (words, after) = tail.split_at(take);
        rest = after;
        grid.cells.push(Cell {
            row: u32::from(*row % 40),
            col: u32::from(*col % 16),
            rowspan: u32::from(*rowspan % 4),
            colspan: u32::from(*colspan % 6),
            text: words
                .iter()
                .map(|&b| WORDS[usize::from(b) % WORDS.len()])
                .collect(),
        });
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_runs_and_unknown_ones_are_refused() {
        for target in TARGETS {
            assert!(run(target, b"\x00PK\x03\x04 not really"), "{target}");
            assert!(run(target, b""), "{target}");
        }
        assert!(!run("nonesuch", b""));
    }
}
