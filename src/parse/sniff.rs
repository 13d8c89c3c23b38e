//! Deciding a file's format from its content.
//!
//! Magic bytes decide; the file name is only a hint used where content alone
//! cannot tell (a plain-text file). Units rename files freely (an xlsx saved
//! as `.xls`, a WPS `.et` that is really BIFF8), so trusting extensions would
//! send files to the wrong reader. This module owns only the decision; the
//! readers live in `crate::parse::readers`.

use std::io::Cursor;

use serde::Serialize;

/// A format as reported in the parse contract (`attachments[].format`), plus
/// the finer distinctions the pipeline needs to pick a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    Xlsx,
    /// Excel binary workbook (xlsb): read by calamine, reported as `xlsx`.
    Xlsb,
    /// BIFF8 workbook, including WPS `.et`.
    Xls,
    Ods,
    Docx,
    /// Word 97-2003 document, including WPS `.wps`.
    Doc,
    /// Rich Text Format, often saved as `.doc`: reported as `doc`.
    Rtf,
    /// An OOXML file encrypted with a password (a compound file holding an
    /// `EncryptedPackage` stream).
    EncryptedOoxml,
    Pdf,
    Image,
    Zip,
    /// An RFC 5322 message (`.eml`, or a forwarded message).
    Message,
    Text,
    Other,
    /// A message's plain-text body, already decoded and cut at its quote
    /// (UTF-8). Never sniffed: the pipeline sends bodies to a worker as
    /// this, so that reading them runs under the same limits as files.
    BodyText,
    /// A message's HTML body (UTF-8): its own part only, a reply's quote
    /// left out. Never sniffed.
    BodyHtml,
    /// A forwarded message's HTML body (UTF-8): the forwarded text is read
    /// too. Never sniffed.
    BodyHtmlForward,
}

impl Format {
    /// The value of `format` in the parse contract.
    pub fn contract_name(self) -> &'static str {
        match self {
            Format::Xlsx | Format::Xlsb => "xlsx",
            Format::Xls => "xls",
            Format::Ods => "ods",
            Format::Docx => "docx",
            Format::Doc | Format::Rtf => "doc",
            Format::EncryptedOoxml => "other",
            Format::Pdf => "pdf",
            Format::Image => "image",
            Format::Zip => "zip",
            Format::Text | Format::BodyText | Format::BodyHtml | Format::BodyHtmlForward => "text",
            Format::Message | Format::Other => "other",
        }
    }

    /// The name used on the command line of the child reader process.
    pub fn as_arg(self) -> &'static str {
        match self {
            Format::Xlsx => "xlsx",
            Format::Xlsb => "xlsb",
            Format::Xls => "xls",
            Format::Ods => "ods",
            Format::Docx => "docx",
            Format::Doc => "doc",
            Format::Rtf => "rtf",
            Format::EncryptedOoxml => "encrypted",
            Format::Pdf => "pdf",
            Format::Image => "image",
            Format::Zip => "zip",
            Format::Message => "message",
            Format::Text => "text",
            Format::Other => "other",
            Format::BodyText => "body-text",
            Format::BodyHtml => "body-html",
            Format::BodyHtmlForward => "body-html-forward",
        }
    }

    pub fn from_arg(s: &str) -> Option<Self> {
        [
            Format::Xlsx,
            Format::Xlsb,
            Format::Xls,
            Format::Ods,
            Format::Docx,
            Format::Doc,
            Format::Rtf,
            Format::EncryptedOoxml,
            Format::Pdf,
            Format::Image,
            Format::Zip,
            Format::Message,
            Format::Text,
            Format::Other,
            Format::BodyText,
            Format::BodyHtml,
            Format::BodyHtmlForward,
        ]
        .into_iter()
        .find(|f| f.as_arg() == s)
    }
}

