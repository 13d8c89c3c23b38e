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
//! aborts the process). xls has no streaming API, and calamine parses every
//! sheet when it opens the file, reserving room for the rectangle each
//! sheet's DIMENSIONS record declares and building each sheet as a dense
//! range: the workbook stream is bounded first (`bound_biff`), so a sheet
//! formatted down to row 65536 with four cells in it costs four cells. xls
//! still runs only inside the sandboxed child process, whose address-space
//! limit stays the last word.
//!
//! Past `limits.max_cells` a workbook is read up to the cap and marked
//! `meta.truncated`: the form is on the first sheet, and a big data sheet
//! beside it does not make the file unreadable. A panic inside calamine
//! makes the file damaged here, instead of killing the reader worker.

use std::io::{Cursor, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use calamine::{Data, DataRef, Dimensions, Reader, SheetType, Xls, Xlsb, Xlsx};

use crate::parse::grid::{Cell, Extracted, Grid, Meta, ReadError, ReadLimits, clean_text};

/// Reads an xlsx workbook.
pub fn read_xlsx(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    super::ooxml::check_zip_directory(bytes, limits)?;
    caught(|| match Xlsx::new(Cursor::new(bytes)) {
        Ok(wb) => read_xlsx_book(wb, limits),
        Err(e) => {
            let text = e.to_string();
            // calamine knows worksheets, chart and dialog sheets, and refuses
            // the whole workbook over an Excel 4 macro sheet beside them.
            let retyped = text
                .contains("sheet:type")
                .then(|| without_macro_sheets(bytes, limits))
                .flatten()
                .ok_or_else(|| map_error(&text))?;
            let wb = Xlsx::new(Cursor::new(&retyped[..])).map_err(|e| map_error(&e.to_string()))?;
            read_xlsx_book(wb, limits)
        }
    })
}

fn read_xlsx_book<RS: std::io::Read + std::io::Seek>(
    mut wb: Xlsx<RS>,
    limits: &ReadLimits,
) -> Result<Extracted, ReadError> {
    let mut out = Extracted::default();
    let names = wb.sheet_names();
    let mut budget = Budget::new(limits);
    for name in &worksheets(&wb) {
        if budget.truncated {
            break;
        }
        let mut grid = Grid::new(name.clone());
        {
            let mut reader = wb
                .worksheet_cells_reader(name)
                .map_err(|e| map_error(&e.to_string()))?;
            fill_grid(&mut grid, &mut budget, || {
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
    budget.mark(&mut out.meta);
    Ok(out)
}

/// Reads an xlsb workbook (values only: calamine has no merge API for xlsb).
pub fn read_xlsb(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    super::ooxml::check_zip_directory(bytes, limits)?;
    caught(|| {
        let mut wb = Xlsb::new(Cursor::new(bytes)).map_err(|e| map_error(&e.to_string()))?;
        let mut out = Extracted::default();
        let names = wb.sheet_names();
        let mut budget = Budget::new(limits);
        for name in &worksheets(&wb) {
            if budget.truncated {
                break;
            }
            let mut grid = Grid::new(name.clone());
            let mut reader = wb
                .worksheet_cells_reader(name)
                .map_err(|e| map_error(&e.to_string()))?;
            fill_grid(&mut grid, &mut budget, || {
                reader.next_cell().map_err(|e| e.to_string())
            })?;
            out.grids.push(grid);
        }
        out.meta.insert("sheets".into(), names.len().into());
        budget.mark(&mut out.meta);
        Ok(out)
    })
}

/// Reads a BIFF8 workbook (`.xls`, WPS `.et`). Run only in the sandbox.
pub fn read_xls(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    if let Some(version) = crate::parse::sniff::bare_biff_version(bytes) {
        return Err(ReadError::Unsupported(format!(
            "Excel 4.0 或更早格式的工作簿（BIFF{version}），请另存为 .xlsx 或 Excel 97-2003 格式"
        )));
    }
    let bounded = bound_biff(bytes, limits)?;
    let book = bounded.bytes.as_deref().unwrap_or(bytes);
    caught(|| {
        let mut wb = Xls::new(Cursor::new(book)).map_err(|e| map_error(&e.to_string()))?;
        let mut out = Extracted::default();
        let names = wb.sheet_names();
        let mut budget = Budget::new(limits);
        for (index, name) in names.iter().enumerate() {
            if budget.truncated {
                break;
            }
            let remap = bounded.remaps.get(index).and_then(Option::as_ref);
            // Chart sheets and macro sheets have no cells; skip what fails.
            let Ok(range) = wb.worksheet_range(name) else {
                continue;
            };
            let (r0, c0) = range.start().unwrap_or((0, 0));
            let mut grid = Grid::new(name.clone());
            for (r, c, value) in range.used_cells() {
                if let Some(text) = render(value) {
                    if !budget.take() {
                        break;
                    }
                    let row = r0.saturating_add(u32::try_from(r).unwrap_or(u32::MAX));
                    let col = c0.saturating_add(u32::try_from(c).unwrap_or(u32::MAX));
                    let (row, col) = Remap::place(remap, row, col);
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
        budget.truncated |= bounded.truncated;
        budget.mark(&mut out.meta);
        Ok(out)
    })
}

/// Runs a calamine read; a panic in it (input calamine does not check) is a
/// damaged file, said with calamine's own words like its errors.
fn caught(read: impl FnOnce() -> Result<Extracted, ReadError>) -> Result<Extracted, ReadError> {
    catch_unwind(AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let why: String = why.chars().take(200).collect();
        Err(ReadError::Damaged(format!("表格文件无法读取（{why}）")))
    })
}

/// The workbook's cells left to read under `limits.max_cells`, and whether
/// some were left unread.
struct Budget {
    left: usize,
    truncated: bool,
}

impl Budget {
    fn new(limits: &ReadLimits) -> Self {
        Self {
            left: limits.max_cells,
            truncated: false,
        }
    }

    /// Takes one cell; false (and truncated) when none is left.
    fn take(&mut self) -> bool {
        if self.left == 0 {
            self.truncated = true;
            return false;
        }
        self.left -= 1;
        true
    }

    fn mark(&self, meta: &mut Meta) {
        if self.truncated {
            meta.insert("truncated".into(), true.into());
        }
    }
}

/// A copy of an xlsx whose workbook relationships call Excel 4 macro sheets
/// dialog sheets, which calamine lists and `worksheets` leaves out; None when
/// there is none, or the package cannot be copied.
fn without_macro_sheets(bytes: &[u8], limits: &ReadLimits) -> Option<Vec<u8>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(bytes.len())));
    let mut changed = false;
    for i in 0..zip.len() {
        let is_rels = zip
            .name_for_index(i)?
            .ok()?
            .to_ascii_lowercase()
            .ends_with("workbook.xml.rels");
        if !is_rels {
            out.raw_copy_file(zip.by_index_raw(i).ok()?).ok()?;
            continue;
        }
        let mut entry = zip.by_index(i).ok()?;
        let name = entry.name().ok()?.to_string();
        let mut text = String::new();
        entry
            .by_ref()
            .take(limits.max_part_bytes)
            .read_to_string(&mut text)
            .ok()?;
        drop(entry);
        let mut retyped = text.clone();
        for kind in ["xlMacrosheet", "xlIntlMacrosheet"] {
            for quote in ['"', '\''] {
                retyped =
                    retyped.replace(&format!("/{kind}{quote}"), &format!("/dialogsheet{quote}"));
            }
        }
        changed |= retyped != text;
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        out.start_file(name, stored).ok()?;
        out.write_all(retyped.as_bytes()).ok()?;
    }
    if !changed {
        return None;
    }
    out.finish().ok().map(Cursor::into_inner)
}

/// A BIFF workbook as calamine may be given it: `bytes` is a rebuilt
/// compound file when the workbook stream had to be bounded (None: read the
/// original), `truncated` when cells were left out doing so.
struct BoundedBiff {
    bytes: Option<Vec<u8>>,
    truncated: bool,
    remaps: Vec<Option<Remap>>,
}

/// BIFF record types (MS-XLS 2.3).
mod biff {
    pub const BOF: u16 = 0x0809;
    pub const EOF: u16 = 0x000A;
    pub const BOUNDSHEET: u16 = 0x0085;
    pub const FILEPASS: u16 = 0x002F;
    pub const DIMENSIONS: u16 = 0x0200;
    /// calamine ignores it: a cell record left out is retyped as one.
    pub const BLANK: u16 = 0x0201;
    pub const NUMBER: u16 = 0x0203;
    pub const LABEL: u16 = 0x0204;
    pub const BOOLERR: u16 = 0x0205;
    pub const FORMULA: u16 = 0x0006;
    /// A formula's string value, placed by calamine at the last formula.
    pub const STRING: u16 = 0x0207;
    pub const RK: u16 = 0x027E;
    pub const RSTRING: u16 = 0x00D6;
    pub const LABELSST: u16 = 0x00FD;
    pub const MULRK: u16 = 0x00BD;
}

/// A declared sheet rectangle up to this many cells is left as it is.
const TRUSTED_DIMENSIONS: u64 = 1 << 16;
/// The rectangles (bounding boxes of the cells kept) of all sheets of a
/// workbook together: calamine holds each sheet as a dense range of them,
/// 32 bytes a cell, and `worksheet_range` copies it.
const MAX_SHEET_AREA: u64 = 1 << 20;

/// Bounds what calamine allocates for a BIFF workbook, which it parses
/// whole when it opens the file. A DIMENSIONS record declaring more than a
/// small rectangle (whole-column formatting declares all 65536 rows) is
/// zeroed, as calamine only reserves room from it. A sheet whose cells
/// spread over more than that has them moved together (`Remap`), and
/// `read_xls` puts them back where they stand. Cell records past the cell
/// budget, or that would take the sheets past `MAX_SHEET_AREA`, are
/// retyped as BLANK, which calamine skips (`truncated`). A FILEPASS record
/// in the workbook globals is an encrypted or XOR-obfuscated workbook,
/// whatever calamine would make of the scrambled records after it.
///
/// A file the `cfb` crate cannot open is handed to calamine unchanged (its
/// own reader may still manage it, and the sandbox bounds it).
fn bound_biff(bytes: &[u8], limits: &ReadLimits) -> Result<BoundedBiff, ReadError> {
    let unchanged = || {
        Ok(BoundedBiff {
            bytes: None,
            truncated: false,
            remaps: Vec::new(),
        })
    };
    let Ok(mut compound) = crate::parse::compound::open(bytes) else {
        return unchanged();
    };
    let Some(stream_name) = ["Workbook", "Book"]
        .into_iter()
        .find(|name| compound.is_stream(name))
    else {
        return unchanged();
    };
    let mut stream = Vec::new();
    let read = compound
        .open_stream(stream_name)
        .and_then(|mut s| s.read_to_end(&mut stream));
    if read.is_err() {
        return unchanged();
    }
    let outcome = bound_workbook_stream(&mut stream, limits)?;
    if !outcome.changed {
        return unchanged();
    }
    let rebuilt = rebuild_compound(&mut compound, stream_name, &stream);
    let Some(rebuilt) = rebuilt else {
        return unchanged();
    };
    Ok(BoundedBiff {
        bytes: Some(rebuilt),
        truncated: outcome.truncated,
        remaps: outcome.remaps,
    })
}

/// What bounding did to a workbook stream, and for each sheet (in the order
/// of its BoundSheet record, calamine's order) the coordinates its cells
/// were moved from, if they were.
#[derive(Default)]
struct StreamBounds {
    changed: bool,
    truncated: bool,
    remaps: Vec<Option<Remap>>,
}

/// A sheet whose cells were moved together: the used rows and columns, in
/// order; the cell calamine reports at (r, c) stands at (rows[r], cols[c]).
/// Spread-out cells (a form in A1, a note in IV65536) would otherwise make
/// calamine allocate the whole rectangle between them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remap {
    rows: Vec<u32>,
    cols: Vec<u32>,
}

impl Remap {
    fn place(remap: Option<&Self>, row: u32, col: u32) -> (u32, u32) {
        match remap {
            Some(m) => (
                m.rows.get(row as usize).copied().unwrap_or(row),
                m.cols.get(col as usize).copied().unwrap_or(col),
            ),
            None => (row, col),
        }
    }
}

/// One cell record of a sheet: where it starts, its type, and the row and
/// columns it fills (a MULRK fills `count` columns from `first`).
struct CellRecord {
    at: usize,
    typ: u16,
    len: usize,
    row: u32,
    first: u32,
    count: u32,
}

/// The records from `from` on, as (start, type, data length), as far as
/// they fit in the stream.
fn records(stream: &[u8], from: usize) -> impl Iterator<Item = (usize, u16, usize)> + '_ {
    let mut pos = from;
    std::iter::from_fn(move || {
        let header = stream.get(pos..pos.checked_add(4)?)?;
        let typ = u16::from_le_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let at = pos;
        if at + 4 + len > stream.len() {
            return None;
        }
        pos = at + 4 + len;
        Some((at, typ, len))
    })
}

fn u16_in(stream: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([stream[at], stream[at + 1]]))
}

fn put_u16(stream: &mut [u8], at: usize, value: u32) {
    let value = u16::try_from(value).unwrap_or(u16::MAX);
    stream[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

/// Bounds a workbook stream in place (see `bound_biff`), reading it the way
/// calamine does: the globals up to their EOF, then each sheet from the
/// position its BoundSheet record gives, skipping nested substreams.
fn bound_workbook_stream(
    stream: &mut [u8],
    limits: &ReadLimits,
) -> Result<StreamBounds, ReadError> {
    let mut sheets = Vec::new();
    for (at, typ, len) in records(stream, 0) {
        match typ {
            biff::FILEPASS => return Err(ReadError::Encrypted),
            biff::BOUNDSHEET => sheets.push(
                (len >= 4)
                    .then(|| {
                        let d = &stream[at + 4..at + 8];
                        usize::try_from(u32::from_le_bytes([d[0], d[1], d[2], d[3]])).ok()
                    })
                    .flatten(),
            ),
            biff::EOF => break,
            _ => {}
        }
    }
    let mut out = StreamBounds::default();
    let mut cells_left = limits.max_cells;
    let mut area_spent = 0u64;
    let mut done: Vec<(usize, Option<Remap>)> = Vec::new();
    for pos in sheets {
        let Some(pos) = pos else {
            out.remaps.push(None);
            continue;
        };
        // Two BoundSheet records may point at one substream: bound it once.
        if let Some((_, remap)) = done.iter().find(|(p, _)| *p == pos) {
            out.remaps.push(remap.clone());
            continue;
        }
        let remap = bound_sheet(stream, pos, &mut cells_left, &mut area_spent, &mut out);
        done.push((pos, remap.clone()));
        out.remaps.push(remap);
    }
    Ok(out)
}

/// Bounds one sheet's substream; returns how its cells were moved.
fn bound_sheet(
    stream: &mut [u8],
    pos: usize,
    cells_left: &mut usize,
    area_spent: &mut u64,
    out: &mut StreamBounds,
) -> Option<Remap> {
    let mut cells = Vec::new();
    let mut dimensions = Vec::new();
    let mut strings = Vec::new();
    let mut seen_bof = false;
    let mut nested = 0usize;
    for (at, typ, len) in records(stream, pos) {
        if nested > 0 {
            match typ {
                biff::BOF => nested += 1,
                biff::EOF => nested -= 1,
                _ => {}
            }
            continue;
        }
        match typ {
            biff::BOF if seen_bof => nested += 1,
            biff::BOF => seen_bof = true,
            biff::EOF => break,
            biff::DIMENSIONS => dimensions.push((at, len)),
            biff::STRING => strings.push(at),
            biff::NUMBER
            | biff::LABEL
            | biff::BOOLERR
            | biff::FORMULA
            | biff::RK
            | biff::RSTRING
            | biff::LABELSST
            | biff::MULRK
                if len >= 6 =>
            {
                let count = if typ == biff::MULRK {
                    u32::try_from((len - 6) / 6).unwrap_or(u32::MAX)
                } else {
                    1
                };
                cells.push(CellRecord {
                    at,
                    typ,
                    len,
                    row: u16_in(stream, at + 4),
                    first: u16_in(stream, at + 6),
                    count,
                });
            }
            _ => {}
        }
    }

    // Which cells are kept: within the workbook's cell budget, and while
    // the rectangle of the kept ones, moved together, fits what is left of
    // the workbook's area.
    let mut rows = std::collections::BTreeSet::new();
    let mut cols = std::collections::BTreeSet::new();
    let mut keep = Vec::with_capacity(cells.len());
    for cell in &cells {
        let span = cell.first..cell.first.saturating_add(cell.count);
        let new_rows = rows.len() + usize::from(!rows.contains(&cell.row));
        let new_cols = cols.len() + span.clone().filter(|c| !cols.contains(c)).count();
        let area = (new_rows as u64).saturating_mul(new_cols as u64);
        let fits = cell.count as usize <= *cells_left && *area_spent + area <= MAX_SHEET_AREA;
        if fits {
            *cells_left -= cell.count as usize;
            rows.insert(cell.row);
            cols.extend(span);
        }
        keep.push(fits);
    }
    let span_of = |set: &std::collections::BTreeSet<u32>| match (set.first(), set.last()) {
        (Some(a), Some(b)) => u64::from(b - a) + 1,
        _ => 0,
    };
    let rectangle = span_of(&rows) * span_of(&cols);
    let moved = rectangle > TRUSTED_DIMENSIONS;
    *area_spent += if moved {
        (rows.len() as u64) * (cols.len() as u64)
    } else {
        rectangle
    };

    for (at, len) in dimensions {
        if moved || declared_area(&stream[at + 4..at + 4 + len]) > TRUSTED_DIMENSIONS {
            stream[at + 4..at + 4 + len].fill(0);
            out.changed = true;
        }
    }
    let rows: Vec<u32> = rows.into_iter().collect();
    let cols: Vec<u32> = cols.into_iter().collect();
    let rank = |set: &[u32], v: u32| u32::try_from(set.partition_point(|&x| x < v)).unwrap_or(0);
    for (cell, kept) in cells.iter().zip(&keep) {
        if !kept {
            put_u16(stream, cell.at, u32::from(biff::BLANK));
            // The formula's string value comes in the STRING record after
            // it; calamine would put it at the previous formula's place.
            if cell.typ == biff::FORMULA
                && let Some(&s) = strings.iter().find(|&&s| s > cell.at)
                && cells.iter().all(|c| c.at <= cell.at || c.at > s)
            {
                put_u16(stream, s, u32::from(biff::BLANK));
            }
            out.changed = true;
            out.truncated = true;
        } else if moved {
            let data = cell.at + 4;
            put_u16(stream, data, rank(&rows, cell.row));
            put_u16(stream, data + 2, rank(&cols, cell.first));
            if cell.typ == biff::MULRK {
                let last = cell.first + cell.count.max(1) - 1;
                put_u16(stream, data + cell.len - 2, rank(&cols, last));
            }
            out.changed = true;
        }
    }
    moved.then_some(Remap { rows, cols })
}

/// The number of cells a DIMENSIONS record declares, as calamine reads it
/// (BIFF8: 32-bit rows; BIFF5: 16-bit), or `u64::MAX` for a record calamine
/// would misread.
fn declared_area(data: &[u8]) -> u64 {
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([data[at], data[at + 1]]));
    let u32_at = |at: usize| {
        u64::from(u32::from_le_bytes([
            data[at],
            data[at + 1],
            data[at + 2],
            data[at + 3],
        ]))
    };
    let (first_row, end_row, first_col, end_col) = match data.len() {
        10 => (u16_at(0), u16_at(2), u16_at(4), u16_at(6)),
        14 | 16 => (u32_at(0), u32_at(4), u16_at(8), u16_at(10)),
        _ => return 0,
    };
    let first_col = if first_col > 0xFF || end_col < first_col {
        0
    } else {
        first_col
    };
    if end_row == 0 || end_col == 0 {
        return 1;
    }
    if end_row <= first_row || end_col <= first_col {
        return u64::MAX;
    }
    (end_row - first_row) * (end_col - first_col)
}

/// A compound file holding `stream` under `name` and the document property
/// streams of `original` (the author, dates), or None if it cannot be made.
fn rebuild_compound(
    original: &mut crate::parse::compound::Compound<'_>,
    name: &str,
    stream: &[u8],
) -> Option<Vec<u8>> {
    let mut out =
        cfb::CompoundFile::create_with_version(cfb::Version::V3, Cursor::new(Vec::new())).ok()?;
    out.create_stream(name).ok()?.write_all(stream).ok()?;
    for props in ["\u{5}SummaryInformation", "\u{5}DocumentSummaryInformation"] {
        let mut copied = Vec::new();
        let read = original
            .open_stream(props)
            .and_then(|mut s| s.read_to_end(&mut copied));
        if read.is_ok() {
            out.create_stream(props).ok()?.write_all(&copied).ok()?;
        }
    }
    out.flush().ok()?;
    Some(out.into_inner().into_inner())
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
/// common trait) into `grid`, until the workbook's cell budget runs out.
fn fill_grid<'a>(
    grid: &mut Grid,
    budget: &mut Budget,
    mut next: impl FnMut() -> Result<Option<calamine::Cell<DataRef<'a>>>, String>,
) -> Result<(), ReadError> {
    while let Some(cell) = next().map_err(|e| map_error(&e))? {
        let (row, col) = cell.get_position();
        if let Some(text) = render_ref(cell.get_value()) {
            if !budget.take() {
                break;
            }
            grid.push(Cell::new(row, col, text));
        }
    }
    Ok(())
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

    /// A BIFF8 workbook built record by record: the globals (with `extra`
    /// records after their BOF) and one substream per sheet.
    fn biff8(extra: &[Vec<u8>], sheets: &[(&str, Vec<Vec<u8>>)]) -> Vec<u8> {
        let record = |typ: u16, data: &[u8]| {
            let mut r = typ.to_le_bytes().to_vec();
            r.extend(u16::try_from(data.len()).unwrap().to_le_bytes());
            r.extend(data);
            r
        };
        let bof = |kind: u16| {
            let mut d = vec![0x00, 0x06];
            d.extend(kind.to_le_bytes());
            d.extend([0; 12]);
            record(biff::BOF, &d)
        };
        let boundsheet = |pos: u32, name: &str| {
            let mut d = pos.to_le_bytes().to_vec();
            d.extend([0, 0, u8::try_from(name.encode_utf16().count()).unwrap(), 1]);
            d.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
            record(biff::BOUNDSHEET, &d)
        };
        let mut globals_len = bof(5).len() + extra.iter().map(Vec::len).sum::<usize>() + 4;
        globals_len += sheets
            .iter()
            .map(|(n, _)| boundsheet(0, n).len())
            .sum::<usize>();
        let mut bodies = Vec::new();
        let mut positions = Vec::new();
        for (_, records) in sheets {
            positions.push(u32::try_from(globals_len + bodies.len()).unwrap());
            bodies.extend(bof(0x10));
            for r in records {
                bodies.extend(r);
            }
            bodies.extend(record(biff::EOF, &[]));
        }
        let mut stream = bof(5);
        for r in extra {
            stream.extend(r);
        }
        for ((name, _), pos) in sheets.iter().zip(&positions) {
            stream.extend(boundsheet(*pos, name));
        }
        stream.extend(record(biff::EOF, &[]));
        stream.extend(bodies);
        let mut cf =
            cfb::CompoundFile::create_with_version(cfb::Version::V3, Cursor::new(Vec::new()))
                .unwrap();
        cf.create_stream("Workbook")
            .unwrap()
            .write_all(&stream)
            .unwrap();
        cf.flush().unwrap();
        cf.into_inner().into_inner()
    }

    fn biff_record(typ: u16, data: &[u8]) -> Vec<u8> {
        let mut r = typ.to_le_bytes().to_vec();
        r.extend(u16::try_from(data.len()).unwrap().to_le_bytes());
        r.extend(data);
        r
    }

    /// A LABEL cell (BIFF8, UTF-16 text).
    fn label(row: u16, col: u16, text: &str) -> Vec<u8> {
        let mut d = row.to_le_bytes().to_vec();
        d.extend(col.to_le_bytes());
        d.extend([0, 0]);
        d.extend(
            u16::try_from(text.encode_utf16().count())
                .unwrap()
                .to_le_bytes(),
        );
        d.push(1);
        d.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        biff_record(biff::LABEL, &d)
    }

    fn number(row: u16, col: u16, value: f64) -> Vec<u8> {
        let mut d = row.to_le_bytes().to_vec();
        d.extend(col.to_le_bytes());
        d.extend([0, 0]);
        d.extend(value.to_le_bytes());
        biff_record(biff::NUMBER, &d)
    }

    /// A BIFF8 DIMENSIONS record: rows `0..rows`, columns `0..cols`.
    fn dimensions(rows: u32, cols: u16) -> Vec<u8> {
        let mut d = 0u32.to_le_bytes().to_vec();
        d.extend(rows.to_le_bytes());
        d.extend(0u16.to_le_bytes());
        d.extend(cols.to_le_bytes());
        d.extend([0, 0]);
        biff_record(biff::DIMENSIONS, &d)
    }

    fn texts(out: &Extracted) -> Vec<(String, u32, u32, String)> {
        out.grids
            .iter()
            .flat_map(|g| {
                g.cells
                    .iter()
                    .map(|c| (g.name.clone(), c.row, c.col, c.text.clone()))
            })
            .collect()
    }

    /// Regression (POI 51535.xls): a sheet whose DIMENSIONS declare all
    /// 65536×256 cells, with four cells in its corners, made calamine
    /// reserve and fill the whole rectangle; the reader ran out of memory.
    #[test]
    fn a_sheet_declared_to_its_last_row_costs_only_its_cells() {
        let book = biff8(
            &[],
            &[(
                "登记表",
                vec![
                    dimensions(65536, 256),
                    label(0, 0, "单位"),
                    label(0, 255, "右上"),
                    label(65535, 0, "左下"),
                    number(65535, 255, 13_857_712_669.0),
                ],
            )],
        );
        let out = read_xls(&book, &ReadLimits::default()).expect("read");
        let mut cells = texts(&out);
        cells.sort();
        assert_eq!(
            cells,
            [
                ("登记表".into(), 0, 0, "单位".into()),
                ("登记表".into(), 0, 255, "右上".into()),
                ("登记表".into(), 65535, 0, "左下".into()),
                ("登记表".into(), 65535, 255, "13857712669".into()),
            ]
        );
        assert_eq!(out.meta.get("truncated"), None);
        // What calamine is given holds a 2×2 sheet, not the rectangle.
        let bounded = bound_biff(&book, &ReadLimits::default()).unwrap();
        let mut wb = Xls::new(Cursor::new(bounded.bytes.expect("bounded"))).unwrap();
        assert_eq!(wb.worksheet_range("登记表").unwrap().get_size(), (2, 2));
    }

    #[test]
    fn an_ordinary_xls_is_given_to_calamine_unchanged() {
        let book = biff8(
            &[],
            &[(
                "Sheet1",
                vec![dimensions(2, 2), label(0, 0, "姓名"), label(0, 1, "胡峰平")],
            )],
        );
        assert!(
            bound_biff(&book, &ReadLimits::default())
                .unwrap()
                .bytes
                .is_none()
        );
        let out = read_xls(&book, &ReadLimits::default()).unwrap();
        assert_eq!(texts(&out).len(), 2);
    }

    /// Regression (POI 46904.xls, 65016.xlsx …): a workbook past the cell
    /// cap failed whole, though the form on its first sheet fits.
    #[test]
    fn an_xls_past_the_cell_cap_is_read_up_to_it() {
        let data: Vec<Vec<u8>> = (0..40).map(|i| number(i, 0, f64::from(i))).collect();
        let book = biff8(
            &[],
            &[
                (
                    "登记表",
                    vec![label(0, 0, "单位"), label(0, 1, "永嘉县民政局")],
                ),
                ("数据", data),
            ],
        );
        let limits = ReadLimits {
            max_cells: 10,
            ..ReadLimits::default()
        };
        let out = read_xls(&book, &limits).expect("read up to the cap");
        assert_eq!(out.meta.get("truncated"), Some(&true.into()));
        assert!(out.grids[0].cells.iter().any(|c| c.text == "永嘉县民政局"));
        assert_eq!(texts(&out).len(), 10);
    }

    #[test]
    fn an_xlsx_past_the_cell_cap_is_read_up_to_it() {
        use rust_xlsxwriter::Workbook;
        let mut book = Workbook::new();
        let form = book.add_worksheet().set_name("登记表").unwrap();
        form.write(0, 0, "单位").unwrap();
        form.write(0, 1, "永嘉县民政局").unwrap();
        let data = book.add_worksheet().set_name("数据").unwrap();
        for i in 0..40 {
            data.write(i, 0, i).unwrap();
        }
        let bytes = book.save_to_buffer().unwrap();
        let limits = ReadLimits {
            max_cells: 10,
            ..ReadLimits::default()
        };
        let out = read_xlsx(&bytes, &limits).expect("read up to the cap");
        assert_eq!(out.meta.get("truncated"), Some(&true.into()));
        assert!(out.grids[0].cells.iter().any(|c| c.text == "永嘉县民政局"));
        assert_eq!(texts(&out).len(), 10);
        // Within the cap nothing is said.
        let whole = read_xlsx(&bytes, &ReadLimits::default()).unwrap();
        assert_eq!(whole.meta.get("truncated"), None);
        assert_eq!(texts(&whole).len(), 42);
    }

    /// Regression (POI 64420.xlsm, xlmmacro.xlsm): an Excel 4 macro sheet
    /// made calamine refuse the whole workbook (`Unrecognized sheet:type`).
    #[test]
    fn an_excel_4_macro_sheet_does_not_hide_the_form() {
        use rust_xlsxwriter::Workbook;
        let mut book = Workbook::new();
        let form = book.add_worksheet().set_name("登记表").unwrap();
        form.write(0, 0, "单位").unwrap();
        form.write(0, 1, "永嘉县民政局").unwrap();
        book.add_worksheet().set_name("Macro1").unwrap();
        let plain = book.save_to_buffer().unwrap();
        // Make the second sheet a macro sheet, as Excel relates one.
        let mut zip = zip::ZipArchive::new(Cursor::new(&plain[..])).unwrap();
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut text = Vec::new();
            entry.read_to_end(&mut text).unwrap();
            if name == "xl/_rels/workbook.xml.rels" {
                let rels = String::from_utf8(text).unwrap();
                let (head, tail) = rels.split_once("worksheets/sheet2.xml").unwrap();
                let at = head.rfind("relationships/worksheet\"").unwrap();
                text = format!(
                    "{}{}{}worksheets/sheet2.xml{tail}",
                    &head[..at],
                    "http://schemas.microsoft.com/office/2006/relationships/xlMacrosheet\"",
                    &head[at + "relationships/worksheet\"".len()..],
                )
                .replace(
                    "http://schemas.openxmlformats.org/officeDocument/2006/http://",
                    "http://",
                )
                .into_bytes();
                assert!(String::from_utf8_lossy(&text).contains("xlMacrosheet"));
            }
            drop(entry);
            out.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            out.write_all(&text).unwrap();
        }
        let macro_book = out.finish().unwrap().into_inner();
        assert!(
            Xlsx::new(Cursor::new(&macro_book[..])).is_err(),
            "calamine refuses it"
        );
        let read = read_xlsx(&macro_book, &ReadLimits::default()).expect("worksheets read");
        assert_eq!(read.grids.len(), 1);
        assert!(read.grids[0].cells.iter().any(|c| c.text == "永嘉县民政局"));
    }

    /// Regression (POI xor-encryption-abc.xls): an XOR-obfuscated workbook
    /// scrambles the records after FILEPASS; calamine only knows RC4
    /// encryption and failed on the scrambled CODEPAGE (`Codepage D7CC not
    /// found`) instead of saying the file has a password.
    #[test]
    fn an_xor_obfuscated_xls_is_encrypted() {
        let filepass = biff_record(biff::FILEPASS, &[0, 0, 0x34, 0x12, 0x78, 0x56]);
        let codepage = biff_record(0x0042, &0xD7CCu16.to_le_bytes());
        let book = biff8(&[filepass, codepage], &[("Sheet1", vec![label(0, 0, "x")])]);
        assert_eq!(
            read_xls(&book, &ReadLimits::default()),
            Err(ReadError::Encrypted)
        );
    }

    /// Regression (POI Simple.xlsb): calamine panics (`no entry found for
    /// key`) on a sheet whose relationship id the package does not have;
    /// the worker died of it. Now the reader says the file is damaged.
    #[test]
    fn a_sheet_without_its_relationship_is_damaged_not_a_panic() {
        // xl/workbook.bin: one BrtBundleSh (type 0x9C) naming rId9, and no
        // relationships part at all.
        let mut bundle = vec![0x9C, 0x01, 28];
        bundle.extend(0u32.to_le_bytes());
        bundle.extend(1u32.to_le_bytes());
        bundle.extend(4u32.to_le_bytes());
        bundle.extend("rId9".encode_utf16().flat_map(u16::to_le_bytes));
        bundle.extend(2u32.to_le_bytes());
        bundle.extend("表一".encode_utf16().flat_map(u16::to_le_bytes));
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("xl/workbook.bin", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(&bundle).unwrap();
        let xlsb = zip.finish().unwrap().into_inner();
        let out = read_xlsb(&xlsb, &ReadLimits::default());
        assert!(matches!(out, Err(ReadError::Damaged(_))), "{out:?}");
    }

    /// Regression (POI testEXCEL_3.xls, testEXCEL_4.xls): Excel 3.0/4.0
    /// worksheets were an unrecognised file.
    #[test]
    fn an_excel_4_worksheet_asks_to_be_saved_again() {
        let biff4 = [0x09, 0x04, 6, 0, 0, 0, 0x10, 0, 0, 0, 0x0A, 0, 0, 0];
        let Err(ReadError::Unsupported(advice)) = read_xls(&biff4, &ReadLimits::default()) else {
            panic!("unsupported");
        };
        assert!(
            advice.contains("BIFF4") && advice.contains("另存为"),
            "{advice}"
        );
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
