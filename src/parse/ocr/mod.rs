//! OCR of scanned forms (faxes, scanner PDFs, phone photos): each page is
//! decoded at its native resolution ([`decode`]), turned upright and grey
//! ([`prepare`]: the red channel of a colour page, which drops a red seal's
//! ink), its ruled table found ([`table`]), its text read once with
//! PaddleOCR's PP-OCRv4 models run by `tract-onnx` ([`engine`]), and the
//! text boxes handed, with the table's lines, to the same layout code that
//! reads a PDF's text layer (`readers::layout`): the one form extractor
//! then reads the grids. A colour page is also looked at for a red
//! official seal ([`seal`]).
//!
//! Runs in the reader child like every reader (`parse::sandbox`), under the
//! OCR child limits (`[limits.ocr]`). A page without a table (a fax cover
//! sheet) contributes nothing when another page has one; text outside the
//! table (the fax header line `传真 来自 …`, the title) is left out, so a
//! header never becomes a value.

pub mod decode;
pub mod engine;
pub mod prepare;
pub mod seal;
pub mod table;

use std::path::Path;

use crate::parse::grid::{Extracted, ReadError, ReadLimits};
use crate::parse::readers::layout::{self, Glyph, PageContent, Rule};
use crate::parse::sniff::Format;

/// The engine's name in `meta.ocr`.
pub const ENGINE: &str = "PP-OCRv4 (tract-onnx)";

/// Pixels of one page decoded, at most (a 600-dpi A4 page is 35 M).
const MAX_PAGE_PIXELS: u64 = 40_000_000;

