//! Finding the ruled table of a form page and its cells.
//!
//! 1. Adaptive threshold: a pixel is ink when it is darker than the mean of
//!    its neighbourhood by a margin (sliding box sums, O(pixels)).
//! 2. Line masks by morphological opening with long line kernels, done as
//!    run-length scans (vertical ones on the transposed page): a run of ink
//!    at least ≈ w/30 long along a row is a piece of horizontal ruling, at
//!    least ≈ h/40 along a column a piece of vertical ruling. Runs are
//!    measured on two neighbouring rows (columns) together, since a thin
//!    ruling turned by deskewing alternates between them, and single-pixel
//!    breaks are bridged. Vertical runs shorter than three kernels must
//!    stand clear of text (in cramped photos, strokes of characters in
//!    consecutive rows line up across the ruling between them). A vertical
//!    run only one table row tall counts when it runs unbroken from one
//!    horizontal ruling into the next with blank paper beside it (the
//!    separator inside a single row).
//! 3. Rulings are thickened by a pixel across, gaps along them are closed
//!    (≈ w/25 along rows, ≈ h/120 along columns: dropouts in fax rulings),
//!    a ruling that stops that short of a crossing ruling is extended to
//!    it, and vertical runs taller than 70 % of the page are dropped (fax
//!    streaks, paper and page edges).
//! 4. The table is the largest 8-connected component of the line mask that
//!    does not touch the image border (a photo's paper edge and a deskewed
//!    page's corners do) and spans at least a quarter of the width and a
//!    tenth of the height.
//! 5. Cells are the 4-connected components of the non-line area inside the
//!    table's bounding box (whose outline is added as a ruling); specks,
//!    slivers and non-rectangular leftovers are ignored. They are ordered
//!    by row (top edge within ≈ h/100) then by x, which gives `row` and
//!    `col`. Cell boxes are the components' bounding boxes (a cell that
//!    spans rows, or an L-shaped merge, gets its whole box).
//!
//! A page without a table (a fax cover sheet) gives no cells.

/// One table cell, in pixel coordinates of the page given to [`cells`];
/// `x1`, `y1` are exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
    /// Row number (0-based) after grouping cells by their top edge.
    pub row: usize,
    /// Position within the row, left to right (0-based).
    pub col: usize,
}

impl Cell {
    pub fn width(&self) -> u32 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> u32 {
        self.y1 - self.y0
    }
    /// Whether a point (e.g. a text box's centre) lies in the cell.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        x >= self.x0 as f32 && x < self.x1 as f32 && y >= self.y0 as f32 && y < self.y1 as f32
    }
}

/// Ink mask (1 = ink) by adaptive thresholding: darker than the local mean
/// (box of about 1/60 of the shorter side) by at least `MARGIN`.
pub fn binarize(gray: &[u8], w: usize, h: usize) -> Vec<u8> {
    const MARGIN: u32 = 15;
    let mut out = vec![0u8; w * h];
    if w == 0 || h == 0 || gray.len() < w * h {
        return out;
    }
    let r = (w.min(h) / 60).max(7);
    // Column sums over the rows y−r..=y+r, updated row by row.
    let mut col = vec![0u32; w];
    let (mut top, mut bot) = (0usize, 0usize); // rows [top, bot) are in `col`
    for y in 0..h {
        let (want_top, want_bot) = (y.saturating_sub(r), (y + r + 1).min(h));
        while bot < want_bot {
            for (c, &v) in col.iter_mut().zip(&gray[bot * w..(bot + 1) * w]) {
                *c += u32::from(v);
            }
            bot += 1;
        }
        while top < want_top {
            for (c, &v) in col.iter_mut().zip(&gray[top * w..(top + 1) * w]) {
                *c -= u32::from(v);
            }
            top += 1;
        }
        let rows = (bot - top) as u32;
        // Horizontal window over the column sums.
        let mut sum: u32 = col[..(r + 1).min(w)].iter().sum();
        let (mut lo, mut hi) = (0usize, (r + 1).min(w)); // columns [lo, hi)
        for x in 0..w {
            let (want_lo, want_hi) = (x.saturating_sub(r), (x + r + 1).min(w));
            while hi < want_hi {
                sum += col[hi];
                hi += 1;
            }
            while lo < want_lo {
                sum -= col[lo];
                lo += 1;
            }
            let n = rows * (hi - lo) as u32;
            let v = u32::from(gray[y * w + x]);
            // v < mean − MARGIN, in integers: v·n + MARGIN·n < sum
            if (v + MARGIN) * n < sum {
                out[y * w + x] = 1;
            }
        }
    }
    out
}

