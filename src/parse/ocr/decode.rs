//! Decoding of scanned pages into pixels at their native resolution.
//!
//! Inputs are the pictures a scanned form arrives as: multi-page TIFF (fax
//! CCITT Group 4 1-bit, or grey/colour scans), JPEG photos, PNG, and
//! image-only PDFs whose pages each hold one embedded image (CCITT fax,
//! DCT/JPEG, or raw/Flate samples). Nothing is rendered or resampled: a PDF
//! page yields its largest image XObject as stored.
//!
//! Every resource limit is explicit: the number of pages and the number of
//! pixels per page are checked before any pixel buffer is allocated, and the
//! error names the limit that was hit. Decoders of hostile input may panic
//! (lopdf and tiff index input-derived data); the public functions turn a
//! panic into [`DecodeError::Damaged`].

use std::collections::HashSet;
use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use lopdf::{Dictionary, Document, Object, ObjectId};

use crate::parse::readers::image::value_f64;
use crate::parse::readers::pdf::{deref, dict_get, inherited, number};

/// Decoded samples, 8 bits per channel, rows top to bottom without padding.
#[derive(Clone, PartialEq, Eq)]
pub enum Pixels {
    /// One byte per pixel, 0 = black, 255 = white.
    Gray(Vec<u8>),
    /// Three bytes per pixel, R G B.
    Rgb(Vec<u8>),
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pixels::Gray(v) => write!(f, "Gray({} bytes)", v.len()),
            Pixels::Rgb(v) => write!(f, "Rgb({} bytes)", v.len()),
        }
    }
}

/// One page as decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// Horizontal and vertical resolution in dots per inch, when the file
    /// says (TIFF tags, JFIF/EXIF density, PNG pHYs, or for PDFs the image
    /// size against the page's MediaBox).
    pub dpi: Option<(f32, f32)>,
    pub pixels: Pixels,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unrecognised picture format (not TIFF, JPEG, PNG or PDF)")]
    UnknownFormat,
    #[error("more than {limit} pages (limit max_pages = {limit})")]
    TooManyPages { limit: usize },
    #[error(
        "page {page} is {width}×{height} = {pixels} pixels, over the limit max_pixels = {limit}"
    )]
    TooManyPixels {
        page: usize,
        width: u64,
        height: u64,
        pixels: u64,
        limit: u64,
    },
    #[error("page {page}: unsupported {what}")]
    Unsupported { page: usize, what: String },
    #[error("page {page}: damaged: {what}")]
    Damaged { page: usize, what: String },
    #[error("PDF page {page} holds no image")]
    NoImage { page: usize },
    #[error("the PDF is encrypted with a password")]
    Encrypted,
    #[error("the file holds no page")]
    NoPages,
}

fn damaged(page: usize, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::Damaged {
        page,
        what: what.to_string(),
    }
}

fn unsupported(page: usize, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::Unsupported {
        page,
        what: what.to_string(),
    }
}

/// Checks one page's size against the pixel limit before anything is
/// allocated; zero-sized pages are damaged.
fn check_size(page: usize, width: u64, height: u64, max_pixels: u64) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(damaged(page, format!("image size {width}×{height}")));
    }
    let pixels = width.saturating_mul(height);
    if pixels > max_pixels {
        return Err(DecodeError::TooManyPixels {
            page,
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    Ok(())
}

/// What a byte string is, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tiff,
    Jpeg,
    Png,
    Pdf,
}

pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if find(&bytes[..bytes.len().min(1024)], b"%PDF").is_some() {
        Some(Format::Pdf)
    } else {
        None
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Pages of a TIFF, JPEG, PNG or PDF, whichever the bytes are.
pub fn pages(bytes: &[u8], max_pages: usize, max_pixels: u64) -> Result<Vec<Picture>, DecodeError> {
    match sniff(bytes) {
        Some(Format::Pdf) => pages_of_pdf(bytes, max_pages, max_pixels),
        Some(_) => pages_of_image(bytes, max_pages, max_pixels),
        None => Err(DecodeError::UnknownFormat),
    }
}

/// Every page of a TIFF (all frames), or the one page of a JPEG or PNG.
pub fn pages_of_image(
    bytes: &[u8],
    max_pages: usize,
    max_pixels: u64,
) -> Result<Vec<Picture>, DecodeError> {
    guarded(|| match sniff(bytes) {
        Some(Format::Tiff) => tiff_pages(bytes, max_pages, max_pixels),
        Some(Format::Jpeg) => {
            if max_pages == 0 {
                return Err(DecodeError::TooManyPages { limit: 0 });
            }
            Ok(vec![jpeg_picture(bytes, 1, max_pixels)?])
        }
        Some(Format::Png) => {
            if max_pages == 0 {
                return Err(DecodeError::TooManyPages { limit: 0 });
            }
            Ok(vec![png_picture(bytes, max_pixels)?])
        }
        _ => Err(DecodeError::UnknownFormat),
    })
}

fn guarded<T>(f: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(damaged(0, "the decoder failed on this file's structure")))
}

// ---------------------------------------------------------------------------
// Pixel helpers

/// Expands packed 1-bit rows (MSB first, rows padded to a byte) to grey:
/// a set bit becomes `one`, a clear bit the other value.
fn unpack_bits(packed: &[u8], width: usize, height: usize, one: u8) -> Option<Vec<u8>> {
    let stride = width.div_ceil(8);
    if packed.len() < stride.checked_mul(height)? {
        return None;
    }
    let zero = 255 - one;
    let mut out = vec![0u8; width * height];
    for (row, dst) in packed.chunks_exact(stride).zip(out.chunks_exact_mut(width)) {
        for (x, d) in dst.iter_mut().enumerate() {
            let bit = (row[x >> 3] >> (7 - (x & 7))) & 1;
            *d = if bit == 1 { one } else { zero };
        }
    }
    Some(out)
}

/// A bi-level page is paper with ink: if most of it is black the source's
/// polarity was read the wrong way round (fax encoders disagree on
/// PhotometricInterpretation and BlackIs1), so it is inverted.
fn fix_bilevel_polarity(gray: &mut [u8]) {
    let dark = gray.iter().filter(|&&v| v < 128).count();
    if dark * 2 > gray.len() {
        for v in gray.iter_mut() {
            *v = 255 - *v;
        }
    }
}

/// Remaps a picture by an EXIF-style orientation (1..=8): the result is the
/// picture as it should be displayed.
fn orient(p: Picture, orientation: u16) -> Picture {
    if !(2..=8).contains(&orientation) {
        return p;
    }
    let (w, h) = (p.width as usize, p.height as usize);
    let swap = orientation >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    // Source coordinates of output pixel (u, v).
    let src = |u: usize, v: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - u, v),
            3 => (w - 1 - u, h - 1 - v),
            4 => (u, h - 1 - v),
            5 => (v, u),
            6 => (v, h - 1 - u),
            7 => (w - 1 - v, h - 1 - u),
            _ => (w - 1 - v, u), // 8
        }
    };
    let remap = |data: &[u8], ch: usize| -> Vec<u8> {
        let mut out = vec![0u8; ow * oh * ch];
        for v in 0..oh {
            for u in 0..ow {
                let (x, y) = src(u, v);
                let s = (y * w + x) * ch;
                let d = (v * ow + u) * ch;
                out[d..d + ch].copy_from_slice(&data[s..s + ch]);
            }
        }
        out
    };
    let pixels = match &p.pixels {
        Pixels::Gray(g) => Pixels::Gray(remap(g, 1)),
        Pixels::Rgb(c) => Pixels::Rgb(remap(c, 3)),
    };
    Picture {
        width: ow as u32,
        height: oh as u32,
        dpi: p.dpi.map(|(x, y)| if swap { (y, x) } else { (x, y) }),
        pixels,
    }
}