const CFB_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// Decides the format of `bytes`; `name` (the attachment's file name) is
/// consulted only when the content is plain text.
pub fn sniff(bytes: &[u8], name: Option<&str>) -> Format {
    if bytes.starts_with(CFB_MAGIC) {
        return sniff_cfb(bytes);
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return sniff_zip(bytes);
    }
    if bare_biff_version(bytes).is_some() {
        // The xls reader says what to do with an Excel 2.x–4.0 worksheet.
        return Format::Xls;
    }
    if find_within(bytes, b"%PDF-", 1024) {
        return Format::Pdf;
    }
    if is_image(bytes) {
        return Format::Image;
    }
    if bytes.starts_with(b"{\\rtf") {
        return Format::Rtf;
    }
    if crate::parse::message::looks_like_message(bytes) {
        return Format::Message;
    }
    if looks_like_text(bytes) {
        return Format::Text;
    }
    let ext = name.and_then(extension).unwrap_or_default();
    match ext.as_str() {
        "txt" | "csv" | "htm" | "html" => Format::Text,
        _ => Format::Other,
    }
}

/// The BIFF version (2, 3 or 4) of an Excel 2.x–4.0 worksheet, which is a
/// bare record stream (no compound file) opening with its BOF record.
pub fn bare_biff_version(bytes: &[u8]) -> Option<u8> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let (version, len) = match (u16_at(0)?, u16_at(2)?) {
        (0x0009, 4) => (2, 4),
        (0x0209, 6) => (3, 6),
        (0x0409, 6) => (4, 6),
        _ => return None,
    };
    // The substream type: worksheet, chart, macro sheet, BIFF4 workbook.
    let kind = u16_at(6)?;
    (bytes.len() > 4 + len && matches!(kind, 0x0010 | 0x0020 | 0x0040 | 0x0100)).then_some(version)
}

/// TIFF, JPEG, PNG, GIF and BMP signatures.
pub fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(b"II*\0")
        || bytes.starts_with(b"MM\0*")
        || bytes.starts_with(&[0xFF, 0xD8, 0xFF])
        || bytes.starts_with(b"\x89PNG\r\n\x1a\n")
        || bytes.starts_with(b"GIF87a")
        || bytes.starts_with(b"GIF89a")
        || bytes.starts_with(b"BM")
}

/// [`sniff_cfb`] for a damaged compound file: the first stream name found
/// among the directory entries' UTF-16LE names decides; none: the xls
/// reader gives the clearer error.
fn sniff_cfb_names(bytes: &[u8]) -> Format {
    let utf16 = |name: &str| -> Vec<u8> {
        name.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .chain([0, 0])
            .collect()
    };
    let window = bytes.len().min(16 * 1024 * 1024);
    let has = |name: &str| find_within(bytes, &utf16(name), window);
    if has("EncryptedPackage") {
        Format::EncryptedOoxml
    } else if has("WordDocument") {
        Format::Doc
    } else {
        Format::Xls
    }
}

fn find_within(bytes: &[u8], needle: &[u8], window: usize) -> bool {
    let end = bytes.len().min(window + needle.len());
    bytes[..end].windows(needle.len()).any(|w| w == needle)
}

fn sniff_cfb(bytes: &[u8]) -> Format {
    let Ok(cfb) = crate::parse::compound::open(bytes) else {
        // A compound file even the lenient opening refuses: its directory
        // entries still name the streams, in UTF-16.
        return sniff_cfb_names(bytes);
    };
    let has = |name: &str| cfb.is_stream(format!("/{name}"));
    if has("EncryptedPackage") {
        Format::EncryptedOoxml
    } else if has("WordDocument") {
        Format::Doc
    } else if has("Workbook") || has("Book") {
        Format::Xls
    } else {
        Format::Other
    }
}

fn sniff_zip(bytes: &[u8]) -> Format {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return Format::Zip;
    };
    // Some writers store `xl\workbook.xml`: the separator is not the point.
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.replace('\\', "/")))
        .collect();
    let has = |name: &str| names.iter().any(|n| n == name);
    let has_prefix = |p: &str| names.iter().any(|n| n.starts_with(p));
    // An OOXML package says what it is in `[Content_Types].xml`, whatever
    // its parts are called and wherever they lie.
    if let Some(format) = content_types(&mut archive) {
        return format;
    }
    if has_prefix("word/") {
        Format::Docx
    } else if has("xl/workbook.bin") {
        Format::Xlsb
    } else if has_prefix("xl/") {
        Format::Xlsx
    } else if has("mimetype") && has("content.xml") {
        // ODF: spreadsheets and text documents share the container; both
        // are read by the ODF table reader.
        Format::Ods
    } else {
        Format::Zip
    }
}

