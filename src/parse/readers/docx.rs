//! Reads a Word 2007+ `.docx` into grids: every top-level table (`table N`),
//! every nested table (`table N.M`, whose text also stays in its containing
//! cell), and the paragraphs outside tables (`text`), plus what
//! `docProps/core.xml` and `docProps/app.xml` say about the file.
//!
//! This is a walker over `word/document.xml` of our own rather than docx-rs:
//! docx-rs hides the spans (it gives no resolved `gridSpan`/`vMerge`
//! positions) and would be a second XML stack next to calamine's quick-xml,
//! while the walk itself is small. It does not read headers, footers,
//! comments, footnotes or embedded objects, does not detect encryption (an
//! encrypted `.docx` is a CFB container and never gets here) and does not
//! interpret the form: `crate::parse::form` does.

use super::ooxml::{
    CellBudget, Flow, OpenCell, TableStack, TextLines, XmlEvent, attr, attr_u32, open_archive,
    read_meta_part, read_part, walk_xml,
};
use crate::parse::grid::{Extracted, Grid, Meta, ReadError, ReadLimits, clean_text};

/// Where Word keeps the main document when `_rels/.rels` does not say.
const DEFAULT_DOCUMENT: &str = "word/document.xml";

/// Reads a `.docx` file.
pub fn read(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    let mut archive = open_archive(bytes, limits)?;
    let document = match read_part(&mut archive, "_rels/.rels", limits)? {
        Some(rels) => main_document_name(&rels),
        None => None,
    }
    .unwrap_or_else(|| DEFAULT_DOCUMENT.to_string());
    let xml = read_part(&mut archive, &document, limits)?
        .ok_or_else(|| ReadError::Damaged(format!("缺少正文部件 {document}")))?;

    let (grids, top_level) = read_document(&xml, &document, &mut CellBudget::new(limits))?;

    let mut meta = Meta::new();
    let core: &[(&[u8], &str)] = &[
        (b"creator", "author"),
        (b"created", "created"),
        (b"modified", "modified"),
    ];
    read_meta_part(&mut archive, "docProps/core.xml", limits, core, &mut meta)?;
    let app: &[(&[u8], &str)] = &[(b"Application", "application")];
    read_meta_part(&mut archive, "docProps/app.xml", limits, app, &mut meta)?;
    meta.insert("tables".into(), top_level.into());
    Ok(Extracted {
        grids,
        meta,
        scanned: false,
    })
}

/// Walks the main document part into grids; also returns the number of
/// top-level tables.
fn read_document(
    xml: &[u8],
    part: &str,
    budget: &mut CellBudget,
) -> Result<(Vec<Grid>, u32), ReadError> {
    let mut walk = Walk::new(budget);
    walk_xml(xml, part, |event| walk.on(event))?;
    let Walk {
        tables,
        mut text,
        para,
        ..
    } = walk;
    text.push(&para, budget)?;
    let top_level = tables.top_level();
    let mut grids = tables.finish(budget)?;
    grids.extend(text.into_grid());
    Ok((grids, top_level))
}

/// The target of the package's `officeDocument` relationship: some
/// generators name the main part `word/document2.xml` or similar.
fn main_document_name(rels: &[u8]) -> Option<String> {
    let mut found = None;
    let _ = walk_xml(rels, "_rels/.rels", |event| {
        if let XmlEvent::Open(b"Relationship", element) = event
            && found.is_none()
            && attr(element, b"Type").is_some_and(|t| t.ends_with("/officeDocument"))
        {
            found = attr(element, b"Target").map(|t| t.trim_start_matches('/').to_string());
        }
        Ok(Flow::Descend)
    });
    found.filter(|name| !name.is_empty())
}

