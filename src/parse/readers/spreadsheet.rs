//! Excel workbooks (xlsx, xlsb, xls and WPS `.et`) to grids, through calamine.
//!
//! Owns the rendering of typed cell values into the text a person sees
//! (QQ numbers stored as floats, dates, the `1985.10`-typed-as-a-number
//! trap) and the merged regions. It does not decide what a value means; the
//! form extractor does. ODS is read by `readers::ods`, because calamine has
//! no merge API for it.
//!
//! xlsx is read with calamine's streaming cell reader under a cell cap,
//! after the zip directory was checked (`readers::ooxml`), because calamine
//! has no size limits of its own and its `worksheet_range` allocates the
//! whole declared rectangle (a 6 KB sheet with cells at A1 and XFD1048576
//! aborts the process). xls has no streaming API: it runs only inside the
//! sandboxed child process, whose address-space limit turns such an abort
//! into a per-attachment error.

use std::io::Cursor;

use calamine::{Data, DataRef, Dimensions, Reader, SheetType, Xls, Xlsb, Xlsx};

use crate::parse::grid::{Cell, Extracted, Grid, Meta, ReadError, ReadLimits, clean_text};

/// Reads an xlsx workbook.
pub fn read_xlsx(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    super::ooxml::check_zip_directory(bytes, limits)?;
    let mut wb = Xlsx::new(Cursor::new(bytes)).map_err(|e| map_error(&e.to_string()))?;
    let mut out = Extracted::default();
    let names = wb.sheet_names();
    let mut budget = limits.max_cells;
    for name in &worksheets(&wb) {
        let mut grid = Grid::new(name.clone());
        {
            let mut reader = wb
                .worksheet_cells_reader(name)
                .map_err(|e| map_error(&e.to_string()))?;
            fill_grid(&mut grid, &mut budget, limits, || {
                reader.next_cell().map_err(|e| e.to_string())
            })?;
        }
        let merges = wb.merge_cells_by_sheet_name(name).unwrap_or_default();
        apply_merges(&mut grid, &merges);
        out.grids.push(grid);
    }
    if let Ok(props) = wb.workbook_properties() {
        fill_meta(&mut out.meta, props);
    }
    out.meta.insert("sheets".into(), names.len().into());
    Ok(out)
}

/// Reads an xlsb workbook (values only: calamine has no merge API for xlsb).
pub fn read_xlsb(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    super::ooxml::check_zip_directory(bytes, limits)?;
    let mut wb = Xlsb::new(Cursor::new(bytes)).map_err(|e| map_error(&e.to_string()))?;
    let mut out = Extracted::default();
    let names = wb.sheet_names();
    let mut budget = limits.max_cells;
    for name in &worksheets(&wb) {
        let mut grid = Grid::new(name.clone());
        let mut reader = wb
            .worksheet_cells_reader(name)
            .map_err(|e| map_error(&e.to_string()))?;
        fill_grid(&mut grid, &mut budget, limits, || {
            reader.next_cell().map_err(|e| e.to_string())
        })?;
        out.grids.push(grid);
    }
    out.meta.insert("sheets".into(), names.len().into());
    Ok(out)
}

/// Reads a BIFF8 workbook (`.xls`, WPS `.et`). Run only in the sandbox.
pub fn read_xls(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    let mut wb = Xls::new(Cursor::new(bytes)).map_err(|e| map_error(&e.to_string()))?;
    let mut out = Extracted::default();
    let names = wb.sheet_names();
    let mut budget = limits.max_cells;
    for name in &names {
        // Chart sheets and macro sheets have no cells; skip what fails.
        let Ok(range) = wb.worksheet_range(name) else {
            continue;
        };
        let (r0, c0) = range.start().unwrap_or((0, 0));
        let mut grid = Grid::new(name.clone());
        for (r, c, value) in range.used_cells() {
            if let Some(text) = render(value) {
                if budget == 0 {
                    return Err(too_many_cells(limits));
                }
                budget -= 1;
                let row = r0.saturating_add(u32::try_from(r).unwrap_or(u32::MAX));
                let col = c0.saturating_add(u32::try_from(c).unwrap_or(u32::MAX));
                grid.push(Cell::new(row, col, text));
            }
        }
        let merges = wb.merge_cells_by_sheet_name(name).unwrap_or_default();
        apply_merges(&mut grid, &merges);
        out.grids.push(grid);
    }
    if let Ok(props) = wb.workbook_properties() {
        fill_meta(&mut out.meta, props);
    }
    out.meta.insert("sheets".into(), names.len().into());
    Ok(out)
}