fn cmyk_to_rgb(c: u8, m: u8, y: u8, k: u8) -> [u8; 3] {
    let k = 255 - u32::from(k);
    let f = |v: u8| ((255 - u32::from(v)) * k / 255) as u8;
    [f(c), f(m), f(y)]
}

// ---------------------------------------------------------------------------
// TIFF

fn tiff_pages(
    bytes: &[u8],
    max_pages: usize,
    max_pixels: u64,
) -> Result<Vec<Picture>, DecodeError> {
    use tiff::decoder::{Decoder, Limits};
    let mut limits = Limits::default();
    // 4 bytes per pixel covers every layout decoded here (RGBA 8-bit,
    // grey 16-bit); strips never exceed the image.
    limits.decoding_buffer_size =
        usize::try_from(max_pixels.saturating_mul(8)).unwrap_or(usize::MAX);
    limits.intermediate_buffer_size = limits.decoding_buffer_size;
    let mut dec = Decoder::new(Cursor::new(bytes))
        .map_err(|e| damaged(1, format!("TIFF: {e}")))?
        .with_limits(limits);
    let mut out = Vec::new();
    loop {
        let page = out.len() + 1;
        if out.len() >= max_pages {
            return Err(DecodeError::TooManyPages { limit: max_pages });
        }
        out.push(tiff_frame(&mut dec, page, max_pixels)?);
        if !dec.more_images() {
            break;
        }
        dec.next_image()
            .map_err(|e| damaged(page + 1, format!("TIFF directory: {e}")))?;
    }
    Ok(out)
}

fn tiff_frame(
    dec: &mut tiff::decoder::Decoder<Cursor<&[u8]>>,
    page: usize,
    max_pixels: u64,
) -> Result<Picture, DecodeError> {
    use tiff::ColorType;
    use tiff::decoder::DecodingResult;
    use tiff::tags::Tag;

    let (w, h) = dec
        .dimensions()
        .map_err(|e| damaged(page, format!("TIFF: {e}")))?;
    check_size(page, w.into(), h.into(), max_pixels)?;
    let ct = dec
        .colortype()
        .map_err(|e| unsupported(page, format!("TIFF colour type: {e}")))?;
    let dpi = tiff_dpi(dec);
    let (wu, hu) = (w as usize, h as usize);
    let n = wu * hu;
    let img = dec.read_image().map_err(|e| match e {
        tiff::TiffError::UnsupportedError(u) => unsupported(page, format!("TIFF: {u}")),
        other => damaged(page, format!("TIFF: {other}")),
    })?;
    let short = || damaged(page, "TIFF image data shorter than its size");
    let pixels = match (ct, img) {
        (ColorType::Gray(1), DecodingResult::U8(v)) => {
            // After the tiff crate's photometric handling a set bit is white.
            let mut g = unpack_bits(&v, wu, hu, 255).ok_or_else(short)?;
            fix_bilevel_polarity(&mut g);
            Pixels::Gray(g)
        }
        (ColorType::Gray(8), DecodingResult::U8(v)) => {
            Pixels::Gray(v.get(..n).ok_or_else(short)?.to_vec())
        }
        (ColorType::Gray(16), DecodingResult::U16(v)) => Pixels::Gray(
            v.get(..n)
                .ok_or_else(short)?
                .iter()
                .map(|s| (s >> 8) as u8)
                .collect(),
        ),
        (ColorType::GrayA(8), DecodingResult::U8(v)) => Pixels::Gray(
            v.get(..n * 2)
                .ok_or_else(short)?
                .chunks_exact(2)
                .map(|p| p[0])
                .collect(),
        ),
        (ColorType::RGB(8), DecodingResult::U8(v)) => {
            Pixels::Rgb(v.get(..n * 3).ok_or_else(short)?.to_vec())
        }
        (ColorType::RGB(16), DecodingResult::U16(v)) => Pixels::Rgb(
            v.get(..n * 3)
                .ok_or_else(short)?
                .iter()
                .map(|s| (s >> 8) as u8)
                .collect(),
        ),
        (ColorType::RGBA(8), DecodingResult::U8(v)) => Pixels::Rgb(
            v.get(..n * 4)
                .ok_or_else(short)?
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
        ),
        (ColorType::CMYK(8), DecodingResult::U8(v)) => Pixels::Rgb(
            v.get(..n * 4)
                .ok_or_else(short)?
                .chunks_exact(4)
                .flat_map(|p| cmyk_to_rgb(p[0], p[1], p[2], p[3]))
                .collect(),
        ),
        (ColorType::Palette(8), DecodingResult::U8(v)) => {
            let map = dec
                .get_tag_u16_vec(Tag::ColorMap)
                .map_err(|e| damaged(page, format!("TIFF colour map: {e}")))?;
            if map.len() < 3 * 256 {
                return Err(damaged(page, "TIFF colour map too short"));
            }
            let rgb = v
                .get(..n)
                .ok_or_else(short)?
                .iter()
                .flat_map(|&i| {
                    let i = usize::from(i);
                    [
                        (map[i] >> 8) as u8,
                        (map[256 + i] >> 8) as u8,
                        (map[512 + i] >> 8) as u8,
                    ]
                })
                .collect();
            Pixels::Rgb(rgb)
        }
        (other, _) => return Err(unsupported(page, format!("TIFF colour type {other:?}"))),
    };
    Ok(Picture {
        width: w,
        height: h,
        dpi,
        pixels,
    })
}

