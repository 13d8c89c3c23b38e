//! Positioned text and ruling lines → grids: the part of reading a page
//! that does not depend on where the page came from. The PDF reader feeds
//! it the glyphs and rules of a text layer; the OCR reader feeds it the text
//! boxes and table lines it found on a scanned page. It rebuilds table cells
//! from the rules (with rowspan/colspan), puts each glyph into the cell that
//! holds its centre, rejoins values a word processor wrapped inside a narrow
//! cell, and makes a `text` grid of the lines outside every table.
//!
//! Coordinates are points (1/72 inch), top-down: the tolerances below are
//! in points.

use std::collections::BTreeMap;

use crate::parse::grid::{Cell, Grid, ReadLimits, clean_text};

/// Coordinates of rules closer than this (points) are the same rule: Word
/// and LibreOffice draw adjacent cell borders a fraction of a point apart.
const RULE_TOL: f64 = 2.0;
/// Tables with more atomic cells than this are drawings (hatching), not forms.
const MAX_ATOMIC_CELLS: usize = 40_000;
/// Gap (in em) above which two runs on one text line are separate cells.
const RUN_GAP_EM: f64 = 2.0;
/// Gap (in em) above which two ASCII glyphs get a space between them.
const SPACE_GAP_EM: f64 = 0.3;

/// The grids of some pages (`name`, content): one per table per page, then
/// one `text` grid of every line outside the tables.
pub(crate) fn grids(pages: &[(String, PageContent)], limits: &ReadLimits) -> Vec<Grid> {
    let mut grids = Vec::new();
    let mut outside = Vec::new();
    for (name, page) in pages {
        let (tables, rest) = build_tables(page, limits);
        for mut grid in tables {
            grid.name.clone_from(name);
            grids.push(grid);
        }
        outside.push(rest);
    }
    let text = text_grid(&outside, limits);
    if !text.is_empty() {
        grids.push(text);
    }
    grids
}

/// One glyph in top-down page coordinates (points, y grows downwards).
#[derive(Debug, Clone)]
pub(crate) struct Glyph {
    pub(crate) x: f64,
    pub(crate) right: f64,
    pub(crate) baseline: f64,
    pub(crate) em: f64,
    pub(crate) text: String,
}

impl Glyph {
    pub(crate) fn is_space(&self) -> bool {
        self.text
            .chars()
            .all(|c| c.is_whitespace() || c == '\u{3000}')
    }
    fn center(&self) -> (f64, f64) {
        // The visual middle of a glyph sits about a third of an em above
        // the baseline; using it keeps descenders out of the row below.
        ((self.x + self.right) / 2.0, self.baseline - 0.35 * self.em)
    }
    fn first_char(&self) -> Option<char> {
        self.text.chars().next()
    }
    fn last_char(&self) -> Option<char> {
        self.text.chars().last()
    }
}

/// Whether `g` goes on the word `p` ends: same line, same size, starting
/// where `p` ends (a gap of a tenth of an em at most; a cell's padding is
/// several times that), neither of them a space.
fn continues_word(p: &Glyph, g: &Glyph) -> bool {
    let em = p.em.max(g.em);
    !p.is_space()
        && !g.is_space()
        && (p.em - g.em).abs() <= 0.1 * em
        && (p.baseline - g.baseline).abs() <= 0.2 * em
        && g.x >= p.right - 0.2 * em
        && g.x <= p.right + 0.1 * em
}

/// An axis-parallel ruling segment: at `pos` across, from `a` to `b` along.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    pub(crate) pos: f64,
    pub(crate) a: f64,
    pub(crate) b: f64,
}

#[derive(Debug, Default)]
pub(crate) struct PageContent {
    pub(crate) glyphs: Vec<Glyph>,
    pub(crate) horizontal: Vec<Rule>,
    pub(crate) vertical: Vec<Rule>,
    /// The glyphs' places are OCR's estimates (evenly spread over a text
    /// box already cut at the rules), not a text layer's: glyphs that touch
    /// are not one word for that.
    pub(crate) estimated: bool,
}

