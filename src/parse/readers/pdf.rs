//! PDF reader: turns a PDF's text layer into grids and its document
//! information into `meta`.
//!
//! This module owns everything PDF-specific: loading with `lopdf` (through
//! `pdf-extract`'s re-export, so there is one copy of it), walking page
//! content with a custom `pdf_extract::OutputDev` that records positioned
//! glyphs and ruling lines (turned into grids by [`super::layout`], which
//! the OCR of scans shares), scan detection and the `meta` keys. It does not OCR scanned pages (they are reported as
//! `scanned` with image facts in `meta`), does not know what a registration
//! form looks like (that is `crate::parse::form`), and does not sandbox itself: the
//! caller runs readers in a child process, this module only turns
//! `pdf-extract`'s panics on bad input into [`ReadError::Damaged`].
//!
//! Decisions worth knowing:
//! * Encryption: a PDF protected only by an owner password (empty user
//!   password) opens in every viewer without a prompt, so it is read like any
//!   other PDF; one that needs a user password is [`ReadError::Encrypted`].
//! * Page limit: past `limits.max_pages` only the first pages are read;
//!   `meta.pages` still says how many the file has.
//! * Wrapped lines inside a cell are joined without a separator when the
//!   first word of the next line could not have fitted at the end of the line
//!   before (the word processor broke the line, not the writer); otherwise
//!   the lines stay separated by `\n`. This works for narrow and wide cells
//!   alike, so no width threshold is needed.
//! * A PDF date without a time zone is taken as UTC (as `pdfinfo` shows it).
//! * `text_layer` is true when any page read has a non-space character; the
//!   PDF counts as scanned when it has fewer than `SCAN_TEXT_THRESHOLD` of
//!   them and at least one image, so a scan with a stray OCR'd page number
//!   can be `scanned` with `text_layer: true`.
//! * Explicit space glyphs are kept (Word pads labels like `单  位` with
//!   them, and the DOCX reader keeps them too); spaces are only *inferred*
//!   from gaps between two ASCII glyphs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use pdf_extract::content::Content;
use pdf_extract::{
    ColorSpace, Dictionary, Document, MediaBox, Object, ObjectId, OutputDev, OutputError, Path,
    PathOp, Stream, Transform,
};

use super::layout::{self, Glyph, PageContent, Rule};
use crate::parse::grid::{Extracted, Meta, ReadError, ReadLimits};

/// Fewer non-space characters than this, with an image on a page, means the
/// PDF is a scan (a stray page number or a scanner's stamp is not a form).
const SCAN_TEXT_THRESHOLD: usize = 20;
/// A filled rectangle thinner than this (points) is a rule, not a shading.
const RULE_MAX_THICKNESS: f64 = 3.0;
/// Shorter segments are glyph decorations (underlines of one letter, ticks).
const RULE_MIN_LENGTH: f64 = 4.0;
/// Bounds on what one page may make us hold, against hostile content.
const MAX_GLYPHS_PER_PAGE: usize = 200_000;
const MAX_RULES_PER_PAGE: usize = 20_000;

/// Reads a PDF into one grid per table per page plus a `text` grid.
pub fn read(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    // lopdf and pdf-extract both assert and index on input-derived data; a
    // panic anywhere below is a property of the file, not of our state.
    match catch_unwind(AssertUnwindSafe(|| read_inner(bytes, limits))) {
        Ok(result) => result,
        Err(_) => Err(ReadError::Damaged("PDF 文件结构损坏，解析时出错".into())),
    }
}

fn read_inner(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    // Readers accept junk before the header (mail gateways prepend some);
    // the spec allows the header anywhere in the first kilobyte.
    let Some(header) = find(&bytes[..bytes.len().min(1024)], b"%PDF") else {
        return Err(ReadError::Damaged(
            "不是 PDF 文件（缺少 %PDF 文件头）".into(),
        ));
    };
    // Offsets count from the header in such files, as a rebuilt table's do.
    let body = &bytes[header..];
    let loaded = Document::load_mem(bytes).or_else(|first| {
        if matches!(
            first,
            pdf_extract::Error::InvalidPassword | pdf_extract::Error::Decryption(_)
        ) {
            return Err(first);
        }
        if header > 0
            && let Ok(doc) = Document::load_mem(body)
        {
            return Ok(doc);
        }
        // A damaged cross-reference table or trailer: the objects are still
        // there (see `pdf_repair`); the first error is the one told.
        match super::pdf_repair::rebuilt(body) {
            Some(fixed) => Document::load_mem(&fixed).map_err(|_| first),
            None => Err(first),
        }
    });
    let mut doc = loaded.map_err(|e| match e {
        pdf_extract::Error::InvalidPassword | pdf_extract::Error::Decryption(_) => {
            ReadError::Encrypted
        }
        other => ReadError::Damaged(format!("PDF 文件结构损坏：{other}")),
    })?;
    // lopdf already decrypts with the empty user password when it can; what
    // is still encrypted here needs a password we do not have.
    if doc.is_encrypted() && doc.authenticate_password("").is_err() {
        return Err(ReadError::Encrypted);
    }
    if doc.get_pages().is_empty() {
        // An encryption lopdf does not know leaves the page tree unreadable.
        if doc.trailer.get(b"Encrypt").is_ok() {
            return Err(ReadError::Encrypted);
        }
        // A table that loads but points past the page tree.
        if let Some(fixed) = super::pdf_repair::rebuilt(body)
            && let Ok(rebuilt) = Document::load_mem(&fixed)
            && !rebuilt.get_pages().is_empty()
        {
            doc = rebuilt;
        }
    }

    patch_predefined_cmaps(&mut doc);

    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(ReadError::Damaged("PDF 文件中没有页面".into()));
    }
    let mut meta = Meta::new();
    meta.insert("pages".into(), pages.len().into());
    info_meta(&doc, &mut meta);
    let images = image_facts(&doc, &pages);
    meta.insert("images".into(), images.count.into());
    if let Some(dpi) = images.dpi {
        meta.insert("image_dpi".into(), dpi.into());
    }

    clean_page_contents(&mut doc, &pages, limits.max_pages.max(1));
    prune_xobject_calls(&mut doc, &pages, limits.max_pages.max(1));

    let mut page_contents = Vec::new();
    // Pages pdf-extract could not walk, as plain text from lopdf's simpler
    // decoder (no positions: one line per text run).
    let mut recovered: Vec<(u32, String)> = Vec::new();
    let mut failures = 0usize;
    for &page_num in pages.keys().take(limits.max_pages.max(1)) {
        let mut dev = Collector::default();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pdf_extract::output_doc_page(&doc, &mut dev, page_num)
        }));
        let failed = !matches!(outcome, Ok(Ok(())));
        // A page pdf-extract cannot walk (an image-only page trips it on
        // some producers, an unusual font encoding or CMap on others) keeps
        // what was collected before the failure.
        let page = dev.finish();
        let collected = page.as_ref().map_or(0, non_space_glyphs);
        if failed {
            failures += 1;
        }
        // A page walked without one glyph may still show text that
        // pdf-extract maps to nothing (a CID font whose embedded CMap it
        // misreads, a ToUnicode it keys wrongly): lopdf's decoder is asked
        // too. An image-only page gives nothing there either.
        if (collected < SCAN_TEXT_THRESHOLD && failed || collected == 0)
            && let Some(text) = plain_text(&doc, page_num)
        {
            recovered.push((page_num, text));
            continue;
        }
        if let Some(page) = page {
            page_contents.push((page_num, page));
        }
    }

    let text_chars: usize = page_contents
        .iter()
        .map(|(_, p)| non_space_glyphs(p))
        .sum::<usize>()
        + recovered
            .iter()
            .map(|(_, t)| t.chars().filter(|c| !c.is_whitespace()).count())
            .sum::<usize>();
    meta.insert("text_layer".into(), (text_chars > 0).into());

    if text_chars < SCAN_TEXT_THRESHOLD && images.count > 0 {
        return Ok(Extracted {
            grids: Vec::new(),
            meta,
            scanned: true,
        });
    }
    if text_chars == 0 && failures > 0 {
        return Err(ReadError::Damaged("PDF 页面内容无法解析".into()));
    }

    let named: Vec<(String, PageContent)> = page_contents
        .into_iter()
        .map(|(page_num, page)| (format!("page {page_num}"), page))
        .collect();
    let mut grids = layout::grids(&named, limits);
    for (page_num, text) in recovered {
        grids.push(super::text::lines_grid(
            &format!("page {page_num}"),
            &text,
            limits,
        ));
    }
    Ok(Extracted {
        grids,
        meta,
        scanned: false,
    })
}

