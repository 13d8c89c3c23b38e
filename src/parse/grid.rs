//! The one model every readable format is turned into: a grid of text cells
//! with row and column spans, plus what the file says about itself.
//!
//! Readers (`crate::parse::readers`) produce [`Extracted`]; the form extractor
//! (`crate::parse::form`) only ever sees grids, so a new format is a new reader and
//! nothing downstream changes. This module owns the data types and the small
//! helpers readers share; it does no parsing of any file format itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One cell of a table. `row`/`col` are zero-based positions of the cell's
/// top-left corner; a merged region is one cell with spans greater than one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub row: u32,
    pub col: u32,
    pub rowspan: u32,
    pub colspan: u32,
    /// The text as displayed, line breaks kept as `\n`.
    pub text: String,
}

impl Cell {
    /// A cell spanning one row and one column.
    pub fn new(row: u32, col: u32, text: impl Into<String>) -> Self {
        Self {
            row,
            col,
            rowspan: 1,
            colspan: 1,
            text: text.into(),
        }
    }

    /// The last row this cell covers.
    pub fn last_row(&self) -> u32 {
        self.row + self.rowspan.max(1) - 1
    }

    /// The last column this cell covers.
    pub fn last_col(&self) -> u32 {
        self.col + self.colspan.max(1) - 1
    }
}

/// One table: a worksheet, a Word table, a table found on a PDF page, or the
/// `标签：值` lines of a message body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    /// Sheet name, `table 2`, `page 1`, `body` … for diagnostics only.
    pub name: String,
    pub cells: Vec<Cell>,
}

impl Grid {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            cells: Vec::new(),
        }
    }

    /// Adds a cell unless its text is blank (blank cells carry no
    /// information for a label-anchored extractor, and leaving them out
    /// keeps sparse sheets small).
    pub fn push(&mut self, cell: Cell) {
        if !cell.text.trim().is_empty() {
            self.cells.push(cell);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

/// What a file says about itself (`meta` in the parse contract): pages,
/// producer, author, image size… Keys with no value are left out.
pub type Meta = BTreeMap<String, serde_json::Value>;

/// The result of reading one attachment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extracted {
    pub grids: Vec<Grid>,
    pub meta: Meta,
    /// An image, or a PDF without a text layer: recorded, not read as text.
    pub scanned: bool,
}

/// Why an attachment could not be read. The message (Chinese, for office
/// staff) ends up in the attachment's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ReadError {
    #[error("文件已损坏或格式不正确：{0}")]
    Damaged(String),
    #[error("文件已加密（设有密码），无法读取")]
    Encrypted,
    #[error("文件超出限制：{0}")]
    TooLarge(String),
    #[error("不支持的文件格式：{0}")]
    Unsupported(String),
}

/// Limits every reader honours. Defaults suit a registration form, which is a
/// few kilobytes; anything near these numbers is hostile or a mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadLimits {
    /// Cells kept per grid, and rows/columns scanned per sheet.
    pub max_cells: usize,
    /// Bytes of one decompressed part (an XML part of an OOXML/ODF file, a
    /// zip member).
    pub max_part_bytes: u64,
    /// Bytes of all decompressed parts of one file together.
    pub max_total_bytes: u64,
    /// Entries in one zip directory (OOXML, ODF or a `.zip` attachment).
    pub max_zip_entries: usize,
    /// Pages read from a PDF or a multi-page TIFF.
    pub max_pages: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_cells: 20_000,
            max_part_bytes: 50 * 1024 * 1024,
            max_total_bytes: 200 * 1024 * 1024,
            max_zip_entries: 10_000,
            max_pages: 20,
        }
    }
}

/// Folds runs of blank space (including full-width spaces and
/// non-breaking spaces) into one ASCII space per run, keeps line breaks as
/// `\n`, and trims every line. Readers call it on cell text so that every
/// format yields the same text for the same form.
pub fn clean_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .split('\n')
        .enumerate()
    {
        if i > 0 {
            out.push('\n');
        }
        let mut pending_space = false;
        for ch in line.chars() {
            if ch.is_whitespace() || ch == '\u{3000}' || ch == '\u{a0}' {
                pending_space = true;
            } else if ch.is_control() {
                // stray control characters from Word's field marks etc.
            } else {
                if pending_space && !out.is_empty() && !out.ends_with('\n') {
                    out.push(' ');
                }
                pending_space = false;
                out.push(ch);
            }
        }
    }
    out.trim_matches('\n').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_folds_space_and_keeps_lines() {
        assert_eq!(
            clean_text("  单 位\u{3000}\u{3000}x \r\n\r\n y  "),
            "单 位 x\n\ny"
        );
    }

    #[test]
    fn push_skips_blank_cells() {
        let mut g = Grid::new("t");
        g.push(Cell::new(0, 0, " \u{3000} "));
        g.push(Cell::new(0, 1, "x"));
        assert_eq!(g.cells.len(), 1);
    }
}