// ---------------------------------------------------------------------------
// Tables from rules

/// Clusters sorted values: members closer than `RULE_TOL` to the cluster's
/// previous member join it; each cluster is represented by its mean.
fn cluster(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let mut out: Vec<f64> = Vec::new();
    let mut group: Vec<f64> = Vec::new();
    for v in values {
        if group.last().is_some_and(|&last| v - last > RULE_TOL) {
            out.push(group.iter().sum::<f64>() / group.len() as f64);
            group.clear();
        }
        group.push(v);
    }
    if !group.is_empty() {
        out.push(group.iter().sum::<f64>() / group.len() as f64);
    }
    out
}

/// Merges collinear rules that overlap or nearly touch.
fn merge_rules(mut rules: Vec<Rule>) -> Vec<Rule> {
    rules.sort_by(|p, q| p.pos.total_cmp(&q.pos).then(p.a.total_cmp(&q.a)));
    let mut lines: Vec<Vec<Rule>> = Vec::new();
    for r in rules {
        match lines.last_mut() {
            Some(line)
                if line
                    .last()
                    .is_some_and(|l| (r.pos - l.pos).abs() <= RULE_TOL) =>
            {
                line.push(r)
            }
            _ => lines.push(vec![r]),
        }
    }
    let mut out = Vec::new();
    for mut line in lines {
        let pos = line.iter().map(|r| r.pos).sum::<f64>() / line.len() as f64;
        line.sort_by(|p, q| p.a.total_cmp(&q.a));
        let mut cur: Option<Rule> = None;
        for r in line {
            cur = match cur {
                Some(c) if r.a <= c.b + RULE_TOL => Some(Rule {
                    pos,
                    a: c.a,
                    b: c.b.max(r.b),
                }),
                Some(c) => {
                    out.push(c);
                    Some(Rule {
                        pos,
                        a: r.a,
                        b: r.b,
                    })
                }
                None => Some(Rule {
                    pos,
                    a: r.a,
                    b: r.b,
                }),
            };
        }
        out.extend(cur);
    }
    out
}

#[derive(Debug)]
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        Self((0..n).collect())
    }
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// One table found on a page: its rule coordinates and merged cells.
#[derive(Debug)]
struct Table {
    xs: Vec<f64>,
    ys: Vec<f64>,
    /// For every atomic cell (row-major), the index into `cells`.
    owner: Vec<usize>,
    /// (row, col, rowspan, colspan) of each merged cell.
    cells: Vec<(usize, usize, usize, usize)>,
}

impl Table {
    fn contains(&self, (x, y): (f64, f64)) -> bool {
        match (
            self.xs.first(),
            self.xs.last(),
            self.ys.first(),
            self.ys.last(),
        ) {
            (Some(&x0), Some(&x1), Some(&y0), Some(&y1)) => {
                x >= x0 && x <= x1 && y >= y0 && y <= y1
            }
            _ => false,
        }
    }

    /// The merged cell holding a point inside the table.
    /// Whether a point lies within `slack` left or right of the table, at
    /// the height of one of its rows.
    fn overflows(&self, (x, y): (f64, f64), slack: f64) -> bool {
        match (
            self.xs.first(),
            self.xs.last(),
            self.ys.first(),
            self.ys.last(),
        ) {
            (Some(&x0), Some(&x1), Some(&y0), Some(&y1)) => {
                y > y0 && y < y1 && ((x > x1 && x <= x1 + slack) || (x < x0 && x >= x0 - slack))
            }
            _ => false,
        }
    }

    fn cell_at(&self, (x, y): (f64, f64)) -> Option<usize> {
        let band = |edges: &[f64], v: f64| -> Option<usize> {
            let i = edges.partition_point(|&e| e <= v);
            // past the last edge counts as the last band (a point on the
            // outer border)
            Some(i.saturating_sub(1).min(edges.len().checked_sub(2)?))
        };
        let r = band(&self.ys, y)?;
        let c = band(&self.xs, x)?;
        let cols = self.xs.len() - 1;
        self.owner.get(r * cols + c).copied()
    }

