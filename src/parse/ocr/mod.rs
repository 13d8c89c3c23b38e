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
    let engine = engine::Engine::load(models)
        .map_err(|e| ReadError::Damaged(format!("文字识别模型无法加载：{e}")))?;

    let mut colour = false;
    let mut red_seal = false;
    let mut pages: Vec<(String, PageContent, bool)> = Vec::new();
    let (mut chars, mut weighted) = (0usize, 0f64);
    for (i, picture) in pictures.iter().enumerate() {
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
        let boxes = engine
            .read(&engine::Gray {
                width: prepared.width,
                height: prepared.height,
                pixels: prepared.gray,
            })
            .map_err(|e| ReadError::Damaged(format!("文字识别失败：{e}")))?;
        for b in &boxes {
            let n = b.text.chars().count();
            chars += n;
            weighted += f64::from(b.confidence) * n as f64;
        }
        let has_table = !cells.is_empty();
        let content = page_content(&boxes, &cells, prepared.width, picture.dpi);
        pages.push((format!("page {}", i + 1), content, has_table));
    }
    // A page without a table (a fax cover sheet) says nothing about the
    // form when another page has one.
    let any_table = pages.iter().any(|(_, _, t)| *t);
    let pages: Vec<(String, PageContent)> = pages
        .into_iter()
        .filter(|(_, _, t)| *t || !any_table)
        .map(|(name, content, _)| (name, content))
        .collect();
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
            "pages": pictures.len(),
            "mean_confidence": (mean * 1000.0).round() / 1000.0,
        }),
    );
    if colour {
        extracted.meta.insert("red_seal".into(), red_seal.into());
    }
    Ok(())
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
/// neighbours share them). With a table, only the text inside it is kept.
fn page_content(
    boxes: &[engine::TextBox],
    cells: &[table::Cell],
    width: u32,
    dpi: Option<(f32, f32)>,
) -> PageContent {
    let k = scale(width, dpi);
    let mut page = PageContent::default();
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
    let table = cells
        .iter()
        .fold(None, |acc: Option<(u32, u32, u32, u32)>, c| {
            Some(match acc {
                None => (c.x0, c.y0, c.x1, c.y1),
                Some((a, b, cc, d)) => (a.min(c.x0), b.min(c.y0), cc.max(c.x1), d.max(c.y1)),
            })
        });
    for b in boxes {
        // 丶 (a radical) is what the recogniser reads for the enumeration
        // comma 、 that forms use between duties and titles.
        let text: Vec<char> = without_specks(&b.text)
            .chars()
            .filter(|c| !c.is_control())
            .map(|c| if c == '丶' { '、' } else { c })
            .collect();
        if text.is_empty() {
            continue;
        }
        let (cx, cy) = ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0);
        if let Some((tx0, ty0, tx1, ty1)) = table {
            let inside =
                cx >= tx0 as f32 && cx <= tx1 as f32 && cy >= ty0 as f32 && cy <= ty1 as f32;
            if !inside {
                continue;
            }
        }
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
