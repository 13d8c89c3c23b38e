//! What the zip-based office readers share: the zip-directory guard that runs
//! before any OOXML/ODF file is opened, bounded reading of one part, a small
//! event walker over quick-xml that decodes text and entity references
//! without ever resolving a DTD, reading `docProps`/`meta.xml` style
//! metadata, and the assembly of (possibly nested) tables and text lines into
//! [`Grid`]s that the docx and html readers both need.
//!
//! It does not know any document vocabulary: which elements are tables, cells
//! or paragraphs is decided by `docx.rs`, `ods.rs` and `html.rs`. It does not
//! sniff formats or detect encryption (an encrypted OOXML file is a CFB
//! container, not a zip; the caller recognises that before coming here).

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};
use zip::ZipArchive;
use zip::result::ZipError;

use crate::parse::grid::{Cell, Grid, Meta, ReadError, ReadLimits, clean_text};

/// An opened OOXML/ODF package.
pub(crate) type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

/// Checks a zip's central directory against `limits` before anything in it
/// is decompressed: the number of entries, each entry's declared
/// uncompressed size, and their sum. Declared sizes can lie, so
/// [`read_part`] enforces the per-part limit again on the bytes it reads.
pub fn check_zip_directory(bytes: &[u8], limits: &ReadLimits) -> Result<(), ReadError> {
    let archive = ZipArchive::new(Cursor::new(bytes)).map_err(zip_damaged)?;
    check_directory(&archive, limits)
}

fn check_directory(archive: &Archive<'_>, limits: &ReadLimits) -> Result<(), ReadError> {
    let entries = archive.len();
    if entries > limits.max_zip_entries {
        return Err(ReadError::TooLarge(format!(
            "压缩包内有 {entries} 个文件，超过上限 {} 个",
            limits.max_zip_entries
        )));
    }
    let mut total: u64 = 0;
    for index in 0..entries {
        let entry = archive.by_index_data(index).map_err(zip_damaged)?;
        let size = entry.size();
        if size > limits.max_part_bytes {
            let name = String::from_utf8_lossy(entry.name_raw());
            return Err(ReadError::TooLarge(format!(
                "压缩包内 {name} 解压后 {size} 字节，超过单个部件上限 {} 字节",
                limits.max_part_bytes
            )));
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_total_bytes {
        return Err(ReadError::TooLarge(format!(
            "压缩包解压后共 {total} 字节，超过总量上限 {} 字节",
            limits.max_total_bytes
        )));
    }
    Ok(())
}

/// Opens a package after [`check_zip_directory`]'s checks (done on the same
/// parsed directory, so the central directory is read once).
pub(crate) fn open_archive<'a>(
    bytes: &'a [u8],
    limits: &ReadLimits,
) -> Result<Archive<'a>, ReadError> {
    let archive = ZipArchive::new(Cursor::new(bytes)).map_err(zip_damaged)?;
    check_directory(&archive, limits)?;
    Ok(archive)
}

/// Reads one entry into memory, or `None` when the package has no such
/// entry. The name is matched exactly first, then ignoring ASCII case (OPC
/// part names are case-insensitive). Reading goes through
/// `take(max_part_bytes + 1)` so the limit holds on the bytes actually
/// inflated, whatever the directory declared.
pub fn read_part(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limits: &ReadLimits,
) -> Result<Option<Vec<u8>>, ReadError> {
    let index = match archive.index_for_name(name) {
        Some(index) => index,
        None => match archive
            .file_names()
            .position(|candidate| candidate.is_ok_and(|c| c.eq_ignore_ascii_case(name)))
        {
            // `file_names` and indices enumerate the same map in the same order.
            Some(index) => index,
            None => return Ok(None),
        },
    };
    let file = archive.by_index(index).map_err(zip_damaged)?;
    let limit = limits.max_part_bytes;
    // The declared size only sizes the first allocation; never trust it further.
    let hint = file.size().min(limit).min(1 << 20);
    let mut buf = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| ReadError::Damaged(format!("压缩包内 {name} 无法解压：{e}")))?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge(format!(
            "压缩包内 {name} 解压后超过单个部件上限 {limit} 字节"
        )));
    }
    Ok(Some(buf))
}