    /// Outer edges (left, right) of a merged cell.
    fn cell_x_range(&self, cell: usize) -> (f64, f64) {
        let (_, c, _, cs) = self.cells[cell];
        (self.xs[c], self.xs[c + cs])
    }
}

fn covers(rules: &[Rule], pos: f64, at: f64) -> bool {
    rules
        .iter()
        .any(|r| (r.pos - pos).abs() <= RULE_TOL && r.a - RULE_TOL <= at && at <= r.b + RULE_TOL)
}

/// Finds the tables of a page and returns them as grids, plus the glyphs
/// outside every table.
fn build_tables(page: &PageContent, limits: &ReadLimits) -> (Vec<Grid>, Vec<Glyph>) {
    let hs = merge_rules(page.horizontal.clone());
    let vs = merge_rules(page.vertical.clone());

    // Rules that touch each other belong to one table.
    let mut uf = UnionFind::new(hs.len() + vs.len());
    for (i, h) in hs.iter().enumerate() {
        for (j, v) in vs.iter().enumerate() {
            let touch = v.pos >= h.a - RULE_TOL
                && v.pos <= h.b + RULE_TOL
                && h.pos >= v.a - RULE_TOL
                && h.pos <= v.b + RULE_TOL;
            if touch {
                uf.union(i, hs.len() + j);
            }
        }
    }
    let mut groups: BTreeMap<usize, (Vec<Rule>, Vec<Rule>)> = BTreeMap::new();
    for (i, h) in hs.iter().enumerate() {
        groups.entry(uf.find(i)).or_default().0.push(*h);
    }
    for (j, v) in vs.iter().enumerate() {
        groups.entry(uf.find(hs.len() + j)).or_default().1.push(*v);
    }

    let mut tables: Vec<Table> = Vec::new();
    for (h, v) in groups.into_values() {
        if let Some(t) = table_from_rules(&h, &v) {
            tables.push(t);
        }
    }
    // Top to bottom, then left to right, so grids come out in reading order.
    tables.sort_by(|p, q| {
        let key = |t: &Table| (t.ys.first().copied(), t.xs.first().copied());
        let (pk, qk) = (key(p), key(q));
        pk.0.unwrap_or(0.0)
            .total_cmp(&qk.0.unwrap_or(0.0))
            .then(pk.1.unwrap_or(0.0).total_cmp(&qk.1.unwrap_or(0.0)))
    });

    let mut per_cell: Vec<Vec<Vec<Glyph>>> = tables
        .iter()
        .map(|t| vec![Vec::new(); t.cells.len()])
        .collect();
    let mut outside = Vec::new();
    let mut previous: Option<(&Glyph, (usize, usize))> = None;
    for g in &page.glyphs {
        let center = g.center();
        // A word written on past its cell's right rule (Excel prints a long
        // e-mail over the empty cell beside it) stays in its cell: a glyph
        // that touches the one before on its line goes where that one went.
        if !page.estimated
            && let Some((p, at)) = previous
            && continues_word(p, g)
        {
            per_cell[at.0][at.1].push(g.clone());
            previous = Some((g, at));
            continue;
        }
        let hit = tables
            .iter()
            .enumerate()
            .find(|(_, t)| t.contains(center))
            .or_else(|| {
                // Text that overflows a table's outer border (a value longer
                // than its cell, as Excel prints it) belongs to the border
                // cell of its row, not to the text around the table.
                tables
                    .iter()
                    .enumerate()
                    .find(|(_, t)| t.overflows(center, 2.0 * g.em))
            })
            .and_then(|(ti, t)| Some((ti, t.cell_at(center)?)));
        match hit {
            Some((ti, ci)) => {
                per_cell[ti][ci].push(g.clone());
                previous = Some((g, (ti, ci)));
            }
            None => {
                outside.push(g.clone());
                previous = None;
            }
        }
    }

    let mut grids = Vec::new();
    for (t, cell_glyphs) in tables.iter().zip(per_cell) {
        let mut grid = Grid::new("");
        for (ci, glyphs) in cell_glyphs.into_iter().enumerate() {
            if grid.cells.len() >= limits.max_cells {
                break;
            }
            let (left, right) = t.cell_x_range(ci);
            let text = clean_text(&cell_text(glyphs, left, right));
            let (r, c, rs, cs) = t.cells[ci];
            let cell = Cell {
                row: to_u32(r),
                col: to_u32(c),
                rowspan: to_u32(rs),
                colspan: to_u32(cs),
                text,
            };
            grid.push(cell);
        }
        grid.cells.sort_by_key(|c| (c.row, c.col));
        if !grid.is_empty() {
            grids.push(grid);
        }
    }
    (grids, outside)
}