/// Whether `dir` holds the models; the reason when not (Chinese).
pub fn models_present(dir: &Path) -> Result<(), String> {
    for file in [engine::DET_MODEL_FILE, engine::REC_MODEL_FILE] {
        if !dir.join(file).is_file() {
            return Err(format!(
                "文件夹 {} 中没有文字识别模型文件 {file}",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Reads a scan's pages by OCR into `extracted` (grids, `meta.ocr`, and
/// `meta.red_seal` for colour pages); it stays `scanned`.
pub fn read_scan(
    format: Format,
    bytes: &[u8],
    limits: &ReadLimits,
    models: &Path,
    extracted: &mut Extracted,
) -> Result<(), ReadError> {
    load_engine(models)?.read_scan(format, bytes, limits, extracted)
}

/// Loads the models (a reader worker does it once, at start).
pub fn load_engine(models: &Path) -> Result<engine::Engine, ReadError> {
    engine::Engine::load(models)
        .map_err(|e| ReadError::Damaged(format!("文字识别模型无法加载：{e}")))
}

impl engine::Engine {
    /// [`read_scan`] with models already loaded.
    pub fn read_scan(
        &self,
        format: Format,
        bytes: &[u8],
        limits: &ReadLimits,
        extracted: &mut Extracted,
    ) -> Result<(), ReadError> {
        read_pages(self, format, bytes, limits, extracted)
    }
}

fn read_pages(
    engine: &engine::Engine,
    format: Format,
    bytes: &[u8],
    limits: &ReadLimits,
    extracted: &mut Extracted,
) -> Result<(), ReadError> {
    let max_pages = limits.max_pages.max(1);
    let pictures = match format {
        Format::Image => decode::pages_of_image(bytes, max_pages, MAX_PAGE_PIXELS),
        Format::Pdf => decode::pages_of_pdf(bytes, max_pages, MAX_PAGE_PIXELS),
        _ => return Ok(()),
    }
    .map_err(|e| ReadError::Damaged(format!("扫描件的图像无法解码：{e}")))?;
    if pictures.is_empty() {
        return Ok(());
    }

    // First every page's table (cheap), so that OCR — most of the time —
    // is spent only on pages that hold the form: a page without a table
    // (a fax cover sheet) says nothing about the form when another page
    // has one, and is not read at all then.
    let mut colour = false;
    let mut red_seal = false;
    let mut prepared_pages = Vec::with_capacity(pictures.len());
    for picture in &pictures {
        let square = square_pixels(picture);
        let picture = square.as_ref().unwrap_or(picture);
        let prepared = prepare::prepare(picture);
        if prepared.colour {
            colour = true;
            if let decode::Pixels::Rgb(rgb) = &picture.pixels {
                red_seal |= seal::red_seal(rgb, picture.width, picture.height);
            }
        }
        let cells = table::cells(&prepared.gray, prepared.width, prepared.height);
        prepared_pages.push((prepared, cells, picture.dpi));
    }
    drop(pictures);
    let any_table = prepared_pages.iter().any(|(_, cells, _)| !cells.is_empty());

    let mut pages: Vec<(String, PageContent)> = Vec::new();
    let mut headers: Vec<String> = Vec::new();
    let (mut chars, mut weighted) = (0usize, 0f64);
    let page_count = prepared_pages.len();
    for (i, (prepared, cells, dpi)) in prepared_pages.into_iter().enumerate() {
        if any_table && cells.is_empty() {
            continue;
        }
        let (width, height) = (prepared.width, prepared.height);
        let page = engine::Gray {
            width,
            height,
            pixels: prepared.gray,
        };
        let found = engine
            .detect(&page)
            .map_err(|e| ReadError::Damaged(format!("文字识别失败：{e}")))?;
        let plan = plan_boxes(
            &found,
            &cells,
            &page.pixels,
            prepared.red.as_deref(),
            width,
            height,
        );
        let lines = engine
            .read_boxes(&page, &plan.form)
            .map_err(|e| ReadError::Damaged(format!("文字识别失败：{e}")))?;
        let header = engine
            .read_boxes(&page, &plan.header)
            .map_err(|e| ReadError::Damaged(format!("文字识别失败：{e}")))?;
        for b in lines.iter().chain(&header) {
            let n = b.text.chars().count();
            chars += n;
            weighted += f64::from(b.confidence) * n as f64;
        }
        let header: Vec<&str> = header.iter().map(|b| b.text.trim()).collect();
        if !header.is_empty() {
            headers.push(header.join(" "));
        }
        let content = page_content(&lines, &cells, width, dpi);
        pages.push((format!("page {}", i + 1), content));
    }
    extracted.grids = layout::grids(&pages, limits);
    let mean = if chars > 0 {
        weighted / chars as f64
    } else {
        0.0
    };
    extracted.meta.insert(
        "ocr".into(),
        serde_json::json!({
            "engine": ENGINE,
            "pages": page_count,
            "mean_confidence": (mean * 1000.0).round() / 1000.0,
        }),
    );
    if let Some(header) = headers.first() {
        extracted
            .meta
            .insert("fax_header".into(), fax_header(header));
    }
    if colour {
        extracted.meta.insert("red_seal".into(), red_seal.into());
    }
    Ok(())
}

/// The detected boxes of a page that are worth reading, sorted by role.
#[derive(Debug, Default)]
struct BoxPlan {
    /// Inside the table (or the whole page when it has none), split at the
    /// table's column rules.
    form: Vec<engine::PageBox>,
    /// Above the table in the page's top strip: a fax header line
    /// (`传真 来自 0577-…  2007-05-11  第1页/共2页`), evidence about the
    /// sending machine, never form content.
    header: Vec<engine::PageBox>,
}

/// Part of the page height, from the top, where a fax machine prints its
/// header line.
const HEADER_STRIP: f32 = 0.05;

/// Which boxes to read and how: boxes of red ink only (a seal's ring of
/// characters) are left out, and so is text outside the table other than
/// a header line (the title, notes, a signature).
fn plan_boxes(
    found: &[engine::PageBox],
    cells: &[table::Cell],
    gray: &[u8],
    red: Option<&[u8]>,
    width: u32,
    height: u32,
) -> BoxPlan {
    let table = cells
        .iter()
        .fold(None, |acc: Option<(f32, f32, f32, f32)>, c| {
            let (x0, y0, x1, y1) = (c.x0 as f32, c.y0 as f32, c.x1 as f32, c.y1 as f32);
            Some(match acc {
                None => (x0, y0, x1, y1),
                Some((a, b, cc, d)) => (a.min(x0), b.min(y0), cc.max(x1), d.max(y1)),
            })
        });
    let mut plan = BoxPlan::default();
    for b in found {
        if red.is_some_and(|red| is_seal_text(b, gray, red, width, height)) {
            continue;
        }
        let (cx, cy) = b.centre();
        match table {
            None => plan.form.push(*b),
            Some((tx0, ty0, tx1, ty1)) => {
                if cx >= tx0 && cx <= tx1 && cy >= ty0 && cy <= ty1 {
                    plan.form.extend(split_at_cells(b, cells, gray, width));
                } else if cy < height as f32 * HEADER_STRIP && b.y1 <= ty0 {
                    plan.header.push(*b);
                }
            }
        }
    }
    plan
}

/// Whether a box's ink is mostly red: the characters of a seal, which a
/// colour page's red channel all but drops and the detector still finds.
/// Black text under a seal keeps its box (its ink is dark in `gray`).
fn is_seal_text(b: &engine::PageBox, gray: &[u8], red: &[u8], width: u32, height: u32) -> bool {
    let w = width as usize;
    let (x0, x1, y0, y1) = pixel_span(b, w, height as usize);
    let (mut reds, mut darks) = (0usize, 0usize);
    for y in y0..y1 {
        let row = y * w;
        for x in x0..x1 {
            if red.get(row + x).is_some_and(|&v| v < 128) {
                reds += 1;
            }
            if gray.get(row + x).is_some_and(|&v| v < 128) {
                darks += 1;
            }
        }
    }
    // A handful of red pixels is noise; black text wins when present.
    reds >= 12 && reds > darks * 3
}

/// The pixel columns `x0..x1` and rows `y0..y1` a box covers on a
/// `w` × `h` page.
fn pixel_span(b: &engine::PageBox, w: usize, h: usize) -> (usize, usize, usize, usize) {
    let clamp = |v: f32, max: usize| (v.max(0.0).ceil() as usize).min(max);
    (
        (b.x0.max(0.0) as usize).min(w),
        clamp(b.x1, w),
        (b.y0.max(0.0) as usize).min(h),
        clamp(b.y1, h),
    )
}

/// A box cut where the table's column rules cross it: the detector joins
/// a label and its value into one line when the rule between them is
/// faint (`职务办事员`, `是否党员中共党员`). Each piece is the part of the
/// box inside one cell (rules excluded: the bits of the rules above and
/// below a blank piece read as `二`), and is read on its own when it holds
/// ink.
fn split_at_cells(
    b: &engine::PageBox,
    cells: &[table::Cell],
    gray: &[u8],
    width: u32,
) -> Vec<engine::PageBox> {
    let (_, cy) = b.centre();
    let mut row: Vec<&table::Cell> = cells
        .iter()
        .filter(|c| cy >= c.y0 as f32 && cy < c.y1 as f32)
        .filter(|c| (c.x1 as f32).min(b.x1) > (c.x0 as f32).max(b.x0))
        .collect();
    if row.len() < 2 {
        return vec![*b];
    }
    row.sort_by_key(|c| c.x0);
    row.iter()
        .map(|c| engine::PageBox {
            x0: b.x0.max(c.x0 as f32),
            y0: b.y0.max(c.y0 as f32),
            x1: b.x1.min(c.x1 as f32),
            y1: b.y1.min(c.y1 as f32),
        })
        .filter(|piece| has_ink(piece, gray, width))
        .collect()
}

/// Whether a box holds a character's worth of ink: dark pixels over at
/// least 3 % of its area and in columns spanning a fifth of its height.
fn has_ink(b: &engine::PageBox, gray: &[u8], width: u32) -> bool {
    let w = width as usize;
    let (x0, x1, y0, y1) = pixel_span(b, w, gray.len() / w.max(1));
    if x1 <= x0 || y1 <= y0 {
        return false;
    }
    let (mut dark, mut first, mut last) = (0usize, usize::MAX, 0usize);
    for y in y0..y1 {
        for x in x0..x1 {
            if gray[y * w + x] < 128 {
                dark += 1;
                first = first.min(x);
                last = last.max(x);
            }
        }
    }
    let area = (x1 - x0) * (y1 - y0);
    dark * 100 >= area * 3 && last + 1 >= first && (last + 1 - first) * 5 >= (y1 - y0)
}

/// What a fax header line says, as read: the line itself, and the sending
/// number (`来自 0577-67019561`, `FROM: 0577 6701 9561`) and the page
/// count (`第1页/共2页`, `P.1/2`) when they can be found in it.
fn fax_header(line: &str) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert("text".into(), line.into());
    let lower = line.to_lowercase();
    let after = ["来自", "from"]
        .iter()
        .find_map(|k| lower.find(k).map(|i| &line[i + k.len()..]));
    if let Some(rest) = after {
        // Groups of digits and dashes, while they add up to a phone number
        // (at most 13 digits): a date or time after the number is not in it.
        let mut groups: Vec<&str> = Vec::new();
        let mut digits = 0;
        for group in rest.trim_start_matches([':', '：', ' ']).split(' ') {
            let n = group.chars().filter(char::is_ascii_digit).count();
            if group.is_empty()
                || !group.chars().all(|c| c.is_ascii_digit() || c == '-')
                || digits + n > 13
            {
                break;
            }
            digits += n;
            groups.push(group);
        }
        if digits >= 7 {
            out.insert("from".into(), groups.join(" ").into());
        }
    }
    if let Some(pages) = page_of(line) {
        out.insert("page".into(), pages.into());
    }
    serde_json::Value::Object(out)
}

/// `n/m` from `第1页/共2页`, `1/2页`, `P.1/2` or `PAGE 1/2`.
fn page_of(line: &str) -> Option<String> {
    let number_after = |key: char| -> Option<u32> {
        let rest = &line[line.find(key)? + key.len_utf8()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let valid = |n: u32, m: u32| (1..=99).contains(&m) && n >= 1 && n <= m;
    if let (Some(n), Some(m)) = (number_after('第'), number_after('共'))
        && valid(n, m)
    {
        return Some(format!("{n}/{m}"));
    }
    let digits: String = line
        .chars()
        .map(|c| {
            if c.is_ascii_digit() || c == '/' {
                c
            } else {
                ' '
            }
        })
        .collect();
    // The last `n/m` (a date written 2007/05/11 has three numbers, and is
    // skipped).
    digits.split_whitespace().rev().find_map(|tok| {
        let parts: Vec<&str> = tok.split('/').collect();
        let [n, m] = parts.as_slice() else {
            return None;
        };
        let (n, m): (u32, u32) = (n.parse().ok()?, m.parse().ok()?);
        valid(n, m).then(|| format!("{n}/{m}"))
    })
}

/// A page whose pixels are twice (or more) as tall as wide — a fax sent
/// in "normal" mode, 204×98 dpi — with its rows repeated so that pixels
/// are square: the text detector and recogniser expect upright glyphs, and
/// read squashed ones wrongly (性别 as 性另). `None` when already square.
fn square_pixels(p: &decode::Picture) -> Option<decode::Picture> {
    let (dx, dy) = p.dpi?;
    if dy <= 0.0 || dx / dy < 1.5 {
        return None;
    }
    let times = (dx / dy).round().clamp(2.0, 4.0) as usize;
    let (w, h) = (p.width as usize, p.height as usize);
    let stretch = |data: &[u8], channels: usize| -> Vec<u8> {
        let row = w * channels;
        let mut out = Vec::with_capacity(data.len() * times);
        for r in 0..h {
            let line = &data[r * row..(r + 1) * row];
            for _ in 0..times {
                out.extend_from_slice(line);
            }
        }
        out
    };
    let pixels = match &p.pixels {
        decode::Pixels::Gray(g) if g.len() == w * h => decode::Pixels::Gray(stretch(g, 1)),
        decode::Pixels::Rgb(c) if c.len() == w * h * 3 => decode::Pixels::Rgb(stretch(c, 3)),
        _ => return None,
    };
    Some(decode::Picture {
        width: p.width,
        height: p.height * times as u32,
        dpi: Some((dx, dx)),
        pixels,
    })
}

/// A text box's text without what a fax's specks add: a dot read at the
/// end of a value (`661208.`, `…16号·`). No value of the form ends in one.
fn without_specks(text: &str) -> &str {
    text.trim_end_matches(['.', '·', '．', '•', '˙', '\'', '`'])
}

/// The recogniser's readings of the enumeration comma 、 that forms use
/// between duties and titles (`办公室、人事、信息`) turned back into it:
/// 丶 (a radical) always, and a middle dot or full stop between two words
/// of at least two Chinese characters each (`办公室·人事`), where no value of
/// the form has one. A speck inside a label (`单.位`) is not a comma.
fn enumeration_commas(text: &str) -> Vec<char> {
    let chars: Vec<char> = text.chars().filter(|c| !c.is_control()).collect();
    let han = |c: &char| ('\u{4e00}'..='\u{9fff}').contains(c);
    let word_before = |i: usize| chars[..i].iter().rev().take_while(|c| han(c)).count();
    let word_after = |i: usize| chars[i + 1..].iter().take_while(|c| han(c)).count();
    (0..chars.len())
        .map(|i| match chars[i] {
            '丶' => '、',
            '·' | '•' | '・' | '.' | '．' if word_before(i) >= 2 && word_after(i) >= 2 => '、',
            c => c,
        })
        .collect()
}

/// Points per pixel: from the resolution when the file says it, else as
/// if the page were A4 wide.
fn scale(width: u32, dpi: Option<(f32, f32)>) -> f64 {
    match dpi {
        Some((x, _)) if (50.0..=1200.0).contains(&x) => 72.0 / f64::from(x),
        _ => 595.0 / f64::from(width.max(1)),
    }
}

/// The page as positioned text and ruling lines, in points. A text box
/// becomes one glyph per character, spread evenly over the box; the table's
/// cells give the rules (each cell's edges, half a line width out, so that
/// neighbours share them). (Which boxes belong to the form is
/// `plan_boxes`' decision.)
fn page_content(
    boxes: &[engine::TextBox],
    cells: &[table::Cell],
    width: u32,
    dpi: Option<(f32, f32)>,
) -> PageContent {
    let k = scale(width, dpi);
    let mut page = PageContent {
        estimated: true,
        ..PageContent::default()
    };
    // Half the gap between neighbouring cells (the line between them).
    const PAD: f64 = 3.0;
    for c in cells {
        let (x0, y0) = ((f64::from(c.x0) - PAD) * k, (f64::from(c.y0) - PAD) * k);
        let (x1, y1) = ((f64::from(c.x1) + PAD) * k, (f64::from(c.y1) + PAD) * k);
        page.horizontal.push(Rule {
            pos: y0,
            a: x0,
            b: x1,
        });
        page.horizontal.push(Rule {
            pos: y1,
            a: x0,
            b: x1,
        });
        page.vertical.push(Rule {
            pos: x0,
            a: y0,
            b: y1,
        });
        page.vertical.push(Rule {
            pos: x1,
            a: y0,
            b: y1,
        });
    }
    for b in boxes {
        let text = enumeration_commas(without_specks(&b.text));
        if text.is_empty() {
            continue;
        }
        let cy = (b.y0 + b.y1) / 2.0;
        let height = f64::from((b.y1 - b.y0).max(1.0)) * k;
        let em = height * 0.8;
        // Glyph centres sit 0.35 em above the baseline (`layout`).
        let baseline = f64::from(cy) * k + 0.35 * em;
        let step = f64::from(b.x1 - b.x0) * k / text.len() as f64;
        for (i, ch) in text.iter().enumerate() {
            let x = f64::from(b.x0) * k + step * i as f64;
            page.glyphs.push(Glyph {
                x,
                right: x + step,
                baseline,
                em,
                text: ch.to_string(),
            });
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(x0: u32, y0: u32, x1: u32, y1: u32, col: usize) -> table::Cell {
        table::Cell {
            x0,
            y0,
            x1,
            y1,
            row: 0,
            col,
        }
    }

    fn pbox(x0: f32, y0: f32, x1: f32, y1: f32) -> engine::PageBox {
        engine::PageBox { x0, y0, x1, y1 }
    }

    /// A white page with black blocks ("characters") at the given x ranges, rows 12..28.
    fn page_with(blocks: &[(usize, usize)], w: usize, h: usize) -> Vec<u8> {
        let mut g = vec![255u8; w * h];
        for &(a, b) in blocks {
            for y in 12..28 {
                for x in a..b {
                    g[y * w + x] = 0;
                }
            }
        }
        g
    }

    #[test]
    fn a_box_over_a_rule_is_cut_into_its_cells() {
        // A label cell (0..100) and a value cell (104..300); the box runs over both.
        let cells = [cell(0, 10, 100, 30, 0), cell(104, 10, 300, 30, 1)];
        let gray = page_with(&[(20, 90), (120, 200)], 320, 40);
        let b = pbox(10.0, 5.0, 210.0, 35.0);
        let pieces = split_at_cells(&b, &cells, &gray, 320);
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert_eq!((pieces[0].x0, pieces[0].x1), (10.0, 100.0));
        assert_eq!((pieces[1].x0, pieces[1].x1), (104.0, 210.0));
        // Clipped to the cell rows: the rules above and below stay out.
        assert_eq!((pieces[1].y0, pieces[1].y1), (10.0, 30.0));
    }

    #[test]
    fn a_blank_piece_is_not_read() {
        // The box's margin reaches into the next cell, where there is no ink.
        let cells = [cell(0, 10, 100, 30, 0), cell(104, 10, 300, 30, 1)];
        let gray = page_with(&[(20, 90)], 320, 40);
        let b = pbox(10.0, 5.0, 140.0, 35.0);
        let pieces = split_at_cells(&b, &cells, &gray, 320);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].x1, 100.0);
        // A box inside one cell stays whole.
        let inside = pbox(15.0, 8.0, 95.0, 32.0);
        assert_eq!(split_at_cells(&inside, &cells, &gray, 320), vec![inside]);
    }

    #[test]
    fn red_ink_boxes_are_seal_text_and_black_ones_are_not() {
        let (w, h) = (100usize, 40usize);
        let gray = page_with(&[(10, 40)], w, h);
        // Red ink at 60..90 (light in the red channel, dark in the red plane).
        let mut red = vec![255u8; w * h];
        for y in 12..28 {
            for x in 60..90 {
                red[y * w + x] = 0;
            }
        }
        let seal = |red: &[u8], x0: f32, x1: f32| {
            is_seal_text(&pbox(x0, 8.0, x1, 32.0), &gray, red, w as u32, h as u32)
        };
        assert!(seal(&red, 55.0, 95.0));
        assert!(!seal(&red, 5.0, 45.0));
        // Black text with a seal over part of it is kept.
        let mut over = red.clone();
        for y in 12..28 {
            for x in 30..45 {
                over[y * w + x] = 0;
            }
        }
        assert!(!seal(&over, 5.0, 45.0));
    }

    #[test]
    fn the_seal_and_the_title_are_not_read_and_the_header_is() {
        let (w, h) = (200u32, 400u32);
        let cells = [cell(20, 100, 100, 140, 0), cell(104, 100, 180, 140, 1)];
        let gray = vec![255u8; (w * h) as usize];
        let b = |y0: f32, y1: f32| engine::PageBox {
            x0: 30.0,
            y0,
            x1: 90.0,
            y1,
        };
        let found = [
            b(2.0, 12.0),
            b(60.0, 80.0),
            b(110.0, 130.0),
            b(300.0, 320.0),
        ];
        let plan = plan_boxes(&found, &cells, &gray, None, w, h);
        assert_eq!(plan.header, vec![b(2.0, 12.0)]);
        assert_eq!(plan.form, vec![b(110.0, 130.0)]);
    }

    #[test]
    fn a_fax_header_gives_its_number_and_page() {
        let h = fax_header("传真 来自 0577-67019561  2007-05-11 17:30  第1页/共2页");
        assert_eq!(h["from"], "0577-67019561");
        assert_eq!(h["page"], "1/2");
        let h = fax_header("FROM: 0577 6701 9561   P.2/2");
        assert_eq!(h["from"], "0577 6701 9561");
        assert_eq!(h["page"], "2/2");
        // A date is not a page number; a short number is not a fax number.
        let h = fax_header("2007/05/11 来自 123");
        assert!(h.get("page").is_none() && h.get("from").is_none(), "{h}");
        assert_eq!(page_of("1/2页"), Some("1/2".into()));
        assert_eq!(page_of("第3页/共2页"), None);
    }

    #[test]
    fn enumeration_commas_come_back() {
        let s = |t: &str| enumeration_commas(t).into_iter().collect::<String>();
        assert_eq!(s("办公室·人事丶信息"), "办公室、人事、信息");
        assert_eq!(s("办公室.人事"), "办公室、人事");
        // Between digits or letters a dot stays: dates, e-mail addresses.
        assert_eq!(s("1992.09"), "1992.09");
        assert_eq!(s("lin.z@126.com"), "lin.z@126.com");
        assert_eq!(s("学习。工作"), "学习。工作");
        // A speck in a label is not a comma.
        assert_eq!(s("单.位"), "单.位");
    }
}