fn tiff_dpi(dec: &mut tiff::decoder::Decoder<Cursor<&[u8]>>) -> Option<(f32, f32)> {
    use tiff::tags::Tag;
    let mut tag = |t: Tag| dec.find_tag(t).ok().flatten().and_then(value_f64);
    let scale = match tag(Tag::ResolutionUnit).map_or(2, |u| u as u32) {
        2 => 1.0,
        3 => 2.54,
        _ => return None, // 1: no absolute unit, an aspect ratio only
    };
    let x = tag(Tag::XResolution)?;
    let y = tag(Tag::YResolution).unwrap_or(x);
    plausible_dpi(x * scale, y * scale)
}

fn plausible_dpi(x: f64, y: f64) -> Option<(f32, f32)> {
    let ok = |v: f64| v.is_finite() && (10.0..=10_000.0).contains(&v);
    (ok(x) && ok(y)).then_some((x as f32, y as f32))
}

// ---------------------------------------------------------------------------
// JPEG

fn jpeg_picture(bytes: &[u8], page: usize, max_pixels: u64) -> Result<Picture, DecodeError> {
    use zune_jpeg::JpegDecoder;
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    let options = DecoderOptions::default()
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    dec.decode_headers()
        .map_err(|e| damaged(page, format!("JPEG: {e:?}")))?;
    let info = dec
        .info()
        .ok_or_else(|| damaged(page, "JPEG headers unreadable"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_size(page, w.into(), h.into(), max_pixels)?;
    let grey = info.components == 1;
    let out_cs = if grey {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    dec.set_options(options.jpeg_set_out_colorspace(out_cs));
    let data = dec
        .decode()
        .map_err(|e| damaged(page, format!("JPEG: {e:?}")))?;
    let n = w as usize * h as usize * if grey { 1 } else { 3 };
    if data.len() < n {
        return Err(damaged(page, "JPEG data shorter than its size"));
    }
    let dpi = match info.pixel_density {
        1 => plausible_dpi(info.x_density.into(), info.y_density.into()),
        2 => plausible_dpi(
            f64::from(info.x_density) * 2.54,
            f64::from(info.y_density) * 2.54,
        ),
        _ => None,
    };
    let orientation = dec.exif().and_then(|e| exif_orientation(e)).unwrap_or(1);
    let pixels = if grey {
        Pixels::Gray(data[..n].to_vec())
    } else {
        Pixels::Rgb(data[..n].to_vec())
    };
    Ok(orient(
        Picture {
            width: w,
            height: h,
            dpi,
            pixels,
        },
        orientation,
    ))
}

/// The Orientation tag (0x0112) of IFD0 in an EXIF block that starts at
/// its TIFF header.
fn exif_orientation(t: &[u8]) -> Option<u16> {
    let le = match t.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = [*t.get(at)?, *t.get(at.checked_add(1)?)?];
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = t.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let n = usize::from(u16_at(ifd)?);
    for i in 0..n.min(512) {
        let e = ifd.checked_add(2 + i * 12)?;
        if u16_at(e)? == 0x0112 {
            return u16_at(e + 8).filter(|o| (1..=8).contains(o));
        }
    }
    None
}

// ---------------------------------------------------------------------------
// PNG

fn png_picture(bytes: &[u8], max_pixels: u64) -> Result<Picture, DecodeError> {
    use png::{ColorType, Decoder, Limits, Transformations, Unit};
    let page = 1;
    let limit_bytes = usize::try_from(max_pixels.saturating_mul(8)).unwrap_or(usize::MAX);
    let mut dec = Decoder::new_with_limits(Cursor::new(bytes), Limits { bytes: limit_bytes });
    dec.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .map_err(|e| damaged(page, format!("PNG: {e}")))?;
    let (w, h) = {
        let info = reader.info();
        (info.width, info.height)
    };
    check_size(page, w.into(), h.into(), max_pixels)?;
    let dpi = reader.info().pixel_dims.and_then(|d| match d.unit {
        Unit::Meter => plausible_dpi(f64::from(d.xppu) * 0.0254, f64::from(d.yppu) * 0.0254),
        Unit::Unspecified => None,
    });
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| damaged(page, "PNG size overflows"))?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| damaged(page, format!("PNG: {e}")))?;
    let n = w as usize * h as usize;
    let line = frame.line_size;
    let width = w as usize;
    // Alpha is composited over white paper.
    let over_white = |v: u8, a: u8| -> u8 {
        ((u32::from(v) * u32::from(a) + 255 * (255 - u32::from(a))) / 255) as u8
    };
    let rows = buf.chunks_exact(line).take(h as usize);
    let pixels = match frame.color_type {
        ColorType::Grayscale => {
            let mut g = Vec::with_capacity(n);
            for r in rows {
                g.extend_from_slice(&r[..width]);
            }
            Pixels::Gray(g)
        }
        ColorType::GrayscaleAlpha => {
            let mut g = Vec::with_capacity(n);
            for r in rows {
                g.extend(
                    r[..width * 2]
                        .chunks_exact(2)
                        .map(|p| over_white(p[0], p[1])),
                );
            }
            Pixels::Gray(g)
        }
        ColorType::Rgb => {
            let mut c = Vec::with_capacity(n * 3);
            for r in rows {
                c.extend_from_slice(&r[..width * 3]);
            }
            Pixels::Rgb(c)
        }
        ColorType::Rgba => {
            let mut c = Vec::with_capacity(n * 3);
            for r in rows {
                for p in r[..width * 4].chunks_exact(4) {
                    c.extend([
                        over_white(p[0], p[3]),
                        over_white(p[1], p[3]),
                        over_white(p[2], p[3]),
                    ]);
                }
            }
            Pixels::Rgb(c)
        }
        ColorType::Indexed => return Err(unsupported(page, "PNG palette left unexpanded")),
    };
    let ok = match &pixels {
        Pixels::Gray(g) => g.len() == n,
        Pixels::Rgb(c) => c.len() == n * 3,
    };
    if !ok {
        return Err(damaged(page, "PNG data shorter than its size"));
    }
    Ok(Picture {
        width: w,
        height: h,
        dpi,
        pixels,
    })
}

// ---------------------------------------------------------------------------
// PDF

/// For each page of an image-only PDF, its largest image XObject (looked up
/// in the page's resources, inherited ones and those of form XObjects it
/// uses), decoded at its native resolution and turned by the page's
/// /Rotate.
pub fn pages_of_pdf(
    bytes: &[u8],
    max_pages: usize,
    max_pixels: u64,
) -> Result<Vec<Picture>, DecodeError> {
    guarded(|| pdf_pages(bytes, max_pages, max_pixels))
}

fn pdf_pages(bytes: &[u8], max_pages: usize, max_pixels: u64) -> Result<Vec<Picture>, DecodeError> {
    if find(&bytes[..bytes.len().min(1024)], b"%PDF").is_none() {
        return Err(DecodeError::UnknownFormat);
    }
    let doc = Document::load_mem(bytes).map_err(|e| match e {
        lopdf::Error::InvalidPassword | lopdf::Error::Decryption(_) => DecodeError::Encrypted,
        other => damaged(0, format!("PDF structure: {other}")),
    })?;
    if doc.is_encrypted() && doc.authenticate_password("").is_err() {
        return Err(DecodeError::Encrypted);
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(DecodeError::NoPages);
    }
    if pages.len() > max_pages {
        return Err(DecodeError::TooManyPages { limit: max_pages });
    }
    let mut out = Vec::with_capacity(pages.len());
    for (index, &page_id) in pages.values().enumerate() {
        let page = index + 1;
        let dict = doc
            .get_dictionary(page_id)
            .map_err(|e| damaged(page, format!("PDF page: {e}")))?;
        let image_id = largest_image(&doc, dict).ok_or(DecodeError::NoImage { page })?;
        let stream = doc
            .get_object(image_id)
            .and_then(Object::as_stream)
            .map_err(|e| damaged(page, format!("PDF image: {e}")))?;
        let mut pic = pdf_image(&doc, stream, page, max_pixels)?;
        if let Some((mw, mh)) = media_size(&doc, dict) {
            pic.dpi = plausible_dpi(
                f64::from(pic.width) / (mw / 72.0),
                f64::from(pic.height) / (mh / 72.0),
            );
        }
        let rotate = inherited(&doc, dict, b"Rotate")
            .and_then(number)
            .map_or(0, |r| (r as i64).rem_euclid(360));
        let orientation = match rotate {
            90 => 6,
            180 => 3,
            270 => 8,
            _ => 1,
        };
        out.push(orient(pic, orientation));
    }
    Ok(out)
}

fn int(doc: &Document, dict: &Dictionary, key: &[u8]) -> Option<i64> {
    dict_get(doc, dict, key).and_then(number).map(|v| v as i64)
}

fn media_size(doc: &Document, page: &Dictionary) -> Option<(f64, f64)> {
    let a = inherited(doc, page, b"MediaBox")?.as_array().ok()?;
    let n: Vec<f64> = a
        .iter()
        .filter_map(|o| deref(doc, o).and_then(number))
        .collect();
    if n.len() != 4 {
        return None;
    }
    let (w, h) = ((n[2] - n[0]).abs(), (n[3] - n[1]).abs());
    (w > 1.0 && h > 1.0).then_some((w, h))
}

/// The image XObject with the most pixels used by a page.
fn largest_image(doc: &Document, page: &Dictionary) -> Option<ObjectId> {
    let resources = inherited(doc, page, b"Resources")?.as_dict().ok()?;
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut best: Option<(i64, ObjectId)> = None;
    let mut stack = vec![(resources, 0usize)];
    while let Some((res, depth)) = stack.pop() {
        let Some(xobjects) = dict_get(doc, res, b"XObject").and_then(|o| o.as_dict().ok()) else {
            continue;
        };
        for (_, obj) in xobjects.iter() {
            let Object::Reference(id) = obj else { continue };
            if !seen.insert(*id) {
                continue;
            }
            let Ok(stream) = doc.get_object(*id).and_then(Object::as_stream) else {
                continue;
            };
            match dict_get(doc, &stream.dict, b"Subtype").and_then(|o| o.as_name().ok()) {
                Some(b"Image") => {
                    let w = int(doc, &stream.dict, b"Width").unwrap_or(0).max(0);
                    let h = int(doc, &stream.dict, b"Height").unwrap_or(0).max(0);
                    let px = w.saturating_mul(h);
                    if px > 0 && best.is_none_or(|(p, _)| px > p) {
                        best = Some((px, *id));
                    }
                }
                Some(b"Form") if depth < 8 => {
                    if let Some(r) =
                        dict_get(doc, &stream.dict, b"Resources").and_then(|o| o.as_dict().ok())
                    {
                        stack.push((r, depth + 1));
                    }
                }
                _ => {}
            }
        }
    }
    best.map(|(_, id)| id)
}

/// How the samples of an image are to be read as colour.
#[derive(Debug, Clone)]
enum Space {
    Gray,
    Rgb,
    Cmyk,
    /// Base space components and lookup table (base components per entry).
    Indexed {
        base: Box<Space>,
        table: Vec<u8>,
    },
}

impl Space {
    fn components(&self) -> usize {
        match self {
            Space::Gray | Space::Indexed { .. } => 1,
            Space::Rgb => 3,
            Space::Cmyk => 4,
        }
    }
}

fn colour_space(doc: &Document, obj: Option<&Object>, page: usize) -> Result<Space, DecodeError> {
    let Some(obj) = obj else {
        return Ok(Space::Gray);
    };
    let obj = deref(doc, obj).unwrap_or(obj);
    if let Ok(name) = obj.as_name() {
        return match name {
            b"DeviceGray" | b"CalGray" | b"G" => Ok(Space::Gray),
            b"DeviceRGB" | b"CalRGB" | b"RGB" => Ok(Space::Rgb),
            b"DeviceCMYK" | b"CMYK" => Ok(Space::Cmyk),
            other => Err(unsupported(
                page,
                format!("PDF colour space {}", String::from_utf8_lossy(other)),
            )),
        };
    }
    let arr = obj
        .as_array()
        .map_err(|_| damaged(page, "PDF colour space is neither a name nor an array"))?;
    let family = arr
        .first()
        .and_then(|o| deref(doc, o))
        .and_then(|o| o.as_name().ok())
        .unwrap_or(b"");
    match family {
        b"CalGray" => Ok(Space::Gray),
        b"CalRGB" | b"Lab" => Ok(Space::Rgb),
        b"ICCBased" => {
            let n = arr
                .get(1)
                .and_then(|o| deref(doc, o))
                .and_then(|o| o.as_stream().ok())
                .and_then(|s| int(doc, &s.dict, b"N"))
                .unwrap_or(3);
            match n {
                1 => Ok(Space::Gray),
                3 => Ok(Space::Rgb),
                4 => Ok(Space::Cmyk),
                _ => Err(unsupported(
                    page,
                    format!("PDF ICC colour space with {n} components"),
                )),
            }
        }
        b"Indexed" | b"I" => {
            let base = colour_space(doc, arr.get(1), page)?;
            if matches!(base, Space::Indexed { .. }) {
                return Err(damaged(
                    page,
                    "PDF indexed colour space over an indexed one",
                ));
            }
            let hival = arr
                .get(2)
                .and_then(|o| deref(doc, o))
                .and_then(number)
                .unwrap_or(255.0);
            let hival = (hival.clamp(0.0, 255.0)) as usize;
            let lookup = arr.get(3).and_then(|o| deref(doc, o));
            let mut table = match lookup {
                Some(Object::String(s, _)) => s.clone(),
                Some(Object::Stream(s)) => s
                    .get_plain_content()
                    .map_err(|e| damaged(page, format!("PDF palette: {e}")))?,
                _ => return Err(damaged(page, "PDF indexed colour space without a table")),
            };
            table.resize((hival + 1) * base.components(), 0);
            Ok(Space::Indexed {
                base: Box::new(base),
                table,
            })
        }
        other => Err(unsupported(
            page,
            format!("PDF colour space {}", String::from_utf8_lossy(other)),
        )),
    }
}

/// Filter names (abbreviations expanded) and their parameter dictionaries.
fn filter_chain<'a>(
    doc: &'a Document,
    dict: &'a Dictionary,
) -> Vec<(&'a [u8], Option<&'a Dictionary>)> {
    let names: Vec<&[u8]> = match dict_get(doc, dict, b"Filter") {
        Some(Object::Name(n)) => vec![n.as_slice()],
        Some(Object::Array(a)) => a
            .iter()
            .filter_map(|o| deref(doc, o).and_then(|o| o.as_name().ok()))
            .collect(),
        _ => Vec::new(),
    };
    let params: Vec<Option<&Dictionary>> = match dict_get(doc, dict, b"DecodeParms") {
        Some(Object::Dictionary(d)) => vec![Some(d)],
        Some(Object::Array(a)) => a
            .iter()
            .map(|o| deref(doc, o).and_then(|o| o.as_dict().ok()))
            .collect(),
        _ => Vec::new(),
    };
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let n: &[u8] = match n {
                b"Fl" => b"FlateDecode",
                b"AHx" => b"ASCIIHexDecode",
                b"A85" => b"ASCII85Decode",
                b"LZW" => b"LZWDecode",
                b"RL" => b"RunLengthDecode",
                b"CCF" => b"CCITTFaxDecode",
                b"DCT" => b"DCTDecode",
                other => other,
            };
            (n, params.get(i).copied().flatten())
        })
        .collect()
}