fn non_space_glyphs(page: &PageContent) -> usize {
    page.glyphs.iter().filter(|g| !g.is_space()).count()
}

/// A page's text by lopdf's own decoder (font encodings and ToUnicode maps,
/// no positions), for a page pdf-extract fails on; None if that fails too
/// or finds nothing.
fn plain_text(doc: &Document, page_num: u32) -> Option<String> {
    let text = catch_unwind(AssertUnwindSafe(|| doc.extract_text(&[page_num])))
        .ok()?
        .ok()?;
    text.chars().any(|c| !c.is_whitespace()).then_some(text)
}

/// pdf-extract panics on Type0 fonts that name a predefined CMap other
/// than `Identity-H`/`-V`, and Chinese (and Japanese, Korean) tools name
/// them with fonts they do not embed (STSong, SimSun, MS Mincho).
///
/// * The Unicode CMaps (`UniGB-UCS2-H` and kin): the character code *is*
///   the UCS-2 / UTF-16 code unit, so they become `Identity-H` plus an
///   identity `ToUnicode` map.
/// * The legacy ones (`GBK-EUC-H`, `90ms-RKSJ-H`, `ETen-B5-H` …): the
///   codes are those of a national character set, so they become an
///   embedded CMap that takes each code as its own CID, plus a `ToUnicode`
///   map made by decoding every code of that character set with
///   `encoding_rs` (see [`LegacyCmap`]).
///
/// Glyph widths are then looked up by code instead of CID, which only
/// skews ASCII widths slightly.
fn patch_predefined_cmaps(doc: &mut Document) {
    // Fonts are often written inline in a resource dictionary, so nested
    // dictionaries are searched too.
    let mut wanted: Vec<CmapPatch> = Vec::new();
    for obj in doc.objects.values() {
        visit_dicts(obj, 0, &mut |dict| {
            if let Some(patch) = CmapPatch::of(dict)
                && !wanted.contains(&patch)
            {
                wanted.push(patch);
            }
        });
    }
    let made: Vec<(CmapPatch, Option<ObjectId>, ObjectId)> = wanted
        .into_iter()
        .map(|patch| match patch {
            CmapPatch::Unicode { .. } => {
                let u = doc.add_object(Stream::new(Dictionary::new(), identity_to_unicode()));
                (patch, None, u)
            }
            CmapPatch::Legacy(cmap) => {
                let e = doc.add_object(Stream::new(Dictionary::new(), cmap.code_cmap()));
                let u = doc.add_object(Stream::new(Dictionary::new(), cmap.to_unicode()));
                (patch, Some(e), u)
            }
        })
        .collect();
    for obj in doc.objects.values_mut() {
        visit_dicts_mut(obj, 0, &mut |dict| {
            if is_cid_font(dict) && !dict.has(b"FontDescriptor") {
                // pdf-extract requires one; nothing in it matters for text.
                let mut descriptor = Dictionary::new();
                descriptor.set("Type", Object::Name(b"FontDescriptor".to_vec()));
                descriptor.set("Flags", Object::Integer(4));
                dict.set("FontDescriptor", Object::Dictionary(descriptor));
            }
            let Some(patch) = CmapPatch::of(dict) else {
                return;
            };
            let Some(&(_, encoding, to_unicode)) = made.iter().find(|(p, _, _)| *p == patch) else {
                return;
            };
            match (patch, encoding) {
                (CmapPatch::Unicode { vertical }, _) => {
                    let name = if vertical { "Identity-V" } else { "Identity-H" };
                    dict.set("Encoding", Object::Name(name.as_bytes().to_vec()));
                    if !dict.has(b"ToUnicode") {
                        dict.set("ToUnicode", Object::Reference(to_unicode));
                    }
                }
                (CmapPatch::Legacy(_), Some(encoding)) => {
                    dict.set("Encoding", Object::Reference(encoding));
                    // The producer's own ToUnicode is keyed by code, but
                    // pdf-extract looks it up by CID; ours is right for both.
                    dict.set("ToUnicode", Object::Reference(to_unicode));
                }
                (CmapPatch::Legacy(_), None) => {}
            }
        });
    }
}

/// How a Type0 font naming a predefined CMap is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmapPatch {
    Unicode { vertical: bool },
    Legacy(LegacyCmap),
}

impl CmapPatch {
    fn of(dict: &Dictionary) -> Option<Self> {
        if dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(&b"Type0"[..]) {
            return None;
        }
        let Ok(Object::Name(enc)) = dict.get(b"Encoding") else {
            return None;
        };
        let enc = String::from_utf8_lossy(enc);
        if enc.starts_with("Uni") && (enc.contains("UCS2") || enc.contains("UTF16")) {
            Some(Self::Unicode {
                vertical: enc.ends_with("-V"),
            })
        } else {
            LegacyCmap::named(&enc).map(Self::Legacy)
        }
    }
}

fn is_cid_font(dict: &Dictionary) -> bool {
    matches!(
        dict.get(b"Subtype").and_then(Object::as_name),
        Ok(b"CIDFontType0" | b"CIDFontType2")
    )
}

/// How deep inline dictionaries are searched for fonts (an object, its
/// resources, their font dictionary, a font).
const MAX_DICT_DEPTH: usize = 6;

fn visit_dicts(obj: &Object, depth: usize, f: &mut impl FnMut(&Dictionary)) {
    if depth > MAX_DICT_DEPTH {
        return;
    }
    let dict = match obj {
        Object::Dictionary(dict) => dict,
        Object::Stream(stream) => &stream.dict,
        Object::Array(items) => {
            for item in items {
                visit_dicts(item, depth + 1, f);
            }
            return;
        }
        _ => return,
    };
    f(dict);
    for (_, value) in dict.iter() {
        visit_dicts(value, depth + 1, f);
    }
}

fn visit_dicts_mut(obj: &mut Object, depth: usize, f: &mut impl FnMut(&mut Dictionary)) {
    if depth > MAX_DICT_DEPTH {
        return;
    }
    let dict = match obj {
        Object::Dictionary(dict) => dict,
        Object::Stream(stream) => &mut stream.dict,
        Object::Array(items) => {
            for item in items {
                visit_dicts_mut(item, depth + 1, f);
            }
            return;
        }
        _ => return,
    };
    f(dict);
    for (_, value) in dict.iter_mut() {
        visit_dicts_mut(value, depth + 1, f);
    }
}

/// One-byte code ranges, first-byte ranges of two-byte codes, and the
/// range of their second bytes (inclusive byte ranges).
type CodeLayout = (&'static [(u8, u8)], &'static [(u8, u8)], (u8, u8));

/// The national character set behind a legacy predefined CMap: how its
/// codes are laid out (one or two bytes) and how they decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegacyCmap {
    /// GB 2312 / GBK / GB 18030 (`GB-EUC`, `GBpc-EUC`, `GBK-EUC`,
    /// `GBKp-EUC`, `GBK2K`, `GBT-EUC`); four-byte GB 18030 codes are not
    /// covered.
    Gb,
    /// Shift_JIS (`90ms-RKSJ`, `83pv-RKSJ`, `Add-RKSJ` …).
    ShiftJis,
    /// EUC-JP (`EUC-H`, `EUC-V`).
    EucJp,
    /// Big5 (`B5pc`, `ETen-B5`, `ETenms-B5`, `HKscs-B5`).
    Big5,
    /// EUC-KR / UHC (`KSC-EUC`, `KSCpc-EUC`, `KSCms-UHC`).
    EucKr,
    /// JIS X 0208 in seven-bit bytes (`H`, `V`): EUC-JP without the high
    /// bits.
    Jis,
}

