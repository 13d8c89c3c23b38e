//! Reader for Word 97–2003 binary documents (`.doc`) and WPS Office `.wps`
//! files, which use the same compound-file layout. It owns everything between
//! the attachment bytes and [`Extracted`]: opening the compound file, the FIB,
//! the piece table (CLX), paragraph properties (PAPX FKPs, including the
//! `sprmPHugePapx` spill-over into the `Data` stream), the table marks and
//! row definitions (`sprmTDefTable`, `sprmTVertMerge`) that
//! `super::word_table` turns into grids with row and column spans, and the
//! `\x05SummaryInformation` metadata. It
//! does not interpret the form (that is `crate::parse::form`'s job), does not read
//! Word 6/95 files (a different FIB; reported as unsupported), does not
//! decrypt password-protected files, and ignores character formatting,
//! headers, footnotes, text boxes and fast-saved piece modifiers (`Prm`).
//!
//! Written by hand because no maintained Rust crate reads Word 97 tables with
//! their spans: the crates that exist either extract plain text only or stop
//! at the compound-file level. The format is Microsoft's [MS-DOC] specification; every length and
//! offset in it comes from the file, so everything here is bounds-checked
//! (`get`, checked arithmetic, counts capped by the stream they live in) and
//! malformed input ends in [`ReadError::Damaged`], never a panic.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::rc::Rc;

use super::word_table::{CellDef, RowDef, TableBuilder};
#[cfg(test)]
use crate::parse::grid::Grid;
use crate::parse::grid::{Extracted, Meta, ReadError, ReadLimits};

/// `wIdent` of a Word 97+ FIB.
const WORD_IDENT: u16 = 0xA5EC;
/// Word 97 writes nFib 0x00C1; 0x00C0 and 0x00C2 occur in the wild. Anything
/// lower (but non-zero) is Word 6/95, whose FIB has another layout.
const MIN_NFIB: u16 = 0x00C0;
const FLAG_ENCRYPTED: u16 = 0x0100;
const FLAG_WHICH_TABLE: u16 = 0x0200;
/// Size of a formatted disk page (FKP) in the WordDocument stream.
const FKP_SIZE: usize = 512;
/// Word nests tables only a few levels deep; larger `itap` values are
/// hostile and clamped so the table stack stays small.
const MAX_DEPTH: usize = 64;

const SPRM_P_F_IN_TABLE: u16 = 0x2416;
const SPRM_P_F_TTP: u16 = 0x2417;
const SPRM_P_HUGE_PAPX: u16 = 0x6646;
const SPRM_P_ITAP: u16 = 0x6649;
const SPRM_P_DTAP: u16 = 0x664A;
const SPRM_P_F_INNER_TABLE_CELL: u16 = 0x244B;
const SPRM_P_F_INNER_TTP: u16 = 0x244C;
const SPRM_P_CHG_TABS: u16 = 0xC615;
const SPRM_T_DEF_TABLE: u16 = 0xD608;
const SPRM_T_DEF_TABLE10: u16 = 0xD606;
const SPRM_T_VERT_MERGE: u16 = 0xD62B;

/// Reads a `.doc`/`.wps` file into grids: one per table (nested tables also
/// flattened into their host cell), plus a `text` grid of the paragraphs
/// outside tables.
pub fn read(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    let streams = Streams::open(bytes, limits)?;
    extract(&streams, limits)
}

/// Everything after the compound-file layer, separate so tests can feed it
/// mutated streams directly.
fn extract(streams: &Streams, limits: &ReadLimits) -> Result<Extracted, ReadError> {
    let fib = Fib::parse(&streams.word)?;
    let pieces = parse_clx(&streams.table, fib.fc_clx, fib.lcb_clx)?;
    let papx = PapxIndex::new(
        &streams.word,
        &streams.table,
        fib.fc_bte_papx,
        fib.lcb_bte_papx,
    )?;

    let mut props_cache = PropsCache::default();
    let mut tables = TableBuilder::new(limits, "");
    // Paragraphs are handed over one at a time so that memory follows what
    // is kept (cells, bounded by the limits), not the paragraph count.
    read_paragraphs(&streams.word, &pieces, fib.ccp_text, limits, |para| {
        let props = props_cache.get(&papx, streams.data.as_deref(), para.mark_fc);
        paragraph(&mut tables, para, &props)
    })?;
    let (grids, tables) = tables.finish()?;

    let mut meta = streams
        .summary
        .as_deref()
        .map(summary_meta)
        .unwrap_or_default();
    meta.insert("tables".into(), serde_json::Value::from(tables));
    Ok(Extracted {
        grids,
        meta,
        scanned: false,
    })
}

fn damaged(tail: &str) -> ReadError {
    ReadError::Damaged(format!("Word 文档结构损坏：{tail}"))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_le_bytes(s))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

fn i16_at(b: &[u8], off: usize) -> Option<i16> {
    u16_at(b, off).map(|v| v as i16)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

/// A `[start, start + len)` sub-slice, or `None` when it leaves `b`.
fn slice_at(b: &[u8], start: usize, len: usize) -> Option<&[u8]> {
    b.get(start..start.checked_add(len)?)
}

// ---------------------------------------------------------------------------
// Compound file

/// The streams this reader needs, read fully (they are bounded by the file
/// size and the limits).
struct Streams {
    word: Vec<u8>,
    table: Vec<u8>,
    data: Option<Vec<u8>>,
    summary: Option<Vec<u8>>,
}

impl Streams {
    fn open(bytes: &[u8], limits: &ReadLimits) -> Result<Self, ReadError> {
        // The compound-file crate is third-party code fed hostile bytes; a
        // panic inside it must still become a clean error.
        let mut cf = crate::parse::compound::open(bytes).map_err(|e| {
            ReadError::Damaged(format!("不是有效的 Word 文档（复合文档无法打开：{e}）"))
        })?;
        let mut budget = limits.max_total_bytes;
        let word = match read_stream(&mut cf, "WordDocument", bytes.len(), limits, &mut budget)? {
            Some(w) => w,
            None => {
                return Err(ReadError::Unsupported(
                    "复合文档中没有 WordDocument 流，不是 Word 文档".into(),
                ));
            }
        };
        // Encryption is decided by the FIB alone, before any other stream is
        // touched: the table stream of an encrypted file is ciphertext.
        let flags = FibBase::parse(&word)?.flags;
        let table_name = if flags & FLAG_WHICH_TABLE != 0 {
            "1Table"
        } else {
            "0Table"
        };
        let table = read_stream(&mut cf, table_name, bytes.len(), limits, &mut budget)?
            .ok_or_else(|| damaged(&format!("missing {table_name} stream")))?;
        let data = read_stream(&mut cf, "Data", bytes.len(), limits, &mut budget)?;
        // Metadata is best effort: a broken property set loses the metadata,
        // not the document.
        let summary = read_stream(
            &mut cf,
            "\u{5}SummaryInformation",
            bytes.len(),
            limits,
            &mut budget,
        )
        .ok()
        .flatten();
        Ok(Self {
            word,
            table,
            data,
            summary,
        })
    }
}

fn read_stream(
    cf: &mut crate::parse::compound::Compound<'_>,
    name: &str,
    file_len: usize,
    limits: &ReadLimits,
    budget: &mut u64,
) -> Result<Option<Vec<u8>>, ReadError> {
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if !cf.is_stream(name) {
            return Ok(None);
        }
        let stream = cf
            .open_stream(name)
            .map_err(|e| damaged(&format!("{name}: {e}")))?;
        let len = stream.len();
        // A stream cannot hold more than the file it lives in.
        if len > file_len as u64 {
            return Err(damaged(&format!("{name} stream longer than the file")));
        }
        if len > limits.max_part_bytes || len > *budget {
            return Err(ReadError::TooLarge(format!("{name} 流过大（{len} 字节）")));
        }
        *budget -= len;
        let mut out = Vec::new();
        stream
            .take(len)
            .read_to_end(&mut out)
            .map_err(|e| damaged(&format!("{name}: {e}")))?;
        Ok(Some(out))
    }));
    read.unwrap_or_else(|_| Err(damaged(&format!("{name} stream"))))
}