fn pdf_image(
    doc: &Document,
    stream: &lopdf::Stream,
    page: usize,
    max_pixels: u64,
) -> Result<Picture, DecodeError> {
    let d = &stream.dict;
    let w = int(doc, d, b"Width").unwrap_or(0);
    let h = int(doc, d, b"Height").unwrap_or(0);
    if w <= 0 || h <= 0 || w > i64::from(u32::MAX) || h > i64::from(u32::MAX) {
        return Err(damaged(page, format!("PDF image size {w}×{h}")));
    }
    let (w, h) = (w as u64, h as u64);
    check_size(page, w, h, max_pixels)?;
    let (wu, hu) = (w as usize, h as usize);
    let image_mask = matches!(dict_get(doc, d, b"ImageMask"), Some(Object::Boolean(true)));
    let bpc = if image_mask {
        1
    } else {
        int(doc, d, b"BitsPerComponent").unwrap_or(8)
    };
    let space = if image_mask {
        Space::Gray
    } else {
        colour_space(doc, d.get(b"ColorSpace").ok(), page)?
    };
    // A Decode array [1 0] (grey / mask) swaps dark and light.
    let inverted = dict_get(doc, d, b"Decode")
        .and_then(|o| o.as_array().ok())
        .and_then(|a| {
            Some((
                deref(doc, a.first()?).and_then(number)?,
                deref(doc, a.get(1)?).and_then(number)?,
            ))
        })
        .is_some_and(|(lo, hi)| lo > hi);

    let chain = filter_chain(doc, d);
    let mut data: Vec<u8> = stream.content.clone();
    for (i, (name, params)) in chain.iter().enumerate() {
        let last = i + 1 == chain.len();
        match *name {
            b"FlateDecode" => data = inflate(&data, *params, doc, page, max_pixels)?,
            b"ASCIIHexDecode" => data = ascii_hex(&data),
            b"ASCII85Decode" => data = ascii85(&data, page)?,
            b"RunLengthDecode" => data = run_length(&data, max_pixels)?,
            b"DCTDecode" if last => {
                let mut pic = jpeg_picture(&data, page, max_pixels)?;
                if pic.width as u64 != w || pic.height as u64 != h {
                    // The JPEG's own size wins; the dictionary only hints.
                    check_size(page, pic.width.into(), pic.height.into(), max_pixels)?;
                }
                if inverted {
                    match &mut pic.pixels {
                        Pixels::Gray(g) => g.iter_mut().for_each(|v| *v = 255 - *v),
                        Pixels::Rgb(c) => c.iter_mut().for_each(|v| *v = 255 - *v),
                    }
                }
                return Ok(pic);
            }
            b"CCITTFaxDecode" if last => {
                let mut gray = ccitt(&data, *params, doc, wu, hu, page)?;
                if inverted {
                    gray.iter_mut().for_each(|v| *v = 255 - *v);
                }
                fix_bilevel_polarity(&mut gray);
                return Ok(Picture {
                    width: w as u32,
                    height: h as u32,
                    dpi: None,
                    pixels: Pixels::Gray(gray),
                });
            }
            other => {
                return Err(unsupported(
                    page,
                    format!("PDF image filter {}", String::from_utf8_lossy(other)),
                ));
            }
        }
    }
    raw_samples(&data, wu, hu, bpc, &space, inverted, page)
}

