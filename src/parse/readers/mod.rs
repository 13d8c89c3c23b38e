//! One reader per file format, each turning bytes into the common grid
//! model (`crate::parse::grid`). Readers never see each other, and nothing after
//! them knows which format a grid came from.
//!
//! Readers run inside the sandboxed child process (`crate::parse::sandbox`); they
//! must still fail with a clean [`ReadError`] rather than panic wherever
//! they can.

pub mod doc;
pub mod docx;
pub mod html;
pub mod image;
pub(crate) mod layout;
pub mod ods;
pub mod ooxml;
pub mod pdf;
mod pdf_repair;
pub mod rtf;
pub mod spreadsheet;
pub mod text;
mod word_table;

use crate::parse::grid::{Extracted, ReadError, ReadLimits};
use crate::parse::sniff::Format;

/// Reads `bytes` as `format`; with `ocr_models`, a scan is read by OCR
/// (its grids filled, `meta.ocr` and `meta.red_seal` set; still `scanned`).
pub fn read_with_ocr(
    format: Format,
    bytes: &[u8],
    limits: &ReadLimits,
    ocr_models: Option<&std::path::Path>,
) -> Result<Extracted, ReadError> {
    let mut extracted = read(format, bytes, limits)?;
    if let Some(models) = ocr_models
        && extracted.scanned
    {
        crate::parse::ocr::read_scan(format, bytes, limits, models, &mut extracted)?;
    }
    Ok(extracted)
}

/// Reads `bytes` as `format`.
pub fn read(format: Format, bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    match format {
        Format::Xlsx => spreadsheet::read_xlsx(bytes, limits),
        Format::Xlsb => spreadsheet::read_xlsb(bytes, limits),
        Format::Xls => spreadsheet::read_xls(bytes, limits),
        Format::Ods => ods::read(bytes, limits),
        Format::Docx => docx::read(bytes, limits),
        Format::Doc => doc::read(bytes, limits),
        Format::Rtf => rtf::read(bytes, limits),
        Format::Pdf => pdf::read(bytes, limits),
        Format::Image => image::read(bytes, limits),
        Format::Text => Ok(text::read(bytes, limits)),
        Format::BodyText => Ok(text::read_str(&String::from_utf8_lossy(bytes), limits)),
        Format::BodyHtml | Format::BodyHtmlForward => Ok(html::read_own(
            &String::from_utf8_lossy(bytes),
            limits,
            format == Format::BodyHtmlForward,
        )),
        Format::EncryptedOoxml => Err(ReadError::Encrypted),
        Format::Zip | Format::Message | Format::Other => {
            Err(ReadError::Unsupported(format.contract_name().to_string()))
        }
    }
}