// ---------------------------------------------------------------------------
// FIB

struct FibBase {
    flags: u16,
}

impl FibBase {
    fn parse(word: &[u8]) -> Result<Self, ReadError> {
        let ident = u16_at(word, 0).ok_or_else(|| damaged("FIB too short"))?;
        let nfib = u16_at(word, 2).ok_or_else(|| damaged("FIB too short"))?;
        // The version first: Word 6.0/95 (wIdent 0xA5DC) and older Word
        // files have a FIB of their own, whose magic is not Word 97's; they
        // are an older format to save again, not damaged files.
        let old_word = ident & 0xFF00 == 0xA500 && ident != WORD_IDENT;
        if (old_word || ident == WORD_IDENT) && nfib != 0 && nfib < MIN_NFIB {
            return Err(ReadError::Unsupported(format!(
                "Word 6.0/95 或更早格式的文档（nFib {nfib:#06x}），请另存为 Word 97-2003 或更新格式"
            )));
        }
        if ident != WORD_IDENT {
            return Err(damaged("wIdent is not 0xA5EC"));
        }
        let flags = u16_at(word, 0x0A).ok_or_else(|| damaged("FIB too short"))?;
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(ReadError::Encrypted);
        }
        Ok(Self { flags })
    }
}

struct Fib {
    ccp_text: u32,
    fc_clx: u32,
    lcb_clx: u32,
    fc_bte_papx: u32,
    lcb_bte_papx: u32,
}

impl Fib {
    fn parse(word: &[u8]) -> Result<Self, ReadError> {
        FibBase::parse(word)?;
        let short = || damaged("FIB truncated");
        // FibBase is 32 bytes; then three counted arrays.
        let mut pos = 32usize;
        let csw = usize::from(u16_at(word, pos).ok_or_else(short)?);
        pos = pos.checked_add(2 + csw * 2).ok_or_else(short)?;
        let cslw = usize::from(u16_at(word, pos).ok_or_else(short)?);
        pos = pos.checked_add(2).ok_or_else(short)?;
        let rg_lw = pos;
        if cslw < 4 {
            return Err(damaged("FibRgLw too short"));
        }
        let ccp_text = u32_at(word, rg_lw + 12).ok_or_else(short)?;
        pos = pos.checked_add(cslw * 4).ok_or_else(short)?;
        let cb_rg_fc_lcb = usize::from(u16_at(word, pos).ok_or_else(short)?);
        pos = pos.checked_add(2).ok_or_else(short)?;
        if cb_rg_fc_lcb < 34 {
            return Err(damaged("FibRgFcLcb too short"));
        }
        let pair = |i: usize| -> Result<(u32, u32), ReadError> {
            let off = pos.checked_add(i * 8).ok_or_else(short)?;
            Ok((
                u32_at(word, off).ok_or_else(short)?,
                u32_at(word, off + 4).ok_or_else(short)?,
            ))
        };
        let (fc_bte_papx, lcb_bte_papx) = pair(13)?;
        let (fc_clx, lcb_clx) = pair(33)?;
        Ok(Self {
            ccp_text,
            fc_clx,
            lcb_clx,
            fc_bte_papx,
            lcb_bte_papx,
        })
    }
}

// ---------------------------------------------------------------------------
// Piece table

/// A run of consecutive characters stored contiguously in the WordDocument
/// stream, either as UTF-16LE or as one byte per character ("compressed").
#[derive(Debug, Clone, Copy)]
struct Piece {
    cp_start: u32,
    cp_end: u32,
    /// Byte offset of the piece's first character in the WordDocument stream.
    byte_start: usize,
    compressed: bool,
}

fn parse_clx(table: &[u8], fc: u32, lcb: u32) -> Result<Vec<Piece>, ReadError> {
    let clx =
        slice_at(table, fc as usize, lcb as usize).ok_or_else(|| damaged("CLX out of range"))?;
    let mut pos = 0usize;
    // Prc entries (property modifiers of fast-saved files) come first.
    let plc = loop {
        match clx.get(pos) {
            Some(0x01) => {
                let cb = i16_at(clx, pos + 1).ok_or_else(|| damaged("Prc truncated"))?;
                let cb = usize::try_from(cb).map_err(|_| damaged("Prc size negative"))?;
                pos = pos.checked_add(3 + cb).ok_or_else(|| damaged("Prc size"))?;
            }
            Some(0x02) => {
                let lcb = u32_at(clx, pos + 1).ok_or_else(|| damaged("Pcdt truncated"))?;
                break slice_at(clx, pos + 5, lcb as usize)
                    .ok_or_else(|| damaged("PlcPcd out of range"))?;
            }
            _ => return Err(damaged("no Pcdt in CLX")),
        }
    };
    if plc.len() < 4 {
        return Err(damaged("PlcPcd empty"));
    }
    // (n + 1) CPs of 4 bytes and n PCDs of 8 bytes.
    let n = (plc.len() - 4) / 12;
    let pcd_base = (n + 1) * 4;
    let mut pieces = Vec::with_capacity(n);
    let mut last_end = 0u32;
    for i in 0..n {
        let cp_start = u32_at(plc, i * 4).ok_or_else(|| damaged("PlcPcd"))?;
        let cp_end = u32_at(plc, i * 4 + 4).ok_or_else(|| damaged("PlcPcd"))?;
        if cp_end < cp_start || cp_start < last_end {
            return Err(damaged("PlcPcd CPs out of order"));
        }
        last_end = cp_end;
        let fc_raw = u32_at(plc, pcd_base + i * 8 + 2).ok_or_else(|| damaged("PCD truncated"))?;
        let compressed = fc_raw & 0x4000_0000 != 0;
        let byte_start = if compressed {
            ((fc_raw & 0x3FFF_FFFF) / 2) as usize
        } else {
            fc_raw as usize
        };
        pieces.push(Piece {
            cp_start,
            cp_end,
            byte_start,
            compressed,
        });
    }
    Ok(pieces)
}