/// Unpacks uncompressed image samples (after the general filters).
fn raw_samples(
    data: &[u8],
    w: usize,
    h: usize,
    bpc: i64,
    space: &Space,
    inverted: bool,
    page: usize,
) -> Result<Picture, DecodeError> {
    let bits = match bpc {
        1 | 2 | 4 | 8 | 16 => bpc as usize,
        other => {
            return Err(unsupported(
                page,
                format!("PDF image with {other} bits per component"),
            ));
        }
    };
    let comps = space.components();
    let stride = (w * comps * bits).div_ceil(8);
    if data.len() < stride * h {
        return Err(damaged(page, "PDF image data shorter than its size"));
    }
    // Sample i of a row, scaled to 0..=255 (or the raw index when indexed).
    let max = (1u32 << bits.min(8)) - 1;
    let sample = |row: &[u8], i: usize, scale: bool| -> u8 {
        let v = match bits {
            8 => u32::from(row[i]),
            16 => u32::from(row[2 * i]), // high byte
            _ => {
                let bit = i * bits;
                (u32::from(row[bit / 8]) >> (8 - bits - bit % 8)) & max
            }
        };
        if scale && bits < 8 {
            (v * 255 / max) as u8
        } else {
            v as u8
        }
    };
    let mut gray = Vec::new();
    let mut rgb = Vec::new();
    for row in data.chunks_exact(stride).take(h) {
        for x in 0..w {
            match space {
                Space::Gray => {
                    let v = sample(row, x, true);
                    gray.push(if inverted { 255 - v } else { v });
                }
                Space::Rgb => {
                    for c in 0..3 {
                        rgb.push(sample(row, x * 3 + c, true));
                    }
                }
                Space::Cmyk => {
                    let s: Vec<u8> = (0..4).map(|c| sample(row, x * 4 + c, true)).collect();
                    rgb.extend(cmyk_to_rgb(s[0], s[1], s[2], s[3]));
                }
                Space::Indexed { base, table } => {
                    let i = usize::from(sample(row, x, false));
                    let n = base.components();
                    let e = table.get(i * n..i * n + n).unwrap_or(&[0, 0, 0, 0][..n]);
                    match **base {
                        Space::Gray => rgb.extend([e[0]; 3]),
                        Space::Rgb => rgb.extend_from_slice(e),
                        _ => rgb.extend(cmyk_to_rgb(e[0], e[1], e[2], e[3])),
                    }
                }
            }
        }
    }
    let bilevel = bits == 1 && matches!(space, Space::Gray);
    let pixels = if matches!(space, Space::Gray) {
        if bilevel {
            fix_bilevel_polarity(&mut gray);
        }
        Pixels::Gray(gray)
    } else {
        Pixels::Rgb(rgb)
    };
    Ok(Picture {
        width: w as u32,
        height: h as u32,
        dpi: None,
        pixels,
    })
}