fn to_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Builds the merged-cell layout of one group of touching rules.
fn table_from_rules(hs: &[Rule], vs: &[Rule]) -> Option<Table> {
    let ys = cluster(hs.iter().map(|r| r.pos).collect());
    let xs = cluster(vs.iter().map(|r| r.pos).collect());
    if ys.len() < 2 || xs.len() < 2 {
        return None;
    }
    let (rows, cols) = (ys.len() - 1, xs.len() - 1);
    if rows.checked_mul(cols)? > MAX_ATOMIC_CELLS {
        return None;
    }
    // Neighbouring bands merge where the rule between them is absent at the
    // band's midpoint.
    let mut uf = UnionFind::new(rows * cols);
    for r in 0..rows {
        let mid_y = (ys[r] + ys[r + 1]) / 2.0;
        for c in 0..cols {
            let mid_x = (xs[c] + xs[c + 1]) / 2.0;
            if c + 1 < cols && !covers(vs, xs[c + 1], mid_y) {
                uf.union(r * cols + c, r * cols + c + 1);
            }
            if r + 1 < rows && !covers(hs, ys[r + 1], mid_x) {
                uf.union(r * cols + c, (r + 1) * cols + c);
            }
        }
    }
    let mut root_to_cell: BTreeMap<usize, usize> = BTreeMap::new();
    let mut bounds: Vec<(usize, usize, usize, usize)> = Vec::new(); // r0 c0 r1 c1
    let mut owner = vec![0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let root = uf.find(r * cols + c);
            let idx = *root_to_cell.entry(root).or_insert_with(|| {
                bounds.push((r, c, r, c));
                bounds.len() - 1
            });
            let b = &mut bounds[idx];
            b.0 = b.0.min(r);
            b.1 = b.1.min(c);
            b.2 = b.2.max(r);
            b.3 = b.3.max(c);
            owner[r * cols + c] = idx;
        }
    }
    let cells = bounds
        .into_iter()
        .map(|(r0, c0, r1, c1)| (r0, c0, r1 - r0 + 1, c1 - c0 + 1))
        .collect();
    Some(Table {
        xs,
        ys,
        owner,
        cells,
    })
}

// ---------------------------------------------------------------------------
// Text from glyphs

/// One visual line of glyphs, left to right.
#[derive(Debug)]
struct Line {
    glyphs: Vec<Glyph>,
}

