//! Grids from Word-style tables, shared by the `.doc` (`super::doc`) and RTF
//! (`super::rtf`) readers. Both formats describe a table the same way: a
//! stream of paragraphs at a table depth, cell and row end marks, and per
//! row a definition of cell right boundaries (in twips) plus merge flags.
//! The readers decode their format (piece table and sprms; tokens and
//! control words) into those events; this module owns everything after:
//!
//! - drafting tables ([`TableBuilder`]): opening and closing tables as the
//!   depth changes, joining a cell's paragraphs, ending cells and rows;
//! - laying a table out: the column grid is the union of every row's cell
//!   boundaries (snapped within [`SNAP_TWIPS`]), a horizontally merged cell
//!   widens the cell before it, a vertically merged cell lengthens the cell
//!   above; a row without a usable definition is laid out by cell index;
//! - nested tables: flattened into their host cell and also emitted, after
//!   their host, as `table N.M`;
//! - the `text` grid of the paragraphs outside tables, and the cell budget
//!   (`max_cells`).

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::parse::grid::{Cell, Grid, ReadError, ReadLimits, clean_text};

/// Column boundaries closer than this (in twips, 1/1440 inch) are one
/// boundary: rows of a hand-made form are rarely aligned to the twip.
const SNAP_TWIPS: i64 = 15;

/// One cell of a row definition: its right boundary and merge flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CellDef {
    /// Right boundary in twips.
    pub(crate) right: i32,
    /// First cell of a horizontal merge.
    pub(crate) h_first: bool,
    /// Part of a horizontal merge: folded into the cell before unless it is
    /// also `h_first`.
    pub(crate) h_cont: bool,
    /// First cell of a vertical merge.
    pub(crate) v_first: bool,
    /// Part of a vertical merge: lengthens the cell above unless it is also
    /// `v_first`.
    pub(crate) v_cont: bool,
}

/// One row definition: the left edge of the first cell and every cell's
/// right boundary and merge flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RowDef {
    /// Left edge in twips.
    pub(crate) left: i32,
    pub(crate) cells: Vec<CellDef>,
}

impl RowDef {
    /// Left and right edge of cell `i`.
    fn edges(&self, i: usize) -> Option<(i64, i64)> {
        let right = i64::from(self.cells.get(i)?.right);
        let left = match i.checked_sub(1) {
            None => i64::from(self.left),
            Some(p) => i64::from(self.cells.get(p)?.right),
        };
        Some((left, right))
    }
}

#[derive(Debug)]
struct RowDraft {
    cells: Vec<String>,
    def: Option<Rc<RowDef>>,
}

#[derive(Debug)]
struct TableDraft {
    name: String,
    rows: Vec<RowDraft>,
    row: Vec<String>,
    /// Paragraphs of the open cell.
    cell: Vec<String>,
    children: u32,
    /// Grids of tables nested in this one, emitted after it.
    nested: Vec<Grid>,
}

impl TableDraft {
    fn new(name: String) -> Self {
        Self {
            name,
            rows: Vec::new(),
            row: Vec::new(),
            cell: Vec::new(),
            children: 0,
            nested: Vec::new(),
        }
    }

    fn end_cell(&mut self) {
        let text = clean_text(&self.cell.join("\n"));
        self.cell.clear();
        self.row.push(text);
    }

    fn end_row(&mut self, def: Option<Rc<RowDef>>) {
        self.rows.push(RowDraft {
            cells: std::mem::take(&mut self.row),
            def,
        });
    }
}

/// Turns a document's paragraphs, cell ends and row ends into grids: one
/// per table (`table N`, nested ones `table N.M`), then a `text` grid of the
/// paragraphs outside tables.
#[derive(Debug)]
pub(crate) struct TableBuilder<'l> {
    limits: &'l ReadLimits,
    /// Put before `单元格超过 N 个` when `max_cells` is exceeded.
    label: &'static str,
    stack: Vec<TableDraft>,
    grids: Vec<Grid>,
    text: Grid,
    tables: u32,
    cells: usize,
}

impl<'l> TableBuilder<'l> {
    /// `label` starts the message of the error for too many cells.
    pub(crate) fn new(limits: &'l ReadLimits, label: &'static str) -> Self {
        Self {
            limits,
            label,
            stack: Vec::new(),
            grids: Vec::new(),
            text: Grid::new("text"),
            tables: 0,
            cells: 0,
        }
    }

    /// Enforces `max_cells`: every table paragraph, cell and row end and
    /// every non-empty text paragraph counts, an upper bound on cells plus
    /// rows, so that rows of empty cells cannot grow memory without limit
    /// either.
    fn count(&mut self) -> Result<(), ReadError> {
        self.cells += 1;
        if self.cells > self.limits.max_cells {
            return Err(ReadError::TooLarge(format!(
                "{}单元格超过 {} 个",
                self.label, self.limits.max_cells
            )));
        }
        Ok(())
    }

    /// Opens or closes tables until `depth` are open.
    fn sync(&mut self, depth: usize) -> Result<(), ReadError> {
        while self.stack.len() > depth {
            self.close_table()?;
        }
        while self.stack.len() < depth {
            let name = match self.stack.last_mut() {
                Some(parent) => {
                    parent.children += 1;
                    format!("{}.{}", parent.name, parent.children)
                }
                None => {
                    self.tables += 1;
                    format!("table {}", self.tables)
                }
            };
            self.stack.push(TableDraft::new(name));
        }
        Ok(())
    }