/// Calls `f(s, e)` for each run `[s, e)` of ink along a line (`len`
/// pixels from `start`, `step` apart), bridging breaks of up to `gap`
/// pixels.
fn runs(
    ink: &[u8],
    start: usize,
    step: usize,
    len: usize,
    gap: usize,
    mut f: impl FnMut(usize, usize),
) {
    let mut i = 0;
    while i < len {
        if ink[start + i * step] == 0 {
            i += 1;
            continue;
        }
        let s = i;
        let mut e = i + 1; // exclusive end of the last ink seen
        let mut j = i + 1;
        while j < len {
            if ink[start + j * step] != 0 {
                e = j + 1;
            } else if j - e >= gap {
                break;
            }
            j += 1;
        }
        f(s, e);
        i = e.max(j);
    }
}

/// Fills gaps of at most `gap` pixels between marked pixels along a line.
fn close_gaps(mask: &mut [u8], start: usize, step: usize, len: usize, gap: usize) {
    let mut last: Option<usize> = None;
    for i in 0..len {
        if mask[start + i * step] != 0 {
            if let Some(l) = last
                && i - l > 1
                && i - l - 1 <= gap
            {
                for k in l + 1..i {
                    mask[start + k * step] = 1;
                }
            }
            last = Some(i);
        }
    }
}

/// Grows set pixels by one row up and down.
fn thicken(mask: &mut [u8], w: usize, h: usize) {
    let src = mask.to_vec();
    for y in 0..h {
        let dst = &mut mask[y * w..(y + 1) * w];
        if y > 0 {
            for (d, &s) in dst.iter_mut().zip(&src[(y - 1) * w..y * w]) {
                *d |= s;
            }
        }
        if y + 1 < h {
            for (d, &s) in dst.iter_mut().zip(&src[(y + 1) * w..(y + 2) * w]) {
                *d |= s;
            }
        }
    }
}

/// `src` (`w` wide, `h` high) turned so that its columns become rows.
fn transpose(src: &[u8], w: usize, h: usize) -> Vec<u8> {
    const B: usize = 32;
    let mut out = vec![0u8; w * h];
    for by in (0..h).step_by(B) {
        for bx in (0..w).step_by(B) {
            for y in by..(by + B).min(h) {
                for x in bx..(bx + B).min(w) {
                    out[x * h + y] = src[y * w + x];
                }
            }
        }
    }
    out
}

/// Line pixels along rows of `ink` (`w` wide, `h` rows): runs of two
/// neighbouring rows' ink together at least `min_long` long (thin rulings
/// turned by deskewing, or stepped by the fax, alternate between rows);
/// with `across` (the ruling mask across these lines, same layout), also
/// short runs from `min_short` that run unbroken from one crossing ruling
/// into another with blank paper beside them.
fn rulings(
    ink: &[u8],
    w: usize,
    h: usize,
    min_long: usize,
    across: Option<(&[u8], usize)>,
) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    let mut pair = vec![0u8; w];
    // Ink 3–5 lines either side of a run (rows above and below, in this
    // layout), not counting crossing rulings: at most a fifth of those
    // pixels on each side.
    let blank_beside = |y: usize, s: usize, e: usize, cross: &[u8]| -> bool {
        if y < 5 || y + 5 >= h || e < s + 8 {
            return false;
        }
        let span = s + 3..e - 3;
        let n = span.len();
        let side = |dy: [isize; 3]| -> usize {
            dy.iter()
                .map(|&d| {
                    let row = (y as isize + d) as usize * w;
                    span.clone()
                        .filter(|&x| ink[row + x] != 0 && cross[row + x] == 0)
                        .count()
                })
                .sum()
        };
        side([-5, -4, -3]) * 5 <= n * 3 && side([3, 4, 5]) * 5 <= n * 3
    };
    for y in 0..h {
        let row = &ink[y * w..(y + 1) * w];
        if y + 1 < h {
            let next = &ink[(y + 1) * w..(y + 2) * w];
            for ((p, &a), &b) in pair.iter_mut().zip(row).zip(next) {
                *p = a | b;
            }
        } else {
            pair.copy_from_slice(row);
        }
        let dst = &mut out[y * w..(y + 1) * w];
        runs(&pair, 0, 1, w, 1, |s, e| {
            let long = e - s >= 3 * min_long
                || (e - s >= min_long
                    && across.is_none_or(|(cross, _)| blank_beside(y, s, e, cross)));
            if long {
                dst[s..e].fill(1);
            }
        });
        if let Some((cross, min_short)) = across {
            runs(row, 0, 1, w, 0, |s, e| {
                let len = e - s;
                if len >= min_short
                    && len < min_long
                    && cross[y * w + s] != 0
                    && cross[y * w + e - 1] != 0
                    && blank_beside(y, s, e, cross)
                {
                    dst[s..e].fill(1);
                }
            });
        }
    }
    out
}