impl Line {
    fn ink(&self) -> impl Iterator<Item = &Glyph> {
        self.glyphs.iter().filter(|g| !g.is_space())
    }
    fn left(&self) -> f64 {
        self.ink().map(|g| g.x).fold(f64::MAX, f64::min)
    }
    fn right(&self) -> f64 {
        self.ink().map(|g| g.right).fold(f64::MIN, f64::max)
    }
    fn em(&self) -> f64 {
        let (sum, n) = self
            .ink()
            .fold((0.0, 0usize), |(s, n), g| (s + g.em, n + 1));
        if n == 0 { 10.0 } else { sum / n as f64 }
    }
    /// Width of the first unit a line breaker cannot split: one CJK
    /// character, or an ASCII run up to a space, a gap, a hyphen or slash.
    fn first_unit_width(&self) -> f64 {
        let mut ink = self.ink().peekable();
        let Some(first) = ink.next() else { return 0.0 };
        let mut right = first.right;
        if !first.text.is_ascii() || matches!(first.last_char(), Some('-' | '/')) {
            return right - first.x;
        }
        let mut prev = first;
        for g in ink {
            if !g.text.is_ascii() || g.x - prev.right > SPACE_GAP_EM * g.em {
                break;
            }
            // a space glyph between them ends the unit too
            if self.glyphs.iter().any(|s| {
                s.is_space() && s.x >= prev.right - 0.01 && s.right <= g.x + 0.01 && s.x < g.x
            }) {
                break;
            }
            right = g.right;
            if matches!(g.last_char(), Some('-' | '/')) {
                break;
            }
            prev = g;
        }
        right - first.x
    }
    fn first_char(&self) -> Option<char> {
        self.ink().next().and_then(Glyph::first_char)
    }
    fn last_char(&self) -> Option<char> {
        self.ink().last().and_then(Glyph::last_char)
    }
}

/// Groups glyphs into visual lines, top to bottom.
fn group_lines(mut glyphs: Vec<Glyph>) -> Vec<Line> {
    glyphs.sort_by(|p, q| p.baseline.total_cmp(&q.baseline).then(p.x.total_cmp(&q.x)));
    let mut lines: Vec<Line> = Vec::new();
    let mut line_base = f64::MIN;
    for g in glyphs {
        // Baselines within half an em are one line (superscripts, mixed
        // fonts and CJK/Latin baseline differences stay together).
        match lines.last_mut() {
            Some(line) if (g.baseline - line_base).abs() <= 0.5 * g.em => line.glyphs.push(g),
            _ => {
                line_base = g.baseline;
                lines.push(Line { glyphs: vec![g] });
            }
        }
    }
    for line in &mut lines {
        line.glyphs.sort_by(|p, q| p.x.total_cmp(&q.x));
        // Fake bold draws every glyph twice, slightly offset: keep one.
        line.glyphs
            .dedup_by(|b, a| a.text == b.text && (b.x - a.x).abs() < 0.15 * a.em);
    }
    lines
}

/// Text of a sequence of glyphs on one line. Spaces come from space glyphs,
/// or from a gap wider than `SPACE_GAP_EM` between two ASCII glyphs; never
/// from a gap next to a CJK character.
fn line_text(glyphs: &[Glyph]) -> String {
    let mut out = String::new();
    let mut prev: Option<&Glyph> = None;
    for g in glyphs {
        if g.is_space() {
            out.push(' ');
            continue;
        }
        if let Some(p) = prev {
            let ascii_both = p.last_char().is_some_and(|c| c.is_ascii_graphic())
                && g.first_char().is_some_and(|c| c.is_ascii_graphic());
            if ascii_both && g.x - p.right > SPACE_GAP_EM * g.em && !out.ends_with(' ') {
                out.push(' ');
            }
        }
        out.push_str(&g.text);
        prev = Some(g);
    }
    out
}

