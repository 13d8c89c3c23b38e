//! Page preparation for OCR: one grey channel, even lighting, level lines.
//!
//! * Grey: a grey page as it is; a colour page by its RED channel, in which
//!   a red seal's ink is nearly as bright as the paper and drops out.
//! * Flat field (colour scans and photos): the page is divided by an
//!   estimate of the paper's brightness, so shadows and uneven light become
//!   white paper. The estimate: a high percentile of each block of about
//!   1/200 of the longer side, a 5×5-block closing (max then min filter,
//!   ≈ 40 px at 200 dpi, wider than strokes and rulings), two box blurs,
//!   and bilinear interpolation back to full size.
//! * Streaks: thin dark lines running through ≥ 85 % of the page's height
//!   (a fax scanner's dirty sensor cell) are painted over with the paper
//!   beside them, before deskewing turns them into slanted lines that
//!   look like table rulings.
//! * Deskew: the angle in ±5° that makes the horizontal projection profile
//!   of the ink the sharpest (largest sum of squared row counts, i.e. the
//!   largest variance), searched in 0.25° steps then 0.05° steps around
//!   the best, on a binarised copy downscaled to ≤ 1200 px (each ink pixel
//!   split linearly between two profile bins, so 0° gets no aliasing
//!   bonus); the full-resolution grey is then rotated by bilinear
//!   interpolation with white fill, keeping its size.
//!
//! Nothing is upscaled: a 1-bit fax stays at its resolution.

use super::decode::{Picture, Pixels};

/// A page ready for line finding and OCR.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// One byte per pixel, 0 = black, 255 = white, `width × height`.
    pub gray: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Whether the source was a colour picture (red channel taken and
    /// flat-fielded).
    pub colour: bool,
    /// For a colour page, the red ink alone (a seal's) as a page: 0 where
    /// the source pixel is red, 255 elsewhere, turned like `gray` (so the
    /// corners a turn uncovers are paper); lets OCR tell a seal's
    /// characters from the form's black ones.
    pub red: Option<Vec<u8>>,
    /// The skew found in the source, in degrees: positive when text lines
    /// descend to the right (a clockwise turn on screen). `gray` has been
    /// turned back by this angle.
    pub skew_degrees: f32,
}

/// Largest skew searched, degrees.
const MAX_SKEW: f32 = 5.0;
/// Skews smaller than this are left alone (no resampling).
const MIN_ROTATION: f32 = 0.04;

pub fn prepare(p: &Picture) -> Prepared {
    let (w, h) = (p.width as usize, p.height as usize);
    let (mut gray, colour) = match &p.pixels {
        Pixels::Gray(g) => (g.clone(), false),
        Pixels::Rgb(c) => (c.chunks_exact(3).map(|px| px[0]).collect::<Vec<u8>>(), true),
    };
    // A picture whose buffer disagrees with its size is padded (white) or
    // cut, rather than read out of bounds.
    gray.resize(w * h, 255);
    let mut red = match &p.pixels {
        Pixels::Rgb(c) if c.len() >= w * h * 3 => Some(
            c.chunks_exact(3)
                .take(w * h)
                .map(|px| {
                    if super::seal::is_red(px[0], px[1], px[2]) {
                        0
                    } else {
                        255
                    }
                })
                .collect::<Vec<u8>>(),
        ),
        _ => None,
    };
    if colour {
        flat_field(&mut gray, w, h);
    }
    remove_streaks(&mut gray, w, h);
    let skew = estimate_skew(&gray, w, h);
    if skew.abs() >= MIN_ROTATION {
        gray = rotate(&gray, w, h, skew);
        red = red.map(|r| rotate(&r, w, h, skew));
    }
    Prepared {
        gray,
        width: p.width,
        height: p.height,
        colour,
        red,
        skew_degrees: skew,
    }
}

// ---------------------------------------------------------------------------
// Flat field

