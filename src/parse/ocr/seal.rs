//! Detecting a red official seal (公章) on a colour page.
//!
//! A seal is a red ring (circle or ellipse, 3.5–5 cm across, ≈ 150–350 px
//! at 100–200 dpi) with, usually, a red star in the middle and red text
//! along the arc, printed semi-transparently over black text.
//!
//! 1. Red mask: hue within about −30°…+25° of pure red, saturation and
//!    brightness high enough, and red clearly above green and blue (the
//!    absolute margin keeps JPEG colour fringes on black text out). Red
//!    ink over black text turns dark and is simply missed.
//! 2. The mask is pooled down to at most ≈ 1000 px on the longer side and
//!    closed with a 3×3 square (JPEG breaks in the ring).
//! 3. Each 8-connected component is a candidate ring if its bounding box
//!    is roughly square (aspect 0.75–1.33) and its size is plausible for
//!    the page (6–50 % of the shorter side). The ellipse inscribed in the
//!    box is then checked against **all** red pixels inside it (star and
//!    text are separate components):
//!    * the red ink covers at most ≈ 55 % of the ellipse (not a filled
//!      blot or block);
//!    * red lies all round the rim: at least 26 of 36 angular sectors of
//!      the annulus 0.78–1.12 hold red (a rectangle's corners and a
//!      scribble's gaps fail);
//!    * a thin band near the rim is densely red, and at least twice as
//!      dense as the ring's middle (ρ 0.3–0.6): a ring, not a disc;
//!    * little red lies just outside the ellipse (not a square stamp's
//!      corners);
//!    * something red lies inside (a hand-drawn circle has nothing).

/// Whether the page holds a red seal. `rgb` is `width × height × 3`.
pub fn red_seal(rgb: &[u8], width: u32, height: u32) -> bool {
    candidates(rgb, width, height).iter().any(|c| c.is_seal)
}

/// What was measured on one ring-shaped candidate (for diagnostics).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Bounding box in page pixels, `x1`/`y1` exclusive.
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
    /// Red pixels in the ellipse over its area.
    pub fill: f32,
    /// Share of 36 angular sectors whose rim annulus holds red.
    pub rim_coverage: f32,
    /// Red density of the densest band (0.04 wide) near the rim.
    pub rim_peak: f32,
    /// `rim_peak` over the red density at ρ 0.3–0.6 (floor 0.02).
    pub rim_contrast: f32,
    /// Red just outside the ellipse over red inside it.
    pub outside: f32,
    /// Red density inside ρ < 0.7 (star, text).
    pub inner: f32,
    pub is_seal: bool,
}

/// Red in HSV terms, with an absolute chroma margin.
pub fn is_red(r: u8, g: u8, b: u8) -> bool {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    if max != r || max < 90 {
        return false; // value ≥ 0.35
    }
    let chroma = max - min;
    if chroma < 45 || chroma * 100 < max * 30 {
        return false; // saturation ≥ 0.30 and a clear margin
    }
    // hue = 60° × (g − b) / chroma, red at 0°: keep −30°…+25°
    let h60 = (g - b) * 60; // hue × chroma
    h60 <= 25 * chroma && h60 >= -30 * chroma
}