fn zip_damaged(e: ZipError) -> ReadError {
    match e {
        ZipError::UnsupportedArchive(msg) if msg == ZipError::PASSWORD_REQUIRED => {
            ReadError::Encrypted
        }
        ZipError::InvalidPassword => ReadError::Encrypted,
        other => ReadError::Damaged(format!("压缩包无法读取：{other}")),
    }
}

// ---------------------------------------------------------------------------
// XML walking
// ---------------------------------------------------------------------------

/// One step of [`walk_xml`]. Names are local names (prefix dropped): the
/// documents we read use fixed, well-known prefixes, and matching local
/// names also copes with producers that pick other prefixes.
#[derive(Debug)]
pub(crate) enum XmlEvent<'e, 'x> {
    Open(&'e [u8], &'e BytesStart<'x>),
    Close(&'e [u8]),
    /// Character data, with entity and character references already decoded.
    Text(&'e str),
}

/// What the callback of [`walk_xml`] wants after an `Open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Descend,
    /// Skip the element's whole subtree; no `Close` is reported for it.
    Skip,
}

/// Walks an XML part, reporting opens, closes and decoded text. Empty
/// elements are reported as an open followed by a close.
///
/// Entity handling is done here rather than by quick-xml's unescaping
/// because quick-xml 0.41 hands references over as separate events and
/// leaves their meaning to us: the five predefined entities and numeric
/// character references are decoded, every other reference is dropped, and
/// a DOCTYPE is ignored — so an entity-expansion bomb expands to nothing.
/// A DOCTYPE that declares entities is refused outright: Office and ODF
/// writers never produce one (Word itself rejects a DTD), so the file was
/// crafted, and staff are told so rather than shown a quietly emptied form.
pub(crate) fn walk_xml(
    xml: &[u8],
    part: &str,
    mut f: impl FnMut(XmlEvent<'_, '_>) -> Result<Flow, ReadError>,
) -> Result<(), ReadError> {
    let mut reader = Reader::from_reader(xml);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.check_end_names = true;
    let damaged = |e: &dyn std::fmt::Display| ReadError::Damaged(format!("{part} 解析失败：{e}"));
    let mut skipping = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| damaged(&e))?;
        match event {
            Event::Start(start) => {
                if skipping > 0 {
                    skipping += 1;
                } else if f(XmlEvent::Open(start.local_name().as_ref(), &start))? == Flow::Skip {
                    skipping = 1;
                }
            }
            Event::End(end) => {
                if skipping > 0 {
                    skipping -= 1;
                } else {
                    f(XmlEvent::Close(end.local_name().as_ref()))?;
                }
            }
            Event::Text(text) if skipping == 0 => {
                let text = text.xml10_content().map_err(|e| damaged(&e))?;
                f(XmlEvent::Text(&text))?;
            }
            Event::CData(text) if skipping == 0 => {
                let text = text.xml10_content().map_err(|e| damaged(&e))?;
                f(XmlEvent::Text(&text))?;
            }
            Event::GeneralRef(reference) if skipping == 0 => {
                if let Some(ch) = resolve_reference(&reference) {
                    f(XmlEvent::Text(ch.encode_utf8(&mut [0; 4])))?;
                }
            }
            Event::DocType(doctype) if doctype.windows(8).any(|w| w == b"<!ENTITY") => {
                return Err(ReadError::Damaged(format!(
                    "{part} 含有 DTD 实体声明（正常的 Office 文件不会有），疑似实体扩展攻击，未读取"
                )));
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

fn resolve_reference(reference: &BytesRef<'_>) -> Option<char> {
    if reference.is_char_ref() {
        return reference.resolve_char_ref().ok().flatten();
    }
    predefined_entity(reference)
}

fn predefined_entity(name: &[u8]) -> Option<char> {
    match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        _ => None,
    }
}

/// The value of the attribute with local name `local`, references decoded
/// the same way as text (unknown entities dropped).
pub(crate) fn attr(element: &BytesStart<'_>, local: &[u8]) -> Option<String> {
    element
        .attributes()
        .with_checks(false)
        .flatten()
        .find_map(|a| (a.key.local_name().as_ref() == local).then(|| unescape_attr(&a.value)))
}

/// An attribute as a number; absent or unparsable values give `None`.
pub(crate) fn attr_u32(element: &BytesStart<'_>, local: &[u8]) -> Option<u32> {
    attr(element, local)?.trim().parse().ok()
}

fn unescape_attr(raw: &[u8]) -> String {
    let raw = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(raw.len());
    let mut rest: &str = &raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // A reference is short; a lone `&` (invalid but seen) is kept as is.
        match rest
            .get(1..)
            .and_then(|r| r.find(';'))
            .filter(|end| *end <= 32)
        {
            Some(end) => {
                let name = &rest[1..=end];
                let decoded = match name.strip_prefix('#') {
                    Some(num) => parse_char_ref(num),
                    None => predefined_entity(name.as_bytes()),
                };
                out.extend(decoded);
                rest = &rest[end + 2..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn parse_char_ref(num: &str) -> Option<char> {
    let code = match num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => num.parse().ok()?,
    };
    char::from_u32(code).filter(|c| *c != '\0')
}

/// Reads the text of simple metadata elements (`dc:creator`,
/// `meta:generator` …) of the part `name` into `meta`. `fields` maps an
/// element's local name to a meta key; when several elements map to one
/// key, the earlier entry of `fields` wins. Metadata is a courtesy: a
/// missing or damaged metadata part leaves what could be read and is not an
/// error; only the size limits still apply.
pub(crate) fn read_meta_part(
    archive: &mut Archive<'_>,
    name: &str,
    limits: &ReadLimits,
    fields: &[(&[u8], &str)],
    meta: &mut Meta,
) -> Result<(), ReadError> {
    match read_part(archive, name, limits) {
        Ok(Some(xml)) => read_meta_fields(&xml, fields, meta),
        Ok(None) | Err(ReadError::Damaged(_)) => {}
        Err(other) => return Err(other),
    }
    Ok(())
}

fn read_meta_fields(xml: &[u8], fields: &[(&[u8], &str)], meta: &mut Meta) {
    let mut found: HashMap<usize, String> = HashMap::new();
    let mut current: Option<(usize, String)> = None;
    let _ = walk_xml(xml, "meta", |event| {
        match event {
            XmlEvent::Open(name, _) => {
                current = fields
                    .iter()
                    .position(|(local, _)| *local == name)
                    .map(|i| (i, String::new()));
            }
            XmlEvent::Text(text) => {
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(text);
                }
            }
            XmlEvent::Close(_) => {
                if let Some((index, value)) = current.take() {
                    let value = value.trim();
                    if !value.is_empty() {
                        found.entry(index).or_insert_with(|| value.to_string());
                    }
                }
            }
        }
        Ok(Flow::Descend)
    });
    for (index, (_, key)) in fields.iter().enumerate() {
        if let Some(value) = found.remove(&index) {
            meta.entry((*key).to_string())
                .or_insert(serde_json::Value::String(value));
        }
    }
}

// ---------------------------------------------------------------------------
// Grid assembly shared by the readers
// ---------------------------------------------------------------------------

/// Counts cells (and tables) against `limits.max_cells` for a whole file, so
/// a file of many small tables is bounded as well as one huge table.
#[derive(Debug)]
pub(crate) struct CellBudget {
    used: usize,
    limit: usize,
}

impl CellBudget {
    pub(crate) fn new(limits: &ReadLimits) -> Self {
        Self {
            used: 0,
            limit: limits.max_cells,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<(), ReadError> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            return Err(ReadError::TooLarge(format!(
                "表格单元格超过上限 {} 个",
                self.limit
            )));
        }
        Ok(())
    }
}

/// Lines of text outside any table, one cell per non-blank line in column 0
/// (the `text` grid of docx and html).
#[derive(Debug)]
pub(crate) struct TextLines {
    grid: Grid,
    row: u32,
}

impl TextLines {
    pub(crate) fn new() -> Self {
        Self {
            grid: Grid::new("text"),
            row: 0,
        }
    }

    /// Adds one line (or paragraph); blank ones are dropped.
    pub(crate) fn push(&mut self, raw: &str, budget: &mut CellBudget) -> Result<(), ReadError> {
        let text = clean_text(raw);
        if text.is_empty() {
            return Ok(());
        }
        budget.take(1)?;
        self.grid.push(Cell::new(self.row, 0, text));
        self.row += 1;
        Ok(())
    }

    pub(crate) fn into_grid(self) -> Option<Grid> {
        (!self.grid.is_empty()).then_some(self.grid)
    }
}

/// Tables nested deeper than this are not given grids of their own; their
/// text still flows into the innermost kept cell. Bounds the `table 1.1.1…`
/// names and the stack against a hostile nesting of thousands of levels.
const MAX_NESTING: usize = 16;

/// A cell being read.
#[derive(Debug, Default)]
pub(crate) struct OpenCell {
    pub(crate) colspan: u32,
    /// Rows the cell covers when known up front (html `rowspan`).
    pub(crate) rowspan: u32,
    pub(crate) text: String,
    /// docx `w:vMerge` continuation: extend the cell above instead.
    pub(crate) merge_up: bool,
    /// The cell is or holds a docx content control (`w:sdt`).
    pub(crate) from_control: bool,
    row: u32,
    col: u32,
    serial: u64,
}

#[derive(Debug)]
struct OpenTable {
    name: String,
    slot: usize,
    children: u32,
    cells: Vec<Cell>,
    row: u32,
    in_row: bool,
    col: u32,
    cell: Option<OpenCell>,
    /// Grid column → index in `cells` of the last cell starting there, to
    /// find "the cell above" for a docx vertical-merge continuation.
    starts: HashMap<u32, usize>,
    /// First column → (last column, last row) of cells reaching into later
    /// rows (html `rowspan`), to find a row's free columns like a browser.
    spans: BTreeMap<u32, (u32, u32)>,
}

/// Turns a finished cell's raw text into the stored text.
pub(crate) type CellFinisher = fn(&OpenCell) -> String;

/// The tables of a document read as a stream of open/close events, nested
/// tables included. Hand-written because both Word's XML (docx-rs hides
/// `gridSpan`/`vMerge` detail) and HTML tables need their spans resolved, and
/// nesting handled the same way: a nested table's text is flattened into the
/// containing cell (lines joined by `\n`) and it is also emitted as a grid of
/// its own, named `table N.M` after its parent.
#[derive(Debug)]
pub(crate) struct TableStack {
    prefix: &'static str,
    finish: CellFinisher,
    slots: Vec<Option<Grid>>,
    open: Vec<OpenTable>,
    /// Tables opened beyond [`MAX_NESTING`], treated as transparent.
    ignored: usize,
    top_level: u32,
    cells_started: u64,
}

impl TableStack {
    /// `prefix` names the grids (`table` → `table 1`, `table 1.2`).
    pub(crate) fn new(prefix: &'static str, finish: CellFinisher) -> Self {
        Self {
            prefix,
            finish,
            slots: Vec::new(),
            open: Vec::new(),
            ignored: 0,
            top_level: 0,
            cells_started: 0,
        }
    }

    /// Number of top-level tables seen.
    pub(crate) fn top_level(&self) -> u32 {
        self.top_level
    }

    pub(crate) fn in_table(&self) -> bool {
        !self.open.is_empty()
    }

    fn active(&mut self) -> Option<&mut OpenTable> {
        if self.ignored > 0 {
            None
        } else {
            self.open.last_mut()
        }
    }

    pub(crate) fn open_table(&mut self, budget: &mut CellBudget) -> Result<(), ReadError> {
        if self.ignored > 0 || self.open.len() >= MAX_NESTING {
            self.ignored += 1;
            return Ok(());
        }
        budget.take(1)?;
        let name = match self.open.last_mut() {
            Some(parent) => {
                parent.children += 1;
                format!("{}.{}", parent.name, parent.children)
            }
            None => {
                self.top_level += 1;
                format!("{} {}", self.prefix, self.top_level)
            }
        };
        self.slots.push(None);
        self.open.push(OpenTable {
            name,
            slot: self.slots.len() - 1,
            children: 0,
            cells: Vec::new(),
            row: 0,
            in_row: false,
            col: 0,
            cell: None,
            starts: HashMap::new(),
            spans: BTreeMap::new(),
        });
        Ok(())
    }

    pub(crate) fn close_table(&mut self, budget: &mut CellBudget) -> Result<(), ReadError> {
        if self.ignored > 0 {
            self.ignored -= 1;
            return Ok(());
        }
        self.end_cell(budget)?;
        let Some(table) = self.open.pop() else {
            return Ok(());
        };
        let mut grid = Grid::new(table.name);
        for cell in table.cells {
            grid.push(cell);
        }
        if let Some(parent_cell) = self.open.last_mut().and_then(|t| t.cell.as_mut()) {
            let flat: Vec<&str> = grid.cells.iter().map(|c| c.text.as_str()).collect();
            if !flat.is_empty() {
                if !parent_cell.text.is_empty() && !parent_cell.text.ends_with('\n') {
                    parent_cell.text.push('\n');
                }
                parent_cell.text.push_str(&flat.join("\n"));
                parent_cell.text.push('\n');
            }
        }
        if let Some(slot) = self.slots.get_mut(table.slot) {
            *slot = Some(grid);
        }
        Ok(())
    }

    pub(crate) fn start_row(&mut self, budget: &mut CellBudget) -> Result<(), ReadError> {
        self.end_row(budget)?;
        if let Some(table) = self.active() {
            table.in_row = true;
            table.col = 0;
        }
        Ok(())
    }

    pub(crate) fn end_row(&mut self, budget: &mut CellBudget) -> Result<(), ReadError> {
        self.end_cell(budget)?;
        if let Some(table) = self.active()
            && table.in_row
        {
            table.in_row = false;
            table.row = table.row.saturating_add(1);
        }
        Ok(())
    }

    /// Advances the current row's column (docx `w:gridBefore`).
    pub(crate) fn skip_columns(&mut self, n: u32) {
        if let Some(table) = self.active() {
            table.col = table.col.saturating_add(n);
        }
    }

    /// Starts a cell. With `find_free` the cell goes to the first column of
    /// the row not covered by a cell from an earlier row (the HTML table
    /// model); otherwise at the row's column cursor (Word's grid).
    pub(crate) fn start_cell(
        &mut self,
        colspan: u32,
        rowspan: u32,
        find_free: bool,
        budget: &mut CellBudget,
    ) -> Result<(), ReadError> {
        self.end_cell(budget)?;
        self.cells_started += 1;
        let serial = self.cells_started;
        let Some(table) = self.active() else {
            return Ok(());
        };
        if find_free {
            table.col = first_free_column(&mut table.spans, table.row, table.col);
        }
        table.cell = Some(OpenCell {
            colspan: colspan.max(1),
            rowspan: rowspan.max(1),
            row: table.row,
            col: table.col,
            serial,
            ..OpenCell::default()
        });
        Ok(())
    }

    /// The innermost open cell, to set spans or flags while reading it.
    pub(crate) fn cell_mut(&mut self) -> Option<&mut OpenCell> {
        self.active()?.cell.as_mut()
    }

    /// Identifies the cell [`Self::text_sink`] currently writes to.
    pub(crate) fn cell_serial(&self) -> Option<u64> {
        self.open.last()?.cell.as_ref().map(|c| c.serial)
    }

    /// Where text goes inside tables: the innermost open cell (also while
    /// inside a table nested too deep to keep), or nowhere.
    pub(crate) fn text_sink(&mut self) -> Option<&mut String> {
        self.open.last_mut()?.cell.as_mut().map(|c| &mut c.text)
    }

    pub(crate) fn end_cell(&mut self, budget: &mut CellBudget) -> Result<(), ReadError> {
        if self.ignored > 0 {
            return Ok(());
        }
        let finish = self.finish;
        let Some(table) = self.open.last_mut() else {
            return Ok(());
        };
        let Some(cell) = table.cell.take() else {
            return Ok(());
        };
        let text = finish(&cell);
        table.col = cell.col.saturating_add(cell.colspan);
        if cell.merge_up
            && let Some(&above) = table.starts.get(&cell.col)
            && let Some(target) = table.cells.get_mut(above)
            && target.last_row().saturating_add(1) == cell.row
        {
            target.rowspan += 1;
            if !text.is_empty() {
                if !target.text.is_empty() {
                    target.text.push('\n');
                }
                target.text.push_str(&text);
            }
            return Ok(());
        }
        budget.take(1)?;
        if cell.rowspan > 1 {
            let last_col = cell.col.saturating_add(cell.colspan - 1);
            let last_row = cell.row.saturating_add(cell.rowspan - 1);
            table.spans.insert(cell.col, (last_col, last_row));
        }
        table.starts.insert(cell.col, table.cells.len());
        table.cells.push(Cell {
            row: cell.row,
            col: cell.col,
            rowspan: cell.rowspan,
            colspan: cell.colspan,
            text,
        });
        Ok(())
    }

    /// Closes whatever a truncated document left open and returns the grids
    /// in the order their tables started.
    pub(crate) fn finish(mut self, budget: &mut CellBudget) -> Result<Vec<Grid>, ReadError> {
        self.ignored = 0;
        while self.in_table() {
            self.close_table(budget)?;
        }
        Ok(self.slots.into_iter().flatten().collect())
    }
}

fn first_free_column(spans: &mut BTreeMap<u32, (u32, u32)>, row: u32, mut col: u32) -> u32 {
    while let Some((&start, &(last_col, last_row))) = spans.range(..=col).next_back() {
        if last_row < row {
            // Rows only grow, so a span that ended is of no further use.
            spans.remove(&start);
        } else if last_col >= col && last_col < u32::MAX {
            col = last_col + 1;
        } else {
            break;
        }
    }
    col
}

/// Helpers for the readers' unit tests: fixtures, lookups and a
/// deterministic mutation loop (a tiny LCG, so no fuzzing crate is needed).
#[cfg(test)]
pub(crate) mod test_support {
    use crate::parse::grid::{Cell, Extracted, Grid};

    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/office/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(crate) fn grid<'a>(x: &'a Extracted, name: &str) -> &'a Grid {
        x.grids
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no grid {name} in {x:#?}"))
    }

    pub(crate) fn cell(g: &Grid, row: u32, col: u32) -> &Cell {
        g.cells
            .iter()
            .find(|c| c.row == row && c.col == col)
            .unwrap_or_else(|| panic!("no cell {row},{col} in {g:#?}"))
    }

    pub(crate) fn text_at(g: &Grid, row: u32, col: u32) -> &str {
        &cell(g, row, col).text
    }

    /// All cell text of all grids, for "never contains" checks.
    pub(crate) fn all_text(x: &Extracted) -> String {
        x.grids
            .iter()
            .flat_map(|g| &g.cells)
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join("|")
    }

    /// Calls `f` with `rounds` deterministic mutants of `seed`: truncations
    /// and a few bit flips each.
    pub(crate) fn mutants(seed: &[u8], rounds: usize, mut f: impl FnMut(&[u8])) {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut below = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            if n == 0 {
                0
            } else {
                ((state >> 33) as usize) % n
            }
        };
        for _ in 0..rounds {
            let mut bytes = seed.to_vec();
            if below(3) == 0 {
                bytes.truncate(below(bytes.len()));
            } else {
                for _ in 0..=below(8) {
                    let i = below(bytes.len());
                    if let Some(b) = bytes.get_mut(i) {
                        *b ^= 1 << below(8);
                    }
                }
            }
            f(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::fixture;
    use super::*;

    #[test]
    fn directory_within_limits_passes() {
        assert_eq!(
            check_zip_directory(&fixture("form.docx"), &ReadLimits::default()),
            Ok(())
        );
    }

    #[test]
    fn too_many_entries_is_too_large() {
        let limits = ReadLimits {
            max_zip_entries: 3,
            ..ReadLimits::default()
        };
        let err = check_zip_directory(&fixture("form.docx"), &limits).unwrap_err();
        assert!(
            matches!(&err, ReadError::TooLarge(m) if m.contains("上限 3 个")),
            "{err:?}"
        );
    }

    #[test]
    fn declared_huge_part_is_too_large() {
        let err =
            check_zip_directory(&fixture("declared_3gb.docx"), &ReadLimits::default()).unwrap_err();
        assert!(
            matches!(&err, ReadError::TooLarge(m) if m.contains("3000000000 字节") && m.contains("word/document.xml")),
            "{err:?}"
        );
    }

    #[test]
    fn real_zero_bomb_is_too_large_by_directory_and_by_reading() {
        let bytes = fixture("zeros_60mb.docx");
        assert!(matches!(
            check_zip_directory(&bytes, &ReadLimits::default()),
            Err(ReadError::TooLarge(_))
        ));
        // Even if the directory check were skipped, reading stops at the limit.
        let mut archive = ZipArchive::new(Cursor::new(bytes.as_slice())).unwrap();
        let limits = ReadLimits {
            max_part_bytes: 1 << 20,
            ..ReadLimits::default()
        };
        let err = read_part(&mut archive, "word/media/zeros.bin", &limits).unwrap_err();
        assert!(
            matches!(&err, ReadError::TooLarge(m) if m.contains("1048576")),
            "{err:?}"
        );
    }

    #[test]
    fn total_size_limit() {
        let limits = ReadLimits {
            max_total_bytes: 100,
            ..ReadLimits::default()
        };
        let err = check_zip_directory(&fixture("form.docx"), &limits).unwrap_err();
        assert!(
            matches!(&err, ReadError::TooLarge(m) if m.contains("总量上限 100")),
            "{err:?}"
        );
    }

    #[test]
    fn read_part_missing_and_case_insensitive() {
        let bytes = fixture("form.docx");
        let mut archive = ZipArchive::new(Cursor::new(bytes.as_slice())).unwrap();
        let limits = ReadLimits::default();
        assert_eq!(
            read_part(&mut archive, "word/nothing.xml", &limits),
            Ok(None)
        );
        let part = read_part(&mut archive, "WORD/Document.XML", &limits)
            .unwrap()
            .unwrap();
        assert!(part.starts_with(b"<?xml"));
    }

    #[test]
    fn not_a_zip_is_damaged() {
        let err =
            check_zip_directory(b"\xD0\xCF\x11\xE0 not a zip", &ReadLimits::default()).unwrap_err();
        assert!(matches!(err, ReadError::Damaged(_)));
    }

    #[test]
    fn attribute_references_decoded_unknown_dropped() {
        assert_eq!(
            unescape_attr(b"a&amp;b&#x4E00;&#20108;&lol;c&d"),
            "a&b一二c&d"
        );
    }

    #[test]
    fn walker_drops_unknown_entities_and_ignores_doctype() {
        let xml = br#"<?xml version="1.0"?><!DOCTYPE r SYSTEM "r.dtd"><r>x&b;&lt;&#x4E00;y</r>"#;
        let mut text = String::new();
        walk_xml(xml, "t", |e| {
            if let XmlEvent::Text(t) = e {
                text.push_str(t);
            }
            Ok(Flow::Descend)
        })
        .unwrap();
        assert_eq!(text, "x<一y");
    }

    #[test]
    fn walker_refuses_entity_declarations() {
        let xml = br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><r>x&b;</r>"#;
        let result = walk_xml(xml, "t", |_| Ok(Flow::Descend));
        assert!(matches!(result, Err(ReadError::Damaged(m)) if m.contains("实体")));
    }

    #[test]
    fn walker_reports_mismatched_tags_as_damaged() {
        let err = walk_xml(b"<a><b></a>", "p", |_| Ok(Flow::Descend)).unwrap_err();
        assert!(matches!(err, ReadError::Damaged(_)));
    }

    #[test]
    fn free_column_skips_rowspans() {
        let mut spans = BTreeMap::new();
        spans.insert(0, (0, 2));
        spans.insert(1, (2, 1));
        assert_eq!(first_free_column(&mut spans, 1, 0), 3);
        assert_eq!(first_free_column(&mut spans, 2, 0), 1);
        assert!(!spans.contains_key(&1), "expired span pruned");
    }
}