/// Divides the page by its estimated paper brightness (in place).
pub fn flat_field(gray: &mut [u8], w: usize, h: usize) {
    if w < 16 || h < 16 || gray.len() < w * h {
        return;
    }
    // Block size: about 1/200 of the longer side, at least 4 px.
    let b = (w.max(h) / 200).max(4);
    let (sw, sh) = (w.div_ceil(b), h.div_ceil(b));
    // Each block's bright level: a high percentile, not the maximum, so a
    // speck of JPEG noise does not count as paper.
    let mut small = vec![0u8; sw * sh];
    let mut vals: Vec<u8> = Vec::with_capacity(b * b);
    for by in 0..sh {
        for bx in 0..sw {
            vals.clear();
            for y in by * b..((by + 1) * b).min(h) {
                vals.extend_from_slice(&gray[y * w + bx * b..y * w + ((bx + 1) * b).min(w)]);
            }
            let k = vals.len() * 9 / 10;
            let k = k.min(vals.len() - 1);
            let (_, v, _) = vals.select_nth_unstable(k);
            small[by * sw + bx] = *v;
        }
    }
    // Closing over ≈5 blocks (≈ 40 px at 200 dpi): text strokes and table
    // lines vanish, the paper's gradient stays.
    let r = 2;
    let dil = min_max_filter(&small, sw, sh, r, true);
    let clo = min_max_filter(&dil, sw, sh, r, false);
    let blurred = box_blur(&box_blur(&clo, sw, sh, 2), sw, sh, 2);

    // Bilinear back to full size, dividing as we go.
    let scale = 1.0 / b as f32;
    let mut xs: Vec<(usize, usize, f32)> = Vec::with_capacity(w);
    for x in 0..w {
        let fx = ((x as f32 + 0.5) * scale - 0.5).clamp(0.0, (sw - 1) as f32);
        let x0 = fx.floor() as usize;
        xs.push((x0, (x0 + 1).min(sw - 1), fx - x0 as f32));
    }
    for y in 0..h {
        let fy = ((y as f32 + 0.5) * scale - 0.5).clamp(0.0, (sh - 1) as f32);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(sh - 1);
        let ty = fy - y0 as f32;
        let r0 = &blurred[y0 * sw..(y0 + 1) * sw];
        let r1 = &blurred[y1 * sw..(y1 + 1) * sw];
        let row = &mut gray[y * w..(y + 1) * w];
        for (x, px) in row.iter_mut().enumerate() {
            let (x0, x1, tx) = xs[x];
            let top = r0[x0] as f32 * (1.0 - tx) + r0[x1] as f32 * tx;
            let bot = r1[x0] as f32 * (1.0 - tx) + r1[x1] as f32 * tx;
            let bg = (top * (1.0 - ty) + bot * ty).max(16.0);
            *px = (*px as f32 * 255.0 / bg).round().min(255.0) as u8;
        }
    }
}

/// Separable square max (`max = true`) or min filter of radius `r`.
fn min_max_filter(src: &[u8], w: usize, h: usize, r: usize, max: bool) -> Vec<u8> {
    let pick = |a: u8, b: u8| if max { a.max(b) } else { a.min(b) };
    let mut tmp = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(w - 1));
            let mut v = src[y * w + lo];
            for xx in lo + 1..=hi {
                v = pick(v, src[y * w + xx]);
            }
            tmp[y * w + x] = v;
        }
    }
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(h - 1));
        for x in 0..w {
            let mut v = tmp[lo * w + x];
            for yy in lo + 1..=hi {
                v = pick(v, tmp[yy * w + x]);
            }
            out[y * w + x] = v;
        }
    }
    out
}