impl LegacyCmap {
    fn named(name: &str) -> Option<Self> {
        let base = match name {
            "H" | "V" => "",
            _ => name
                .strip_suffix("-H")
                .or_else(|| name.strip_suffix("-V"))?,
        };
        match base {
            "GB-EUC" | "GBpc-EUC" | "GBK-EUC" | "GBKp-EUC" | "GBK2K" | "GBT-EUC" | "GBTpc-EUC" => {
                Some(Self::Gb)
            }
            "EUC" => Some(Self::EucJp),
            "" => Some(Self::Jis),
            "B5pc" | "ETen-B5" | "ETenms-B5" | "HKscs-B5" => Some(Self::Big5),
            "KSC-EUC" | "KSCpc-EUC" | "KSCms-UHC" => Some(Self::EucKr),
            _ if base.ends_with("RKSJ") => Some(Self::ShiftJis),
            _ => None,
        }
    }

    fn encoding(self) -> &'static encoding_rs::Encoding {
        match self {
            Self::Gb => encoding_rs::GB18030,
            Self::ShiftJis => encoding_rs::SHIFT_JIS,
            Self::EucJp | Self::Jis => encoding_rs::EUC_JP,
            Self::Big5 => encoding_rs::BIG5,
            Self::EucKr => encoding_rs::EUC_KR,
        }
    }

    /// The one-byte code ranges, the first-byte ranges of two-byte codes,
    /// and the range of their second bytes.
    fn layout(self) -> CodeLayout {
        const ASCII: &[(u8, u8)] = &[(0x00, 0x80)];
        match self {
            Self::Gb => (ASCII, &[(0x81, 0xfe)], (0x40, 0xfe)),
            Self::ShiftJis => (
                &[(0x00, 0x80), (0xa0, 0xdf)],
                &[(0x81, 0x9f), (0xe0, 0xfc)],
                (0x40, 0xfc),
            ),
            Self::EucJp => (ASCII, &[(0x8e, 0x8e), (0xa1, 0xfe)], (0xa0, 0xfe)),
            Self::Big5 => (ASCII, &[(0x81, 0xfe)], (0x40, 0xfe)),
            Self::EucKr => (ASCII, &[(0x81, 0xfe)], (0x41, 0xfe)),
            Self::Jis => (&[], &[(0x21, 0x7e)], (0x21, 0x7e)),
        }
    }

    /// A CMap (`/Encoding` stream) whose CID is the code itself.
    ///
    /// pdf-extract 0.12's CMap parser counts a code range's width as half
    /// its hex string's length in bytes, so ranges are written with twice
    /// the bytes, zero-padded, to come out one and two bytes wide.
    fn code_cmap(self) -> Vec<u8> {
        let (single, leads, (lo, hi)) = self.layout();
        let mut ranges: Vec<String> = single
            .iter()
            .map(|(a, b)| format!("<00{a:02X}> <00{b:02X}>"))
            .collect();
        ranges.extend(
            leads
                .iter()
                .map(|(a, b)| format!("<0000{a:02X}{lo:02X}> <0000{b:02X}{hi:02X}>")),
        );
        let mut out = String::from(
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
             /CMapName /XxdcCodeIsCid def\n/CMapType 1 def\n",
        );
        out.push_str(&format!("{} begincodespacerange\n", ranges.len()));
        for r in &ranges {
            out.push_str(r);
            out.push('\n');
        }
        out.push_str("endcodespacerange\n1 begincidrange\n<0000> <FFFF> 0\nendcidrange\n");
        out.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
        out.into_bytes()
    }

    /// A ToUnicode CMap for every code of the character set that decodes
    /// to one character.
    fn to_unicode(self) -> Vec<u8> {
        let (single, leads, (lo, hi)) = self.layout();
        let decode = |bytes: &[u8]| -> Option<char> {
            let text = self
                .encoding()
                .decode_without_bom_handling_and_without_replacement(bytes)?;
            let mut chars = text.chars();
            let c = chars.next()?;
            (chars.next().is_none() && !c.is_control()).then_some(c)
        };
        let mut pairs: Vec<(u16, char)> = Vec::new();
        for b in single.iter().flat_map(|&(a, b)| a..=b) {
            // The ASCII half is ASCII in every one of these sets.
            let c = if b < 0x80 {
                Some(char::from(b))
            } else {
                decode(&[b])
            };
            if let Some(c) = c.filter(|c| !c.is_control()) {
                pairs.push((u16::from(b), c));
            }
        }
        for &(first, last) in leads {
            for a in first..=last {
                for b in lo..=hi {
                    let bytes = match self {
                        Self::Jis => [a | 0x80, b | 0x80],
                        _ => [a, b],
                    };
                    if let Some(c) = decode(&bytes) {
                        pairs.push((u16::from_be_bytes([a, b]), c));
                    }
                }
            }
        }
        let mut out = String::from(
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
             /CMapName /XxdcLegacyToUnicode def\n/CMapType 2 def\n\
             1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
        );
        for block in pairs.chunks(100) {
            out.push_str(&format!("{} beginbfchar\n", block.len()));
            for &(code, c) in block {
                let mut units = [0u16; 2];
                let hex: String = c
                    .encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("{u:04X}"))
                    .collect();
                out.push_str(&format!("<{code:04X}> <{hex}>\n"));
            }
            out.push_str("endbfchar\n");
        }
        out.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
        out.into_bytes()
    }
}

/// Rewrites a page's content streams without comments and inline images
/// when lopdf's content parser reads more operations that way: it gives up
/// silently at whitespace after a comment (generated PDFs annotate every
/// line) and fails on inline image data longer than the image's size, and
/// either loses the rest of the page. Neither carries text.
fn clean_page_contents(doc: &mut Document, pages: &BTreeMap<u32, ObjectId>, max_pages: usize) {
    let operations = |bytes: &[u8]| Content::decode(bytes).map_or(0, |c| c.operations.len());
    for &page_id in pages.values().take(max_pages) {
        for id in doc.get_page_contents(page_id) {
            let Ok(Object::Stream(stream)) = doc.get_object(id) else {
                continue;
            };
            let Ok(raw) = stream.get_plain_content() else {
                continue;
            };
            if !raw.contains(&b'%') && find(&raw, b"BI").is_none() {
                continue;
            }
            let cleaned = without_comments_and_inline_images(&raw);
            if operations(&cleaned) > operations(&raw)
                && let Ok(Object::Stream(stream)) = doc.get_object_mut(id)
            {
                stream.set_plain_content(cleaned);
            }
        }
    }
}

/// How deep form XObjects may nest before the innermost calls are dropped.
const MAX_FORM_DEPTH: usize = 16;
/// How many form XObject calls are followed in all, against a document
/// that calls the same form many times at every level.
const MAX_FORM_CALLS: usize = 10_000;

/// Whose content stream holds an XObject call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Caller {
    Page(ObjectId),
    Form(ObjectId),
}