/// The package's main content type from `[Content_Types].xml` (read up to
/// 256 KiB), as a format.
fn content_types(archive: &mut zip::ZipArchive<Cursor<&[u8]>>) -> Option<Format> {
    use std::io::Read;
    let index = archive
        .file_names()
        .position(|n| n.is_ok_and(|n| n.eq_ignore_ascii_case("[Content_Types].xml")))?;
    let mut text = Vec::new();
    archive
        .by_index(index)
        .ok()?
        .take(256 * 1024)
        .read_to_end(&mut text)
        .ok()?;
    let text = String::from_utf8_lossy(&text).to_ascii_lowercase();
    if text.contains("sheet.binary.macroenabled.main")
        || text.contains("spreadsheetml.sheet.binary")
    {
        Some(Format::Xlsb)
    } else if text.contains("spreadsheetml.sheet.main+xml")
        || text.contains("spreadsheetml.template.main+xml")
        || text.contains("ms-excel.sheet.macroenabled.main+xml")
        || text.contains("ms-excel.template.macroenabled.main+xml")
    {
        Some(Format::Xlsx)
    } else if text.contains("wordprocessingml.document.main+xml")
        || text.contains("wordprocessingml.template.main+xml")
        || text.contains("ms-word.document.macroenabled.main+xml")
        || text.contains("ms-word.template.macroenabledtemplate.main+xml")
    {
        Some(Format::Docx)
    } else {
        None
    }
}

/// UTF-8 or GB18030 text without binary control bytes.
fn looks_like_text(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let sample = &bytes[..bytes.len().min(4096)];
    let controls = sample
        .iter()
        .filter(|&&b| b < 0x09 || (b > 0x0D && b < 0x20 && b != 0x1B))
        .count();
    controls == 0
}

/// Lower-case extension of a file name, without the dot.
pub fn extension(name: &str) -> Option<String> {
    let (_, ext) = name.rsplit_once('.')?;
    (!ext.is_empty() && ext.len() <= 5).then(|| ext.to_ascii_lowercase())
}

/// Decodes text of unknown encoding: UTF-8 (with or without BOM) when valid,
/// otherwise GB18030, the superset of GBK and GB2312 that Chinese Windows
/// software writes.
pub fn decode_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => encoding_rs::GB18030.decode(bytes).0.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excel_4_worksheet_goes_to_the_xls_reader() {
        // BOF (BIFF4, worksheet), then an EOF record.
        let biff4 = [0x09, 0x04, 6, 0, 0, 0, 0x10, 0, 0, 0, 0x0A, 0, 0, 0];
        assert_eq!(sniff(&biff4, Some("a.xls")), Format::Xls);
        assert_eq!(bare_biff_version(&biff4), Some(4));
        assert_eq!(bare_biff_version(b"\x09\x04 plain text"), None);
    }

    #[test]
    fn magic_bytes_decide_not_names() {
        assert_eq!(sniff(b"%PDF-1.4\n...", Some("x.xls")), Format::Pdf);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nxxxx", None), Format::Image);
        assert_eq!(sniff(b"II*\0abcd", Some("fax.dat")), Format::Image);
        assert_eq!(
            sniff("单位：桥头镇".as_bytes(), Some("a.bin")),
            Format::Text
        );
        assert_eq!(sniff(&[0, 1, 2, 3, 0xff], Some("a.txt")), Format::Text);
        assert_eq!(sniff(&[0, 1, 2, 3, 0xff], Some("a.bin")), Format::Other);
        assert_eq!(sniff(b"{\\rtf1\\ansi x}", Some("a.doc")), Format::Rtf);
    }

    #[test]
    fn a_damaged_compound_file_is_known_by_its_stream_names() {
        let mut doc = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        doc.resize(512, 0xFF); // a header the strict parser refuses
        doc.extend("WordDocument".encode_utf16().flat_map(u16::to_le_bytes));
        doc.extend([0, 0]);
        assert_eq!(sniff(&doc, Some("a.xls")), Format::Doc);
        let mut xls = doc[..512].to_vec();
        xls.extend("Workbook".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(sniff(&xls, None), Format::Xls);
    }

    #[test]
    fn gbk_text_is_decoded() {
        let (gbk, _, _) = encoding_rs::GBK.encode("单位：桥头镇");
        assert_eq!(decode_text(&gbk), "单位：桥头镇");
        assert_eq!(decode_text("\u{feff}单位".as_bytes()), "单位");
    }
}