/// Ring-shaped red components and their measurements.
pub fn candidates(rgb: &[u8], width: u32, height: u32) -> Vec<Candidate> {
    let (w, h) = (width as usize, height as usize);
    if w < 32 || h < 32 || rgb.len() < w * h * 3 {
        return Vec::new();
    }
    // Pool the red mask down to ≤ ~1000 px on the longer side.
    let f = w.max(h).div_ceil(1000).max(1);
    let (sw, sh) = (w.div_ceil(f), h.div_ceil(f));
    let mut count = vec![0u16; sw * sh];
    for y in 0..h {
        let row = &rgb[y * w * 3..(y + 1) * w * 3];
        let base = (y / f) * sw;
        for (x, px) in row.chunks_exact(3).enumerate() {
            if is_red(px[0], px[1], px[2]) {
                count[base + x / f] += 1;
            }
        }
    }
    let need = ((f * f) / 4).max(1) as u16;
    let red: Vec<u8> = count.iter().map(|&c| u8::from(c >= need)).collect();
    let closed = erode(&dilate(&red, sw, sh), sw, sh);

    let short = sw.min(sh) as f32;
    let (min_d, max_d) = ((short * 0.06).max(12.0), short * 0.5);
    // Candidates: the components themselves, and clusters of red pieces
    // near each other (a ring broken by black text over which it was
    // stamped, together with its star and arc text).
    let reach = ((short * 0.015).round() as usize).max(2);
    let mut boxes = components8(&closed, sw, sh);
    for (x0, y0, x1, y1) in components8(&grow(&closed, sw, sh, reach), sw, sh) {
        let b = (
            (x0 + reach).min(x1),
            (y0 + reach).min(y1),
            x1.saturating_sub(reach).max(x0),
            y1.saturating_sub(reach).max(y0),
        );
        if !boxes.contains(&b) {
            boxes.push(b);
        }
    }
    let mut out = Vec::new();
    for comp in boxes {
        let (bw, bh) = ((comp.2 - comp.0 + 1) as f32, (comp.3 - comp.1 + 1) as f32);
        let aspect = bw / bh;
        if !(0.75..=1.33).contains(&aspect) || bw.max(bh) < min_d || bw.max(bh) > max_d {
            continue;
        }
        let mut c = measure(&closed, sw, sh, comp);
        c.x0 = (comp.0 * f) as u32;
        c.y0 = (comp.1 * f) as u32;
        c.x1 = (((comp.2 + 1) * f).min(w)) as u32;
        c.y1 = (((comp.3 + 1) * f).min(h)) as u32;
        out.push(c);
    }
    out
}

/// Dilation by a square of radius `r` (separable sliding counts).
fn grow(m: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let mut tmp = vec![0u8; w * h];
    for y in 0..h {
        let row = &m[y * w..(y + 1) * w];
        let mut n = row[..r.min(w)].iter().filter(|&&v| v != 0).count();
        for x in 0..w {
            if x + r < w && row[x + r] != 0 {
                n += 1;
            }
            if x > r && row[x - r - 1] != 0 {
                n -= 1;
            }
            tmp[y * w + x] = u8::from(n > 0);
        }
    }
    let mut out = vec![0u8; w * h];
    for x in 0..w {
        let mut n = (0..r.min(h)).filter(|&y| tmp[y * w + x] != 0).count();
        for y in 0..h {
            if y + r < h && tmp[(y + r) * w + x] != 0 {
                n += 1;
            }
            if y > r && tmp[(y - r - 1) * w + x] != 0 {
                n -= 1;
            }
            out[y * w + x] = u8::from(n > 0);
        }
    }
    out
}