/// zlib inflate with a size cap, then the PNG/TIFF predictor if asked.
fn inflate(
    data: &[u8],
    params: Option<&Dictionary>,
    doc: &Document,
    page: usize,
    max_pixels: u64,
) -> Result<Vec<u8>, DecodeError> {
    // At most 16 bits × 4 components per pixel, plus one predictor byte a row.
    let cap = max_pixels.saturating_mul(8).saturating_add(1 << 20);
    let mut out = Vec::new();
    let mut z = flate2::read::ZlibDecoder::new(data).take(cap);
    if z.read_to_end(&mut out).is_err() && out.is_empty() {
        // Some producers write raw deflate or a broken checksum.
        let mut raw = flate2::read::DeflateDecoder::new(data.get(2..).unwrap_or(&[])).take(cap);
        raw.read_to_end(&mut out)
            .map_err(|e| damaged(page, format!("PDF Flate data: {e}")))?;
    }
    if out.len() as u64 >= cap {
        return Err(damaged(
            page,
            "PDF Flate data larger than the image it holds",
        ));
    }
    let Some(p) = params else { return Ok(out) };
    let predictor = int(doc, p, b"Predictor").unwrap_or(1);
    if predictor < 10 {
        if predictor == 2 {
            return Err(unsupported(page, "PDF TIFF predictor"));
        }
        return Ok(out);
    }
    let colors = int(doc, p, b"Colors").unwrap_or(1).clamp(1, 4) as usize;
    let bpc = int(doc, p, b"BitsPerComponent").unwrap_or(8).clamp(1, 16) as usize;
    let columns = int(doc, p, b"Columns").unwrap_or(1).max(1) as usize;
    let bpp = (colors * bpc).div_ceil(8).max(1);
    let row_len = (columns * colors * bpc).div_ceil(8);
    png_unpredict(&out, row_len, bpp).ok_or_else(|| damaged(page, "PDF PNG predictor data"))
}

fn png_unpredict(data: &[u8], row_len: usize, bpp: usize) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(data.len());
    let mut prev = vec![0u8; row_len];
    for chunk in data.chunks(row_len + 1) {
        if chunk.len() < row_len + 1 {
            break;
        }
        let (kind, src) = (chunk[0], &chunk[1..]);
        let mut cur = vec![0u8; row_len];
        for i in 0..row_len {
            let a = if i >= bpp { cur[i - bpp] } else { 0 };
            let b = prev[i];
            let c = if i >= bpp { prev[i - bpp] } else { 0 };
            let pred = match kind {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                _ => return None,
            };
            cur[i] = src[i].wrapping_add(pred);
        }
        out.extend_from_slice(&cur);
        prev = cur;
    }
    Some(out)
}

fn ascii_hex(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2);
    let mut hi: Option<u8> = None;
    for &c in data {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b'>' => break,
            _ => continue,
        };
        match hi.take() {
            Some(h) => out.push(h << 4 | v),
            None => hi = Some(v),
        }
    }
    if let Some(h) = hi {
        out.push(h << 4);
    }
    out
}