/// The workbook's sheets that hold cells, in order: a chart sheet (a chart
/// on a tab of its own, beside the form) or a macro or dialog sheet has
/// none, and asking for its cells fails the whole workbook.
fn worksheets<RS: std::io::Read + std::io::Seek, R: Reader<RS>>(wb: &R) -> Vec<String> {
    wb.sheets_metadata()
        .iter()
        .filter(|s| s.typ == SheetType::WorkSheet)
        .map(|s| s.name.clone())
        .collect()
}

/// Drains a streaming cell reader (xlsx and xlsb have one each, with no
/// common trait) into `grid`, under the workbook's cell budget.
fn fill_grid<'a>(
    grid: &mut Grid,
    budget: &mut usize,
    limits: &ReadLimits,
    mut next: impl FnMut() -> Result<Option<calamine::Cell<DataRef<'a>>>, String>,
) -> Result<(), ReadError> {
    while let Some(cell) = next().map_err(|e| map_error(&e))? {
        let (row, col) = cell.get_position();
        if let Some(text) = render_ref(cell.get_value()) {
            if *budget == 0 {
                return Err(too_many_cells(limits));
            }
            *budget -= 1;
            grid.push(Cell::new(row, col, text));
        }
    }
    Ok(())
}

fn too_many_cells(limits: &ReadLimits) -> ReadError {
    ReadError::TooLarge(format!("表格单元格超过上限 {} 个", limits.max_cells))
}

fn map_error(text: &str) -> ReadError {
    let lower = text.to_ascii_lowercase();
    if lower.contains("password") || lower.contains("encrypt") {
        ReadError::Encrypted
    } else {
        ReadError::Damaged(format!("表格文件无法读取（{text}）"))
    }
}

fn fill_meta(meta: &mut Meta, props: calamine::WorkbookProperties) {
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
        {
            meta.insert(key.into(), v.into());
        }
    };
    put("author", props.creator);
    put("created", props.created);
    put("modified", props.modified);
    put("application", props.application);
}

/// Gives each merged region's top-left cell its spans. Cells hidden under a
/// merge (calamine may report them when a file carries stale values there)
/// are dropped, as a person never sees them.
fn apply_merges(grid: &mut Grid, merges: &[Dimensions]) {
    for m in merges {
        let (r0, c0) = m.start;
        let (r1, c1) = m.end;
        if r1 < r0 || c1 < c0 {
            continue;
        }
        grid.cells.retain(|c| {
            let inside = (r0..=r1).contains(&c.row) && (c0..=c1).contains(&c.col);
            !inside || (c.row == r0 && c.col == c0)
        });
        if let Some(top_left) = grid.cells.iter_mut().find(|c| c.row == r0 && c.col == c0) {
            top_left.rowspan = r1 - r0 + 1;
            top_left.colspan = c1 - c0 + 1;
        } else {
            // An empty merged region still tells where a value would stand;
            // keeping it out is right for the extractor (blank = no value).
        }
    }
}

