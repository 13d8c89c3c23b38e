//! Reads an OpenDocument spreadsheet (`.ods`) into one grid per sheet, named
//! after the sheet, with merged cells as spans, plus what `meta.xml` says
//! about the file.
//!
//! `content.xml` is walked here rather than through calamine because
//! calamine has no merged-region API for ods, and because the displayed text
//! (`text:p`, e.g. `1985.10` or `1965年4月`) is what the form extractor needs,
//! not the typed value. It does not evaluate formulas (the cached display
//! text is read), read styles, or handle `.odt`/`.odp` documents.

use super::ooxml::{
    CellBudget, Flow, XmlEvent, attr, attr_u32, open_archive, read_meta_part, read_part, walk_xml,
};
use crate::parse::grid::{Cell, Extracted, Grid, Meta, ReadError, ReadLimits, clean_text};

/// `text:s c="N"` adds N spaces; [`clean_text`] folds runs of spaces anyway,
/// so more than a few are never needed and a hostile `c="4000000000"` costs
/// nothing.
const MAX_SPACES: u32 = 8;

/// Reads a `.ods` file.
pub fn read(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    let mut archive = open_archive(bytes, limits)?;
    if is_encrypted(&mut archive, limits)? {
        return Err(ReadError::Encrypted);
    }
    let content = read_part(&mut archive, "content.xml", limits)?
        .ok_or_else(|| ReadError::Damaged("缺少 content.xml".into()))?;
    let grids = read_content(&content, &mut CellBudget::new(limits))?;

    let mut meta = Meta::new();
    let fields: &[(&[u8], &str)] = &[
        (b"initial-creator", "author"),
        (b"creator", "author"),
        (b"creation-date", "created"),
        (b"date", "modified"),
        (b"generator", "application"),
    ];
    read_meta_part(&mut archive, "meta.xml", limits, fields, &mut meta)?;
    meta.insert("sheets".into(), grids.len().into());
    Ok(Extracted {
        grids,
        meta,
        scanned: false,
    })
}

/// A password-protected ODF file keeps its parts encrypted; the manifest
/// says so (`manifest:encryption-data` for `content.xml`).
fn is_encrypted(
    archive: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    limits: &ReadLimits,
) -> Result<bool, ReadError> {
    let manifest = read_part(archive, "META-INF/manifest.xml", limits)?.unwrap_or_default();
    Ok(manifest
        .windows(b"encryption-data".len())
        .any(|w| w == b"encryption-data"))
}

/// A cell being read.
#[derive(Debug, Default)]
struct OdsCell {
    col: u32,
    colspan: u32,
    rowspan: u32,
    repeat: u32,
    text: String,
    paragraphs: u32,
    /// The typed value, used only when the cell shows no `text:p`.
    value: Option<String>,
}

#[derive(Debug)]
struct Sheet {
    grid: Grid,
    row: u32,
    row_repeat: u32,
    col: u32,
    /// Cells of the current row; their `row` is set when the row ends.
    row_cells: Vec<Cell>,
    cell: Option<OdsCell>,
    /// Depth inside `text:p`/`text:h` of the current cell.
    in_paragraph: u32,
}