/// Removes the `Do` calls pdf-extract cannot survive and text never needs:
/// of a name that resolves to nothing (pdf-extract panics, losing the rest
/// of the page), of a form already being drawn (a cycle: pdf-extract
/// recurses until the stack overflows and the process aborts) or nested
/// deeper than [`MAX_FORM_DEPTH`], and of an image (pdf-extract would parse
/// its data as page content).
fn prune_xobject_calls(doc: &mut Document, pages: &BTreeMap<u32, ObjectId>, max_pages: usize) {
    let mut drops: HashMap<Caller, HashSet<Vec<u8>>> = HashMap::new();
    let mut budget = MAX_FORM_CALLS;
    let empty = Dictionary::new();
    for &page_id in pages.values().take(max_pages) {
        let Ok(page) = doc.get_dictionary(page_id) else {
            continue;
        };
        let resources = inherited(doc, page, b"Resources")
            .and_then(|r| r.as_dict().ok())
            .unwrap_or(&empty);
        let Ok(content) = doc.get_page_content(page_id) else {
            continue;
        };
        let mut stack = Vec::new();
        find_bad_calls(
            doc,
            Caller::Page(page_id),
            &content,
            resources,
            &mut stack,
            &mut budget,
            &mut drops,
        );
    }
    for (caller, names) in drops {
        let content = match caller {
            Caller::Page(id) => doc.get_page_content(id).ok(),
            Caller::Form(id) => doc
                .get_object(id)
                .and_then(Object::as_stream)
                .and_then(Stream::get_plain_content)
                .ok(),
        };
        let Some(mut content) = content.and_then(|c| Content::decode(&c).ok()) else {
            continue;
        };
        // Inline images do not survive lopdf's encoder; text needs none.
        content.operations.retain(|op| {
            op.operator != "BI"
                && !(op.operator == "Do"
                    && op
                        .operands
                        .first()
                        .and_then(|o| o.as_name().ok())
                        .is_some_and(|n| names.contains(n)))
        });
        let Ok(bytes) = content.encode() else {
            continue;
        };
        match caller {
            Caller::Page(id) => {
                let _ = doc.change_page_content(id, bytes);
            }
            Caller::Form(id) => {
                if let Ok(Object::Stream(stream)) = doc.get_object_mut(id) {
                    stream.set_plain_content(bytes);
                }
            }
        }
    }
}

fn find_bad_calls(
    doc: &Document,
    caller: Caller,
    content: &[u8],
    resources: &Dictionary,
    stack: &mut Vec<ObjectId>,
    budget: &mut usize,
    drops: &mut HashMap<Caller, HashSet<Vec<u8>>>,
) {
    let Ok(content) = Content::decode(content) else {
        return;
    };
    let xobjects = dict_get(doc, resources, b"XObject").and_then(|x| x.as_dict().ok());
    for op in &content.operations {
        if op.operator != "Do" {
            continue;
        }
        let Some(Ok(name)) = op.operands.first().map(Object::as_name) else {
            continue;
        };
        let form = xobjects
            .and_then(|x| match x.get(name) {
                Ok(Object::Reference(id)) => Some(*id),
                _ => None,
            })
            .and_then(|id| Some((id, doc.get_object(id).ok()?.as_stream().ok()?)))
            .filter(|(_, s)| {
                s.dict.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Form")
            });
        let Some((id, stream)) = form else {
            drops.entry(caller).or_default().insert(name.to_vec());
            continue;
        };
        if stack.contains(&id) || stack.len() >= MAX_FORM_DEPTH || *budget == 0 {
            drops.entry(caller).or_default().insert(name.to_vec());
            continue;
        }
        *budget -= 1;
        let Ok(inner) = stream.get_plain_content() else {
            continue;
        };
        let inner_resources = dict_get(doc, &stream.dict, b"Resources")
            .and_then(|r| r.as_dict().ok())
            .unwrap_or(resources);
        stack.push(id);
        find_bad_calls(
            doc,
            Caller::Form(id),
            &inner,
            inner_resources,
            stack,
            budget,
            drops,
        );
        stack.pop();
    }
}