/// Text of one table cell whose outer edges are `left`/`right`.
fn cell_text(glyphs: Vec<Glyph>, left: f64, right: f64) -> String {
    let lines = group_lines(glyphs);
    let lines: Vec<Line> = lines
        .into_iter()
        .filter(|l| l.ink().next().is_some())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    // The cell's padding: the smallest distance from the left border to a
    // line's first glyph (a wrapped line starts at the padding), capped so
    // centred short lines do not make it huge.
    let em = lines.iter().map(Line::em).fold(0.0, f64::max);
    let pad = lines
        .iter()
        .map(|l| l.left() - left)
        .fold(f64::MAX, f64::min)
        .clamp(0.0, 1.5 * em);
    let limit = right - pad;

    let mut out = line_text(&lines[0].glyphs);
    for pair in lines.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let room = limit - prev.right();
        // The word processor broke the line if the next line's first
        // unbreakable unit would not have fitted in the room left (a small
        // slack for rounding of glyph widths).
        let wrapped = next.first_unit_width() > room - 0.1 * next.em();
        let sep = if !wrapped {
            "\n"
        } else {
            let ascii_both = prev.last_char().is_some_and(|c| c.is_ascii_alphanumeric())
                && next.first_char().is_some_and(|c| c.is_ascii_alphanumeric());
            // Latin words wrap at a space, which leaves room at the line
            // end; a value broken between characters fills the line.
            if ascii_both && room > prev.em() {
                " "
            } else {
                ""
            }
        };
        out.push_str(sep);
        out.push_str(&line_text(&next.glyphs));
    }
    out
}

/// The `text` grid: every visual line outside the tables is a row, and runs
/// separated by a gap wider than `RUN_GAP_EM` are separate cells.
fn text_grid(pages: &[Vec<Glyph>], limits: &ReadLimits) -> Grid {
    let mut grid = Grid::new("text");
    let mut row = 0u32;
    for glyphs in pages {
        for line in group_lines(glyphs.clone()) {
            let mut runs: Vec<Vec<Glyph>> = Vec::new();
            let mut last_ink_right: Option<f64> = None;
            for g in line.glyphs {
                if g.is_space() {
                    if let Some(run) = runs.last_mut() {
                        run.push(g);
                    }
                    continue;
                }
                let new_run = last_ink_right.is_none_or(|r| g.x - r > RUN_GAP_EM * g.em);
                last_ink_right = Some(g.right);
                if new_run {
                    runs.push(vec![g]);
                } else if let Some(run) = runs.last_mut() {
                    run.push(g);
                }
            }
            let mut col = 0u32;
            let mut any = false;
            for run in runs {
                if grid.cells.len() >= limits.max_cells {
                    return grid;
                }
                let text = clean_text(&line_text(&run));
                if !text.is_empty() {
                    grid.push(Cell::new(row, col, text));
                    col += 1;
                    any = true;
                }
            }
            if any {
                row += 1;
            }
        }
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of two 100-point cells, and `text` written from x = 70 in
    /// 6-point glyphs that touch: past the rule at x = 100 from its 6th.
    fn page(text: &str, estimated: bool) -> PageContent {
        let rule = |pos, a, b| Rule { pos, a, b };
        PageContent {
            glyphs: text
                .chars()
                .enumerate()
                .map(|(i, c)| Glyph {
                    x: 70.0 + 6.0 * i as f64,
                    right: 76.0 + 6.0 * i as f64,
                    baseline: 15.0,
                    em: 10.0,
                    text: c.to_string(),
                })
                .collect(),
            horizontal: vec![rule(0.0, 0.0, 200.0), rule(20.0, 0.0, 200.0)],
            vertical: vec![
                rule(0.0, 0.0, 20.0),
                rule(100.0, 0.0, 20.0),
                rule(200.0, 0.0, 20.0),
            ],
            estimated,
        }
    }

    fn texts(page: PageContent) -> Vec<String> {
        let grids = grids(&[("page 1".to_string(), page)], &ReadLimits::default());
        grids[0].cells.iter().map(|c| c.text.clone()).collect()
    }

    #[test]
    fn a_word_written_past_its_cells_rule_stays_in_its_cell() {
        assert_eq!(texts(page("chenxy@yj.gov.cn", false)), ["chenxy@yj.gov.cn"]);
        // OCR's glyph places are estimates over boxes cut at the rules.
        assert_eq!(
            texts(page("chenxy@yj.gov.cn", true)),
            ["chenx", "y@yj.gov.cn"]
        );
    }
}
