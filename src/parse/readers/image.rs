//! Image reader: records what a scanned or faxed form is (pages, size,
//! resolution, compression, the fax machine's header tags) without decoding
//! any pixels.
//!
//! This module owns recognising image files by their magic bytes and reading
//! their headers: TIFF (multi-page, CCITT G3/G4 fax included) through the
//! `tiff` crate's tag reader, JPEG, PNG, BMP and GIF by hand. It does not OCR
//! and does not decode image data; every result is `scanned: true` with
//! empty grids, and the form extractor decides what to tell the sender.
//!
//! JPEG and PNG headers are parsed here rather than through the `image`
//! crate: the few fields needed (size, density, the presence of the end
//! marker) take a hundred lines, while `image` would bring every codec into
//! a service that never looks at a pixel.

use std::collections::HashSet;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tiff::decoder::Decoder;
use tiff::decoder::ifd::Value;
use tiff::tags::Tag;

use crate::parse::grid::{Extracted, Meta, ReadError, ReadLimits};

/// Whether the bytes start like an image this module recognises.
pub fn is_image(bytes: &[u8]) -> bool {
    kind(bytes).is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tiff,
    Jpeg,
    Png,
    Bmp,
    Gif,
}

fn kind(bytes: &[u8]) -> Option<Kind> {
    if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(Kind::Tiff)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Kind::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Kind::Png)
    } else if bytes.starts_with(b"BM") && bytes.len() >= 26 {
        Some(Kind::Bmp)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Kind::Gif)
    } else {
        None
    }
}

/// Reads an image's headers into `meta`; grids stay empty.
pub fn read(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    // The parsers below index only through checked accessors; the guard is
    // for the tiff crate, whose directory walk sees hostile offsets.
    catch_unwind(AssertUnwindSafe(|| read_inner(bytes, limits)))
        .unwrap_or_else(|_| Err(damaged("解析时出错")))
}

fn read_inner(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    let meta = match kind(bytes) {
        Some(Kind::Tiff) => read_tiff(bytes, limits)?,
        Some(Kind::Jpeg) => read_jpeg(bytes)?,
        Some(Kind::Png) => read_png(bytes)?,
        Some(Kind::Bmp) => read_bmp(bytes)?,
        Some(Kind::Gif) => read_gif(bytes)?,
        None => return Err(ReadError::Unsupported("无法识别的图像格式".into())),
    };
    Ok(Extracted {
        grids: Vec::new(),
        meta,
        scanned: true,
    })
}

fn damaged(what: &str) -> ReadError {
    ReadError::Damaged(format!("图像文件损坏：{what}"))
}

fn truncated() -> ReadError {
    damaged("文件不完整（可能被截断）")
}

fn put_size(meta: &mut Meta, pages: usize, width: u64, height: u64) {
    meta.insert("pages".into(), pages.into());
    meta.insert("width".into(), width.into());
    meta.insert("height".into(), height.into());
}

fn put_dpi(meta: &mut Meta, dpi: f64) {
    // Only plausible resolutions: 0 or absurd values mean "not set".
    if dpi.is_finite() && (1.0..=100_000.0).contains(&dpi) {
        meta.insert("dpi".into(), (dpi.round() as u64).into());
    }
}

// ---------------------------------------------------------------------------
// TIFF