fn read_content(xml: &[u8], budget: &mut CellBudget) -> Result<Vec<Grid>, ReadError> {
    let mut grids = Vec::new();
    let mut sheet: Option<Sheet> = None;
    walk_xml(xml, "content.xml", |event| {
        let Some(s) = sheet.as_mut() else {
            if let XmlEvent::Open(b"table", element) = event {
                budget.take(1)?;
                let name =
                    attr(element, b"name").unwrap_or_else(|| format!("Sheet{}", grids.len() + 1));
                sheet = Some(Sheet {
                    grid: Grid::new(name),
                    row: 0,
                    row_repeat: 1,
                    col: 0,
                    row_cells: Vec::new(),
                    cell: None,
                    in_paragraph: 0,
                });
            }
            return Ok(Flow::Descend);
        };
        match event {
            XmlEvent::Open(name, element) => match name {
                // Comments are not displayed; a table inside a cell is an
                // OpenDocument text feature, not a spreadsheet one.
                b"annotation" | b"table" => return Ok(Flow::Skip),
                b"table-row" => {
                    s.row_repeat = repeat(element, b"number-rows-repeated");
                    s.col = 0;
                    s.row_cells.clear();
                }
                b"covered-table-cell" => {
                    // Hidden by a merged cell: advances the column, text unseen.
                    s.col = s
                        .col
                        .saturating_add(repeat(element, b"number-columns-repeated"));
                    return Ok(Flow::Skip);
                }
                b"table-cell" => {
                    let value = [
                        &b"value"[..],
                        b"date-value",
                        b"time-value",
                        b"boolean-value",
                        b"string-value",
                    ]
                    .iter()
                    .find_map(|key| attr(element, key));
                    s.cell = Some(OdsCell {
                        col: s.col,
                        colspan: attr_u32(element, b"number-columns-spanned")
                            .unwrap_or(1)
                            .max(1),
                        rowspan: attr_u32(element, b"number-rows-spanned")
                            .unwrap_or(1)
                            .max(1),
                        repeat: repeat(element, b"number-columns-repeated"),
                        value,
                        ..OdsCell::default()
                    });
                }
                b"p" | b"h" => {
                    if let Some(cell) = s.cell.as_mut() {
                        if cell.paragraphs > 0 {
                            cell.text.push('\n');
                        }
                        cell.paragraphs += 1;
                        s.in_paragraph += 1;
                    }
                }
                b"s" => {
                    let n = attr_u32(element, b"c").unwrap_or(1).min(MAX_SPACES);
                    s.push_text(&" ".repeat(n as usize));
                }
                b"tab" => s.push_text(" "),
                b"line-break" => s.push_text("\n"),
                _ => {}
            },
            XmlEvent::Text(text) => s.push_text(text),
            XmlEvent::Close(name) => match name {
                b"p" | b"h" => s.in_paragraph = s.in_paragraph.saturating_sub(1),
                b"table-cell" => s.end_cell(budget)?,
                b"table-row" => s.end_row(budget)?,
                b"table" => {
                    if let Some(done) = sheet.take() {
                        grids.push(done.grid);
                    }
                }
                _ => {}
            },
        }
        Ok(Flow::Descend)
    })?;
    // A truncated document: keep the sheet that was being read.
    grids.extend(sheet.map(|s| s.grid));
    Ok(grids)
}

/// `number-*-repeated`, at least 1.
fn repeat(element: &quick_xml::events::BytesStart<'_>, key: &[u8]) -> u32 {
    attr_u32(element, key).unwrap_or(1).max(1)
}

impl Sheet {
    fn push_text(&mut self, text: &str) {
        if self.in_paragraph > 0
            && let Some(cell) = self.cell.as_mut()
        {
            cell.text.push_str(text);
        }
    }

    fn end_cell(&mut self, budget: &mut CellBudget) -> Result<(), ReadError> {
        let Some(cell) = self.cell.take() else {
            return Ok(());
        };
        self.col = cell.col.saturating_add(cell.repeat);
        let raw = match cell.value {
            Some(value) if cell.paragraphs == 0 => display_value(&value),
            _ => cell.text,
        };
        let text = clean_text(&raw);
        if text.is_empty() {
            // Blank cells, however often repeated, only move the column.
            return Ok(());
        }
        // A repeated cell with content is real content, repeated; the budget
        // stops a hostile `number-columns-repeated`.
        budget.take(cell.repeat as usize)?;
        for k in 0..cell.repeat {
            let col = cell.col.saturating_add(k);
            self.row_cells.push(Cell {
                row: 0,
                col,
                rowspan: cell.rowspan,
                colspan: cell.colspan,
                text: text.clone(),
            });
        }
        Ok(())
    }

    fn end_row(&mut self, budget: &mut CellBudget) -> Result<(), ReadError> {
        self.end_cell(budget)?;
        if !self.row_cells.is_empty() {
            // Only rows with content are repeated; LibreOffice writes
            // `number-rows-repeated="1048563"` for the trailing empty rows.
            let extra = (self.row_repeat as usize - 1).saturating_mul(self.row_cells.len());
            budget.take(extra)?;
            for k in 0..self.row_repeat {
                for cell in &self.row_cells {
                    self.grid.push(Cell {
                        row: self.row.saturating_add(k),
                        ..cell.clone()
                    });
                }
            }
        }
        self.row = self.row.saturating_add(self.row_repeat);
        self.row_repeat = 1;
        self.row_cells.clear();
        Ok(())
    }
}