    /// A paragraph mark at table depth `depth` (0 = outside tables): the
    /// paragraph joins the open cell, or the `text` grid.
    pub(crate) fn paragraph(&mut self, text: String, depth: usize) -> Result<(), ReadError> {
        self.sync(depth)?;
        match self.stack.last_mut() {
            Some(table) => {
                table.cell.push(text);
                self.count()
            }
            None => {
                let text = clean_text(&text);
                if text.is_empty() {
                    return Ok(());
                }
                self.count()?;
                let row = u32::try_from(self.text.cells.len()).unwrap_or(u32::MAX);
                self.text.push(Cell::new(row, 0, text));
                Ok(())
            }
        }
    }

    /// A cell end at `depth` (at least 1): `text` is the cell's last
    /// paragraph.
    pub(crate) fn cell(&mut self, text: String, depth: usize) -> Result<(), ReadError> {
        self.sync(depth)?;
        self.count()?;
        if let Some(table) = self.stack.last_mut() {
            table.cell.push(text);
            table.end_cell();
        }
        Ok(())
    }

    /// A row end at `depth` (at least 1), laid out by `def`. Text before
    /// the row end that is not blank ends up in a cell of its own.
    pub(crate) fn row(
        &mut self,
        text: String,
        depth: usize,
        def: Option<Rc<RowDef>>,
    ) -> Result<(), ReadError> {
        self.sync(depth)?;
        self.count()?;
        if let Some(table) = self.stack.last_mut() {
            if !text.trim().is_empty() {
                table.cell.push(text);
            }
            if !table.cell.is_empty() {
                table.end_cell();
            }
            table.end_row(def);
        }
        Ok(())
    }

    fn close_table(&mut self) -> Result<(), ReadError> {
        let Some(mut table) = self.stack.pop() else {
            return Ok(());
        };
        if !table.cell.is_empty() {
            table.end_cell();
        }
        if !table.row.is_empty() {
            table.end_row(None);
        }
        let grid = layout(&table.name, &table.rows);
        match self.stack.last_mut() {
            Some(parent) => {
                let flat: Vec<&str> = grid.cells.iter().map(|c| c.text.as_str()).collect();
                if !flat.is_empty() {
                    parent.cell.push(flat.join("\n"));
                }
                parent.nested.push(grid);
                parent.nested.append(&mut table.nested);
            }
            None => {
                self.grids.push(grid);
                self.grids.append(&mut table.nested);
            }
        }
        Ok(())
    }

    /// Closes the open tables; the grids and the number of top-level
    /// tables.
    pub(crate) fn finish(mut self) -> Result<(Vec<Grid>, u32), ReadError> {
        while !self.stack.is_empty() {
            self.close_table()?;
        }
        if !self.text.is_empty() {
            self.grids.push(self.text);
        }
        Ok((self.grids, self.tables))
    }
}

/// Places a table's cells on a column grid made of every row's cell
/// boundaries, and turns merge flags into spans.
fn layout(name: &str, rows: &[RowDraft]) -> Grid {
    fn usable(row: &RowDraft) -> Option<&RowDef> {
        row.def
            .as_deref()
            .filter(|d| d.cells.len() >= row.cells.len() && !row.cells.is_empty())
    }
    let mut bounds: Vec<i64> = rows
        .iter()
        .filter_map(usable)
        .flat_map(|d| (0..d.cells.len()).filter_map(|i| d.edges(i)))
        .flat_map(|(l, r)| [l, r])
        .collect();
    bounds.sort_unstable();
    let mut snapped: Vec<i64> = Vec::new();
    for b in bounds {
        if snapped.last().is_none_or(|&last| b - last > SNAP_TWIPS) {
            snapped.push(b);
        }
    }
    // Grid column of a boundary: the last snapped boundary at or before it.
    let column = |x: i64| -> u32 {
        let i = snapped.partition_point(|&b| b <= x + SNAP_TWIPS);
        u32::try_from(i.saturating_sub(1)).unwrap_or(u32::MAX)
    };

    let mut cells: Vec<Cell> = Vec::new();
    // Grid column → index in `cells` of the last cell starting there, to
    // extend vertical merges.
    let mut by_col: BTreeMap<u32, usize> = BTreeMap::new();
    for (r, row) in rows.iter().enumerate() {
        let r = u32::try_from(r).unwrap_or(u32::MAX);
        let def = usable(row);
        let mut last_placed: Option<usize> = None;
        for (i, text) in row.cells.iter().enumerate() {
            let (col, colspan, cd) = match def {
                Some(d) => {
                    let Some((l, rt)) = d.edges(i) else {
                        continue;
                    };
                    let (a, b) = (column(l), column(rt));
                    (
                        a,
                        b.saturating_sub(a).max(1),
                        d.cells.get(i).copied().unwrap_or_default(),
                    )
                }
                None => (u32::try_from(i).unwrap_or(u32::MAX), 1, CellDef::default()),
            };
            // Horizontal merge: fold into the cell before.
            if cd.h_cont
                && !cd.h_first
                && let Some(prev) = last_placed.and_then(|p| cells.get_mut(p))
            {
                prev.colspan = col
                    .saturating_add(colspan)
                    .saturating_sub(prev.col)
                    .max(prev.colspan);
                continue;
            }
            if cd.v_cont && !cd.v_first {
                let above = by_col.get(&col).copied().filter(|&k| {
                    cells
                        .get(k)
                        .is_some_and(|c| c.last_row().checked_add(1) == Some(r))
                });
                if let Some(cell) = above.and_then(|k| cells.get_mut(k)) {
                    cell.rowspan = cell.rowspan.saturating_add(1);
                    continue;
                }
            }
            by_col.insert(col, cells.len());
            last_placed = Some(cells.len());
            cells.push(Cell {
                row: r,
                col,
                rowspan: 1,
                colspan,
                text: text.clone(),
            });
        }
    }
    let mut grid = Grid::new(name);
    for cell in cells {
        grid.push(cell);
    }
    grid
}