fn read_tiff(bytes: &[u8], limits: &ReadLimits) -> Result<Meta, ReadError> {
    // Decoder::new reads and checks the first directory only; without the
    // codec features it still reads every tag, which is all we need.
    let mut dec =
        Decoder::new(Cursor::new(bytes)).map_err(|e| damaged(&format!("TIFF 结构错误：{e}")))?;
    let (width, height) = dec
        .dimensions()
        .map_err(|e| damaged(&format!("TIFF 结构错误：{e}")))?;

    // Strip/tile data past the end of the file is the usual truncation.
    for (offsets, counts) in [
        (Tag::StripOffsets, Tag::StripByteCounts),
        (Tag::TileOffsets, Tag::TileByteCounts),
    ] {
        let offs = dec
            .find_tag(offsets)
            .ok()
            .flatten()
            .and_then(|v| v.into_u64_vec().ok());
        let lens = dec
            .find_tag(counts)
            .ok()
            .flatten()
            .and_then(|v| v.into_u64_vec().ok());
        if let (Some(offs), Some(lens)) = (offs, lens) {
            let past_end = offs
                .iter()
                .zip(&lens)
                .any(|(o, l)| o.checked_add(*l).is_none_or(|end| end > bytes.len() as u64));
            if past_end {
                return Err(truncated());
            }
        }
    }

    let mut meta = Meta::new();
    let pages = count_ifds(&mut dec, limits.max_pages.saturating_add(1));
    put_size(&mut meta, pages, width.into(), height.into());

    let unit = tag_f64(&mut dec, Tag::ResolutionUnit).unwrap_or(2.0);
    if let Some(x) = tag_f64(&mut dec, Tag::XResolution) {
        match unit as u32 {
            2 => put_dpi(&mut meta, x),
            3 => put_dpi(&mut meta, x * 2.54),
            _ => {} // 1 = no absolute unit: an aspect ratio only
        }
    }
    let compression = tag_f64(&mut dec, Tag::Compression).map_or(1, |c| c as u32);
    meta.insert("compression".into(), compression_name(compression).into());

    for (tag, key) in [
        (Tag::ImageDescription, "description"),
        (Tag::Software, "software"),
        (Tag::DateTime, "datetime"),
        (Tag::Make, "make"),
        (Tag::Model, "model"),
    ] {
        if let Some(Value::Ascii(s)) = dec.find_tag(tag).ok().flatten() {
            let s = s
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string();
            if !s.is_empty() {
                meta.insert(key.into(), s.into());
            }
        }
    }
    Ok(meta)
}

/// Walks the directory chain without interpreting the images, up to `cap`
/// directories; a loop or a broken link ends the walk.
fn count_ifds(dec: &mut Decoder<Cursor<&[u8]>>, cap: usize) -> usize {
    let Some(mut ptr) = dec.ifd_pointer() else {
        return 1;
    };
    let mut seen = HashSet::new();
    let mut count = 0;
    while count < cap && seen.insert(ptr.0) {
        let Ok(dir) = dec.read_directory(ptr) else {
            break;
        };
        count += 1;
        match dir.next() {
            Some(next) => ptr = next,
            None => break,
        }
    }
    count.max(1)
}

fn tag_f64(dec: &mut Decoder<Cursor<&[u8]>>, tag: Tag) -> Option<f64> {
    value_f64(dec.find_tag(tag).ok()??)
}

/// A TIFF tag's number (the first of a list), shared with the OCR decoder.
pub(crate) fn value_f64(v: Value) -> Option<f64> {
    match v {
        Value::Byte(n) => Some(n.into()),
        Value::Short(n) => Some(n.into()),
        Value::Unsigned(n) => Some(n.into()),
        Value::UnsignedBig(n) => Some(n as f64),
        Value::Float(n) => Some(n.into()),
        Value::Double(n) => Some(n),
        Value::Rational(n, d) if d != 0 => Some(f64::from(n) / f64::from(d)),
        Value::List(list) => list.into_iter().next().and_then(value_f64),
        _ => None,
    }
}

fn compression_name(code: u32) -> String {
    match code {
        1 => "none".into(),
        2 => "CCITT RLE".into(),
        3 => "CCITT G3".into(),
        4 => "CCITT G4".into(),
        5 => "LZW".into(),
        6 | 7 => "JPEG".into(),
        8 | 0x80B2 => "Deflate".into(),
        0x8005 => "PackBits".into(),
        0xC350 => "ZSTD".into(),
        0xC351 => "WebP".into(),
        other => format!("unknown ({other})"),
    }
}