/// The horizontal and vertical line masks of a page (1 = line).
///
/// Vertical work is done on the transposed page, so every scan runs along
/// memory rows.
pub fn line_masks(gray: &[u8], width: u32, height: u32) -> (Vec<u8>, Vec<u8>) {
    let (w, h) = (width as usize, height as usize);
    if w < 16 || h < 16 || gray.len() < w * h {
        return (vec![0; w * h], vec![0; w * h]);
    }
    let ink = binarize(gray, w, h);
    let min_h = (w / 30).max(15);
    let min_v = (h / 40).max(15);
    // Horizontal rulings: long runs only (an opening with a w/30 kernel).
    // Thicken by one pixel across the line, so that pieces of a broken
    // ruling that step by a pixel share a row, then close small gaps along
    // the lines (broken fax rulings).
    let mut hor = rulings(&ink, w, h, min_h, None);
    thicken(&mut hor, w, h);
    let gap_h = (w / 25).max(3);
    for y in 0..h {
        close_gaps(&mut hor, y * w, 1, w, gap_h);
    }
    // Vertical rulings (on the transposed page): long runs (h/40) that
    // stand clear of text unless they are very long (in a cramped photo,
    // strokes of characters in consecutive rows line up across the ruling
    // between them), and short ones, a row tall, that join a horizontal
    // ruling at both ends with blank paper on either side (a text stroke
    // touching both rulings has the rest of its character beside it).
    let ink_t = transpose(&ink, w, h);
    let mut hor_t = transpose(&hor, w, h);
    let min_short = (h / 120).max(10);
    let mut ver_t = rulings(&ink_t, h, w, min_v, Some((&hor_t, min_short)));
    drop(ink_t);
    thicken(&mut ver_t, h, w);
    let gap_v = (h / 120).max(3);
    let too_tall = h * 7 / 10;
    for x in 0..w {
        let line = &mut ver_t[x * h..(x + 1) * h];
        close_gaps(line, 0, 1, h, gap_v);
        // Drop vertical runs taller than 70 % of the page (fax streaks
        // that survived preparation, paper and page edges).
        let mut y = 0;
        while y < h {
            if line[y] == 0 {
                y += 1;
                continue;
            }
            let s = y;
            while y < h && line[y] != 0 {
                y += 1;
            }
            if y - s > too_tall {
                line[s..y].fill(0);
            }
        }
    }
    // A ruling that stops a little short of a crossing one (a fax dropout
    // at the joint) is extended to meet it.
    let ver = transpose(&ver_t, h, w);
    for y in 0..h {
        extend_to(&mut hor, &ver, y * w, 1, w, gap_h);
    }
    hor_t = transpose(&hor, w, h);
    for x in 0..w {
        extend_to(&mut ver_t, &hor_t, x * h, 1, h, gap_v);
    }
    (hor, transpose(&ver_t, h, w))
}