/// Windows-1252 for 0x80–0x9F, which differs from Latin-1; the spec maps
/// compressed text this way.
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

fn cp1252_unit(b: u8) -> u16 {
    match b {
        0x80..=0x9F => CP1252_HIGH
            .get(usize::from(b - 0x80))
            .copied()
            .unwrap_or(0xFFFD),
        _ => u16::from(b),
    }
}

// ---------------------------------------------------------------------------
// Paragraphs (characters)

/// What ended a paragraph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// `\r` (or a section/page break `\x0c`).
    Para,
    /// `\x07`: end of a cell, or of a row when the paragraph is a TTP.
    Cell,
    /// The main text ended without a paragraph mark (truncated file).
    End,
}

#[derive(Debug)]
struct RawPara {
    /// Visible text: field codes dropped, control characters removed,
    /// `\x0b` turned into `\n`.
    text: String,
    mark: Mark,
    /// Stream offset of the paragraph mark, which keys its properties.
    mark_fc: Option<u32>,
}

/// Decodes the main document text (the first `ccp_text` characters) and
/// hands it to `emit` paragraph by paragraph.
fn read_paragraphs(
    word: &[u8],
    pieces: &[Piece],
    ccp_text: u32,
    limits: &ReadLimits,
    mut emit: impl FnMut(RawPara) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut cur = String::new();
    let mut total_bytes = 0u64;
    let mut high: Option<u16> = None;
    // Field nesting: one entry per open field, `true` once its separator
    // (`\x14`) was seen. Characters are hidden while any open field is still
    // in its instruction part.
    let mut fields: Vec<bool> = Vec::new();
    let mut fields_in_code = 0usize;

    for piece in pieces {
        if piece.cp_start >= ccp_text {
            break;
        }
        let count = (piece.cp_end.min(ccp_text) - piece.cp_start) as usize;
        let unit = if piece.compressed { 1 } else { 2 };
        let raw = slice_at(word, piece.byte_start, count.saturating_mul(unit))
            .ok_or_else(|| damaged("piece text out of range"))?;
        for j in 0..count {
            let off = j * unit;
            let code = if piece.compressed {
                raw.get(off).copied().map(cp1252_unit)
            } else {
                u16_at(raw, off)
            }
            .unwrap_or(0xFFFD);
            let fc = u32::try_from(piece.byte_start + off).ok();

            // UTF-16 surrogate pairs (may straddle pieces).
            let ch = match (high.take(), code) {
                (None, 0xD800..=0xDBFF) => {
                    high = Some(code);
                    continue;
                }
                (Some(h), 0xDC00..=0xDFFF) => {
                    let v = 0x10000 + ((u32::from(h) - 0xD800) << 10) + (u32::from(code) - 0xDC00);
                    char::from_u32(v).unwrap_or('\u{FFFD}')
                }
                (Some(_), _) => {
                    push_visible(&mut cur, '\u{FFFD}', fields_in_code);
                    char::from_u32(u32::from(code)).unwrap_or('\u{FFFD}')
                }
                (None, _) => char::from_u32(u32::from(code)).unwrap_or('\u{FFFD}'),
            };

            match ch {
                '\u{13}' => {
                    fields.push(false);
                    fields_in_code += 1;
                }
                '\u{14}' => {
                    if let Some(top) = fields.last_mut()
                        && !*top
                    {
                        *top = true;
                        fields_in_code -= 1;
                    }
                }
                '\u{15}' => {
                    if let Some(top) = fields.pop()
                        && !top
                    {
                        fields_in_code -= 1;
                    }
                }
                '\r' | '\u{7}' | '\u{c}' => {
                    let mark = if ch == '\u{7}' {
                        Mark::Cell
                    } else {
                        Mark::Para
                    };
                    total_bytes += cur.len() as u64 + 1;
                    if total_bytes > limits.max_part_bytes {
                        return Err(ReadError::TooLarge("Word 文档正文过长".into()));
                    }
                    emit(RawPara {
                        text: std::mem::take(&mut cur),
                        mark,
                        mark_fc: fc,
                    })?;
                }
                _ => push_visible(&mut cur, ch, fields_in_code),
            }
        }
    }
    if high.is_some() {
        push_visible(&mut cur, '\u{FFFD}', fields_in_code);
    }
    if !cur.is_empty() {
        emit(RawPara {
            text: cur,
            mark: Mark::End,
            mark_fc: None,
        })?;
    }
    Ok(())
}

fn push_visible(out: &mut String, ch: char, fields_in_code: usize) {
    if fields_in_code > 0 {
        return;
    }
    match ch {
        '\u{b}' => out.push('\n'),
        '\t' => out.push('\t'),
        // non-breaking hyphen; the optional hyphen (0x1f) is invisible
        '\u{1e}' => out.push('-'),
        // object anchors, footnote references, annotation marks …
        c if (c as u32) < 0x20 => {}
        c => out.push(c),
    }
}

// ---------------------------------------------------------------------------
// Paragraph properties

#[derive(Debug, Clone, Default)]
struct ParaProps {
    in_table: bool,
    ttp: bool,
    itap: i64,
    inner_cell: bool,
    inner_ttp: bool,
    /// The row layout from `sprmTDefTable` (and `sprmTVertMerge`).
    tdef: Option<Rc<RowDef>>,
}

impl ParaProps {
    /// Table nesting depth of the paragraph: 0 outside tables.
    fn depth(&self) -> usize {
        if !self.in_table && self.itap <= 0 {
            return 0;
        }
        usize::try_from(self.itap.max(1))
            .unwrap_or(MAX_DEPTH)
            .min(MAX_DEPTH)
    }
}

/// The PlcBtePapx: which FKP page holds the properties of which FC range.
/// Looked up lazily per paragraph mark, so hostile page counts cost nothing.
struct PapxIndex<'a> {
    word: &'a [u8],
    plc: &'a [u8],
    n: usize,
}

impl<'a> PapxIndex<'a> {
    fn new(word: &'a [u8], table: &'a [u8], fc: u32, lcb: u32) -> Result<Self, ReadError> {
        let plc = slice_at(table, fc as usize, lcb as usize)
            .ok_or_else(|| damaged("PlcBtePapx out of range"))?;
        let n = plc.len().saturating_sub(4) / 8;
        Ok(Self { word, plc, n })
    }