/// Separable box blur of radius `r` with clamped edges.
fn box_blur(src: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let mut tmp = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(w - 1));
            let s: u32 = src[y * w + lo..=y * w + hi]
                .iter()
                .map(|&v| u32::from(v))
                .sum();
            tmp[y * w + x] = (s / (hi - lo + 1) as u32) as u8;
        }
    }
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(h - 1));
        for x in 0..w {
            let s: u32 = (lo..=hi).map(|yy| u32::from(tmp[yy * w + x])).sum();
            out[y * w + x] = (s / (hi - lo + 1) as u32) as u8;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Streaks

/// Half-width of the window a streak may wander in, pixels.
const STREAK_REACH: usize = 2;
/// Widest band painted over, pixels.
const MAX_STREAK_BAND: usize = 10;

/// Paints over thin vertical dark streaks (a fax scanner's dirty sensor
/// cell): a streak is a band of columns in which almost every row (85 %)
/// has a dark pixel within ±2 px, with light columns on both sides. The
/// band is painted, row by row, with the lighter of its two flanking
/// pixels, so ink crossing the streak (dark on both sides) stays. Returns
/// the number of columns painted over.
pub fn remove_streaks(gray: &mut [u8], w: usize, h: usize) -> usize {
    let k = STREAK_REACH;
    if w < 8 * k + MAX_STREAK_BAND || h < 32 || gray.len() < w * h {
        return 0;
    }
    // Dark pixels per column, and rows with a dark pixel within ±k.
    let mut dark = vec![0u32; w];
    let mut covered = vec![0u32; w];
    let mut near = vec![0u8; w];
    for row in gray.chunks_exact(w).take(h) {
        near.iter_mut().for_each(|v| *v = 0);
        for (x, &v) in row.iter().enumerate() {
            if v < 128 {
                dark[x] += 1;
                for n in &mut near[x.saturating_sub(k)..(x + k + 1).min(w)] {
                    *n = 1;
                }
            }
        }
        for (c, &n) in covered.iter_mut().zip(&near) {
            *c += u32::from(n);
        }
    }
    let through = |x: usize| covered[x] as usize * 100 >= h * 85;
    let light = |x: usize| (dark[x] as usize) * 10 < h * 3;
    let mut removed = 0;
    let mut x = 0;
    while x < w {
        if !through(x) {
            x += 1;
            continue;
        }
        let s = x;
        while x < w && through(x) {
            x += 1;
        }
        // Columns s..x see the streak within ±k; the streak's own columns
        // are those of s−k..x+k clearly darker than the columns beyond.
        let (lo, hi) = (s.saturating_sub(k), (x + k).min(w));
        let mut beyond: Vec<u32> = dark[lo.saturating_sub(6)..lo]
            .iter()
            .chain(&dark[hi..(hi + 6).min(w)])
            .copied()
            .collect();
        beyond.sort_unstable();
        let base = beyond.get(beyond.len() / 2).copied().unwrap_or(0);
        let min_dark = (2 * base).max((h as u32 * 3) / 100);
        let (mut bs, mut be) = (lo, hi);
        while bs < be && dark[bs] < min_dark {
            bs += 1;
        }
        while be > bs && dark[be - 1] < min_dark {
            be -= 1;
        }
        if bs == be || be - bs > MAX_STREAK_BAND || bs < 2 || be + 2 > w {
            continue;
        }
        let (l, r) = (bs - 1, be);
        if !(light(l) && light(r) && light(l - 1) && light(r + 1)) {
            continue;
        }
        for y in 0..h {
            let v = gray[y * w + l].max(gray[y * w + r]);
            gray[y * w + bs..y * w + be].fill(v);
        }
        removed += be - bs;
    }
    removed
}

// ---------------------------------------------------------------------------
// Deskew

/// The page's skew in degrees (positive: lines descend to the right).
pub fn estimate_skew(gray: &[u8], w: usize, h: usize) -> f32 {
    if gray.len() < w * h {
        return 0.0;
    }
    // Downscale by block averaging so the longer side is ≤ 1200 px.
    let f = w.max(h).div_ceil(1200).max(1);
    let (sw, sh) = (w / f, h / f);
    if sw < 32 || sh < 32 {
        return 0.0;
    }
    let mut small = vec![0u8; sw * sh];
    let area = (f * f) as u32;
    for sy in 0..sh {
        for sx in 0..sw {
            let mut s = 0u32;
            for y in sy * f..(sy + 1) * f {
                for &v in &gray[y * w + sx * f..y * w + (sx + 1) * f] {
                    s += u32::from(v);
                }
            }
            small[sy * sw + sx] = (s / area) as u8;
        }
    }
    let ink = super::table::binarize(&small, sw, sh);
    // Ink points relative to the centre.
    let (cx, cy) = (sw as f32 / 2.0, sh as f32 / 2.0);
    let mut pts: Vec<(f32, f32)> = Vec::new();
    for y in 0..sh {
        for x in 0..sw {
            if ink[y * sw + x] != 0 {
                pts.push((x as f32 - cx, y as f32 - cy));
            }
        }
    }
    if pts.len() < 200 {
        return 0.0;
    }
    // Keep the work bounded on very inky pages.
    if pts.len() > 400_000 {
        let step = pts.len().div_ceil(400_000);
        pts = pts.into_iter().step_by(step).collect();
    }
    // Profile bins one downscaled pixel high. Each point is split
    // linearly between the two nearest bins: plain rounding favours 0°,
    // where every row of pixels falls into exactly one bin.
    let half = ((sw * sw + sh * sh) as f32).sqrt() / 2.0 + 2.0;
    let nbins = (2.0 * half) as usize + 3;
    let mut bins = vec![0f32; nbins];
    let mut score = |deg: f32| -> f64 {
        bins.iter_mut().for_each(|b| *b = 0.0);
        let (s, c) = deg.to_radians().sin_cos();
        for &(x, y) in &pts {
            let r = y * c - x * s + half;
            let i = r as usize;
            let t = r - i as f32;
            if i + 1 < nbins {
                bins[i] += 1.0 - t;
                bins[i + 1] += t;
            }
        }
        bins.iter().map(|&b| f64::from(b) * f64::from(b)).sum()
    };
    let search = |from: f32, to: f32, step: f32, score: &mut dyn FnMut(f32) -> f64| -> f32 {
        let n = ((to - from) / step).round() as i32;
        let mut best = (f64::MIN, 0.0f32);
        for i in 0..=n {
            let a = from + i as f32 * step;
            let s = score(a);
            // Ties go to the smaller angle.
            if s > best.0 || (s == best.0 && a.abs() < best.1.abs()) {
                best = (s, a);
            }
        }
        best.1
    };
    let coarse = search(-MAX_SKEW, MAX_SKEW, 0.25, &mut score);
    let fine = search(coarse - 0.25, coarse + 0.25, 0.05, &mut score);
    // Round to the step to avoid printing float noise.
    (fine * 100.0).round() / 100.0
}

/// Turns the page back by `skew` degrees (bilinear, white outside), same
/// size, about the centre.
pub fn rotate(gray: &[u8], w: usize, h: usize, skew: f32) -> Vec<u8> {
    if gray.len() < w * h || w == 0 || h == 0 {
        return gray.to_vec();
    }
    let (s, c) = skew.to_radians().sin_cos();
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let mut out = vec![255u8; w * h];
    let (wf, hf) = (w as f32 - 1.0, h as f32 - 1.0);
    for v in 0..h {
        let dv = v as f32 - cy;
        // Source position of output pixel (u, v): the output turned by +skew.
        let mut x = cx - cx * c - dv * s;
        let mut y = cy - cx * s + dv * c;
        let row = &mut out[v * w..(v + 1) * w];
        for px in row.iter_mut() {
            if x >= 0.0 && y >= 0.0 && x <= wf && y <= hf {
                let (x0, y0) = (x as usize, y as usize);
                let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
                let (tx, ty) = (x - x0 as f32, y - y0 as f32);
                let p = |xx: usize, yy: usize| gray[yy * w + xx] as f32;
                let top = p(x0, y0) + (p(x1, y0) - p(x0, y0)) * tx;
                let bot = p(x0, y1) + (p(x1, y1) - p(x0, y1)) * tx;
                *px = (top + (bot - top) * ty + 0.5) as u8;
            }
            x += c;
            y += s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic form page: ruled table and rows of "text" blobs.
    fn page(w: usize, h: usize) -> Vec<u8> {
        let mut g = vec![255u8; w * h];
        let mut rect = |x0: usize, y0: usize, x1: usize, y1: usize| {
            for y in y0..y1 {
                for x in x0..x1 {
                    g[y * w + x] = 0;
                }
            }
        };
        // table rows every 80 px, columns at fixed places
        for i in 0..=15 {
            let y = 200 + i * 80;
            rect(150, y, w - 150, y + 3);
        }
        for &x in &[150, 450, 900, w - 153] {
            rect(x, 200, x + 3, 200 + 15 * 80 + 3);
        }
        // text: blobs in each row
        for i in 0..15 {
            let y = 200 + i * 80 + 25;
            let mut x = 170;
            while x + 30 < w - 170 {
                if (x / 37 + i) % 5 != 0 {
                    rect(x, y, x + 24, y + 28);
                }
                x += 37;
            }
        }
        g
    }

    #[test]
    fn skew_is_recovered() {
        let (w, h) = (1400, 1800);
        let g = page(w, h);
        for &angle in &[1.7f32, -2.35, 0.6, -4.1] {
            // Make a page skewed by `angle`: turning "back" by −angle
            // turns it forward by angle.
            let skewed = rotate(&g, w, h, -angle);
            let found = estimate_skew(&skewed, w, h);
            assert!((found - angle).abs() <= 0.2, "angle {angle}: found {found}");
            // And the found angle straightens it again.
            let straight = rotate(&skewed, w, h, found);
            let again = estimate_skew(&straight, w, h);
            assert!(again.abs() <= 0.2, "after deskew {again}");
        }
        assert_eq!(estimate_skew(&g, w, h), 0.0);
    }

    #[test]
    fn a_fax_streak_is_painted_over() {
        let (w, h) = (300, 400);
        let mut g = vec![255u8; w * h];
        // streak at x = 100..102 over the full height, broken in places
        for y in 0..h {
            if y % 50 != 0 {
                g[y * w + 100] = 0;
                g[y * w + 101] = 0;
            }
        }
        // a horizontal stroke crossing it, and a table-height vertical line
        for x in 80..120 {
            g[200 * w + x] = 0;
        }
        for y in 100..300 {
            g[y * w + 200] = 0;
        }
        assert_eq!(remove_streaks(&mut g, w, h), 2);
        assert_eq!(g[10 * w + 100], 255);
        assert_eq!(g[200 * w + 100], 0);
        assert_eq!(g[150 * w + 200], 0);
    }

    #[test]
    fn flat_field_whitens_a_shadow() {
        let (w, h) = (400, 300);
        // paper getting darker to the right (255 → 135), ink at 1/3 of it
        let mut g: Vec<u8> = (0..w * h)
            .map(|i| (255 - (i % w) * 120 / w) as u8)
            .collect();
        for y in 100..110 {
            for x in 50..350 {
                g[y * w + x] /= 3;
            }
        }
        flat_field(&mut g, w, h);
        assert!(g[20 * w + 380] > 235, "shadowed paper {}", g[20 * w + 380]);
        assert!(g[105 * w + 340] < 120, "ink {}", g[105 * w + 340]);
    }

    #[test]
    fn red_channel_drops_red_ink() {
        // white page, black square, red square
        let (w, h) = (64, 64);
        let mut rgb = vec![255u8; w * h * 3];
        for y in 10..20 {
            for x in 10..20 {
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[0, 0, 0]);
                rgb[((y + 30) * w + x) * 3..((y + 30) * w + x) * 3 + 3]
                    .copy_from_slice(&[220, 30, 40]);
            }
        }
        let p = prepare(&Picture {
            width: w as u32,
            height: h as u32,
            dpi: None,
            pixels: Pixels::Rgb(rgb),
        });
        assert!(p.colour);
        assert!(p.gray[15 * w + 15] < 60);
        assert!(p.gray[45 * w + 15] > 200);
    }
}