/// Measures the ellipse inscribed in a component's box against the mask:
/// red density by normalised radius ρ (1 = the box's inscribed ellipse)
/// and by angle on the rim.
fn measure(mask: &[u8], w: usize, h: usize, comp: (usize, usize, usize, usize)) -> Candidate {
    let (x0, y0, x1, y1) = comp;
    let cx = (x0 + x1) as f32 / 2.0;
    let cy = (y0 + y1) as f32 / 2.0;
    let rx = (x1 - x0 + 1) as f32 / 2.0;
    let ry = (y1 - y0 + 1) as f32 / 2.0;
    const SECTORS: usize = 36;
    // radial bins of 0.02 up to ρ = 1.4
    const BINS: usize = 70;
    let mut area = [0u32; BINS];
    let mut red = [0u32; BINS];
    let mut sectors = [0u32; SECTORS];
    let mut rim = 0u32;
    let pad = (rx.max(ry) * 0.42) as usize + 1;
    let (ax0, ay0) = (x0.saturating_sub(pad), y0.saturating_sub(pad));
    let (ax1, ay1) = ((x1 + pad).min(w - 1), (y1 + pad).min(h - 1));
    for y in ay0..=ay1 {
        for x in ax0..=ax1 {
            let dx = (x as f32 - cx) / rx;
            let dy = (y as f32 - cy) / ry;
            let rho = (dx * dx + dy * dy).sqrt();
            let bin = (rho * 50.0) as usize;
            if bin >= BINS {
                continue;
            }
            let is_red = mask[y * w + x] != 0;
            area[bin] += 1;
            red[bin] += u32::from(is_red);
            if is_red && (0.78..=1.12).contains(&rho) {
                rim += 1;
                let a = dy.atan2(dx) + std::f32::consts::PI;
                let s = ((a / std::f32::consts::TAU) * SECTORS as f32) as usize;
                sectors[s.min(SECTORS - 1)] += 1;
            }
        }
    }
    // density over the bins [from, to) of ρ
    let density = |from: f32, to: f32| -> (f32, u32) {
        let (i, j) = ((from * 50.0).round() as usize, (to * 50.0).round() as usize);
        let a: u32 = area[i..j.min(BINS)].iter().sum();
        let r: u32 = red[i..j.min(BINS)].iter().sum();
        (r as f32 / a.max(1) as f32, r)
    };
    let (fill, inside) = density(0.0, 1.0);
    let (mid, _) = density(0.3, 0.6);
    let (inner, _) = density(0.0, 0.7);
    let (_, outside) = density(1.16, 1.4);
    // The ring: the densest band 0.04 wide with its centre in 0.80–1.08.
    let rim_peak = (40..54)
        .map(|i| {
            let a = area[i] + area[i + 1];
            (red[i] + red[i + 1]) as f32 / a.max(1) as f32
        })
        .fold(0.0f32, f32::max);
    // A sector counts when it holds a little of the rim's share of red.
    let per_sector = rim as f32 / SECTORS as f32;
    let covered = sectors
        .iter()
        .filter(|&&n| n as f32 >= (per_sector * 0.15).max(1.0))
        .count();
    let rim_coverage = covered as f32 / SECTORS as f32;
    let rim_contrast = rim_peak / mid.max(0.02);
    let outside_ratio = outside as f32 / inside.max(1) as f32;
    let is_seal = fill <= 0.55
        && rim_coverage >= 26.0 / 36.0
        && rim_peak >= 0.3
        && rim_contrast >= 2.0
        && outside_ratio <= 0.15
        && inner >= 0.01;
    Candidate {
        x0: 0,
        y0: 0,
        x1: 0,
        y1: 0,
        fill,
        rim_coverage,
        rim_peak,
        rim_contrast,
        outside: outside_ratio,
        inner,
        is_seal,
    }
}

fn dilate(m: &[u8], w: usize, h: usize) -> Vec<u8> {
    morph(m, w, h, true)
}

fn erode(m: &[u8], w: usize, h: usize) -> Vec<u8> {
    morph(m, w, h, false)
}

/// 3×3 dilation (`grow`) or erosion, separable; outside counts as empty
/// for dilation and as set for erosion (so closing does not eat borders).
fn morph(m: &[u8], w: usize, h: usize, grow: bool) -> Vec<u8> {
    let pick = |a: u8, b: u8| if grow { a | b } else { a & b };
    let mut tmp = m.to_vec();
    for y in 0..h {
        for x in 0..w {
            let mut v = m[y * w + x];
            if x > 0 {
                v = pick(v, m[y * w + x - 1]);
            }
            if x + 1 < w {
                v = pick(v, m[y * w + x + 1]);
            }
            tmp[y * w + x] = v;
        }
    }
    let mut out = tmp.clone();
    for y in 0..h {
        for x in 0..w {
            let mut v = tmp[y * w + x];
            if y > 0 {
                v = pick(v, tmp[(y - 1) * w + x]);
            }
            if y + 1 < h {
                v = pick(v, tmp[(y + 1) * w + x]);
            }
            out[y * w + x] = v;
        }
    }
    out
}