fn ascii85(data: &[u8], page: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(data.len() * 4 / 5);
    let mut group = [0u8; 5];
    let mut n = 0;
    let body = data.strip_prefix(b"<~").unwrap_or(data);
    for &c in body {
        match c {
            b'~' => break,
            b'z' if n == 0 => out.extend_from_slice(&[0; 4]),
            b'!'..=b'u' => {
                group[n] = c - b'!';
                n += 1;
                if n == 5 {
                    let v = group.iter().fold(0u64, |acc, &d| acc * 85 + u64::from(d));
                    let v = u32::try_from(v).map_err(|_| damaged(page, "PDF ASCII85 data"))?;
                    out.extend_from_slice(&v.to_be_bytes());
                    n = 0;
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => return Err(damaged(page, "PDF ASCII85 data")),
        }
    }
    if n > 1 {
        for d in group.iter_mut().skip(n) {
            *d = 84;
        }
        let v = group.iter().fold(0u64, |acc, &d| acc * 85 + u64::from(d));
        let v = u32::try_from(v).map_err(|_| damaged(page, "PDF ASCII85 data"))?;
        out.extend_from_slice(&v.to_be_bytes()[..n - 1]);
    }
    Ok(out)
}

fn run_length(data: &[u8], max_pixels: u64) -> Result<Vec<u8>, DecodeError> {
    let cap = usize::try_from(max_pixels.saturating_mul(8)).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() && out.len() <= cap {
        let len = data[i];
        i += 1;
        match len {
            128 => break,
            0..=127 => {
                let n = usize::from(len) + 1;
                out.extend_from_slice(&data[i..(i + n).min(data.len())]);
                i += n;
            }
            _ => {
                if let Some(&b) = data.get(i) {
                    out.extend(std::iter::repeat_n(b, 257 - usize::from(len)));
                }
                i += 1;
            }
        }
    }
    Ok(out)
}

/// CCITT fax data (PDF CCITTFaxDecode) to grey, 0 = black, 255 = white.
/// K < 0 is Group 4, K = 0 Group 3 one-dimensional; mixed 2-D Group 3
/// (K > 0) is not supported by the `fax` crate.
fn ccitt(
    data: &[u8],
    params: Option<&Dictionary>,
    doc: &Document,
    w: usize,
    h: usize,
    page: usize,
) -> Result<Vec<u8>, DecodeError> {
    let get = |key: &[u8]| params.and_then(|p| int(doc, p, key));
    let k = get(b"K").unwrap_or(0);
    let columns = get(b"Columns").unwrap_or(1728);
    if columns <= 0 || columns > i64::from(u16::MAX) {
        return Err(unsupported(page, format!("CCITT width {columns}")));
    }
    let columns = columns as usize;
    if columns != w {
        return Err(damaged(
            page,
            format!("CCITT Columns {columns} ≠ image Width {w}"),
        ));
    }
    let black_is_1 = params
        .and_then(|p| dict_get(doc, p, b"BlackIs1"))
        .is_some_and(|o| matches!(o, Object::Boolean(true)));
    // Decoded colours become samples (BlackIs1), and samples grey through
    // DeviceGray (0 = black): a black run is 0 unless BlackIs1 is set.
    let (black, white) = if black_is_1 {
        (255u8, 0u8)
    } else {
        (0u8, 255u8)
    };
    let mut gray = vec![white; w * h];
    let mut y = 0usize;
    let mut put_line = |transitions: &[u16]| {
        if y >= h {
            return;
        }
        let row = &mut gray[y * w..(y + 1) * w];
        // Transitions are the positions where the colour flips, starting
        // with white at x = 0.
        let mut x0 = 0usize;
        let mut is_black = false;
        for &t in transitions {
            let x1 = usize::from(t).min(w);
            if is_black && x1 > x0 {
                row[x0..x1].fill(black);
            }
            x0 = x1.max(x0);
            is_black = !is_black;
        }
        if is_black && x0 < w {
            row[x0..].fill(black);
        }
        y += 1;
    };
    let ok = if k < 0 {
        let height = u16::try_from(h).ok();
        fax::decoder::decode_g4(data.iter().copied(), columns as u16, height, &mut put_line)
    } else if k == 0 {
        fax::decoder::decode_g3(data.iter().copied(), &mut put_line)
    } else {
        return Err(unsupported(
            page,
            "CCITT Group 3 two-dimensional coding (K > 0)",
        ));
    };
    if ok.is_none() && y == 0 {
        return Err(damaged(page, "CCITT fax data"));
    }
    Ok(gray)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exif_orientation_is_read() {
        // Little-endian TIFF header, IFD at 8 with one entry: 0x0112 = 6.
        let mut t = b"II*\0\x08\0\0\0".to_vec();
        t.extend_from_slice(&1u16.to_le_bytes());
        t.extend_from_slice(&0x0112u16.to_le_bytes());
        t.extend_from_slice(&3u16.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(&6u16.to_le_bytes());
        t.extend_from_slice(&[0, 0]);
        assert_eq!(exif_orientation(&t), Some(6));
    }

    #[test]
    fn orientation_six_turns_clockwise() {
        // 2×1 picture [a b] turned clockwise becomes a 1×2 column [a; b].
        let p = Picture {
            width: 2,
            height: 1,
            dpi: None,
            pixels: Pixels::Gray(vec![10, 20]),
        };
        let q = orient(p, 6);
        assert_eq!((q.width, q.height), (1, 2));
        assert_eq!(q.pixels, Pixels::Gray(vec![10, 20]));
        let p = Picture {
            width: 2,
            height: 2,
            dpi: None,
            pixels: Pixels::Gray(vec![1, 2, 3, 4]),
        };
        // [1 2; 3 4] clockwise = [3 1; 4 2]
        assert_eq!(orient(p, 6).pixels, Pixels::Gray(vec![3, 1, 4, 2]));
    }

    #[test]
    fn limits_are_named() {
        let e = check_size(1, 5000, 5000, 1_000_000).unwrap_err();
        assert!(e.to_string().contains("max_pixels"), "{e}");
        assert!(matches!(
            pages_of_image(b"not an image", 1, 1),
            Err(DecodeError::UnknownFormat)
        ));
    }

    #[test]
    fn png_predictor_up_rows() {
        // two rows of 2 bytes, filter "up"
        let data = [2, 1, 2, 2, 1, 1];
        assert_eq!(png_unpredict(&data, 2, 1).unwrap(), vec![1, 2, 2, 3]);
    }

    /// A picture with a black bar on white: rows 3..5, columns 2..w-2.
    fn bar(w: usize, h: usize) -> Vec<u8> {
        let mut g = vec![255u8; w * h];
        for y in 3..5 {
            for x in 2..w - 2 {
                g[y * w + x] = 0;
            }
        }
        g
    }

    #[test]
    fn tiff_frames_sizes_and_dpi() {
        use tiff::encoder::{Rational, TiffEncoder, colortype};
        use tiff::tags::ResolutionUnit;
        let (w, h) = (20usize, 10usize);
        let grey = bar(w, h);
        let rgb: Vec<u8> = grey.iter().flat_map(|&v| [v, v / 2, 0]).collect();
        let mut bytes = Vec::new();
        {
            let mut enc = TiffEncoder::new(Cursor::new(&mut bytes)).unwrap();
            let mut img = enc
                .new_image::<colortype::Gray8>(w as u32, h as u32)
                .unwrap();
            img.resolution(ResolutionUnit::Inch, Rational { n: 200, d: 1 });
            img.write_data(&grey).unwrap();
            enc.write_image::<colortype::RGB8>(w as u32, h as u32, &rgb)
                .unwrap();
        }
        let pages = pages_of_image(&bytes, 5, 1000).unwrap();
        assert_eq!(pages.len(), 2);
        assert_eq!(
            (pages[0].width, pages[0].height, pages[0].dpi),
            (20, 10, Some((200.0, 200.0)))
        );
        assert_eq!(pages[0].pixels, Pixels::Gray(grey));
        assert_eq!(pages[1].pixels, Pixels::Rgb(rgb));
        assert!(matches!(
            pages_of_image(&bytes, 1, 1000),
            Err(DecodeError::TooManyPages { limit: 1 })
        ));
        assert!(matches!(
            pages_of_image(&bytes, 5, 100),
            Err(DecodeError::TooManyPixels {
                limit: 100,
                pixels: 200,
                ..
            })
        ));
        // a truncated file is an error, not a panic
        assert!(pages_of_image(&bytes[..bytes.len() / 2], 5, 1000).is_err());
    }

    #[test]
    fn png_alpha_goes_over_white() {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, 2, 1);
            enc.set_color(png::ColorType::Rgba);
            enc.set_depth(png::BitDepth::Eight);
            let mut wr = enc.write_header().unwrap();
            wr.write_image_data(&[255, 0, 0, 255, 0, 0, 0, 0]).unwrap();
        }
        let pages = pages_of_image(&bytes, 1, 10).unwrap();
        assert_eq!(pages[0].pixels, Pixels::Rgb(vec![255, 0, 0, 255, 255, 255]));
    }

    /// A PDF whose page 1 holds a CCITT G4 image and page 2 (turned by
    /// /Rotate 90) a Flate grey image, each with a tiny decoy image.
    fn two_page_pdf(w: usize, h: usize) -> Vec<u8> {
        use lopdf::{Stream, dictionary};
        use std::io::Write;
        let g = bar(w, h);
        // G4 encode: colours per pixel, black where the grey is 0
        let mut enc = fax::encoder::Encoder::new(fax::VecWriter::new());
        for row in g.chunks(w) {
            let pels = row.iter().map(|&v| {
                if v == 0 {
                    fax::Color::Black
                } else {
                    fax::Color::White
                }
            });
            enc.encode_line(pels, w as u16).unwrap();
        }
        let g4 = enc.finish().unwrap().finish();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&g).unwrap();
        let flate = z.finish().unwrap();

        let mut doc = Document::with_version("1.4");
        let pages_id = doc.new_object_id();
        let decoy = doc.add_object(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => 1, "Height" => 1,
            "BitsPerComponent" => 8, "ColorSpace" => "DeviceGray" },
            vec![0],
        ));
        let fax_img = doc.add_object(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => w as i64, "Height" => h as i64,
                "BitsPerComponent" => 1, "ColorSpace" => "DeviceGray", "Filter" => "CCITTFaxDecode",
                "DecodeParms" => dictionary! { "K" => -1, "Columns" => w as i64, "Rows" => h as i64 } },
            g4,
        ));
        let flate_img = doc.add_object(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => w as i64, "Height" => h as i64,
                "BitsPerComponent" => 8, "ColorSpace" => "DeviceGray", "Filter" => "FlateDecode" },
            flate,
        ));
        let mut kids = Vec::new();
        for (img, rotate) in [(fax_img, 0), (flate_img, 90)] {
            let content = doc.add_object(Stream::new(
                dictionary! {},
                b"q 72 0 0 36 0 0 cm /Im0 Do Q".to_vec(),
            ));
            let page = doc.add_object(dictionary! {
                "Type" => "Page", "Parent" => pages_id, "Contents" => content, "Rotate" => rotate,
                "MediaBox" => vec![0.into(), 0.into(), (w as i64 * 72 / 100).into(), (h as i64 * 72 / 100).into()],
                "Resources" => dictionary! { "XObject" => dictionary! { "Im0" => img, "Im1" => decoy } },
            });
            kids.push(page.into());
        }
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => kids, "Count" => 2 }),
        );
        let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog);
        let mut out = Vec::new();
        doc.save_to(&mut out).unwrap();
        out
    }

    #[test]
    fn pdf_pages_give_their_largest_image() {
        let (w, h) = (40usize, 12usize);
        let bytes = two_page_pdf(w, h);
        let pages = pages_of_pdf(&bytes, 5, 10_000).unwrap();
        assert_eq!(pages.len(), 2);
        // page 1: the G4 image, black bar on white, ≈100 dpi from the MediaBox
        assert_eq!((pages[0].width, pages[0].height), (40, 12));
        assert_eq!(pages[0].pixels, Pixels::Gray(bar(w, h)));
        let (dx, dy) = pages[0].dpi.unwrap();
        // (the MediaBox was rounded to whole points)
        assert!(
            (dx - 100.0).abs() < 10.0 && (dy - 100.0).abs() < 10.0,
            "{dx} {dy}"
        );
        // page 2: the Flate image turned a quarter clockwise
        assert_eq!((pages[1].width, pages[1].height), (12, 40));
        let Pixels::Gray(g) = &pages[1].pixels else {
            panic!("grey expected")
        };
        // the bar (rows 3..5) is now columns 12-1-4..12-1-3 = 7..9
        assert_eq!(g[20 * 12 + 7], 0);
        assert_eq!(g[20 * 12 + 8], 0);
        assert_eq!(g[20 * 12 + 6], 255);
        assert!(matches!(
            pages_of_pdf(&bytes, 1, 10_000),
            Err(DecodeError::TooManyPages { limit: 1 })
        ));
        assert!(matches!(
            pages_of_pdf(&bytes, 5, 100),
            Err(DecodeError::TooManyPixels { .. })
        ));
        // damaged input is an error, never a panic
        for cut in [10, bytes.len() / 3, bytes.len() / 2] {
            let _ = pages_of_pdf(&bytes[..cut], 5, 10_000);
        }
        assert!(pages_of_pdf(b"%PDF-1.4 nothing", 5, 10).is_err());
    }

    #[test]
    fn mutated_files_never_escape_as_panics() {
        use tiff::encoder::{TiffEncoder, colortype};
        let (w, h) = (40usize, 12usize);
        let mut tif = Vec::new();
        TiffEncoder::new(Cursor::new(&mut tif))
            .unwrap()
            .write_image::<colortype::Gray8>(w as u32, h as u32, &bar(w, h))
            .unwrap();
        let inputs = [two_page_pdf(w, h), tif];
        // xorshift64: deterministic, no dependency
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..400 {
            let mut bytes = inputs[round % inputs.len()].clone();
            let len = bytes.len() as u64;
            for _ in 0..(next() % 6 + 1) {
                let at = (next() % len) as usize;
                bytes[at] = (next() & 0xFF) as u8;
            }
            if next() % 4 == 0 {
                bytes.truncate((next() % len) as usize);
            }
            let result = std::panic::catch_unwind(|| pages(&bytes, 4, 100_000));
            assert!(result.is_ok(), "round {round} escaped as a panic");
        }
    }
}