/// Renders an owned calamine value as displayed text.
fn render(value: &Data) -> Option<String> {
    let text = match value {
        Data::Int(i) => i.to_string(),
        Data::Float(f) => render_float(*f),
        Data::String(s) => clean_text(s),
        Data::Bool(b) => if *b { "是" } else { "否" }.to_string(),
        Data::DateTime(d) => render_datetime(d)?,
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(_) | Data::Empty => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}

/// Renders a borrowed calamine value (streaming readers) as displayed text.
fn render_ref(value: &DataRef<'_>) -> Option<String> {
    let owned = match value {
        DataRef::Int(i) => Data::Int(*i),
        DataRef::Float(f) => Data::Float(*f),
        DataRef::String(s) => Data::String(s.clone()),
        DataRef::SharedString(s) => Data::String((*s).to_string()),
        DataRef::Bool(b) => Data::Bool(*b),
        DataRef::DateTime(d) => Data::DateTime(*d),
        DataRef::DateTimeIso(s) => Data::DateTimeIso(s.clone()),
        DataRef::DurationIso(s) => Data::DurationIso(s.clone()),
        DataRef::Error(_) | DataRef::Empty => return None,
    };
    render(&owned)
}

fn render_datetime(d: &calamine::ExcelDateTime) -> Option<String> {
    if d.is_duration() {
        return Some(render_float(d.as_f64()));
    }
    let dt = d.as_datetime()?;
    Some(dt.date().format("%Y-%m-%d").to_string())
}

/// Numbers as a person typed them: integers without `.0` (QQ and phone
/// numbers arrive as floats), and a year-month typed as `1985.10` — which a
/// spreadsheet stores as the number 1985.1 — rendered back as `1985.10`:
/// `1985.01` would have been displayed as such, so a one-digit `.1` after a
/// plausible birth year can only have been October.
fn render_float(f: f64) -> String {
    if !f.is_finite() {
        return String::new();
    }
    if f.fract() == 0.0 && f.abs() < 1e16 {
        #[expect(clippy::cast_possible_truncation, reason = "integral and below 1e16")]
        return (f as i64).to_string();
    }
    let shown = format!("{f}");
    if let Some((year, frac)) = shown.split_once('.')
        && frac == "1"
        && year
            .parse::<u32>()
            .is_ok_and(|y| (1900..=2100).contains(&y))
    {
        return format!("{year}.10");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_as_typed() {
        assert_eq!(render_float(840_465_842.0), "840465842");
        assert_eq!(render_float(13_857_712_669.0), "13857712669");
        assert_eq!(render_float(1985.1), "1985.10");
        assert_eq!(render_float(1985.03), "1985.03");
        assert_eq!(render_float(0.5), "0.5");
    }

    #[test]
    fn a_chart_sheet_beside_the_form_is_skipped() {
        use rust_xlsxwriter::{Chart, ChartType, Workbook};
        let mut book = Workbook::new();
        let sheet = book.add_worksheet().set_name("登记表").unwrap();
        sheet.write(0, 0, "单位").unwrap();
        sheet.write(0, 1, "永嘉县民政局").unwrap();
        sheet.write(1, 0, "人数").unwrap();
        sheet.write(1, 1, 2).unwrap();
        let mut chart = Chart::new(ChartType::Column);
        chart.add_series().set_values("'登记表'!$B$2:$B$2");
        // The chart sheet comes first, as a unit's "图表1" tab may.
        let charts = book.add_chartsheet();
        charts.insert_chart(0, 0, &chart).unwrap();
        let bytes = book.save_to_buffer().unwrap();
        let out = read_xlsx(&bytes, &ReadLimits::default()).expect("the worksheet is read");
        assert_eq!(out.grids.len(), 1);
        assert_eq!(out.grids[0].name, "登记表");
        assert!(out.grids[0].cells.iter().any(|c| c.text == "永嘉县民政局"));
    }

    #[test]
    fn merges_give_spans_and_hide_covered_cells() {
        let mut g = Grid::new("s");
        g.push(Cell::new(0, 0, "联系方式"));
        g.push(Cell::new(1, 0, "stale"));
        g.push(Cell::new(0, 1, "办电"));
        apply_merges(
            &mut g,
            &[Dimensions {
                start: (0, 0),
                end: (2, 0),
            }],
        );
        assert_eq!(g.cells.len(), 2);
        assert_eq!(g.cells[0].rowspan, 3);
    }
}