/// Elements whose subtree never holds displayed text, or holds text that is
/// not the document's current content: the fallback copy of alternate content, tracked
/// deletions and moves, field instructions, formatting properties (whose
/// `w:tab` are tab stops, not tabs) and tracked property changes (whose
/// `gridSpan` is the old one).
fn is_skipped(name: &[u8]) -> bool {
    matches!(
        name,
        b"Fallback" | b"del" | b"moveFrom" | b"instrText" | b"delText" | b"pPr" | b"rPr" | b"tabs"
    ) || name.ends_with(b"PrChange")
        || name == b"tblGridChange"
}

/// Which string text is going to: a table cell (by its serial number) or
/// the current paragraph outside tables (by paragraph count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Cell(u64),
    Paragraph(u64),
    Nowhere,
}

/// An open content control (`w:sdt`): where its text started, and whether
/// Word marked its content as the placeholder ("单击此处输入文字。"), which is
/// the form's prompt and not a value.
#[derive(Debug)]
struct Control {
    sink: Sink,
    start: usize,
    placeholder: bool,
}

#[derive(Debug)]
struct Walk<'b> {
    tables: TableStack,
    text: TextLines,
    /// The paragraph being read outside any table.
    para: String,
    paragraphs: u64,
    /// Depth inside `w:t`; text elsewhere is markup whitespace.
    in_text: u32,
    /// Open content controls, see [`Control`].
    controls: Vec<Control>,
    /// Depth inside `w:sdtPr`, read only for `w:showingPlcHdr`.
    in_control_props: u32,
    budget: &'b mut CellBudget,
}

impl<'b> Walk<'b> {
    fn new(budget: &'b mut CellBudget) -> Self {
        Self {
            tables: TableStack::new("table", finish_cell),
            text: TextLines::new(),
            para: String::new(),
            paragraphs: 0,
            in_text: 0,
            controls: Vec::new(),
            in_control_props: 0,
            budget,
        }
    }

    fn sink_id(&self) -> Sink {
        if !self.tables.in_table() {
            return Sink::Paragraph(self.paragraphs);
        }
        self.tables.cell_serial().map_or(Sink::Nowhere, Sink::Cell)
    }

    fn sink(&mut self) -> Option<&mut String> {
        if self.tables.in_table() {
            self.tables.text_sink()
        } else {
            Some(&mut self.para)
        }
    }

    fn push(&mut self, s: &str) {
        // A control showing its placeholder holds the form's prompt, not a
        // value (its `w:sdtPr` comes before the content, so this is known).
        if self.controls.iter().any(|c| c.placeholder) {
            return;
        }
        if let Some(sink) = self.sink() {
            sink.push_str(s);
        }
    }