    /// The FKP page offset and entry index whose FC range holds `fc`.
    fn locate(&self, fc: u32) -> Option<(usize, usize)> {
        let fc_at = |i: usize| u32_at(self.plc, i * 4);
        // Largest i with aFC[i] <= fc.
        let (mut lo, mut hi) = (0usize, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fc_at(mid)? <= fc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        if fc >= fc_at(i + 1)? {
            return None;
        }
        let pn = u32_at(self.plc, (self.n + 1) * 4 + i * 4)? & 0x003F_FFFF;
        let page_off = (pn as usize).checked_mul(FKP_SIZE)?;
        let page = slice_at(self.word, page_off, FKP_SIZE)?;
        let crun = usize::from(*page.get(FKP_SIZE - 1)?);
        // rgfc (crun + 1 u32) and rgbx (crun × 13 bytes) must fit the page.
        if (crun + 1) * 4 + crun * 13 > FKP_SIZE - 1 {
            return None;
        }
        (0..crun).find_map(|j| {
            let start = u32_at(page, j * 4)?;
            let end = u32_at(page, j * 4 + 4)?;
            (start <= fc && fc < end).then_some((page_off, j))
        })
    }

    fn props(&self, page_off: usize, j: usize, data: Option<&[u8]>) -> ParaProps {
        let mut props = ParaProps::default();
        let Some(page) = slice_at(self.word, page_off, FKP_SIZE) else {
            return props;
        };
        let crun = usize::from(page.get(FKP_SIZE - 1).copied().unwrap_or(0));
        let bx = (crun + 1) * 4 + j * 13;
        let off = usize::from(page.get(bx).copied().unwrap_or(0)) * 2;
        if off == 0 {
            return props;
        }
        // PapxInFkp: cb, or 0 followed by cb'; then istd and the grpprl.
        let (start, len) = match page.get(off).copied() {
            Some(0) => match page.get(off + 1) {
                Some(&cb) => (off + 2, usize::from(cb) * 2),
                None => return props,
            },
            Some(cb) => (off + 1, usize::from(cb) * 2 - 1),
            None => return props,
        };
        let end = start.saturating_add(len).min(FKP_SIZE - 1);
        if let Some(grpprl) = page.get(start.saturating_add(2)..end) {
            apply_grpprl(grpprl, data, &mut props, true);
        }
        props
    }
}

/// Parsed properties per FKP entry: a document repeats a handful of
/// paragraph formats, and `sprmPHugePapx` grpprls can be large.
#[derive(Default)]
struct PropsCache {
    map: HashMap<(usize, usize), Rc<ParaProps>>,
}

impl PropsCache {
    fn get(
        &mut self,
        index: &PapxIndex<'_>,
        data: Option<&[u8]>,
        fc: Option<u32>,
    ) -> Rc<ParaProps> {
        let Some(key) = fc.and_then(|fc| index.locate(fc)) else {
            return Rc::new(ParaProps::default());
        };
        self.map
            .entry(key)
            .or_insert_with(|| Rc::new(index.props(key.0, key.1, data)))
            .clone()
    }
}

/// Size of a sprm's operand starting at `op` (the byte after the sprm code),
/// from the spra bits, or `None` when the grpprl is cut short.
fn operand_len(sprm: u16, grpprl: &[u8], op: usize) -> Option<usize> {
    Some(match sprm >> 13 {
        0 | 1 => 1,
        2 | 4 | 5 => 2,
        3 => 4,
        7 => 3,
        _ => match sprm {
            // TDefTableOperand: u16 cb counting the rest plus one.
            SPRM_T_DEF_TABLE | SPRM_T_DEF_TABLE10 => {
                2 + usize::from(u16_at(grpprl, op)?).saturating_sub(1)
            }
            // cb 255 means "compute from the contents" (PChgTabsOperand).
            SPRM_P_CHG_TABS if *grpprl.get(op)? == 255 => {
                let del = usize::from(*grpprl.get(op + 1)?);
                let add_at = op + 2 + del * 4;
                let add = usize::from(*grpprl.get(add_at)?);
                2 + del * 4 + 1 + add * 3
            }
            _ => 1 + usize::from(*grpprl.get(op)?),
        },
    })
}

fn apply_grpprl(grpprl: &[u8], data: Option<&[u8]>, props: &mut ParaProps, allow_huge: bool) {
    let mut vert_merges: Vec<(usize, u8)> = Vec::new();
    let mut pos = 0usize;
    while let Some(sprm) = u16_at(grpprl, pos) {
        let op_start = pos + 2;
        let Some(len) = operand_len(sprm, grpprl, op_start) else {
            break;
        };
        let Some(op) = slice_at(grpprl, op_start, len) else {
            break;
        };
        pos = op_start + len;
        let flag = || op.first().is_some_and(|&b| b != 0);
        let int = || u32_at(op, 0).map(|v| i64::from(v as i32));
        match sprm {
            SPRM_P_F_IN_TABLE => props.in_table = flag(),
            SPRM_P_F_TTP => props.ttp = flag(),
            SPRM_P_F_INNER_TABLE_CELL => props.inner_cell = flag(),
            SPRM_P_F_INNER_TTP => props.inner_ttp = flag(),
            SPRM_P_ITAP => props.itap = int().unwrap_or(0),
            SPRM_P_DTAP => props.itap = props.itap.saturating_add(int().unwrap_or(0)),
            SPRM_T_DEF_TABLE => {
                props.tdef = op.get(2..).map(parse_tdef).map(Rc::new);
            }
            SPRM_T_VERT_MERGE => {
                // cb, itc, VerticalMergeFlag
                if let (Some(&itc), Some(&code)) = (op.get(1), op.get(2)) {
                    vert_merges.push((usize::from(itc), code));
                }
            }
            SPRM_P_HUGE_PAPX if allow_huge => {
                // The real grpprl lives in the Data stream (PrcData: i16 cb
                // then the grpprl); Word and LibreOffice use this when a
                // row's table properties do not fit an FKP.
                let huge = data.zip(u32_at(op, 0)).and_then(|(data, off)| {
                    let off = off as usize;
                    let cb = usize::from(u16_at(data, off)?);
                    slice_at(data, off + 2, cb)
                });
                if let Some(huge) = huge {
                    apply_grpprl(huge, data, props, false);
                }
            }
            _ => {}
        }
    }
    if let Some(tdef) = props.tdef.as_mut()
        && !vert_merges.is_empty()
    {
        let tdef = Rc::make_mut(tdef);
        for (itc, code) in vert_merges {
            if let Some(tc) = tdef.cells.get_mut(itc) {
                tc.v_cont = code != 0;
                tc.v_first = code == 3;
            }
        }
    }
}

/// The row layout of a `TDefTableOperand`: `rgdxaCenter` holds the left
/// edge and then every cell's right boundary (twips), `rgTc80` the per-cell
/// merge flags.
fn parse_tdef(op: &[u8]) -> RowDef {
    let itc_mac = usize::from(op.first().copied().unwrap_or(0));
    let centers: Vec<i16> = (0..=itc_mac).map_while(|i| i16_at(op, 1 + i * 2)).collect();
    let Some((&left, rights)) = centers.split_first() else {
        return RowDef::default();
    };
    if centers.len() != itc_mac + 1 {
        return RowDef::default();
    }
    let tc_base = 1 + (itc_mac + 1) * 2;
    // rgTc80 may hold fewer than itcMac entries; missing ones are defaults.
    let cells = rights
        .iter()
        .enumerate()
        .map(|(i, &right)| {
            let grf = u16_at(op, tc_base + i * 20).unwrap_or(0);
            CellDef {
                right: i32::from(right),
                h_first: grf & 0x0001 != 0,
                h_cont: grf & 0x0002 != 0,
                v_cont: grf & 0x0020 != 0,
                v_first: grf & 0x0040 != 0,
            }
        })
        .collect();
    RowDef {
        left: i32::from(left),
        cells,
    }
}

// ---------------------------------------------------------------------------
// Tables

/// Hands one paragraph to the table builder: its depth and whether it ends
/// a cell or a row come from its mark and its table properties.
fn paragraph(
    tables: &mut TableBuilder<'_>,
    para: RawPara,
    props: &ParaProps,
) -> Result<(), ReadError> {
    let depth = if para.mark == Mark::End {
        0
    } else {
        props.depth()
    };
    if depth == 0 {
        return tables.paragraph(para.text, 0);
    }
    // Depth 1: cells end with \x07, rows with a \x07 carrying sprmPFTtp.
    // Deeper: both are ordinary paragraph marks flagged with
    // sprmPFInnerTableCell / sprmPFInnerTtp.
    let row_end = if depth == 1 {
        props.ttp
    } else {
        props.inner_ttp
    };
    if row_end {
        // The row-end mark's own text is meaningless.
        tables.row(String::new(), depth, props.tdef.clone())
    } else if para.mark == Mark::Cell || (depth > 1 && props.inner_cell) {
        tables.cell(para.text, depth)
    } else {
        tables.paragraph(para.text, depth)
    }
}

// ---------------------------------------------------------------------------
// Summary information

/// FMTID_SummaryInformation {F29F85E0-4FF9-1068-AB91-08002B27B3D9}.
const FMTID_SUMMARY: [u8; 16] = [
    0xE0, 0x85, 0x9F, 0xF2, 0xF9, 0x4F, 0x68, 0x10, 0xAB, 0x91, 0x08, 0x00, 0x2B, 0x27, 0xB3, 0xD9,
];
const PID_CODEPAGE: u32 = 1;
const PID_AUTHOR: u32 = 4;
const PID_CREATED: u32 = 12;
const PID_MODIFIED: u32 = 13;
const PID_APPNAME: u32 = 18;
const VT_I2: u16 = 2;
const VT_LPSTR: u16 = 0x1E;
const VT_LPWSTR: u16 = 0x1F;
const VT_FILETIME: u16 = 0x40;

fn summary_meta(s: &[u8]) -> Meta {
    let mut meta = Meta::new();
    let Some(section) = summary_section(s) else {
        return meta;
    };
    // Property id → offset of its typed value within the section.
    let count = u32_at(section, 4).unwrap_or(0) as usize;
    let count = count.min(section.len() / 8);
    let props: BTreeMap<u32, usize> = (0..count)
        .filter_map(|i| {
            Some((
                u32_at(section, 8 + i * 8)?,
                u32_at(section, 12 + i * 8)? as usize,
            ))
        })
        .collect();
    let value_type = |off: usize| u16_at(section, off);

    let codepage = props
        .get(&PID_CODEPAGE)
        .filter(|&&off| value_type(off) == Some(VT_I2))
        .and_then(|&off| u16_at(section, off + 4));
    let string = |pid: u32| -> Option<String> {
        let off = *props.get(&pid)?;
        let s = match value_type(off)? {
            VT_LPSTR => {
                let len = u32_at(section, off + 4)? as usize;
                let raw = section.get(off + 8..)?;
                decode_codepage(raw.get(..len.min(raw.len()))?, codepage)
            }
            VT_LPWSTR => {
                let chars = u32_at(section, off + 4)? as usize;
                let raw = section.get(off + 8..)?;
                decode_utf16(raw.get(..chars.saturating_mul(2).min(raw.len()))?)
            }
            _ => return None,
        };
        let s = s.trim_end_matches('\0').trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let time = |pid: u32| -> Option<String> {
        let off = *props.get(&pid)?;
        if value_type(off)? != VT_FILETIME {
            return None;
        }
        filetime_rfc3339(u64_at(section, off + 4)?)
    };
    if let Some(v) = string(PID_AUTHOR) {
        meta.insert("author".into(), v.into());
    }
    if let Some(v) = time(PID_CREATED) {
        meta.insert("created".into(), v.into());
    }
    if let Some(v) = time(PID_MODIFIED) {
        meta.insert("modified".into(), v.into());
    }
    if let Some(v) = string(PID_APPNAME) {
        meta.insert("application".into(), v.into());
    }
    meta
}

/// The SummaryInformation section of a PropertySetStream.
fn summary_section(s: &[u8]) -> Option<&[u8]> {
    if u16_at(s, 0)? != 0xFFFE || u32_at(s, 24)? == 0 {
        return None;
    }
    if s.get(28..44)? != FMTID_SUMMARY {
        return None;
    }
    let off = u32_at(s, 44)? as usize;
    let section = s.get(off..)?;
    let size = u32_at(section, 0)? as usize;
    section.get(..size.min(section.len()))
}

fn decode_codepage(raw: &[u8], codepage: Option<u16>) -> String {
    let raw = raw.split(|&b| b == 0).next().unwrap_or(raw);
    use encoding_rs::*;
    let enc: &'static Encoding = match codepage {
        Some(1200) => return decode_utf16(raw),
        Some(65001) => UTF_8,
        Some(936) => GBK,
        Some(54936) => GB18030,
        Some(950) => BIG5,
        Some(932) => SHIFT_JIS,
        Some(949) => EUC_KR,
        Some(874) => WINDOWS_874,
        Some(10000) => MACINTOSH,
        Some(cp @ 1250..=1258) => {
            Encoding::for_label(format!("windows-{cp}").as_bytes()).unwrap_or(WINDOWS_1252)
        }
        // Unknown code page: these forms come from Chinese offices.
        _ if std::str::from_utf8(raw).is_ok() => UTF_8,
        _ => GBK,
    };
    enc.decode_without_bom_handling(raw).0.into_owned()
}

fn decode_utf16(raw: &[u8]) -> String {
    let units = raw
        .chunks_exact(2)
        .filter_map(|c| c.try_into().ok())
        .map(u16::from_le_bytes);
    char::decode_utf16(units)
        .map(|r| r.unwrap_or('\u{FFFD}'))
        .collect()
}

/// FILETIME (100 ns ticks since 1601-01-01 UTC) as RFC 3339; `None` for
/// zero and for values outside years 1601–9999.
fn filetime_rfc3339(ft: u64) -> Option<String> {
    if ft == 0 {
        return None;
    }
    let secs = ft / 10_000_000;
    let days = i64::try_from(secs / 86_400).ok()?;
    let rem = secs % 86_400;
    // Days from 1601-01-01 to 1970-01-01.
    let (y, m, d) = civil_from_days(days - 134_774);
    if !(1601..=9999).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Howard Hinnant's days-to-civil for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/doc/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn read_fixture(name: &str) -> Extracted {
        read(&fixture(name), &ReadLimits::default()).unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    fn grid<'a>(ex: &'a Extracted, name: &str) -> &'a Grid {
        ex.grids
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no grid {name}"))
    }

    /// The cell whose top-left corner is (row, col), as (rowspan, colspan, text).
    fn at(g: &Grid, row: u32, col: u32) -> (u32, u32, &str) {
        let c = g
            .cells
            .iter()
            .find(|c| c.row == row && c.col == col)
            .unwrap_or_else(|| panic!("{}: no cell at ({row},{col}): {:#?}", g.name, g.cells));
        (c.rowspan, c.colspan, c.text.as_str())
    }

    #[test]
    fn form_table_cells_and_spans() {
        let ex = read_fixture("form.doc");
        assert!(!ex.scanned);
        let names: Vec<&str> = ex.grids.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["table 1", "table 2", "table 2.1", "text"]);
        let t = grid(&ex, "table 1");
        assert_eq!(at(t, 0, 0), (1, 1, "单 位"));
        assert_eq!(at(t, 0, 1), (1, 2, "江北街道办事处"));
        assert_eq!(at(t, 0, 3), (1, 1, "地 址"));
        assert_eq!(at(t, 0, 4), (1, 2, "永嘉县江北街道新街17号"));
        assert_eq!(at(t, 1, 3), (1, 3, "党工委委员、办事处副主任"));
        // 联系方式 is merged over the three contact rows.
        assert_eq!(at(t, 2, 0), (3, 1, "联系方式"));
        assert_eq!(at(t, 2, 1), (1, 1, "办 电"));
        assert_eq!(at(t, 2, 2), (1, 1, "0577-67630779"));
        assert_eq!(at(t, 3, 3), (1, 1, "机关网"));
        assert_eq!(at(t, 3, 4), (1, 2, "609714"));
        assert_eq!(at(t, 4, 1), (1, 1, "E-mail"));
        assert_eq!(at(t, 4, 2), (1, 4, "lwy@yj.gov.cn"));
        assert!(
            !t.cells
                .iter()
                .any(|c| c.col == 0 && (c.row == 3 || c.row == 4))
        );
        assert_eq!(at(t, 5, 0), (1, 1, "信息员姓名"));
        assert_eq!(at(t, 5, 5), (1, 1, "1979.12"));
        assert_eq!(at(t, 6, 4), (1, 1, "QQ 号码"));
        assert_eq!(at(t, 6, 5), (1, 1, "81668202"));
        assert_eq!(at(t, 7, 0), (1, 6, "信息员个人简历"));
        // Two paragraphs in one cell are joined by a line break.
        assert_eq!(
            at(t, 8, 0),
            (
                1,
                6,
                "1997.09-2001.07 宁波大学新闻学专业学习；\n2001.08-至今 江北街道党政办工作。"
            )
        );
        // The empty merged 备注 value is left out.
        assert_eq!(at(t, 9, 0), (1, 1, "备 注"));
        assert_eq!(t.cells.len(), 34);
    }

    #[test]
    fn huge_papx_row_keeps_its_eight_cells() {
        // LibreOffice moves the 8-cell row's TDefTable into the Data stream
        // (sprmPHugePapx); without it the row has no boundaries and TTP.
        let ex = read_fixture("form.doc");
        let t = grid(&ex, "table 2");
        for i in 0..8 {
            assert_eq!(at(t, 0, i), (1, 1, format!("第{}格", i + 1).as_str()));
        }
        assert_eq!(at(t, 2, 0), (1, 4, "合计"));
        assert_eq!(at(t, 2, 4), (1, 4, "12"));
    }

    #[test]
    fn nested_table_is_flattened_and_emitted() {
        let ex = read_fixture("form.doc");
        let t = grid(&ex, "table 2");
        assert_eq!(at(t, 1, 0), (1, 1, "嵌套表"));
        assert_eq!(at(t, 1, 1), (1, 7, "内表前\n甲\n乙\n丙\n丁\n\n内表后"));
        let inner = grid(&ex, "table 2.1");
        assert_eq!(inner.cells.len(), 4);
        assert_eq!(at(inner, 0, 0), (1, 1, "甲"));
        assert_eq!(at(inner, 0, 1), (1, 1, "乙"));
        assert_eq!(at(inner, 1, 0), (1, 1, "丙"));
        assert_eq!(at(inner, 1, 1), (1, 1, "丁"));
    }

    #[test]
    fn paragraphs_outside_tables_form_the_text_grid() {
        let ex = read_fixture("form.doc");
        let texts: Vec<(u32, u32, &str)> = grid(&ex, "text")
            .cells
            .iter()
            .map(|c| (c.row, c.col, c.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                (0, 0, "永嘉县分管政务信息领导及信息员登记表"),
                (1, 0, "填报单位：江北街道办事处"),
                (2, 0, "联系人：张微"),
                // the HYPERLINK field's code is dropped, its result kept
                (3, 0, "网址：永嘉政府网"),
                (4, 0, "填表日期：2024年3月5日"),
            ]
        );
    }

    #[test]
    fn summary_information_becomes_meta() {
        let ex = read_fixture("form.doc");
        assert_eq!(ex.meta.get("author"), Some(&"江北街道党政办".into()));
        assert_eq!(ex.meta.get("tables"), Some(&2.into()));
        // python-docx's template dates, kept by LibreOffice
        assert_eq!(ex.meta.get("created"), Some(&"2013-12-23T23:15:00Z".into()));
        assert_eq!(
            ex.meta.get("modified"),
            Some(&"2013-12-23T23:15:00Z".into())
        );
        // LibreOffice writes no AppName
        assert_eq!(ex.meta.get("application"), None);
    }

    #[test]
    fn document_without_tables_has_only_text() {
        let ex = read_fixture("lines.doc");
        assert_eq!(ex.meta.get("tables"), Some(&0.into()));
        assert_eq!(ex.grids.len(), 1);
        let texts: Vec<&str> = ex.grids[0].cells.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "分管政务信息领导及信息员登记表",
                "单位：桥头镇人民政府",
                "分管领导姓名：王建国",
                "职务：副镇长",
                "信息员姓名：李娜",
                "手机：13900001111",
            ]
        );
        let rows: Vec<u32> = ex.grids[0].cells.iter().map(|c| c.row).collect();
        assert_eq!(rows, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn wps_copy_reads_like_doc() {
        assert_eq!(read_fixture("form.wps"), read_fixture("form.doc"));
    }

    #[test]
    fn encrypted_doc_is_reported() {
        assert_eq!(
            read(&fixture("encrypted.doc"), &ReadLimits::default()),
            Err(ReadError::Encrypted)
        );
    }

    #[test]
    fn truncated_and_garbage_input_is_damaged() {
        let limits = ReadLimits::default();
        assert!(matches!(
            read(&fixture("truncated.doc"), &limits),
            Err(ReadError::Damaged(_))
        ));
        assert!(matches!(read(b"", &limits), Err(ReadError::Damaged(_))));
        assert!(matches!(
            read(&[0xD0; 4096], &limits),
            Err(ReadError::Damaged(_))
        ));
        let form = fixture("form.doc");
        assert!(matches!(
            read(&form[..600], &limits),
            Err(ReadError::Damaged(_))
        ));
    }

    fn compound(streams: &[(&str, &[u8])]) -> Vec<u8> {
        let mut cf = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new())).expect("create");
        for (name, data) in streams {
            let mut s = cf.create_stream(name).expect("stream");
            std::io::Write::write_all(&mut s, data).expect("write");
        }
        cf.flush().expect("flush");
        cf.into_inner().into_inner()
    }

    #[test]
    fn other_compound_files_are_unsupported_or_damaged() {
        let limits = ReadLimits::default();
        let xls = compound(&[("Workbook", &[0u8; 100])]);
        assert!(matches!(
            read(&xls, &limits),
            Err(ReadError::Unsupported(_))
        ));
        let bad = compound(&[("WordDocument", &[0x11u8; 600]), ("1Table", &[0u8; 10])]);
        assert!(matches!(read(&bad, &limits), Err(ReadError::Damaged(_))));
        // Word 95 FIB
        let mut w95 = vec![0u8; 600];
        w95[..4].copy_from_slice(&[0xEC, 0xA5, 0x65, 0x00]);
        let w95 = compound(&[("WordDocument", &w95)]);
        assert!(matches!(
            read(&w95, &limits),
            Err(ReadError::Unsupported(_))
        ));
        // A real Word 6.0/95 file carries its own magic, 0xA5DC (nFib 0x65
        // Word 6, 0x68 Word 95): an older format, not a damaged file.
        for nfib in [0x65u8, 0x68] {
            let mut old = vec![0u8; 600];
            old[..4].copy_from_slice(&[0xDC, 0xA5, nfib, 0x00]);
            let old = compound(&[("WordDocument", &old)]);
            assert!(
                matches!(read(&old, &limits), Err(ReadError::Unsupported(ref m)) if m.contains("另存为")),
                "nFib {nfib:#x}: {:?}",
                read(&old, &limits)
            );
        }
        // The encryption flag wins even when nothing else is readable.
        let mut enc = vec![0u8; 600];
        enc[..4].copy_from_slice(&[0xEC, 0xA5, 0xC1, 0x00]);
        enc[0x0A] = 0x00;
        enc[0x0B] = 0x03;
        let enc = compound(&[("WordDocument", &enc)]);
        assert_eq!(read(&enc, &limits), Err(ReadError::Encrypted));
    }

    #[test]
    fn limits_are_enforced() {
        let form = fixture("form.doc");
        let few_cells = ReadLimits {
            max_cells: 10,
            ..ReadLimits::default()
        };
        assert!(matches!(
            read(&form, &few_cells),
            Err(ReadError::TooLarge(_))
        ));
        let small_parts = ReadLimits {
            max_part_bytes: 1000,
            ..ReadLimits::default()
        };
        assert!(matches!(
            read(&form, &small_parts),
            Err(ReadError::TooLarge(_))
        ));
    }

    /// A WordDocument + 1Table pair with the given pieces and no paragraph
    /// properties, for text-level tests.
    fn synthetic(pieces: &[(&[u8], bool)]) -> Streams {
        let mut word = vec![0u8; 1024];
        word[..4].copy_from_slice(&[0xEC, 0xA5, 0xC1, 0x00]);
        word[0x0A..0x0C].copy_from_slice(&FLAG_WHICH_TABLE.to_le_bytes());
        word[32..34].copy_from_slice(&14u16.to_le_bytes());
        word[62..64].copy_from_slice(&22u16.to_le_bytes());
        word[152..154].copy_from_slice(&93u16.to_le_bytes());
        let mut cps = vec![0u32];
        let mut pcds = Vec::new();
        for (bytes, compressed) in pieces {
            let fc = word.len() as u32;
            let chars = if *compressed {
                bytes.len()
            } else {
                bytes.len() / 2
            };
            cps.push(cps.last().copied().unwrap_or(0) + chars as u32);
            let fc = if *compressed {
                (fc * 2) | 0x4000_0000
            } else {
                fc
            };
            pcds.extend_from_slice(&[0, 0]);
            pcds.extend_from_slice(&fc.to_le_bytes());
            pcds.extend_from_slice(&[0, 0]);
            word.extend_from_slice(bytes);
        }
        let ccp = cps.last().copied().unwrap_or(0);
        word[64 + 12..64 + 16].copy_from_slice(&ccp.to_le_bytes());
        let mut plc: Vec<u8> = cps.iter().flat_map(|c| c.to_le_bytes()).collect();
        plc.extend_from_slice(&pcds);
        let mut table = vec![0x01, 0x02, 0x00, 0xAA, 0xBB, 0x02];
        table.extend_from_slice(&(plc.len() as u32).to_le_bytes());
        table.extend_from_slice(&plc);
        let clx_at = 154 + 33 * 8;
        word[clx_at..clx_at + 4].copy_from_slice(&0u32.to_le_bytes());
        word[clx_at + 4..clx_at + 8].copy_from_slice(&(table.len() as u32).to_le_bytes());
        Streams {
            word,
            table,
            data: None,
            summary: None,
        }
    }

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    fn text_lines(streams: &Streams) -> Vec<String> {
        let ex = extract(streams, &ReadLimits::default()).expect("extract");
        ex.grids
            .iter()
            .flat_map(|g| g.cells.iter().map(|c| c.text.clone()))
            .collect()
    }

    #[test]
    fn text_decoding_pieces_fields_and_controls() {
        let s = synthetic(&[
            // compressed: cp1252 quotes and é, a line break, a paragraph mark
            (b"Caf\xe9 \x93ok\x94\x0bnext\r", true),
            // UTF-16: a supplementary character split across two pieces
            (&utf16("姓名：\u{20000}").as_slice()[..8], false),
            (&utf16("\u{20000}\r").as_slice()[2..], false),
            // fields: code dropped, result kept; no separator drops all
            (
                &utf16("\u{13} HYPERLINK \"x\" \u{14}链接\u{15}后\u{13} PAGE \u{15}尾\u{1}\u{8}\r"),
                false,
            ),
            // a nested field inside a result stays visible
            (
                &utf16("\u{13}A\u{14}外\u{13}B\u{14}内\u{15}\u{15}\ttab"),
                false,
            ),
        ]);
        assert_eq!(
            text_lines(&s),
            ["Café “ok”\nnext", "姓名：\u{20000}", "链接后尾", "外内 tab"]
        );
    }

    #[test]
    fn damaged_piece_table_is_reported() {
        let mut s = synthetic(&[(b"abc\r", true)]);
        // point the piece past the end of the stream
        let pcd_fc = 6 + 4 + 8 + 2;
        s.table[pcd_fc..pcd_fc + 4].copy_from_slice(&0x3FFF_FFF0u32.to_le_bytes());
        assert!(matches!(
            extract(&s, &ReadLimits::default()),
            Err(ReadError::Damaged(_))
        ));
        let mut s = synthetic(&[(b"abc\r", true)]);
        s.table[0] = 0x07;
        assert!(matches!(
            extract(&s, &ReadLimits::default()),
            Err(ReadError::Damaged(_))
        ));
    }

    #[test]
    fn summary_property_set_by_hand() {
        // codepage 936 (GBK) author, AppName, and two FILETIMEs
        let mut props: Vec<(u32, Vec<u8>)> = Vec::new();
        props.push((
            PID_CODEPAGE,
            [2u32.to_le_bytes(), 936u32.to_le_bytes()].concat(),
        ));
        let (gbk, _, _) = encoding_rs::GBK.encode("张微");
        let lpstr = |b: &[u8]| {
            let mut v = VT_LPSTR.to_le_bytes().to_vec();
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(b.len() as u32 + 1).to_le_bytes());
            v.extend_from_slice(b);
            v.push(0);
            while !v.len().is_multiple_of(4) {
                v.push(0);
            }
            v
        };
        props.push((PID_AUTHOR, lpstr(&gbk)));
        props.push((PID_APPNAME, lpstr(b"Microsoft Office Word")));
        let ft = |t: u64| {
            [
                u32::from(VT_FILETIME).to_le_bytes().as_slice(),
                &t.to_le_bytes(),
            ]
            .concat()
        };
        // 2007-05-14T08:30:00Z
        props.push((
            PID_CREATED,
            ft((1_179_131_400 + 11_644_473_600) * 10_000_000),
        ));
        props.push((PID_MODIFIED, ft(0)));
        let header = 8 + props.len() * 8;
        let mut section = Vec::new();
        let mut ids = Vec::new();
        let mut off = header;
        for (id, v) in &props {
            ids.extend_from_slice(&id.to_le_bytes());
            ids.extend_from_slice(&(off as u32).to_le_bytes());
            off += v.len();
        }
        section.extend_from_slice(&(off as u32).to_le_bytes());
        section.extend_from_slice(&(props.len() as u32).to_le_bytes());
        section.extend_from_slice(&ids);
        for (_, v) in &props {
            section.extend_from_slice(v);
        }
        let mut stream = vec![0xFE, 0xFF, 0, 0, 0, 0, 0, 0];
        stream.extend_from_slice(&[0; 16]);
        stream.extend_from_slice(&1u32.to_le_bytes());
        stream.extend_from_slice(&FMTID_SUMMARY);
        stream.extend_from_slice(&48u32.to_le_bytes());
        stream.extend_from_slice(&section);
        let meta = summary_meta(&stream);
        assert_eq!(meta.get("author"), Some(&"张微".into()));
        assert_eq!(
            meta.get("application"),
            Some(&"Microsoft Office Word".into())
        );
        assert_eq!(meta.get("created"), Some(&"2007-05-14T08:30:00Z".into()));
        assert_eq!(meta.get("modified"), None);
        // every truncation is handled
        for n in 0..stream.len() {
            let _ = summary_meta(&stream[..n]);
        }
    }

    #[test]
    fn filetime_conversion() {
        assert_eq!(
            filetime_rfc3339(116_444_736_000_000_000).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(filetime_rfc3339(1).as_deref(), Some("1601-01-01T00:00:00Z"));
        assert_eq!(filetime_rfc3339(u64::MAX), None);
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
        match rng.below(4) {
            0 => {
                let cut = rng.below(bytes.len());
                bytes.truncate(cut);
            }
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(bytes.len());
                    if let Some(b) = bytes.get_mut(i) {
                        *b ^= 1 << rng.below(8);
                    }
                }
            }
            _ => {
                // large or small little-endian integers where lengths live
                let i = rng.below(bytes.len()) & !3;
                let v: u32 = match rng.below(4) {
                    0 => u32::MAX,
                    1 => 0x7FFF_FFFF,
                    2 => 0,
                    _ => rng.next() as u32,
                };
                if let Some(s) = bytes.get_mut(i..i + 4) {
                    s.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    #[test]
    fn mutated_files_never_panic() {
        let limits = ReadLimits::default();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for name in ["form.doc", "lines.doc"] {
            let original = fixture(name);
            for _ in 0..300 {
                let mut bytes = original.clone();
                mutate(&mut rng, &mut bytes);
                let _ = read(&bytes, &limits);
            }
        }
    }

    #[test]
    fn mutated_streams_never_panic() {
        // Straight at the parser, past the compound-file layer, so that every
        // mutation lands in Word structures.
        let limits = ReadLimits::default();
        let original = Streams::open(&fixture("form.doc"), &limits).expect("open");
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for round in 0..900 {
            let mut s = Streams {
                word: original.word.clone(),
                table: original.table.clone(),
                data: original.data.clone(),
                summary: original.summary.clone(),
            };
            match round % 3 {
                0 => mutate(&mut rng, &mut s.word),
                1 => mutate(&mut rng, &mut s.table),
                _ => {
                    if let Some(d) = s.data.as_mut() {
                        mutate(&mut rng, d);
                    }
                    if let Some(d) = s.summary.as_mut() {
                        mutate(&mut rng, d);
                    }
                }
            }
            let _ = extract(&s, &limits);
            if let Some(summary) = &s.summary {
                let _ = summary_meta(summary);
            }
        }
    }
}