// ---------------------------------------------------------------------------
// JPEG

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn read_jpeg(bytes: &[u8]) -> Result<Meta, ReadError> {
    let mut pos = 2;
    let mut size: Option<(u16, u16)> = None;
    let mut jfif_dpi: Option<f64> = None;
    let mut exif_dpi: Option<f64> = None;
    let mut scan_start = None;
    while pos < bytes.len() {
        if bytes[pos] != 0xFF {
            return Err(damaged("JPEG 段结构错误"));
        }
        // Fill bytes: any number of 0xFF before a marker.
        while bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *bytes.get(pos + 1).ok_or_else(truncated)?;
        pos += 2;
        if matches!(marker, 0xD0..=0xD7 | 0x01) {
            continue; // markers without a length
        }
        if marker == 0xD9 {
            return Err(damaged("JPEG 在图像数据之前结束"));
        }
        let len = usize::from(be16(bytes, pos).ok_or_else(truncated)?);
        if len < 2 {
            return Err(damaged("JPEG 段长度错误"));
        }
        let seg = bytes.get(pos + 2..pos + len).ok_or_else(truncated)?;
        match marker {
            0xE0 if seg.starts_with(b"JFIF\0") && seg.len() >= 12 => {
                let units = seg[7];
                let x = f64::from(be16(seg, 8).unwrap_or(0));
                jfif_dpi = match units {
                    1 => Some(x),
                    2 => Some(x * 2.54),
                    _ => None, // 0: aspect ratio only
                };
            }
            0xE1 if seg.starts_with(b"Exif\0\0") => {
                exif_dpi = exif_dpi.or(exif_resolution(&seg[6..]))
            }
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC)
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) && size.is_none() => {
                let h = be16(seg, 1).ok_or_else(truncated)?;
                let w = be16(seg, 3).ok_or_else(truncated)?;
                size = Some((w, h));
            }
            0xDA => {
                scan_start = Some(pos + len);
                break;
            }
            _ => {}
        }
        pos += len;
    }
    let (Some((w, h)), Some(scan)) = (size, scan_start) else {
        return Err(truncated());
    };
    if w == 0 || h == 0 {
        return Err(damaged("JPEG 图像尺寸为零"));
    }
    // The end-of-image marker must follow the entropy-coded data; cameras
    // may append trailers after it, so search rather than look at the end.
    let tail = bytes.get(scan..).unwrap_or_default();
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(truncated());
    }
    let mut meta = Meta::new();
    put_size(&mut meta, 1, w.into(), h.into());
    if let Some(dpi) = jfif_dpi.or(exif_dpi) {
        put_dpi(&mut meta, dpi);
    }
    meta.insert("compression".into(), "JPEG".into());
    Ok(meta)
}