/// Along one line of `own` (a row of the horizontal mask, or a column of
/// the vertical one), fills gaps of at most `gap` pixels between an end of
/// `own` and a pixel of `other`.
fn extend_to(own: &mut [u8], other: &[u8], start: usize, step: usize, len: usize, gap: usize) {
    // last set pixel along the line and whether it was `own`
    let mut last: Option<(usize, bool)> = None;
    for i in 0..len {
        let p = start + i * step;
        let (mine, theirs) = (own[p] != 0, other[p] != 0);
        if !mine && !theirs {
            continue;
        }
        // own–own and own–other gaps, never other–other
        if let Some((l, was_mine)) = last
            && i - l > 1
            && i - l - 1 <= gap
            && (was_mine || mine)
        {
            for k in l + 1..i {
                own[start + k * step] = 1;
            }
        }
        last = Some((i, mine));
    }
}

/// A box in pixels, `(x0, y0, x1, y1)` with inclusive ends.
pub type TableBox = (usize, usize, usize, usize);

#[derive(Debug, Clone, Copy)]
struct Component {
    pixels: usize,
    x0: usize,
    y0: usize,
    x1: usize, // inclusive
    y1: usize, // inclusive
}

/// Connected components of the pixels of `mask` equal to `want_value`
/// (8- or 4-connected) inside a window, by labelling runs row by row and
/// joining overlapping runs of neighbouring rows (union–find).
fn components(
    mask: &[u8],
    w: usize,
    win: (usize, usize, usize, usize), // x0, y0, x1, y1 inclusive
    eight: bool,
    want_value: u8,
) -> Vec<Component> {
    let (wx0, wy0, wx1, wy1) = win;
    // runs: (y, x0, x1 exclusive)
    let mut runs_all: Vec<(usize, usize, usize)> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut prev: std::ops::Range<usize> = 0..0; // indices of the previous row's runs
    for y in wy0..=wy1 {
        let row = &mask[y * w..(y + 1) * w];
        let start = runs_all.len();
        let mut x = wx0;
        while x <= wx1 {
            if row[x] != want_value {
                x += 1;
                continue;
            }
            let s = x;
            while x <= wx1 && row[x] == want_value {
                x += 1;
            }
            runs_all.push((y, s, x));
            parent.push(runs_all.len() - 1);
        }
        let cur = start..runs_all.len();
        // join with overlapping runs of the previous row (two pointers)
        let reach = usize::from(eight);
        let mut j = prev.start;
        for i in cur.clone() {
            let (_, s, e) = runs_all[i];
            while j < prev.end && runs_all[j].2 + reach <= s {
                j += 1;
            }
            let mut k = j;
            while k < prev.end && runs_all[k].1 < e + reach {
                let (a, b) = (find(&mut parent, i), find(&mut parent, k));
                if a != b {
                    parent[a.max(b)] = a.min(b);
                }
                k += 1;
            }
        }
        prev = cur;
    }
    // gather per root
    let mut index = vec![usize::MAX; runs_all.len()];
    let mut out: Vec<Component> = Vec::new();
    for (i, &(y, s, e)) in runs_all.iter().enumerate() {
        let r = find(&mut parent, i);
        if index[r] == usize::MAX {
            index[r] = out.len();
            out.push(Component {
                pixels: 0,
                x0: s,
                y0: y,
                x1: e - 1,
                y1: y,
            });
        }
        let c = &mut out[index[r]];
        c.pixels += e - s;
        c.x0 = c.x0.min(s);
        c.x1 = c.x1.max(e - 1);
        c.y0 = c.y0.min(y);
        c.y1 = c.y1.max(y);
    }
    out
}

/// The table's bounding box (inclusive) and the line mask, if the page
/// has a table.
pub fn find_table(gray: &[u8], width: u32, height: u32) -> Option<(TableBox, Vec<u8>)> {
    let (w, h) = (width as usize, height as usize);
    if w < 64 || h < 64 || gray.len() < w * h {
        return None;
    }
    let (hor, ver) = line_masks(gray, width, height);
    let lines: Vec<u8> = hor.iter().zip(&ver).map(|(&a, &b)| a | b).collect();
    let comps = components(&lines, w, (0, 0, w - 1, h - 1), true, 1);
    let margin = 2;
    let best = comps
        .iter()
        .filter(|c| c.x0 >= margin && c.y0 >= margin && c.x1 + margin < w && c.y1 + margin < h)
        .max_by_key(|c| c.pixels)?;
    // A table spans a good part of the page in both directions.
    let (bw, bh) = (best.x1 - best.x0 + 1, best.y1 - best.y0 + 1);
    if bw < w / 4 || bh < h / 10 {
        return None;
    }
    Some(((best.x0, best.y0, best.x1, best.y1), lines))
}