/// Content stream bytes with each comment and each inline image
/// (`BI … ID … EI`) replaced by a space; strings are copied as they are.
fn without_comments_and_inline_images(src: &[u8]) -> Vec<u8> {
    let delimiter = |b: u8| b.is_ascii_whitespace() || b"()<>[]{}/%".contains(&b);
    let token_at = |i: usize, token: &[u8]| {
        src[i..].starts_with(token)
            && (i == 0 || delimiter(src[i - 1]))
            && src.get(i + token.len()).is_none_or(|&b| delimiter(b))
    };
    let mut out = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        match src[i] {
            b'(' => {
                let start = i;
                let mut depth = 0usize;
                while i < src.len() {
                    match src[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                i = (i + 1).min(src.len());
                out.extend_from_slice(&src[start..i]);
            }
            b'%' => {
                while i < src.len() && !matches!(src[i], b'\n' | b'\r') {
                    i += 1;
                }
                out.push(b' ');
            }
            b'B' if token_at(i, b"BI") => {
                // The data starts one byte after `ID` and ends before an
                // `EI` between whitespace (or the end).
                let data = (i + 2..src.len().saturating_sub(1))
                    .find(|&j| token_at(j, b"ID"))
                    .map(|j| j + 3);
                let end = data.and_then(|d| {
                    (d..src.len().saturating_sub(1)).find(|&j| {
                        src[j..].starts_with(b"EI")
                            && src[j - 1].is_ascii_whitespace()
                            && src.get(j + 2).is_none_or(u8::is_ascii_whitespace)
                    })
                });
                match end {
                    Some(end) => {
                        out.push(b' ');
                        i = end + 2;
                    }
                    None => {
                        out.extend_from_slice(&src[i..]);
                        i = src.len();
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A ToUnicode CMap mapping every two-byte code outside the surrogate range
/// to itself, in blocks of at most 100 ranges as the CMap syntax requires.
fn identity_to_unicode() -> Vec<u8> {
    let ranges: Vec<u16> = (0u16..=0xff)
        .filter(|hi| !(0xd8..=0xdf).contains(hi))
        .collect();
    let mut out = String::from(
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
         /CMapName /XxdcIdentity def\n/CMapType 2 def\n\
         1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
    );
    for block in ranges.chunks(100) {
        out.push_str(&format!("{} beginbfrange\n", block.len()));
        for hi in block {
            out.push_str(&format!("<{hi:02X}00> <{hi:02X}FF> <{hi:02X}00>\n"));
        }
        out.push_str("endbfrange\n");
    }
    out.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
    out.into_bytes()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Collecting glyphs and rules

#[derive(Debug, Default)]
struct Collector {
    top: f64,
    page: Option<PageContent>,
}

impl Collector {
    fn finish(self) -> Option<PageContent> {
        self.page
    }

    /// Device point in top-down page coordinates.
    fn to_page(&self, ctm: &Transform, x: f64, y: f64) -> (f64, f64) {
        let p = ctm.transform_point(euclid::Point2D::new(x, y));
        (p.x, self.top - p.y)
    }

    fn add_segment(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64)) {
        let Some(page) = self.page.as_mut() else {
            return;
        };
        if !(x0.is_finite() && y0.is_finite() && x1.is_finite() && y1.is_finite()) {
            return;
        }
        if page.horizontal.len() + page.vertical.len() >= MAX_RULES_PER_PAGE {
            return;
        }
        let (dx, dy) = ((x1 - x0).abs(), (y1 - y0).abs());
        if dy <= 0.5 && dx >= RULE_MIN_LENGTH {
            page.horizontal.push(Rule {
                pos: (y0 + y1) / 2.0,
                a: x0.min(x1),
                b: x0.max(x1),
            });
        } else if dx <= 0.5 && dy >= RULE_MIN_LENGTH {
            page.vertical.push(Rule {
                pos: (x0 + x1) / 2.0,
                a: y0.min(y1),
                b: y0.max(y1),
            });
        }
    }

    /// Points of each subpath, in page coordinates.
    fn subpaths(&self, ctm: &Transform, path: &Path) -> Vec<Vec<(f64, f64)>> {
        let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut current: Vec<(f64, f64)> = Vec::new();
        for op in &path.ops {
            match *op {
                PathOp::MoveTo(x, y) => {
                    if current.len() > 1 {
                        out.push(std::mem::take(&mut current));
                    }
                    current = vec![self.to_page(ctm, x, y)];
                }
                PathOp::LineTo(x, y) => current.push(self.to_page(ctm, x, y)),
                PathOp::CurveTo(_, _, _, _, x, y) => {
                    // A curve is no rule: start a fresh subpath after it.
                    if current.len() > 1 {
                        out.push(std::mem::take(&mut current));
                    }
                    current = vec![self.to_page(ctm, x, y)];
                }
                PathOp::Rect(x, y, w, h) => {
                    if current.len() > 1 {
                        out.push(std::mem::take(&mut current));
                    }
                    current.clear();
                    let mut rect = vec![
                        self.to_page(ctm, x, y),
                        self.to_page(ctm, x + w, y),
                        self.to_page(ctm, x + w, y + h),
                        self.to_page(ctm, x, y + h),
                    ];
                    let first = rect[0];
                    rect.push(first);
                    out.push(rect);
                }
                PathOp::Close => {
                    if let Some(&first) = current.first() {
                        current.push(first);
                    }
                }
            }
        }
        if current.len() > 1 {
            out.push(current);
        }
        out
    }
}

/// White (or near-white) paint erases rather than rules.
fn is_white(colorspace: &ColorSpace, color: &[f64]) -> bool {
    match (colorspace, color) {
        (ColorSpace::DeviceGray, [g]) => *g > 0.95,
        (ColorSpace::DeviceRGB, [r, g, b]) => *r > 0.95 && *g > 0.95 && *b > 0.95,
        (ColorSpace::DeviceCMYK, [c, m, y, k]) => c + m + y + k < 0.05,
        _ => false,
    }
}

impl OutputDev for Collector {
    fn begin_page(
        &mut self,
        _page_num: u32,
        media_box: &MediaBox,
        _art_box: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), OutputError> {
        self.top = media_box.ury.max(media_box.lly);
        self.page = Some(PageContent::default());
        Ok(())
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn output_character(
        &mut self,
        trm: &Transform,
        width: f64,
        _spacing: f64,
        font_size: f64,
        ch: &str,
    ) -> Result<(), OutputError> {
        let top = self.top;
        let Some(page) = self.page.as_mut() else {
            return Ok(());
        };
        if ch.is_empty() || page.glyphs.len() >= MAX_GLYPHS_PER_PAGE {
            return Ok(());
        }
        // pdf-extract's trm leaves the font size out (Tsm × Tm × CTM), so
        // glyph extents are scaled by it here.
        let origin = trm.transform_point(euclid::Point2D::new(0.0, 0.0));
        let advance = trm.transform_vector(euclid::Vector2D::new(width * font_size, 0.0));
        let em_vec = trm.transform_vector(euclid::Vector2D::new(0.0, font_size));
        let em = em_vec.x.hypot(em_vec.y);
        let mut adv = advance.x.hypot(advance.y);
        if !(origin.x.is_finite() && origin.y.is_finite() && em.is_finite() && adv.is_finite())
            || em <= 0.01
        {
            return Ok(());
        }
        // Fonts without width tables report 0; guess from the script.
        if adv < 0.05 * em {
            adv = if ch.is_ascii() { 0.5 * em } else { em };
        }
        page.glyphs.push(Glyph {
            x: origin.x,
            right: origin.x + adv,
            baseline: top - origin.y,
            em,
            text: ch.to_string(),
        });
        Ok(())
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn stroke(
        &mut self,
        ctm: &Transform,
        colorspace: &ColorSpace,
        color: &[f64],
        path: &Path,
    ) -> Result<(), OutputError> {
        if is_white(colorspace, color) {
            return Ok(());
        }
        for sub in self.subpaths(ctm, path) {
            for pair in sub.windows(2) {
                self.add_segment(pair[0], pair[1]);
            }
        }
        Ok(())
    }

    fn fill(
        &mut self,
        ctm: &Transform,
        colorspace: &ColorSpace,
        color: &[f64],
        path: &Path,
    ) -> Result<(), OutputError> {
        if is_white(colorspace, color) {
            return Ok(());
        }
        // Word and LibreOffice often paint borders as thin filled
        // rectangles: a thin box is a rule along its long side.
        for sub in self.subpaths(ctm, path) {
            let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
            for &(x, y) in &sub {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
            let (w, h) = (x1 - x0, y1 - y0);
            if h <= RULE_MAX_THICKNESS && w > h {
                let y = (y0 + y1) / 2.0;
                self.add_segment((x0, y), (x1, y));
            } else if w <= RULE_MAX_THICKNESS && h > w {
                let x = (x0 + x1) / 2.0;
                self.add_segment((x, y0), (x, y1));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Metadata

/// An object, references followed (shared with the OCR decoder).
pub(crate) fn deref<'a>(doc: &'a Document, obj: &'a Object) -> Option<&'a Object> {
    match obj {
        Object::Reference(id) => doc.get_object(*id).ok(),
        other => Some(other),
    }
}

pub(crate) fn dict_get<'a>(
    doc: &'a Document,
    dict: &'a Dictionary,
    key: &[u8],
) -> Option<&'a Object> {
    dict.get(key).ok().and_then(|o| deref(doc, o))
}

fn info_meta(doc: &Document, meta: &mut Meta) {
    let Some(info) = dict_get(doc, &doc.trailer, b"Info").and_then(|o| o.as_dict().ok()) else {
        return;
    };
    for (key, name) in [
        (&b"Producer"[..], "producer"),
        (b"Creator", "creator"),
        (b"Title", "title"),
        (b"Author", "author"),
    ] {
        if let Some(text) = dict_get(doc, info, key).and_then(text_string) {
            meta.insert(name.into(), text.into());
        }
    }
    for (key, name) in [(&b"CreationDate"[..], "created"), (b"ModDate", "modified")] {
        if let Some(date) = dict_get(doc, info, key)
            .and_then(text_string)
            .and_then(|s| parse_pdf_date(&s))
        {
            meta.insert(name.into(), date.into());
        }
    }
}

/// A PDF text string (PDFDocEncoding or UTF-16BE with BOM), trimmed; `None`
/// when blank or undecodable.
fn text_string(obj: &Object) -> Option<String> {
    let s = pdf_extract::decode_text_string(obj).ok()?;
    let s: String = s
        .chars()
        .filter(|c| *c != '\u{feff}' && !c.is_control())
        .collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Parses `D:YYYYMMDDHHmmSSOHH'mm'` leniently (missing parts, `Z`, trailing
/// or missing apostrophes) into RFC 3339. No zone means UTC.
fn parse_pdf_date(s: &str) -> Option<String> {
    use chrono::{FixedOffset, NaiveDate, SecondsFormat, TimeZone};
    let s = s.trim();
    let s = s.strip_prefix("D:").unwrap_or(s);
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let rest = &s[digits.len()..];
    if digits.len() < 4 {
        return None;
    }
    let part = |from: usize, len: usize, default: u32| -> Option<u32> {
        match digits.get(from..from + len) {
            Some(p) => p.parse().ok(),
            None => Some(default),
        }
    };
    let year: i32 = digits.get(0..4)?.parse().ok()?;
    let (month, day) = (part(4, 2, 1)?, part(6, 2, 1)?);
    let (hour, minute, second) = (part(8, 2, 0)?, part(10, 2, 0)?, part(12, 2, 0)?);
    let naive =
        NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second.min(59))?;
    let offset_secs = match rest.chars().next() {
        Some(sign @ ('+' | '-')) => {
            let tz: String = rest[1..].chars().filter(char::is_ascii_digit).collect();
            let h: i32 = tz.get(0..2).and_then(|p| p.parse().ok()).unwrap_or(0);
            let m: i32 = tz.get(2..4).and_then(|p| p.parse().ok()).unwrap_or(0);
            let secs = h * 3600 + m * 60;
            if sign == '-' { -secs } else { secs }
        }
        _ => 0,
    };
    let offset = FixedOffset::east_opt(offset_secs)?;
    let dt = offset.from_local_datetime(&naive).single()?;
    Some(dt.to_rfc3339_opts(SecondsFormat::Secs, true))
}

#[derive(Debug, Default)]
struct ImageFacts {
    count: usize,
    dpi: Option<u64>,
}

/// Counts distinct image XObjects on all pages (including those inside form
/// XObjects) and works out the resolution of the largest one as if it
/// covered the page's width, which is how scanners build their PDFs.
fn image_facts(doc: &Document, pages: &BTreeMap<u32, ObjectId>) -> ImageFacts {
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut largest: Option<(u64, f64)> = None; // (pixels, dpi)
    for &page_id in pages.values() {
        let Ok(page) = doc.get_dictionary(page_id) else {
            continue;
        };
        let page_width = inherited(doc, page, b"MediaBox")
            .and_then(|o| o.as_array().ok())
            .and_then(|a| {
                let n: Vec<f64> = a
                    .iter()
                    .filter_map(|o| deref(doc, o).and_then(number))
                    .collect();
                (n.len() == 4).then(|| (n[2] - n[0]).abs())
            })
            .filter(|w| *w > 1.0)
            .unwrap_or(612.0);
        let Some(resources) = inherited(doc, page, b"Resources").and_then(|o| o.as_dict().ok())
        else {
            continue;
        };
        let mut stack = vec![(resources, 0usize)];
        while let Some((res, depth)) = stack.pop() {
            let Some(xobjects) = dict_get(doc, res, b"XObject").and_then(|o| o.as_dict().ok())
            else {
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
                let subtype =
                    dict_get(doc, &stream.dict, b"Subtype").and_then(|o| o.as_name().ok());
                match subtype {
                    Some(b"Image") => {
                        let w = dict_get(doc, &stream.dict, b"Width")
                            .and_then(number)
                            .unwrap_or(0.0);
                        let h = dict_get(doc, &stream.dict, b"Height")
                            .and_then(number)
                            .unwrap_or(0.0);
                        let pixels = (w.max(0.0) * h.max(0.0)) as u64;
                        if largest.is_none_or(|(p, _)| pixels > p) && w > 0.0 {
                            largest = Some((pixels, w / (page_width / 72.0)));
                        }
                    }
                    Some(b"Form") if depth < 8 => {
                        if let Some(r) =
                            dict_get(doc, &stream.dict, b"Resources").and_then(|o| o.as_dict().ok())
                        {
                            stack.push((r, depth + 1));
                        }
                    }
                    _ => continue,
                }
            }
        }
    }
    let images = seen
        .iter()
        .filter(|id| {
            doc.get_object(**id)
                .and_then(Object::as_stream)
                .ok()
                .and_then(|s| dict_get(doc, &s.dict, b"Subtype").and_then(|o| o.as_name().ok()))
                == Some(&b"Image"[..])
        })
        .count();
    ImageFacts {
        count: images,
        dpi: largest
            .and_then(|(_, dpi)| (dpi.is_finite() && dpi >= 1.0).then(|| dpi.round() as u64)),
    }
}

pub(crate) fn number(obj: &Object) -> Option<f64> {
    match obj {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(f64::from(*r)),
        _ => None,
    }
}

/// A page attribute, looked up the page tree (bounded against loops).
pub(crate) fn inherited<'a>(
    doc: &'a Document,
    page: &'a Dictionary,
    key: &[u8],
) -> Option<&'a Object> {
    let mut dict = page;
    for _ in 0..32 {
        if let Some(v) = dict_get(doc, dict, key) {
            return Some(v);
        }
        dict = dict_get(doc, dict, b"Parent")?.as_dict().ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::grid::{Cell, Grid};

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/pdf/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn read_ok(name: &str) -> Extracted {
        read(&fixture(name), &ReadLimits::default()).unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    /// The cell at (row, col) as (rowspan, colspan, text).
    fn cell(grid: &Grid, row: u32, col: u32) -> (u32, u32, &str) {
        let c = grid
            .cells
            .iter()
            .find(|c| c.row == row && c.col == col)
            .unwrap_or_else(|| panic!("no cell ({row},{col}) in {grid:#?}"));
        (c.rowspan, c.colspan, c.text.as_str())
    }

    fn dict(pairs: Vec<(&str, Object)>) -> Dictionary {
        let mut d = Dictionary::new();
        for (k, v) in pairs {
            d.set(k, v);
        }
        d
    }

    fn name(n: &str) -> Object {
        Object::Name(n.as_bytes().to_vec())
    }

    fn helvetica() -> Object {
        Object::Dictionary(dict(vec![
            ("Type", name("Font")),
            ("Subtype", name("Type1")),
            ("BaseFont", name("Helvetica")),
        ]))
    }

    /// A non-embedded CID font under a predefined CMap, written inline and
    /// without a FontDescriptor, as small producers write them.
    fn cid_font(cmap: &str) -> Object {
        let descendant = dict(vec![
            ("Type", name("Font")),
            ("Subtype", name("CIDFontType0")),
            ("BaseFont", name("SimSun")),
        ]);
        Object::Dictionary(dict(vec![
            ("Type", name("Font")),
            ("Subtype", name("Type0")),
            ("BaseFont", name("SimSun")),
            ("Encoding", name(cmap)),
            (
                "DescendantFonts",
                Object::Array(vec![Object::Dictionary(descendant)]),
            ),
        ]))
    }

    /// A one-page PDF with these fonts (`/F1` …) and page content; `extra`
    /// objects are numbered from 100 on, for fonts to refer to.
    fn one_page_with(fonts: Vec<(&str, Object)>, extra: Vec<Object>, content: &[u8]) -> Vec<u8> {
        let mut doc = Document::with_version("1.5");
        for (n, obj) in (100..).zip(extra) {
            doc.objects.insert((n, 0), obj);
        }
        doc.max_id = 200;
        let pages_id = doc.new_object_id();
        let contents = doc.add_object(Stream::new(Dictionary::new(), content.to_vec()));
        let resources = dict(vec![("Font", Object::Dictionary(dict(fonts)))]);
        let page = doc.add_object(dict(vec![
            ("Type", name("Page")),
            ("Parent", Object::Reference(pages_id)),
            ("Contents", Object::Reference(contents)),
            ("Resources", Object::Dictionary(resources)),
            (
                "MediaBox",
                Object::Array([0, 0, 400, 200].map(Object::Integer).to_vec()),
            ),
        ]));
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dict(vec![
                ("Type", name("Pages")),
                ("Kids", Object::Array(vec![Object::Reference(page)])),
                ("Count", Object::Integer(1)),
            ])),
        );
        let catalog = doc.add_object(dict(vec![
            ("Type", name("Catalog")),
            ("Pages", Object::Reference(pages_id)),
        ]));
        doc.trailer.set("Root", Object::Reference(catalog));
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("written");
        out
    }

    fn one_page(fonts: Vec<(&str, Object)>, content: &[u8]) -> Vec<u8> {
        one_page_with(fonts, Vec::new(), content)
    }

    /// Every cell's text, cells joined by `|`.
    fn all_text(out: &Extracted) -> String {
        out.grids
            .iter()
            .flat_map(|g| g.cells.iter().map(|c| c.text.as_str()))
            .collect::<Vec<_>>()
            .join("|")
    }

    fn read_built(bytes: &[u8]) -> Extracted {
        read(bytes, &ReadLimits::default()).expect("readable")
    }

    #[test]
    fn legacy_predefined_cmaps_of_non_embedded_fonts_decode_by_their_charset() {
        // 单位：永嘉县教育局 in GBK; 登記表 in Shift_JIS and Big5; あいう in
        // seven-bit JIS; issue2128r.pdf and noembed-sjis.pdf of pdf.js failed
        // as a whole ("unsupported encoding GBK-EUC-H").
        let pdf = one_page(
            vec![
                ("F1", cid_font("GBK-EUC-H")),
                ("F2", cid_font("90ms-RKSJ-V")),
                ("F3", cid_font("ETen-B5-H")),
                ("F4", cid_font("H")),
            ],
            b"BT /F1 12 Tf 20 150 Td <B5A5CEBBA3BAD3C0BCCECFD8BDCCD3FDBED6> Tj ET\n\
              BT /F2 12 Tf 20 120 Td <936F8B4C955C> Tj ET\n\
              BT /F3 12 Tf 20 90 Td <B56EB04FAAED> Tj ET\n\
              BT /F4 12 Tf 20 60 Td <242224242426> Tj ET\n",
        );
        let out = read_built(&pdf);
        assert_eq!(all_text(&out), "单位：永嘉县教育局|登記表|登記表|あいう");
    }

    #[test]
    fn a_page_walked_without_a_glyph_is_read_by_the_simpler_decoder() {
        // issue13242.pdf of pdf.js: a CID font with an embedded one-byte
        // CMap, which pdf-extract 0.12 takes for zero bytes wide, so no
        // code is read and the page came out empty, silently.
        let cmap = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
            1 begincodespacerange <00> <FF> endcodespacerange\n\
            1 begincidrange <00> <FF> 0 endcidrange\n\
            endcmap CMapName currentdict /CMap defineresource pop end end\n";
        let to_unicode = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
            1 begincodespacerange <00> <FF> endcodespacerange\n\
            1 beginbfrange <20> <7E> <0020> endbfrange\n\
            endcmap CMapName currentdict /CMap defineresource pop end end\n";
        let descendant = dict(vec![
            ("Type", name("Font")),
            ("Subtype", name("CIDFontType2")),
            ("BaseFont", name("SimSun")),
            (
                "FontDescriptor",
                Object::Dictionary(dict(vec![("Flags", Object::Integer(4))])),
            ),
        ]);
        let font = Object::Dictionary(dict(vec![
            ("Type", name("Font")),
            ("Subtype", name("Type0")),
            ("BaseFont", name("SimSun")),
            ("Encoding", Object::Reference((100, 0))),
            ("ToUnicode", Object::Reference((101, 0))),
            (
                "DescendantFonts",
                Object::Array(vec![Object::Dictionary(descendant)]),
            ),
        ]));
        let pdf = one_page_with(
            vec![("F1", font)],
            vec![
                Object::Stream(Stream::new(Dictionary::new(), cmap.to_vec())),
                Object::Stream(Stream::new(Dictionary::new(), to_unicode.to_vec())),
            ],
            b"BT /F1 12 Tf 20 100 Td (Danwei: Yongjia) Tj ET\n",
        );
        let out = read_built(&pdf);
        assert_eq!(all_text(&out), "Danwei: Yongjia");
        assert_eq!(out.meta["text_layer"], true);
    }

    /// A page showing `/X1` (object 100) with `/F1` in its resources.
    fn page_with_xobjects(extra: Vec<Object>, content: &[u8]) -> Vec<u8> {
        let mut doc = Document::load_mem(&one_page_with(vec![("F1", helvetica())], extra, content))
            .expect("built");
        let page = *doc.get_pages().values().next().expect("a page");
        let Ok(Object::Dictionary(page)) = doc.get_object_mut(page) else {
            panic!("page")
        };
        let Ok(Object::Dictionary(resources)) = page.get_mut(b"Resources") else {
            panic!("resources")
        };
        resources.set(
            "XObject",
            Object::Dictionary(dict(vec![("X1", Object::Reference((100, 0)))])),
        );
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("written");
        out
    }

    fn form(calls: u32, y: u32, text: &str) -> Object {
        let resources = dict(vec![
            ("Font", Object::Dictionary(dict(vec![("F1", helvetica())]))),
            (
                "XObject",
                Object::Dictionary(dict(vec![("Xn", Object::Reference((calls, 0)))])),
            ),
        ]);
        Object::Stream(Stream::new(
            dict(vec![
                ("Subtype", name("Form")),
                (
                    "BBox",
                    Object::Array([0, 0, 400, 200].map(Object::Integer).to_vec()),
                ),
                ("Resources", Object::Dictionary(resources)),
            ]),
            format!("BT /F1 12 Tf 20 {y} Td ({text}) Tj ET /Xn Do").into_bytes(),
        ))
    }

    #[test]
    fn form_xobjects_that_draw_each_other_are_drawn_once() {
        // issue19800.pdf of pdf.js: X1 draws X0, which draws X1; pdf-extract
        // recursed until the stack overflowed and the worker aborted (this
        // test aborts the test binary without the guard).
        let pdf = page_with_xobjects(
            vec![form(101, 150, "Danwei"), form(100, 100, "Yongjia")],
            b"/X1 Do",
        );
        let out = read_built(&pdf);
        assert_eq!(all_text(&out), "Danwei|Yongjia");
    }

    #[test]
    fn comments_in_page_content_do_not_hide_the_text_after_them() {
        // calrgb.pdf of pdf.js: a comment on every line, indented lines
        // after it; lopdf's content parser stopped at the first one.
        let pdf = one_page(
            vec![("F1", helvetica())],
            b"BT %% start\n  /F1 12 Tf %% font\n  20 100 Td (Danwei: Yongjia % not a comment) Tj\nET\n",
        );
        let out = read_built(&pdf);
        assert_eq!(all_text(&out), "Danwei: Yongjia % not a comment");
    }

    #[test]
    fn an_inline_image_with_more_data_than_its_size_does_not_fail_the_page() {
        // issue4436r.pdf of pdf.js: a 1x1 mask followed by four data bytes.
        let pdf = one_page(
            vec![("F1", helvetica())],
            b"BT /F1 12 Tf 20 100 Td (Issue 4436) Tj ET\n\
              BI /IM true /W 1 /H 1 /BPC 1 ID \x00\x00\x00\x00\nEI\n",
        );
        let out = read_built(&pdf);
        assert_eq!(all_text(&out), "Issue 4436");
    }

    #[test]
    fn ruled_form_becomes_cells_with_spans() {
        let out = read_ok("form_ruled.pdf");
        assert!(!out.scanned);
        let page = &out.grids[0];
        assert_eq!(page.name, "page 1");
        assert_eq!(cell(page, 0, 0), (1, 1, "单 位"));
        assert_eq!(cell(page, 0, 1), (1, 3, "永嘉县教育局"));
        assert_eq!(cell(page, 0, 4), (1, 1, "地址"));
        assert_eq!(cell(page, 0, 5), (1, 1, "县前路6号"));
        assert_eq!(cell(page, 1, 0), (1, 1, "分管领导姓名"));
        assert_eq!(cell(page, 1, 3), (1, 1, "副局长"));
        // rowspan from the missing rule, colspans from missing verticals
        assert_eq!(cell(page, 2, 0), (2, 1, "联系方式"));
        assert_eq!(cell(page, 2, 1), (1, 2, "办电"));
        assert_eq!(cell(page, 3, 2), (1, 2, "0577-67260157"));
        assert_eq!(cell(page, 3, 5), (1, 1, "ghh716@yahoo.com.cn"));
        // bottom border drawn as a filled rectangle closes the last row
        assert_eq!(
            cell(page, 4, 1),
            (
                1,
                5,
                "1995.09-1998.07 温州大学法律专业学习；\n1998.07-至今 永嘉县教育局办公室工作。"
            )
        );
        assert_eq!(page.cells.len(), 21);
    }

    #[test]
    fn a_damaged_cross_reference_table_or_trailer_is_rebuilt() {
        let good = fixture("form_ruled.pdf");
        let want = read_ok("form_ruled.pdf").grids;
        let xref = good.windows(5).position(|w| w == b"\nxref").expect("xref") + 1;
        // A download cut before its table; offsets that point nowhere.
        let cut = good[..xref].to_vec();
        let mut wrong = good.clone();
        let at = wrong
            .windows(10)
            .rposition(|w| w == b"startxref\n")
            .expect("startxref")
            + 10;
        wrong[at..at + 4].copy_from_slice(b"1111");
        for damaged in [cut, wrong] {
            assert!(Document::load_mem(&damaged).is_err());
            let out = read(&damaged, &ReadLimits::default()).expect("read after repair");
            assert_eq!(out.grids, want);
        }
    }

    #[test]
    fn junk_before_the_header_and_no_cross_reference_table_are_rebuilt() {
        // issue6069.pdf of pdf.js: text before `%PDF` and no startxref.
        let good = fixture("form_ruled.pdf");
        let want = read_ok("form_ruled.pdf").grids;
        let xref = good.windows(5).position(|w| w == b"\nxref").expect("xref") + 1;
        let mut damaged = b"Some junk before the header\n\n".to_vec();
        damaged.extend_from_slice(&good[..xref]);
        let out = read(&damaged, &ReadLimits::default()).expect("read after repair");
        assert_eq!(out.grids, want);
    }

    #[test]
    fn an_encryption_lopdf_cannot_open_is_encrypted_not_pageless() {
        // issue6010_1.pdf of pdf.js: AES-256 (R 6) with a user password;
        // lopdf loaded it without its page tree and it was "no pages".
        let plain = one_page(vec![("F1", helvetica())], b"BT ET");
        let mut doc = Document::load_mem(&plain).expect("built");
        let pages = doc
            .catalog()
            .expect("catalog")
            .get(b"Pages")
            .cloned()
            .expect("pages");
        let _ = doc
            .objects
            .remove(&pages.as_reference().expect("reference"));
        doc.trailer.set(
            "Encrypt",
            Object::Dictionary(dict(vec![
                ("Filter", name("Standard")),
                ("V", Object::Integer(5)),
                ("R", Object::Integer(6)),
                ("Length", Object::Integer(256)),
                ("P", Object::Integer(-4)),
                ("O", Object::string_literal(vec![7u8; 48])),
                ("U", Object::string_literal(vec![9u8; 48])),
            ])),
        );
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).expect("written");
        assert_eq!(
            read(&bytes, &ReadLimits::default()),
            Err(ReadError::Encrypted)
        );
    }

    #[test]
    fn values_wrapped_inside_a_cell_are_rejoined() {
        let out = read_ok("form_ruled.pdf");
        let page = &out.grids[0];
        // "0577-" / "6745" / "8754" in a 36pt cell
        assert_eq!(cell(page, 2, 3), (1, 1, "0577-67458754"));
        // "办公室、政务信息、信" / "访"
        assert_eq!(cell(page, 1, 5), (1, 1, "办公室、政务信息、信访"));
    }

    #[test]
    fn text_outside_tables_goes_to_the_text_grid() {
        let out = read_ok("form_ruled.pdf");
        assert_eq!(out.grids.len(), 2);
        let text = &out.grids[1];
        assert_eq!(text.name, "text");
        assert_eq!(cell(text, 0, 0).2, "分管政务信息领导及信息员登记表");
        assert_eq!(cell(text, 1, 0).2, "填表人：夏微红");
        assert_eq!(cell(text, 1, 1).2, "联系电话：0577-67218478");
    }

    #[test]
    fn unruled_label_lines_split_on_wide_gaps_and_space_only_ascii() {
        let out = read_ok("text_only.pdf");
        assert_eq!(out.grids.len(), 1);
        let text = &out.grids[0];
        assert_eq!(text.name, "text");
        assert_eq!(cell(text, 0, 0).2, "单位：永嘉县教育局");
        assert_eq!(cell(text, 0, 1).2, "地址：县前路6号");
        assert_eq!(cell(text, 1, 0).2, "信息员姓名：夏微红");
        assert_eq!(cell(text, 2, 0).2, "Hello World");
        assert_eq!(cell(text, 3, 0).2, "县前路");
        assert_eq!(text.cells.len(), 5);
    }

    #[test]
    fn document_information_becomes_meta() {
        let out = read_ok("form_ruled.pdf");
        let m = &out.meta;
        assert_eq!(m["pages"], 1);
        assert_eq!(m["producer"], "xxdc-intake fixtures");
        assert_eq!(m["creator"], "Writer");
        assert_eq!(m["author"], "微软用户");
        assert_eq!(m["title"], "分管政务信息领导及信息员登记表");
        assert_eq!(m["created"], "2000-01-01T00:00:00Z");
        assert_eq!(m["text_layer"], true);
        assert_eq!(m["images"], 0);
        assert!(!m.contains_key("image_dpi"));
    }

    #[test]
    fn pages_past_the_limit_are_not_read_but_counted() {
        let bytes = fixture("two_pages.pdf");
        let all = read(&bytes, &ReadLimits::default()).expect("readable");
        assert_eq!(all.meta["pages"], 2);
        assert_eq!(all.grids[0].cells.len(), 2);
        let limits = ReadLimits {
            max_pages: 1,
            ..ReadLimits::default()
        };
        let first = read(&bytes, &limits).expect("readable");
        assert_eq!(first.meta["pages"], 2);
        assert_eq!(
            first.grids[0].cells,
            vec![Cell::new(0, 0, "第一页：单位：永嘉县教育局")]
        );
    }

    #[test]
    fn image_only_pdf_is_scanned() {
        let out = read_ok("image_only.pdf");
        assert!(out.scanned);
        assert!(out.grids.is_empty());
        assert_eq!(out.meta["text_layer"], false);
        assert_eq!(out.meta["images"], 1);
        assert_eq!(out.meta["image_dpi"], 24);
        assert_eq!(out.meta["pages"], 1);
    }

    #[test]
    fn user_password_is_encrypted_owner_password_is_read() {
        let err = read(&fixture("encrypted.pdf"), &ReadLimits::default());
        assert_eq!(err, Err(ReadError::Encrypted));
        let out = read_ok("owner_only.pdf");
        assert_eq!(
            out.grids[0].cells[0].text,
            "Danwei: Yongjia County Education Bureau"
        );
    }

    #[test]
    fn corrupt_input_is_damaged() {
        for bytes in [
            fixture("corrupt.pdf"),
            Vec::new(),
            b"%PDF-1.4\n".to_vec(),
            b"hello".to_vec(),
        ] {
            let result = read(&bytes, &ReadLimits::default());
            assert!(matches!(result, Err(ReadError::Damaged(_))), "{result:?}");
        }
    }

    #[test]
    fn pdf_dates_parse_leniently() {
        assert_eq!(
            parse_pdf_date("D:20070516091233Z").as_deref(),
            Some("2007-05-16T09:12:33Z")
        );
        assert_eq!(
            parse_pdf_date("D:20070516171233+08'00'").as_deref(),
            Some("2007-05-16T17:12:33+08:00")
        );
        assert_eq!(
            parse_pdf_date("D:20070516171233+08'00").as_deref(),
            Some("2007-05-16T17:12:33+08:00")
        );
        assert_eq!(
            parse_pdf_date("D:200705161712-05'30'").as_deref(),
            Some("2007-05-16T17:12:00-05:30")
        );
        assert_eq!(
            parse_pdf_date("D:2007").as_deref(),
            Some("2007-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_pdf_date("20070516").as_deref(),
            Some("2007-05-16T00:00:00Z")
        );
        assert_eq!(parse_pdf_date("D:20071345"), None);
        assert_eq!(parse_pdf_date("yesterday"), None);
    }

    #[test]
    fn mutations_never_panic() {
        // xorshift64: deterministic, no dependency
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let inputs = [
            fixture("form_ruled.pdf"),
            fixture("image_only.pdf"),
            fixture("text_only.pdf"),
        ];
        for round in 0..300 {
            let mut bytes = inputs[round % inputs.len()].clone();
            let len = bytes.len() as u64;
            for _ in 0..(next() % 6 + 1) {
                let at = (next() % len) as usize;
                if let Some(b) = bytes.get_mut(at) {
                    *b = (next() & 0xFF) as u8;
                }
            }
            if next() % 4 == 0 {
                bytes.truncate((next() % len) as usize);
            }
            let result = std::panic::catch_unwind(|| read(&bytes, &ReadLimits::default()));
            assert!(result.is_ok(), "round {round} escaped as a panic");
        }
    }
}