    fn on(&mut self, event: XmlEvent<'_, '_>) -> Result<Flow, ReadError> {
        match event {
            XmlEvent::Open(name, element) => {
                if is_skipped(name) {
                    return Ok(Flow::Skip);
                }
                match name {
                    b"tbl" => self.tables.open_table(self.budget)?,
                    b"tr" => self.tables.start_row(self.budget)?,
                    b"tc" => {
                        self.tables.start_cell(1, 1, false, self.budget)?;
                        let inside_control = !self.controls.is_empty();
                        if let Some(cell) = self.tables.cell_mut() {
                            cell.from_control = inside_control;
                        }
                    }
                    b"gridBefore" => self
                        .tables
                        .skip_columns(attr_u32(element, b"val").unwrap_or(0)),
                    b"gridSpan" => {
                        if let Some(cell) = self.tables.cell_mut() {
                            cell.colspan = attr_u32(element, b"val").unwrap_or(1).clamp(1, 1000);
                        }
                    }
                    b"vMerge" => {
                        // No value means "continue", like an explicit `continue`.
                        let restart = attr(element, b"val").is_some_and(|v| v == "restart");
                        if let Some(cell) = self.tables.cell_mut() {
                            cell.merge_up = !restart;
                        }
                    }
                    b"t" => self.in_text += 1,
                    b"tab" => self.push(" "),
                    b"br" | b"cr" => self.push("\n"),
                    b"noBreakHyphen" => self.push("-"),
                    b"sdt" => {
                        if let Some(cell) = self.tables.cell_mut() {
                            cell.from_control = true;
                        }
                        let sink = self.sink_id();
                        let start = self.sink().map_or(0, |s| s.len());
                        self.controls.push(Control {
                            sink,
                            start,
                            placeholder: false,
                        });
                    }
                    b"sdtPr" => self.in_control_props += 1,
                    b"showingPlcHdr" if self.in_control_props > 0 => {
                        if let Some(control) = self.controls.last_mut() {
                            control.placeholder = true;
                        }
                    }
                    _ => {}
                }
            }
            XmlEvent::Close(name) => match name {
                b"tbl" => self.tables.close_table(self.budget)?,
                b"tr" => self.tables.end_row(self.budget)?,
                b"tc" => self.tables.end_cell(self.budget)?,
                b"t" => self.in_text = self.in_text.saturating_sub(1),
                b"p" => {
                    if self.tables.in_table() {
                        self.push("\n");
                    } else {
                        self.text.push(&self.para, self.budget)?;
                        self.para.clear();
                        self.paragraphs += 1;
                    }
                }
                b"sdtPr" => self.in_control_props = self.in_control_props.saturating_sub(1),
                b"sdt" => {
                    if let Some(control) = self.controls.pop()
                        && control.sink == self.sink_id()
                        && let Some(text) = self.sink()
                    {
                        collapse_suffix(text, control.start);
                    }
                }
                _ => {}
            },
            XmlEvent::Text(text) => {
                if self.in_text > 0 && self.in_control_props == 0 {
                    self.push(text);
                }
            }
        }
        Ok(Flow::Descend)
    }
}

fn finish_cell(cell: &OpenCell) -> String {
    let text = clean_text(&cell.text);
    collapse_repeat(&text, cell.from_control).unwrap_or(text)
}

/// Collapses the text a content control added to `text` (from byte `start`)
/// when it is a repeat, see [`collapse_repeat`].
fn collapse_suffix(text: &mut String, start: usize) {
    if let Some(added) = text.get(start..)
        && let Some(unit) = collapse_repeat(added, true)
    {
        text.truncate(start);
        text.push_str(&unit);
    }
}