/// A typed value shown when the cell has no display text: numbers without
/// a trailing `.0` (`13805775470`, not `13805775470.0`).
fn display_value(value: &str) -> String {
    match value.parse::<f64>() {
        Ok(number) if number.is_finite() => format!("{number}"),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::ooxml::test_support::{all_text, cell, fixture, grid, mutants, text_at};
    use super::*;

    fn read_fixture(name: &str) -> Extracted {
        read(&fixture(name), &ReadLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn sheet_spans_and_covered_cells() {
        let x = read_fixture("form.ods");
        let g = grid(&x, "登记表");
        assert_eq!(
            cell(g, 0, 0),
            &Cell {
                row: 0,
                col: 0,
                rowspan: 1,
                colspan: 6,
                text: "分管政务信息领导及信息员登记表".into()
            }
        );
        assert_eq!(
            cell(g, 1, 1),
            &Cell {
                row: 1,
                col: 1,
                rowspan: 1,
                colspan: 2,
                text: "永嘉县林业局".into()
            }
        );
        assert_eq!(text_at(g, 1, 3), "地 址");
        assert_eq!(
            cell(g, 2, 0),
            &Cell {
                row: 2,
                col: 0,
                rowspan: 2,
                colspan: 1,
                text: "联系方式".into()
            }
        );
        // The row under a row-spanning cell starts with a covered cell.
        assert_eq!(text_at(g, 3, 1), "宅 电");
    }

    #[test]
    fn displayed_text_and_values() {
        let x = read_fixture("form.ods");
        let g = grid(&x, "登记表");
        assert_eq!(text_at(g, 2, 2), "1985.10");
        assert_eq!(text_at(g, 2, 4), "13805775470");
        assert_eq!(text_at(g, 3, 2), "a&b 一");
        assert_eq!(text_at(g, 4, 1), "第一行\n第二行 x");
        assert!(
            !all_text(&x).contains("批注"),
            "annotations are not displayed"
        );
    }

    #[test]
    fn repeated_rows_and_columns() {
        let x = read_fixture("form.ods");
        let g = grid(&x, "登记表");
        // A content row repeated twice, a content cell repeated 3 columns.
        assert_eq!(text_at(g, 5, 0), "重复");
        assert_eq!(text_at(g, 6, 0), "重复");
        assert_eq!(text_at(g, 5, 3), "列");
        assert_eq!(text_at(g, 5, 5), "列");
        // Empty rows repeated a million times only move the row index.
        assert_eq!(text_at(g, 1_000_007, 0), "末行");
        assert_eq!(text_at(g, 1_000_007, 16_001), "远列");
        assert!(g.cells.len() < 40, "{}", g.cells.len());
    }

    #[test]
    fn sheets_and_meta() {
        let x = read_fixture("form.ods");
        let names: Vec<&str> = x.grids.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["登记表", "Sheet2"]);
        assert_eq!(x.meta.get("sheets"), Some(&2.into()));
        assert_eq!(x.meta.get("author"), Some(&"初始作者".into()));
        assert_eq!(x.meta.get("created"), Some(&"2007-05-14T08:30:00".into()));
        assert_eq!(x.meta.get("modified"), Some(&"2007-05-16T09:05:00".into()));
        assert_eq!(
            x.meta.get("application"),
            Some(&"LibreOffice/7.4.7.2$Linux_X86_64".into())
        );
    }

    #[test]
    fn repeated_content_beyond_limit_is_too_large() {
        let err = read(&fixture("repeated_content.ods"), &ReadLimits::default()).unwrap_err();
        assert!(
            matches!(&err, ReadError::TooLarge(m) if m.contains("20000")),
            "{err:?}"
        );
        let limits = ReadLimits {
            max_cells: 5,
            ..ReadLimits::default()
        };
        assert!(matches!(
            read(&fixture("form.ods"), &limits),
            Err(ReadError::TooLarge(_))
        ));
    }

    #[test]
    fn damaged_inputs() {
        let limits = ReadLimits::default();
        assert!(matches!(
            read(b"not a zip", &limits),
            Err(ReadError::Damaged(_))
        ));
        assert!(matches!(
            read(&fixture("paragraphs.docx"), &limits),
            Err(ReadError::Damaged(_))
        ));
    }

    #[test]
    fn values_without_display_text() {
        assert_eq!(display_value("13805775470"), "13805775470");
        assert_eq!(display_value("1985.1"), "1985.1");
        assert_eq!(display_value("5.0"), "5");
        assert_eq!(display_value("2007-05-14"), "2007-05-14");
    }

    #[test]
    fn mutations_never_panic() {
        let limits = ReadLimits::default();
        let bytes = fixture("form.ods");
        mutants(&bytes, 150, |b| {
            let _ = read(b, &limits);
        });
        let mut archive = super::super::ooxml::open_archive(&bytes, &limits).unwrap();
        let xml = read_part(&mut archive, "content.xml", &limits)
            .unwrap()
            .unwrap();
        mutants(&xml, 300, |xml| {
            let _ = read_content(xml, &mut CellBudget::new(&limits));
        });
    }
}