/// The cells of the page's table, ordered by row then x; empty when the
/// page has no table.
pub fn cells(gray: &[u8], width: u32, height: u32) -> Vec<Cell> {
    let w = width as usize;
    let Some(((tx0, ty0, tx1, ty1), mut lines)) = find_table(gray, width, height) else {
        return Vec::new();
    };
    // The box's own outline closes cells whose outer ruling is broken.
    for x in tx0..=tx1 {
        lines[ty0 * w + x] = 1;
        lines[ty1 * w + x] = 1;
    }
    for y in ty0..=ty1 {
        lines[y * w + tx0] = 1;
        lines[y * w + tx1] = 1;
    }
    let free = components(&lines, w, (tx0, ty0, tx1, ty1), false, 0);
    let (tw, th) = (tx1 - tx0 + 1, ty1 - ty0 + 1);
    // Specks and slivers: too thin to hold a line of text.
    let min_w = (width as usize / 100).max(8);
    let min_h = (height as usize / 150).max(8);
    let mut boxes: Vec<Component> = free
        .into_iter()
        .filter(|c| {
            let (cw, ch) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
            cw >= min_w
                && ch >= min_h
                // mostly a rectangle (not a thin diagonal sliver)
                && c.pixels * 2 >= cw * ch
                // not the whole box (a table with no inner rulings)
                && !(cw * 10 >= tw * 9 && ch * 10 >= th * 9)
        })
        .collect();
    if boxes.is_empty() {
        return Vec::new();
    }
    order(&mut boxes, (height as usize / 100).max(6))
}

/// Sorts boxes into rows by top edge (within `tol`) then by x, numbering
/// rows and columns.
fn order(boxes: &mut [Component], tol: usize) -> Vec<Cell> {
    boxes.sort_by_key(|c| (c.y0, c.x0));
    let mut rows: Vec<Vec<Component>> = Vec::new();
    let mut row_top = usize::MAX;
    for c in boxes.iter() {
        if rows.is_empty() || c.y0 > row_top + tol {
            rows.push(Vec::new());
            row_top = c.y0;
        }
        rows.last_mut().expect("a row was pushed").push(*c);
    }
    let mut out = Vec::new();
    for (r, row) in rows.iter_mut().enumerate() {
        row.sort_by_key(|c| c.x0);
        for (k, c) in row.iter().enumerate() {
            out.push(Cell {
                x0: c.x0 as u32,
                y0: c.y0 as u32,
                x1: c.x1 as u32 + 1,
                y1: c.y1 as u32 + 1,
                row: r,
                col: k,
            });
        }
    }
    out
}