/// XResolution (with ResolutionUnit) from IFD0 of an EXIF block, which is a
/// small TIFF structure of its own.
fn exif_resolution(t: &[u8]) -> Option<f64> {
    let le = match t.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = [*t.get(at)?, *t.get(at + 1)?];
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = [
            *t.get(at)?,
            *t.get(at + 1)?,
            *t.get(at + 2)?,
            *t.get(at + 3)?,
        ];
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let n = usize::from(u16_at(ifd)?);
    let (mut xres, mut unit) = (None, 2u16);
    for i in 0..n.min(256) {
        let e = ifd.checked_add(2 + i * 12)?;
        match u16_at(e)? {
            282 => {
                let off = usize::try_from(u32_at(e + 8)?).ok()?;
                let (num, den) = (u32_at(off)?, u32_at(off.checked_add(4)?)?);
                if den != 0 {
                    xres = Some(f64::from(num) / f64::from(den));
                }
            }
            296 => unit = u16_at(e + 8)?,
            _ => {}
        }
    }
    match unit {
        2 => xres,
        3 => xres.map(|x| x * 2.54),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// PNG

fn read_png(bytes: &[u8]) -> Result<Meta, ReadError> {
    let mut pos = 8;
    let mut size = None;
    let mut dpi = None;
    let mut ended = false;
    while pos < bytes.len() {
        let len =
            usize::try_from(be32(bytes, pos).ok_or_else(truncated)?).map_err(|_| truncated())?;
        let kind = bytes.get(pos + 4..pos + 8).ok_or_else(truncated)?;
        let data_end = (pos + 8).checked_add(len).ok_or_else(truncated)?;
        let data = bytes.get(pos + 8..data_end).ok_or_else(truncated)?;
        // each chunk ends with a 4-byte CRC
        if data_end + 4 > bytes.len() {
            return Err(truncated());
        }
        match kind {
            b"IHDR" => {
                let (w, h) = (
                    be32(data, 0).ok_or_else(truncated)?,
                    be32(data, 4).ok_or_else(truncated)?,
                );
                size = Some((w, h));
            }
            b"pHYs" => {
                // pixels per unit; unit 1 = metre, 0 = aspect ratio only
                if let (Some(x), Some(1)) = (be32(data, 0), data.get(8)) {
                    dpi = Some(f64::from(x) * 0.0254);
                }
            }
            b"IEND" => {
                ended = true;
                break;
            }
            _ => {}
        }
        if size.is_none() {
            return Err(damaged("PNG 缺少 IHDR 头"));
        }
        pos = data_end + 4;
    }
    let Some((w, h)) = size else {
        return Err(truncated());
    };
    if !ended {
        return Err(truncated());
    }
    if w == 0 || h == 0 {
        return Err(damaged("PNG 图像尺寸为零"));
    }
    let mut meta = Meta::new();
    put_size(&mut meta, 1, w.into(), h.into());
    if let Some(dpi) = dpi {
        put_dpi(&mut meta, dpi);
    }
    meta.insert("compression".into(), "Deflate".into());
    Ok(meta)
}

// ---------------------------------------------------------------------------
// BMP and GIF: rare for forms, recognised so they are recorded, not refused

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn read_bmp(bytes: &[u8]) -> Result<Meta, ReadError> {
    let w = le32(bytes, 18).ok_or_else(truncated)?;
    let h = le32(bytes, 22).ok_or_else(truncated)?;
    // height is negative for top-down bitmaps
    let (w, h) = (
        i32::from_le_bytes(w.to_le_bytes()),
        i32::from_le_bytes(h.to_le_bytes()),
    );
    if w <= 0 || h == 0 {
        return Err(damaged("BMP 图像尺寸错误"));
    }
    let mut meta = Meta::new();
    put_size(
        &mut meta,
        1,
        w.unsigned_abs().into(),
        h.unsigned_abs().into(),
    );
    if let Some(ppm) = le32(bytes, 38) {
        put_dpi(&mut meta, f64::from(ppm) * 0.0254);
    }
    let compression = match le32(bytes, 30) {
        Some(0) | None => "none",
        Some(1 | 2) => "RLE",
        Some(_) => "other",
    };
    meta.insert("compression".into(), compression.into());
    Ok(meta)
}

fn read_gif(bytes: &[u8]) -> Result<Meta, ReadError> {
    let w = u16::from_le_bytes([
        *bytes.get(6).ok_or_else(truncated)?,
        *bytes.get(7).ok_or_else(truncated)?,
    ]);
    let h = u16::from_le_bytes([
        *bytes.get(8).ok_or_else(truncated)?,
        *bytes.get(9).ok_or_else(truncated)?,
    ]);
    if w == 0 || h == 0 {
        return Err(damaged("GIF 图像尺寸为零"));
    }
    let mut meta = Meta::new();
    put_size(&mut meta, 1, w.into(), h.into());
    meta.insert("compression".into(), "LZW".into());
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/image/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn meta_of(bytes: &[u8]) -> Meta {
        let out = read(bytes, &ReadLimits::default()).expect("readable image");
        assert!(out.scanned);
        assert!(out.grids.is_empty());
        out.meta
    }

    #[test]
    fn g4_fax_tiff_headers_and_tags() {
        let meta = meta_of(&fixture("fax_g4.tif"));
        assert_eq!(meta["pages"], 1);
        assert_eq!(meta["width"], 400);
        assert_eq!(meta["height"], 520);
        assert_eq!(meta["dpi"], 204);
        assert_eq!(meta["compression"], "CCITT G4");
        assert_eq!(meta["description"], "Fax from 0577-67001917");
        assert_eq!(meta["software"], "HylaFAX 6.0");
        assert_eq!(meta["datetime"], "2024:03:05 09:30:00");
        assert_eq!(meta["make"], "Brother");
        assert_eq!(meta["model"], "FAX-2820");
    }

    #[test]
    fn multi_page_g3_tiff_counts_pages_up_to_the_limit() {
        let bytes = fixture("two_pages_g3.tif");
        let meta = meta_of(&bytes);
        assert_eq!(meta["pages"], 2);
        assert_eq!(meta["compression"], "CCITT G3");
        assert_eq!(meta["dpi"], 200);
        assert!(!meta.contains_key("description"));
        // the walk stops at max_pages + 1 directories
        let limits = ReadLimits {
            max_pages: 0,
            ..ReadLimits::default()
        };
        let capped = read(&bytes, &limits).expect("readable");
        assert_eq!(capped.meta["pages"], 1);
    }

    #[test]
    fn png_with_phys() {
        let meta = meta_of(&fixture("phys_300dpi.png"));
        assert_eq!(meta["width"], 120);
        assert_eq!(meta["height"], 80);
        assert_eq!(meta["dpi"], 300);
        assert_eq!(meta["compression"], "Deflate");
        assert_eq!(meta["pages"], 1);
    }

    #[test]
    fn jpeg_with_jfif_density() {
        let meta = meta_of(&fixture("jfif_150dpi.jpg"));
        assert_eq!(meta["width"], 90);
        assert_eq!(meta["height"], 60);
        assert_eq!(meta["dpi"], 150);
        assert_eq!(meta["compression"], "JPEG");
    }

    /// SOI, an EXIF block saying 72/1 dpi in big-endian TIFF, SOF0, SOS, EOI.
    fn exif_jpeg() -> Vec<u8> {
        let mut tiff = b"MM\0*\0\0\0\x08".to_vec();
        tiff.extend([0, 2]); // two entries
        tiff.extend([0x01, 0x1A, 0, 5, 0, 0, 0, 1, 0, 0, 0, 38]); // XResolution -> 38
        tiff.extend([0x01, 0x28, 0, 3, 0, 0, 0, 1, 0, 2, 0, 0]); // unit inch
        tiff.extend([0, 0, 0, 0]); // no next IFD
        tiff.extend([0, 0, 0, 96, 0, 0, 0, 1]); // 96/1
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(&tiff);
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE1];
        j.extend(u16::try_from(app1.len() + 2).expect("small").to_be_bytes());
        j.extend(&app1);
        j.extend([0xFF, 0xC0, 0, 11, 8, 0, 20, 0, 30, 1, 1, 0x11, 0]);
        j.extend([
            0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0x3F, 0, 0x12, 0x34, 0xFF, 0xD9,
        ]);
        j
    }

    #[test]
    fn jpeg_with_exif_resolution_only() {
        let meta = meta_of(&exif_jpeg());
        assert_eq!(meta["width"], 30);
        assert_eq!(meta["height"], 20);
        assert_eq!(meta["dpi"], 96);
    }

    #[test]
    fn magic_bytes() {
        for name in [
            "fax_g4.tif",
            "two_pages_g3.tif",
            "phys_300dpi.png",
            "jfif_150dpi.jpg",
        ] {
            assert!(is_image(&fixture(name)), "{name}");
        }
        assert!(is_image(b"GIF89a\x01\0\x01\0"));
        assert!(!is_image(b"%PDF-1.4"));
        assert!(!is_image(b""));
    }

    #[test]
    fn truncated_or_garbage_is_an_error_not_a_panic() {
        for name in ["fax_g4.tif", "phys_300dpi.png", "jfif_150dpi.jpg"] {
            let bytes = fixture(name);
            // (a TIFF missing a few trailing bytes that nothing points into
            // is still readable, so the end cut is for PNG and JPEG only)
            let end_cut = if name.ends_with(".tif") {
                20
            } else {
                bytes.len() - 3
            };
            for cut in [bytes.len() / 2, end_cut, 12] {
                let err = read(&bytes[..cut], &ReadLimits::default()).expect_err(name);
                assert!(
                    matches!(err, ReadError::Damaged(_)),
                    "{name} cut {cut}: {err:?}"
                );
            }
        }
        assert!(matches!(
            read(b"hello", &ReadLimits::default()),
            Err(ReadError::Unsupported(_))
        ));
        assert!(matches!(
            read(b"II*\0", &ReadLimits::default()),
            Err(ReadError::Damaged(_))
        ));
    }

    #[test]
    fn mutations_never_panic() {
        // xorshift64: deterministic, no dependency
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let inputs: Vec<Vec<u8>> = [
            "fax_g4.tif",
            "two_pages_g3.tif",
            "phys_300dpi.png",
            "jfif_150dpi.jpg",
        ]
        .iter()
        .map(|n| fixture(n))
        .chain(std::iter::once(exif_jpeg()))
        .collect();
        for round in 0..400 {
            let mut bytes = inputs[round % inputs.len()].clone();
            let len = bytes.len() as u64;
            // keep the magic bytes on most rounds so the parsers are reached
            for _ in 0..(next() % 4 + 1) {
                let at = (4 + next() % len.saturating_sub(4).max(1)) as usize;
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << (next() % 8);
                }
            }
            if next() % 3 == 0 {
                bytes.truncate((next() % len) as usize);
            }
            let result = std::panic::catch_unwind(|| read(&bytes, &ReadLimits::default()));
            assert!(result.is_ok(), "round {round} panicked");
        }
    }
}