/// LibreOffice round trips of a Word file with content controls can write
/// a control's text k times over (`浙江绍兴浙江绍兴浙江绍兴`). A value that is
/// an exact k-fold repeat (k ≥ 2) of a unit of at least two characters is
/// returned as the unit (the shortest such unit). Units of digits only are
/// collapsed only when the text comes from a content control, because real
/// numbers repeat (`8888`, `649649`, QQ `12341234`) while a typed name or
/// place practically never does. Long texts are left alone.
fn collapse_repeat(text: &str, allow_digits: bool) -> Option<String> {
    let chars: Vec<char> = text.chars().take(4097).collect();
    let n = chars.len();
    if n > 4096 {
        return None;
    }
    let period = (2..=n / 2)
        .find(|&p| n.is_multiple_of(p) && chars.chunks(p).all(|chunk| chunk == &chars[..p]))?;
    let unit = &chars[..period];
    if !allow_digits && unit.iter().all(char::is_ascii_digit) {
        return None;
    }
    if unit.iter().all(|c| c.is_whitespace()) {
        return None;
    }
    Some(unit.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::super::ooxml::test_support::{all_text, cell, fixture, grid, mutants, text_at};
    use super::*;
    use crate::parse::grid::Cell;

    fn read_fixture(name: &str) -> Extracted {
        read(&fixture(name), &ReadLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn form_spans_and_merges() {
        let x = read_fixture("form.docx");
        let t = grid(&x, "table 1");
        assert_eq!(
            cell(t, 0, 1),
            &Cell {
                row: 0,
                col: 1,
                rowspan: 1,
                colspan: 2,
                text: "县民政局".into()
            }
        );
        assert_eq!(text_at(t, 0, 3), "地 址");
        assert_eq!(cell(t, 0, 4).colspan, 2);
        // vMerge restart + a continuation without val + one with val="continue".
        assert_eq!(
            cell(t, 2, 0),
            &Cell {
                row: 2,
                col: 0,
                rowspan: 3,
                colspan: 1,
                text: "联系方式".into()
            }
        );
        assert_eq!(text_at(t, 3, 1), "宅 电");
        assert_eq!(cell(t, 4, 3).colspan, 3);
        // gridBefore shifts the row.
        assert_eq!(text_at(t, 5, 1), "备注");
    }

    #[test]
    fn runs_are_joined_and_breaks_kept() {
        let x = read_fixture("form.docx");
        let t = grid(&x, "table 1");
        assert_eq!(text_at(t, 2, 4), "13857101234");
        assert_eq!(text_at(t, 2, 2), "0577-67286830");
        assert_eq!(text_at(t, 6, 0), "信息员\n个人简历");
        assert_eq!(
            text_at(t, 6, 1),
            "1999.09—2003.07 学习；\n2003.09—至今 工作。"
        );
        assert_eq!(text_at(t, 4, 2), "a&b <c> 一");
        // Digits are not collapsed outside content controls.
        assert_eq!(text_at(t, 3, 4), "649649");
    }

    #[test]
    fn content_controls_inline_and_cell_level() {
        let x = read_fixture("form.docx");
        let t = grid(&x, "table 1");
        // Inline w:sdt: content kept.
        assert_eq!(text_at(t, 1, 1), "何松");
        // Cell-level w:sdt wrapping the w:tc, text repeated 3x by a round trip.
        assert_eq!(text_at(t, 1, 3), "浙江绍兴");
        // A control still showing its placeholder is blank.
        assert!(!t.cells.iter().any(|c| c.row == 5 && c.col == 2), "{t:#?}");
        assert!(!all_text(&x).contains("单击此处"));
    }

    #[test]
    fn deleted_fallback_and_field_code_text_skipped() {
        let x = read_fixture("form.docx");
        let all = all_text(&x);
        for hidden in ["已删除", "FALLBACK", "HYPERLINK", "旧文字"] {
            assert!(!all.contains(hidden), "{hidden} in {all}");
        }
        assert_eq!(text_at(grid(&x, "table 1"), 4, 3), "新 x@y.cn");
    }

    #[test]
    fn nested_table_flattened_and_emitted() {
        let x = read_fixture("form.docx");
        let t = grid(&x, "table 1");
        assert_eq!(text_at(t, 7, 1), "外层\n内1\n内2\n内3");
        let inner = grid(&x, "table 1.1");
        assert_eq!(text_at(inner, 0, 0), "内1");
        assert_eq!(text_at(inner, 1, 1), "内3");
        let names: Vec<&str> = x.grids.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["table 1", "table 1.1", "table 2", "text"]);
    }

    #[test]
    fn paragraphs_outside_tables_and_meta() {
        let x = read_fixture("form.docx");
        let text = grid(&x, "text");
        assert_eq!(text_at(text, 0, 0), "分管政务信息领导及信息员登记表");
        assert_eq!(text_at(text, 1, 0), "填表说明：请如实填写");
        assert_eq!(text.cells.len(), 2);
        assert_eq!(x.meta.get("author"), Some(&"测试作者".into()));
        assert_eq!(x.meta.get("created"), Some(&"2007-05-14T08:30:00Z".into()));
        assert_eq!(x.meta.get("modified"), Some(&"2007-05-16T09:05:00Z".into()));
        assert_eq!(
            x.meta.get("application"),
            Some(&"Microsoft Office Word".into())
        );
        assert_eq!(x.meta.get("tables"), Some(&2.into()));
    }

    #[test]
    fn form_as_paragraphs() {
        let x = read_fixture("paragraphs.docx");
        assert_eq!(x.grids.len(), 1);
        let text = grid(&x, "text");
        assert_eq!(text_at(text, 1, 0), "单位：永嘉县审计局");
        assert_eq!(text_at(text, 2, 0), "信息员：高胜正 手机：13805776240");
        assert_eq!(text_at(text, 3, 0), "籍贯：浙江绍兴");
        // The placeholder paragraph is dropped, the next one is row 4.
        assert_eq!(text_at(text, 4, 0), "联系电话：67286830");
        assert_eq!(text.cells.len(), 5);
        assert_eq!(x.meta.get("tables"), Some(&0.into()));
        assert_eq!(x.meta.get("application"), None);
        assert_eq!(x.meta.get("author"), None);
    }

    #[test]
    fn entity_expansion_is_refused() {
        let result = read(&fixture("billion_laughs.docx"), &ReadLimits::default());
        assert!(matches!(result, Err(ReadError::Damaged(m)) if m.contains("实体")));
    }

    #[test]
    fn huge_parts_are_too_large() {
        let limits = ReadLimits::default();
        assert!(matches!(
            read(&fixture("zeros_60mb.docx"), &limits),
            Err(ReadError::TooLarge(_))
        ));
        assert!(matches!(
            read(&fixture("declared_3gb.docx"), &limits),
            Err(ReadError::TooLarge(_))
        ));
    }

    #[test]
    fn too_many_cells_is_too_large() {
        let limits = ReadLimits {
            max_cells: 10,
            ..ReadLimits::default()
        };
        let err = read(&fixture("form.docx"), &limits).unwrap_err();
        assert!(
            matches!(&err, ReadError::TooLarge(m) if m.contains("10")),
            "{err:?}"
        );
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut xml = String::from("<w:document><w:body>");
        xml.push_str(&"<w:tbl><w:tr><w:tc><w:p><w:r><w:t>x</w:t></w:r></w:p>".repeat(5000));
        xml.push_str(&"</w:tc></w:tr></w:tbl>".repeat(5000));
        xml.push_str("</w:body></w:document>");
        let (grids, top) = read_document(
            xml.as_bytes(),
            "t",
            &mut CellBudget::new(&ReadLimits::default()),
        )
        .unwrap();
        assert_eq!(top, 1);
        assert!(grids.len() <= 16, "{}", grids.len());
    }

    #[test]
    fn not_a_zip_and_bad_xml_are_damaged() {
        let limits = ReadLimits::default();
        assert!(matches!(
            read(b"PK\x03\x04garbage", &limits),
            Err(ReadError::Damaged(_))
        ));
        assert!(matches!(
            read(&fixture("bad_xml.docx"), &limits),
            Err(ReadError::Damaged(_))
        ));
        assert!(matches!(
            read(&fixture("form.ods"), &limits),
            Err(ReadError::Damaged(_))
        ));
    }

    #[test]
    fn repeat_collapse_rules() {
        assert_eq!(
            collapse_repeat("浙江绍兴浙江绍兴浙江绍兴", false).as_deref(),
            Some("浙江绍兴")
        );
        assert_eq!(collapse_repeat("哈哈", false), None);
        assert_eq!(collapse_repeat("649649", false), None);
        assert_eq!(collapse_repeat("649649", true).as_deref(), Some("649"));
        assert_eq!(collapse_repeat("浙江绍兴", true), None);
        assert_eq!(collapse_repeat("", true), None);
    }

    #[test]
    fn mutations_never_panic() {
        let limits = ReadLimits::default();
        for name in ["form.docx", "paragraphs.docx"] {
            mutants(&fixture(name), 150, |bytes| {
                let _ = read(bytes, &limits);
            });
        }
        // The zip's CRC rejects most flipped XML, so mutate the XML itself too.
        let bytes = fixture("form.docx");
        let mut archive = super::super::ooxml::open_archive(&bytes, &limits).unwrap();
        let xml = read_part(&mut archive, DEFAULT_DOCUMENT, &limits)
            .unwrap()
            .unwrap();
        mutants(&xml, 300, |xml| {
            let _ = read_document(xml, "t", &mut CellBudget::new(&limits));
        });
    }
}