/// Whether the page has a ruled table (at least one cell found).
pub fn has_table(gray: &[u8], width: u32, height: u32) -> bool {
    !cells(gray, width, height).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(g: &mut [u8], w: usize, x0: usize, y0: usize, x1: usize, y1: usize, v: u8) {
        for y in y0..y1 {
            for x in x0..x1 {
                g[y * w + x] = v;
            }
        }
    }

    /// A form-like grid: 12 rows; rows alternate 4 and 2 cells; one
    /// merged cell spanning two rows on the left; text blobs in cells;
    /// a full-height fax streak and a broken ruling.
    fn grid_page() -> (Vec<u8>, usize, usize, usize) {
        let (mut g, w, h, expected) = grid_page_without_streak();
        // fax streak: full height, touching the table
        rect(&mut g, w, 1300, 0, 1302, h, 0);
        (g, w, h, expected)
    }

    fn grid_page_without_streak() -> (Vec<u8>, usize, usize, usize) {
        let (w, h) = (1600, 2200);
        let mut g = vec![255u8; w * h];
        let (x0, x1, y0) = (150, 1450, 300);
        let row_h = 110;
        let rows = 12;
        let y1 = y0 + rows * row_h;
        let mut expected = 0;
        for r in 0..=rows {
            rect(&mut g, w, x0, y0 + r * row_h, x1 + 3, y0 + r * row_h + 3, 0);
        }
        rect(&mut g, w, x0, y0, x0 + 3, y1 + 3, 0);
        rect(&mut g, w, x1, y0, x1 + 3, y1 + 3, 0);
        for r in 0..rows {
            let top = y0 + r * row_h;
            let cols: &[usize] = if r % 2 == 0 {
                &[400, 800, 1100]
            } else {
                &[700]
            };
            for &c in cols {
                rect(&mut g, w, c, top, c + 3, top + row_h + 3, 0);
            }
            expected += cols.len() + 1;
            // text blobs
            let mut x = x0 + 20;
            while x + 40 < x1 {
                if !cols.iter().any(|&c| x + 30 > c && x < c + 10) && (x / 40) % 4 != 0 {
                    rect(&mut g, w, x, top + 35, x + 26, top + 65, 30);
                }
                x += 40;
            }
        }
        // merge: remove the ruling between rows 0 and 1 in the first cell
        rect(&mut g, w, x0 + 3, y0 + row_h, 400, y0 + row_h + 3, 255);
        expected -= 1;
        // broken ruling: small gaps in a horizontal line
        for gx in [500, 900, 1200] {
            rect(
                &mut g,
                w,
                gx,
                y0 + 5 * row_h,
                gx + 4,
                y0 + 5 * row_h + 3,
                255,
            );
        }
        (g, w, h, expected)
    }

    #[test]
    fn grid_cells_are_found() {
        let (g, w, h, expected) = grid_page();
        let cells = cells(&g, w as u32, h as u32);
        assert_eq!(cells.len(), expected, "{cells:#?}");
        // first cell is the merged one, two rows tall
        assert_eq!((cells[0].row, cells[0].col), (0, 0));
        assert!(cells[0].height() > 200);
        // row/col numbering is consistent with positions
        for pair in cells.windows(2) {
            if pair[0].row == pair[1].row {
                assert!(pair[0].x0 < pair[1].x0);
                assert_eq!(pair[1].col, pair[0].col + 1);
            } else {
                assert_eq!(pair[1].row, pair[0].row + 1);
                assert_eq!(pair[1].col, 0);
            }
        }
    }

    #[test]
    fn skewed_fax_with_a_streak_is_straightened_and_read() {
        use super::super::decode::{Picture, Pixels};
        use super::super::prepare::{prepare, rotate};
        let (g, w, h, expected) = grid_page_without_streak();
        // the page went through the fax skewed by 1.3°; the scanner's
        // streak is vertical in the received picture
        let mut skewed = rotate(&g, w, h, -1.3);
        rect(&mut skewed, w, 1300, 0, 1302, h, 0);
        let prep = prepare(&Picture {
            width: w as u32,
            height: h as u32,
            dpi: Some((204.0, 196.0)),
            pixels: Pixels::Gray(skewed),
        });
        assert!(
            (prep.skew_degrees - 1.3).abs() <= 0.2,
            "skew {}",
            prep.skew_degrees
        );
        let cells = cells(&prep.gray, w as u32, h as u32);
        assert_eq!(cells.len(), expected);
    }

    #[test]
    fn cover_sheet_has_no_table() {
        // text lines and a short underline, no ruled grid
        let (w, h) = (1600, 2200);
        let mut g = vec![255u8; w * h];
        for line in 0..20 {
            let y = 200 + line * 60;
            let mut x = 150;
            while x < 1200 {
                rect(&mut g, w, x, y, x + 26, y + 30, 0);
                x += 36;
            }
        }
        rect(&mut g, w, 150, 1500, 900, 1503, 0);
        assert!(!has_table(&g, w as u32, h as u32));
        assert!(cells(&vec![255u8; w * h], w as u32, h as u32).is_empty());
    }

    #[test]
    fn runs_bridge_single_pixel_breaks() {
        let ink = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1];
        let mut found = Vec::new();
        runs(&ink, 0, 1, 10, 1, |s, e| found.push((s, e)));
        assert_eq!(found, vec![(1, 7), (9, 10)]);
        let mut strict = Vec::new();
        runs(&ink, 0, 1, 10, 0, |s, e| strict.push((s, e)));
        assert_eq!(strict, vec![(1, 3), (4, 7), (9, 10)]);
    }
}