/// Bounding boxes (inclusive) of 8-connected components of set pixels.
fn components8(m: &[u8], w: usize, h: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if seen[start] || m[start] == 0 {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (start % w, start / w, start % w, start / w);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let k = ny * w + nx;
                    if !seen[k] && m[k] != 0 {
                        seen[k] = true;
                        stack.push(k);
                    }
                }
            }
        }
        out.push((x0, y0, x1, y1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: [u8; 3] = [214, 38, 44];

    /// An A4 page at 150 dpi with black "text" rows and a black table.
    fn page() -> (Vec<u8>, usize, usize) {
        let (w, h) = (1240, 1754);
        let mut rgb = vec![250u8; w * h * 3];
        for line in 0..30 {
            let y = 150 + line * 48;
            let mut x = 120;
            while x < 1100 {
                fill_rect(&mut rgb, w, x, y, x + 22, y + 24, [20, 20, 20]);
                x += 30;
            }
        }
        (rgb, w, h)
    }

    fn put(rgb: &mut [u8], w: usize, x: usize, y: usize, c: [u8; 3]) {
        rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
    }

    /// Red over a pixel, semi-transparent over black (multiply).
    fn stamp(rgb: &mut [u8], w: usize, x: usize, y: usize) {
        let i = (y * w + x) * 3;
        for k in 0..3 {
            rgb[i + k] = ((u32::from(rgb[i + k]) * u32::from(RED[k])) / 255) as u8;
        }
    }

    fn fill_rect(rgb: &mut [u8], w: usize, x0: usize, y0: usize, x1: usize, y1: usize, c: [u8; 3]) {
        for y in y0..y1 {
            for x in x0..x1 {
                put(rgb, w, x, y, c);
            }
        }
    }

    /// Ring (radii r−t..r), a five-pointed star, and "text" blobs on the arc.
    fn draw_seal(rgb: &mut [u8], w: usize, cx: f32, cy: f32, r: f32) {
        draw_seal_squashed(rgb, w, cx, cy, r, 1.0, 0.07);
    }

    /// The same seal with its height scaled by `sy` and ring thickness `tk × r`.
    fn draw_seal_squashed(rgb: &mut [u8], w: usize, cx: f32, cy: f32, r: f32, sy: f32, tk: f32) {
        let t = r * tk;
        let star_r = r * 0.3;
        for y in (cy - r - 2.0) as usize..(cy + r + 2.0) as usize {
            for x in (cx - r - 2.0) as usize..(cx + r + 2.0) as usize {
                let (dx, dy) = (x as f32 - cx, (y as f32 - cy) / sy);
                let d = (dx * dx + dy * dy).sqrt();
                let ring = d <= r && d >= r - t;
                // star: polar test against a 5-pointed outline
                let a = dy.atan2(dx) + std::f32::consts::FRAC_PI_2;
                let k = (a / (std::f32::consts::TAU / 5.0)).rem_euclid(1.0);
                let edge = star_r * (0.4 + 0.6 * (1.0 - (2.0 * k - 1.0).abs()));
                let star = d <= edge;
                // text: blobs along the upper arc
                let ang = dy.atan2(dx).to_degrees();
                let text = d > r * 0.62
                    && d < r * 0.82
                    && ang < -20.0
                    && ang > -160.0
                    && ((ang / 12.0).round() * 12.0 - ang).abs() < 4.0;
                if ring || star || text {
                    stamp(rgb, w, x, y);
                }
            }
        }
    }

    #[test]
    fn a_seal_over_text_is_found() {
        let (mut rgb, w, h) = page();
        draw_seal(&mut rgb, w, 900.0, 1300.0, 120.0);
        assert!(
            red_seal(&rgb, w as u32, h as u32),
            "{:#?}",
            candidates(&rgb, w as u32, h as u32)
        );
    }

    #[test]
    fn a_slightly_elliptic_faint_seal_is_found() {
        let (mut rgb, w, h) = page();
        draw_seal_squashed(&mut rgb, w, 400.0, 600.0, 100.0, 0.88, 0.04);
        assert!(
            red_seal(&rgb, w as u32, h as u32),
            "{:#?}",
            candidates(&rgb, w as u32, h as u32)
        );
    }

    #[test]
    fn a_seal_in_a_dim_noisy_photo_is_found() {
        let (mut rgb, w, h) = page();
        draw_seal(&mut rgb, w, 700.0, 1100.0, 75.0);
        // light falling off to 55 % across the page, and sensor noise
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for y in 0..h {
            for x in 0..w {
                let light = 1.0 - 0.45 * (x as f32 / w as f32);
                for k in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let noise = (state % 31) as f32 - 15.0;
                    let i = (y * w + x) * 3 + k;
                    rgb[i] = (rgb[i] as f32 * light + noise).clamp(0.0, 255.0) as u8;
                }
            }
        }
        assert!(
            red_seal(&rgb, w as u32, h as u32),
            "{:#?}",
            candidates(&rgb, w as u32, h as u32)
        );
    }

    #[test]
    fn a_red_underline_is_not_a_seal() {
        let (mut rgb, w, h) = page();
        fill_rect(&mut rgb, w, 200, 800, 900, 806, RED);
        assert!(!red_seal(&rgb, w as u32, h as u32));
    }

    #[test]
    fn a_red_filled_rectangle_is_not_a_seal() {
        let (mut rgb, w, h) = page();
        fill_rect(&mut rgb, w, 700, 1200, 940, 1420, RED);
        assert!(!red_seal(&rgb, w as u32, h as u32));
    }

    #[test]
    fn a_red_box_stamp_is_not_a_seal() {
        // "已审核": a square red outline with red text blobs inside
        let (mut rgb, w, h) = page();
        let (x0, y0, s, t) = (700, 1200, 220, 8);
        fill_rect(&mut rgb, w, x0, y0, x0 + s, y0 + t, RED);
        fill_rect(&mut rgb, w, x0, y0 + s - t, x0 + s, y0 + s, RED);
        fill_rect(&mut rgb, w, x0, y0, x0 + t, y0 + s, RED);
        fill_rect(&mut rgb, w, x0 + s - t, y0, x0 + s, y0 + s, RED);
        for k in 0..3 {
            let x = x0 + 30 + k * 60;
            fill_rect(&mut rgb, w, x, y0 + 80, x + 40, y0 + 130, RED);
        }
        assert!(
            !red_seal(&rgb, w as u32, h as u32),
            "{:#?}",
            candidates(&rgb, w as u32, h as u32)
        );
    }

    #[test]
    fn red_handwriting_and_a_drawn_circle_are_not_seals() {
        let (mut rgb, w, h) = page();
        // a signature-like scribble: a sine stroke
        for x in 300..700 {
            let y = 1000.0 + 40.0 * ((x as f32) / 25.0).sin();
            for d in 0..5 {
                put(&mut rgb, w, x, y as usize + d, RED);
            }
        }
        // a hand-drawn circle around a word: ring with nothing red inside
        for a in 0..3600 {
            let t = (a as f32 / 10.0).to_radians();
            for d in 0..5 {
                let r = 110.0 + d as f32;
                put(
                    &mut rgb,
                    w,
                    (900.0 + r * t.cos()) as usize,
                    (600.0 + r * t.sin()) as usize,
                    RED,
                );
            }
        }
        assert!(
            !red_seal(&rgb, w as u32, h as u32),
            "{:#?}",
            candidates(&rgb, w as u32, h as u32)
        );
    }

    #[test]
    fn no_red_no_seal() {
        let (rgb, w, h) = page();
        assert!(!red_seal(&rgb, w as u32, h as u32));
        assert!(is_red(214, 38, 44));
        assert!(!is_red(30, 30, 30));
        assert!(!is_red(200, 180, 170)); // warm paper
        assert!(!is_red(230, 140, 40)); // orange
    }
}
